"""Stage 3b, gate: hold the int8 model to the accuracy budget at build time, with a fallback.

A stateful model (manifest.batch_axes["state"]) runs its validation chunks streamed, as verification does, and
the drift of its carried state is held to verify.max_state_drift too (docs/streaming.md).

The budget is the verify thresholds (`verify/`), on the figures verification judges: top-1 agreement with fp32
and (with labels) the accuracy and macro-F1 drops for classifiers, the correlation for scores, cosine for
embeddings (near-empty samples by magnitude), every group of an output on its own scale and a detector's detections
(pipeline/verify/groups.py, detection.py), measured on the validation split; the decision names the output or group
that holds each worst figure. Over budget, the quantized nodes that add the most
quantization noise (a MatMul's or Gemm's on its output, other nodes' on their quantized inputs, from the
activations onnxruntime's qdq_loss_debug collects) leave the mode's quantizer, a few per step, until the budget
holds or the limit is reached; then the build fails with the numbers. A dynamic build keeps them fp32; a static
build runs its MatMuls among them as dynamic int8 (activation ranges per run) and keeps the others fp32.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from calibration import layout
from calibration.readers import BatchReader
from pipeline.builder.quantize import DYNAMIC_IN_STATIC, QuantizerKnobs
from pipeline.errors import BuildFailed, InputError
from pipeline.manifest import FallbackRecord, Manifest
from pipeline.progress import say
from pipeline.verify.onnx import graph_io
from pipeline.verify import fidelity
from pipeline.verify.child_onnx import stream_run
from pipeline.verify.detection import detection_figures
from pipeline.verify.groups import with_groups


class OverBudget(BuildFailed):
    """The int8 model is over its accuracy budget, the fallback done: mode=auto keeps another candidate."""


RANKING_EXAMPLES = 8  # activations of every tensor are held in memory while ranking
_SESSIONS: dict[tuple, object] = {}


def run_model(path: Path, inputs: dict[str, np.ndarray], streaming: dict | None = None) -> list[np.ndarray]:
    """Every output of the model at `path`, in graph order, with its examples on axis 0 (`streaming`: the manifest's
    batch_axes record, where they lie otherwise; with a `state` and `steps`, the examples run as sequences of that
    many steps with the state carried, as verification runs them: pipeline/verify/child_onnx.py stream_run). One
    session per version of the file: loading a transformer's session costs about as much as running it on the
    validation split."""
    import onnxruntime as ort

    stat = path.stat()
    version = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rewritten (requantized) file is new
    if version not in _SESSIONS:
        _SESSIONS.clear()  # the reference and the current int8 model at most: do not keep old models alive
        _SESSIONS[version] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session = _SESSIONS[version]
    names = [node.name for node in session.get_outputs()]
    if streaming and streaming.get("state"):
        streamed = stream_run(session.run, names, inputs, streaming, int(streaming["steps"]))
        return [streamed[name] for name in names]
    output_axes = (streaming or {}).get("outputs")
    return [layout.batch_first(output, layout.axis_of(output_axes, name))
            for output, name in zip(session.run(None, inputs), names)]


GATED_FIGURES = ("top1_agreement", "label_set_agreement", "decision_agreement", "accuracy", "macro_f1",
                 "score_correlation", "cosine_mean", "cosine_worst", "detection_recall", "detection_precision",
                 "detection_mean_iou")
GATED_MAXIMA = ("near_empty_error_worst",)  # figures whose worst is the largest


def metrics(kind: str, outputs, reference, labels: np.ndarray | None, mask: np.ndarray | None = None,
            reading: fidelity.Reading | None = None, names: list[str] | None = None,
            threshold: float = 0.5) -> dict[str, float]:
    """The figures verification judges too (pipeline/verify/fidelity/), for every output (lists, or one array):
    a classifier's logits by top-1 agreement with fp32 (per non-padding token for a token classifier) and, with
    labels, accuracy and macro-F1; one value per sample or per token (a score) by its correlation with fp32's;
    any other output by cosine per sample (per token for hidden states), near-empty samples by magnitude; with a
    `reading` (fp32's, by output `names`), every group of an output too, and a detector's detections. With several
    outputs, the worst of each figure."""
    return named_metrics(kind, outputs, reference, labels, mask, reading, names, threshold)[0]


def named_metrics(kind: str, outputs, reference, labels: np.ndarray | None, mask: np.ndarray | None = None,
                  reading: fidelity.Reading | None = None, names: list[str] | None = None,
                  threshold: float = 0.5) -> tuple[dict[str, float], dict[str, str]]:
    """`metrics`, and which output or group holds each figure's worst."""
    if not isinstance(outputs, list):
        outputs, reference = [outputs], [reference]
    names = names or [f"output {index}" for index in range(len(outputs))]
    groups = reading.groups if reading else []
    found, expected = (with_groups(dict(zip(names, arrays)), groups) for arrays in (outputs, reference))
    kinds = {group.name: group.kind for group in groups if group.kind}
    result: dict[str, float] = {}
    holders: dict[str, str] = {}
    for name, exact in expected.items():
        judged_as = kinds.get(name) or fidelity.output_kind(exact, kind, mask)  # by its dtype too: before float64
        output, exact = found[name].astype(np.float64), exact.astype(np.float64)
        scale = reading.scales.get(name) if reading else None
        figures = fidelity.kind_figures(judged_as, output, exact, mask, labels, scale=scale,
                                        near_empty_ratio=reading.near_empty_ratio if scale else 0.0,
                                        threshold=threshold)
        if reading and reading.detection and name == reading.detection.output:
            figures |= detection_figures(output, exact, reading.detection)
        for key in (*GATED_FIGURES, *GATED_MAXIMA):
            worse = max if key in GATED_MAXIMA else min
            if key in figures and (key not in result or worse(figures[key], result[key]) != result[key]):
                result[key], holders[key] = figures[key], name
    return result, holders


def heldout_accuracy(kind: str, outputs, labels: np.ndarray, mask: np.ndarray | None,
                     threshold: float = 0.5) -> float | None:
    """Accuracy on the held-out split, as `metrics` judges logits (per labelled, non-padding token for a token
    classifier); None when no output is judged against the labels."""
    return metrics(kind, outputs, outputs, labels, mask, threshold=threshold).get("accuracy")


# The agreements with fp32 held to verify.min_top1_agreement: a classifier's top-1, a multi-label classifier's
# label sets.
AGREEMENTS = (("top1_agreement", "top-1 agreement"), ("label_set_agreement", "label-set agreement"),
              ("decision_agreement", "per-chunk decision agreement"))


def check_labels_judged(kind: str, labels: np.ndarray, outputs: list[np.ndarray], names: list[str]) -> None:
    """Labels in the data that no figure is computed against: refused for a classifier (labels of the wrong shape
    for every output, which verification would skip without a word); said for other kinds, which judge outputs
    against fp32 only."""
    shapes = ", ".join(f"{name} {list(output.shape)}" for name, output in zip(names, outputs))
    judged_shapes = {output.shape[:-1] if kind == "classifier" else output.shape for output in outputs}
    if kind in ("classifier", "multi_label") and labels.shape in judged_shapes:
        return  # they fit; every position is unlabelled (-100)
    if kind in ("classifier", "multi_label"):
        wanted = "one class id per example (or per token), the shape of an output without its last axis" \
            if kind == "classifier" else "one row of 0/1 per example, an output's shape"
        one_hot = kind == "classifier" and any(labels.shape == output.shape for output in outputs)
        hint = " (rows of 0/1 per class: save labels.argmax(-1), or build with model.kind=multi_label when a " \
               "sample may have several)" if one_hot else ""
        raise InputError(f"the data's labels have shape {list(labels.shape)}, which fits none of the model's "
                         f"outputs ({shapes}): model.kind={kind} needs {wanted}{hint}; fix the labels, or remove "
                         f"them to judge the model against fp32 only")
    say(f"gate: the data's labels (shape {list(labels.shape)}) are not judged: model.kind={kind} compares outputs "
        f"with fp32 only; model.kind=classifier (class ids) or model.kind=multi_label (0/1 rows) judges accuracy")


# A detector's figures (pipeline/verify/detection.py) and their budgets under verify.detection, in words.
DETECTION_BUDGETS = (("detection_recall", "min_recall", "detection recall"),
                     ("detection_precision", "min_precision", "detection precision"),
                     ("detection_mean_iou", "min_mean_iou", "mean IoU of matched detections"))


def near_empty_bound(verify_cfg) -> float:
    """The largest RMS error a near-empty sample may have, in output scales (pipeline/verify/planning.limits_from)."""
    return math.sqrt(2 * (1 - verify_cfg.min_cosine_worst))


def budget_text(fp32: dict[str, float], verify_cfg) -> str:
    """The bounds within_budget holds the figures `metrics` gave for the fp32 model to, in words."""
    parts = [f"{words} >= {verify_cfg.min_top1_agreement}" for key, words in AGREEMENTS if key in fp32]
    parts += [f"{words} >= {verify_cfg.detection[budget]}" for key, budget, words in DETECTION_BUDGETS
              if key in fp32]
    if "accuracy" in fp32:
        parts.append(f"accuracy drop <= {verify_cfg.max_accuracy_drop}, "
                     f"macro-F1 drop <= {verify_cfg.max_macro_f1_drop}")
    if "score_correlation" in fp32:
        parts.append(f"score correlation >= {verify_cfg.min_cosine_mean}")
    if "cosine_mean" in fp32:
        parts.append(f"cosine mean >= {verify_cfg.min_cosine_mean}, worst >= {verify_cfg.min_cosine_worst}")
    if "near_empty_error_worst" in fp32:
        parts.append(f"near-empty samples' RMS error <= {near_empty_bound(verify_cfg):.3g}x the output's scale")
    return "; ".join(parts)


def within_budget(kind: str, quantized: dict[str, float], fp32: dict[str, float], verify_cfg,
                  holders: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether the figures are within the budget, and the figures against it in words (each naming the output or
    group that holds it, given `holders` and more than one output or group)."""
    checks: list[tuple[bool, str]] = []
    where = {key: f" in {name}" for key, name in (holders or {}).items() if len(set((holders or {}).values())) > 1}
    # Verification holds a classifier to both: agreement with fp32, and (with labels) the accuracy drop. A model near
    # chance keeps its accuracy while int8 changes a fifth of its answers.
    for key, words in AGREEMENTS:
        if key in quantized:
            checks.append((quantized[key] >= verify_cfg.min_top1_agreement,
                           f"{words} {quantized[key]:.4f} (budget >= {verify_cfg.min_top1_agreement})"))
    if "accuracy" in quantized and "accuracy" in fp32:
        drop = fp32["accuracy"] - quantized["accuracy"]
        f1_drop = fp32.get("macro_f1", 0.0) - quantized.get("macro_f1", 0.0)
        checks.append((drop <= verify_cfg.max_accuracy_drop and f1_drop <= verify_cfg.max_macro_f1_drop,
                       f"accuracy {quantized['accuracy']:.4f} vs fp32 {fp32['accuracy']:.4f} (drop {drop:.4f}, "
                       f"budget {verify_cfg.max_accuracy_drop})" + (
                           f", macro-F1 {quantized['macro_f1']:.4f} vs fp32 {fp32['macro_f1']:.4f} (drop "
                           f"{f1_drop:.4f}, budget {verify_cfg.max_macro_f1_drop})" if "macro_f1" in quantized else "")))
    if "score_correlation" in quantized:
        checks.append((quantized["score_correlation"] >= verify_cfg.min_cosine_mean,
                       f"score correlation with fp32 {quantized['score_correlation']:.4f} (budget >= "
                       f"{verify_cfg.min_cosine_mean})"))
    if "cosine_mean" in quantized:
        checks.append((quantized["cosine_mean"] >= verify_cfg.min_cosine_mean
                       and quantized["cosine_worst"] >= verify_cfg.min_cosine_worst,
                       f"cosine mean {quantized['cosine_mean']:.4f}{where.get('cosine_mean', '')} worst "
                       f"{quantized['cosine_worst']:.4f}{where.get('cosine_worst', '')} (budget "
                       f"mean >= {verify_cfg.min_cosine_mean}, worst >= {verify_cfg.min_cosine_worst})"))
    if "near_empty_error_worst" in quantized:
        bound = near_empty_bound(verify_cfg)
        checks.append((quantized["near_empty_error_worst"] <= bound,
                       f"near-empty samples' RMS error {quantized['near_empty_error_worst']:.3g}x the output's scale"
                       f"{where.get('near_empty_error_worst', '')} (budget <= {bound:.3g})"))
    for key, budget, words in DETECTION_BUDGETS:
        if key in quantized:
            checks.append((quantized[key] >= verify_cfg.detection[budget],
                           f"{words} {quantized[key]:.4f}{where.get(key, '')} (budget verify.detection.{budget} >= "
                           f"{verify_cfg.detection[budget]})"))
    return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)


def _noise(sqnr_db: float) -> float:
    """Noise-to-signal power from SQNR in dB; noise powers of a node's inputs add up."""
    return float(10 ** (-sqnr_db / 10)) if np.isfinite(sqnr_db) else 0.0


def _matmul_output_noise(node, activations: dict, weights: dict) -> float | None:
    """The noise-to-signal power a MatMul's (or Gemm's) quantized input and weight put on its output: (quantized x
    @ quantized W) against (x @ W), x before and after its QuantizeLinear/DequantizeLinear, W fp32 and dequantized.
    None unless the node takes an activation and a 2-D weight (the caller then measures the inputs).

    Judged on the inputs instead, one outlier channel hides the rest: it sets the activation's int8 scale, holds
    nearly all of its power, and leaves the other channels' destruction below the noise floor of a clean tensor,
    while the weights that follow (which learned to ignore the outlier) pass exactly that destruction on."""
    activation, weight = node.input[0], node.input[1]
    if activation not in activations or weight not in weights or weights[weight]["float"].ndim != 2:
        return None
    attributes = {attribute.name: attribute.i for attribute in node.attribute}
    if node.op_type == "Gemm" and attributes.get("transA", 0):
        return None
    transposed = node.op_type == "Gemm" and attributes.get("transB", 0)  # Gemm's bias adds no quantization noise
    pre, post = activations[activation]["pre_qdq"], activations[activation]["post_qdq"]
    exact_weight = np.asarray(weights[weight]["float"], np.float64)
    quantized_weight = np.asarray(weights[weight]["dequantized"], np.float64)
    if transposed:
        exact_weight, quantized_weight = exact_weight.T, quantized_weight.T
    width = exact_weight.shape[0]
    if not pre or not post or pre[0].size % width or post[0].size != pre[0].size:
        return None
    # collect_activations keeps each activation flat: its rows are the weight's input width
    x = np.asarray(pre[0], np.float64).reshape(-1, width)
    quantized_x = np.asarray(post[0], np.float64).reshape(-1, width)
    exact = x @ exact_weight
    power = float(np.sum(exact ** 2))
    noise = float(np.sum((quantized_x @ quantized_weight - exact) ** 2))
    return noise / power if power > 0 else 0.0


def rank_sensitive_nodes(reference: Path, qdq_model: Path, inputs: dict[str, np.ndarray], op_types: list[str],
                         excluded: list[str], input_axes: dict | None = None) -> list[tuple[str, float]]:
    """Quantized nodes, noisiest first: (node name, noise-to-signal power of its output for a MatMul or Gemm with a
    weight, of its quantized inputs otherwise)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         compute_weight_error, create_activation_matching,
                                                         create_weight_matching,
                                                         modify_model_output_intermediate_tensors)

    sample = layout.take(inputs, slice(0, RANKING_EXAMPLES), input_axes)
    with tempfile.TemporaryDirectory() as scratch:
        augmented_float, augmented_qdq = Path(scratch) / "float.onnx", Path(scratch) / "qdq.onnx"
        modify_model_output_intermediate_tensors(reference, augmented_float)
        modify_model_output_intermediate_tensors(qdq_model, augmented_qdq)
        float_activations = collect_activations(str(augmented_float), BatchReader([sample]))
        qdq_activations = collect_activations(str(augmented_qdq), BatchReader([sample]))
    activations = create_activation_matching(qdq_activations, float_activations)
    weights = create_weight_matching(str(reference), str(qdq_model))
    activation_error, weight_error = compute_activation_error(activations), compute_weight_error(weights)
    scores = []
    for node in onnx.load(str(reference), load_external_data=False).graph.node:
        if node.op_type not in op_types or node.name in excluded:
            continue
        activation_noise = sum(_noise(activation_error[name]["qdq_err"])
                               for name in node.input if name in activation_error)
        weight_noise = sum(_noise(weight_error[name]) for name in node.input if name in weight_error)
        output_noise = _matmul_output_noise(node, activations, weights) if node.op_type in ("MatMul", "Gemm") \
            else None
        noise = output_noise if output_noise is not None else activation_noise + weight_noise
        if noise > 0:
            # Weight-only nodes (embedding lookups) rank last: a LayerNorm follows them and absorbs
            # their noise, while their fp32 tables cost the most bytes.
            scores.append((node.name, noise, activation_noise > 0))
    scores.sort(key=lambda item: (not item[2], -item[1], item[0]))
    return [(name, noise) for name, noise, _ in scores]


def quantized_op_types(mode: str, op_types: list[str]) -> list[str]:
    """The op types among `op_types` the mode's quantizer quantizes and the QDQ probe can measure: a dynamic build
    leaves Gemm fp32 (onnxruntime's dynamic registry has no Gemm), so ranking it would spend fallback steps on
    nodes already fp32."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry
    return [op for op in op_types if op not in DYNAMIC_IN_STATIC
            and (mode != "dynamic" or op in IntegerOpsRegistry)]


def unmeasured_nodes(reference: Path, op_types: list[str], taken: list[str]) -> list[str]:
    """Quantized nodes the probe cannot rank (DYNAMIC_IN_STATIC: the fused transformer operators, which have no QDQ
    rule, so every build quantizes them dynamically), in graph order: taken out after every ranked
    node, so a build whose noise sits in them can still reach its budget."""
    import onnx
    return [node.name for node in onnx.load(str(reference), load_external_data=False).graph.node
            if node.op_type in DYNAMIC_IN_STATIC and node.op_type in op_types and node.name not in taken]


def _qdq_probe(cfg, manifest: Manifest, excluded: list[str], scratch: Path) -> Path:
    """A QDQ model to rank nodes on: the artifact itself, or a static QDQ twin of a dynamic one."""
    from dataclasses import replace

    from pipeline.builder.calibrate import load_batches
    from pipeline.builder.quantize import quantize_onnx

    if manifest.quantization.mode != "dynamic":
        return manifest.path(manifest.model_file)
    probe = scratch / "probe.onnx"
    record = replace(manifest.quantization, mode="static", quant_format="QDQ", calibration_method="minmax")
    quantize_onnx(record, manifest.path(manifest.reference_file), probe,
                  load_batches(manifest.path(manifest.calibration_file)),
                  QuantizerKnobs.from_config(cfg).with_fallback(excluded), quiet=True, qdq_only=True)
    return probe


def run(cfg, manifest: Manifest) -> Manifest:
    try:
        return _gate(cfg, manifest)
    finally:
        _SESSIONS.clear()


def streaming_layout(manifest: Manifest, verify_cfg, n_examples: int) -> dict:
    """The manifest's batch_axes record, with the steps of a streamed run when the model carries a state."""
    if not manifest.batch_axes.get("state"):
        return manifest.batch_axes
    return {**manifest.batch_axes, "steps": max(1, min(int(verify_cfg.stream_steps), n_examples))}


def _gate(cfg, manifest: Manifest) -> Manifest:
    from pipeline.builder import quantize
    from pipeline.builder.calibrate import load_inputs

    kind, verify_cfg = manifest.model_kind, cfg.verify
    input_axes = manifest.batch_axes.get("inputs")
    validation, validation_labels = load_inputs(manifest.path(manifest.validation_file), manifest.input_names)
    heldout, heldout_labels = load_inputs(manifest.path(manifest.heldout_file), manifest.input_names)
    streaming = streaming_layout(manifest, verify_cfg, layout.count(validation, input_axes))
    reference_validation = run_model(manifest.path(manifest.reference_file), validation, streaming)
    reference_heldout = run_model(manifest.path(manifest.reference_file), heldout, streaming)
    if streaming.get("state") and validation_labels is not None:  # whole sequences only
        validation_labels = validation_labels[:len(reference_validation[0])]
        heldout_labels = heldout_labels[:len(reference_heldout[0])] if heldout_labels is not None else None
    validation_mask, heldout_mask = validation.get("attention_mask"), heldout.get("attention_mask")
    names = graph_io(manifest.path(manifest.reference_file))[1]
    reading = fidelity.output_reading(dict(zip(names, reference_validation)), kind, validation_mask, verify_cfg)
    fp32 = metrics(kind, reference_validation, reference_validation, validation_labels, validation_mask, reading,
                   names, verify_cfg.threshold)
    if validation_labels is not None and "accuracy" not in fp32:
        check_labels_judged(kind, validation_labels, reference_validation, manifest.output_names)
    manifest.fp32_metrics = {f"validation_{k}": v for k, v in fp32.items()}
    threshold = verify_cfg.threshold
    if heldout_labels is not None and (
            correct := heldout_accuracy(kind, reference_heldout, heldout_labels, heldout_mask, threshold)) is not None:
        manifest.fp32_metrics["test_accuracy"] = correct

    def measure() -> tuple[bool, str, dict[str, float]]:
        outputs = run_model(manifest.path(manifest.model_file), validation, streaming)
        quantized, holders = named_metrics(kind, outputs, reference_validation, validation_labels, validation_mask,
                                           reading, names, verify_cfg.threshold)
        ok, description = within_budget(kind, quantized, fp32, verify_cfg, holders)
        if streaming.get("state"):  # the carried state's drift over the sequences, held as verification holds it
            drift, problems = fidelity.state_drift(dict(zip(names, outputs)), dict(zip(names, reference_validation)),
                                                   streaming["state"], streaming["steps"], verify_cfg.max_state_drift)
            quantized["state_drift"] = max((figures["worst"] for figures in drift.values()), default=0.0)
            ok, description = ok and not problems, "; ".join([description, *problems]) if problems else (
                f"{description}; state drift {quantized['state_drift']:.3g} (budget <= {verify_cfg.max_state_drift})")
        return ok, description, quantized

    ok, description, quantized = measure()
    fallback = FallbackRecord(budget=budget_text(fp32, verify_cfg))
    fallback.steps.append({"excluded_nodes": 0, **quantized})
    say(f"gate: validation {description}: {'within budget' if ok else 'OVER BUDGET'}")
    limit, per_step = int(verify_cfg.fallback_max_excluded_nodes), max(1, int(verify_cfg.fallback_nodes_per_step))
    can_fall_back = verify_cfg.build_gate and manifest.quantization.mode in ("static", "dynamic")
    op_types = list(QuantizerKnobs.from_config(cfg).for_graph(manifest.path(manifest.reference_file),
                                                              manifest.quantization.mode).op_types)
    nothing_left = False
    while not ok and can_fall_back and len(fallback.excluded_nodes) < limit:
        with tempfile.TemporaryDirectory() as scratch:
            probe = _qdq_probe(cfg, manifest, fallback.excluded_nodes, Path(scratch))
            ranked = [name for name, _ in rank_sensitive_nodes(
                manifest.path(manifest.reference_file), probe, validation,
                quantized_op_types(manifest.quantization.mode, op_types),
                fallback.excluded_nodes, input_axes)]
        wanted = set(cfg.mode.nodes_to_quantize)  # empty: every node of the op types
        ranked += [name for name in unmeasured_nodes(
            manifest.path(manifest.reference_file), op_types,
            fallback.excluded_nodes + ranked + list(cfg.mode.nodes_to_exclude)) if not wanted or name in wanted]
        chosen = ranked[: min(per_step, limit - len(fallback.excluded_nodes))]
        if not chosen:
            nothing_left = True
            break
        fallback.excluded_nodes.extend(chosen)
        mode = manifest.quantization.mode
        where = "dynamic int8 for MatMuls, fp32 otherwise" if mode == "static" else "fp32"
        say(f"gate: taking {', '.join(chosen)} out of {mode} int8 (the noisiest quantized nodes; {where}); "
            f"requantizing")
        manifest = quantize.run(cfg, manifest, fallback_nodes=fallback.excluded_nodes)
        fallback.dynamic_nodes = [name for name in fallback.excluded_nodes
                                  if name in manifest.quantization.dynamic_nodes]
        ok, description, quantized = measure()
        fallback.steps.append({"excluded_nodes": len(fallback.excluded_nodes), "added": chosen, **quantized})
        say(f"gate: with {len(fallback.excluded_nodes)} node(s) out of {mode} int8 "
            f"({len(fallback.dynamic_nodes)} dynamic): {description}")
    fallback.within_budget = ok
    manifest.fallback = fallback
    manifest.int8_metrics = {f"validation_{k}": v for k, v in quantized.items()}
    if heldout_labels is not None:
        heldout_outputs = run_model(manifest.path(manifest.model_file), heldout, streaming)
        if (correct := heldout_accuracy(kind, heldout_outputs, heldout_labels, heldout_mask, threshold)) is not None:
            manifest.int8_metrics["test_accuracy"] = correct
    if not ok and verify_cfg.build_gate:
        steps = "; ".join(f"{s['excluded_nodes']} node(s) out of {manifest.quantization.mode} int8: " + ", ".join(
            f"{k} {v:.4f}" for k, v in s.items() if isinstance(v, float)) for s in fallback.steps)
        mode = manifest.quantization.mode
        if mode == "qat":
            hint = "QAT has no fp32 fallback; train longer (mode.qat_steps) or use mode=static"
        elif nothing_left:
            hint = (f"no quantized node is left to take out of {mode} int8 (the fallback took out "
                    f"{', '.join(fallback.excluded_nodes) or 'none'}); keep nodes fp32 with "
                    f"mode.nodes_to_exclude=[...], calibrate with more data, or relax the budget in verify/")
        else:
            hint = (f"stopped at verify.fallback_max_excluded_nodes={limit}; raise it, calibrate with more data, or "
                    f"relax the budget in verify/")
        raise OverBudget(f"the int8 model is over its accuracy budget on the validation split: {description}. "
                         f"Steps: {steps}. {hint}")
    return manifest

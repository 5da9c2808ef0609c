"""Stage 3b, gate: hold the int8 model to the accuracy budget at build time, with a fallback.

A stateful model (manifest.batch_axes["state"]) runs its validation chunks streamed, as verification does, and
the drift of its carried state is held to verify.max_state_drift too (docs/streaming.md).

The budget is the verify thresholds (`verify/`), on the figures verification judges (pipeline/builder/budget.py),
measured on the validation split; the decision names the output or group that holds each worst figure. Over
budget, the quantized nodes that add the most quantization noise (pipeline/builder/ranking.py) leave the mode's
quantizer, a few per step, until the budget holds or the limit is reached; then the build fails with the numbers.
A dynamic build keeps them fp32; a static build runs its MatMuls among them as dynamic int8 (activation ranges per
run) and keeps the others fp32.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration import layout
from pipeline.builder import quantize
from pipeline.builder.budget import (budget_text, check_labels_judged, heldout_accuracy, metrics, named_metrics,
                                     within_budget)
from pipeline.builder.calibrate import load_inputs
from pipeline.builder.quantize import QuantizerKnobs
from pipeline.builder.ranking import qdq_probe, quantized_op_types, rank_sensitive_nodes, unmeasured_nodes
from pipeline.errors import BuildFailed
from pipeline.manifest import FallbackRecord, Manifest
from pipeline.progress import say
from pipeline.verify import fidelity
from pipeline.verify.child_onnx import stream_run
from pipeline.verify.onnx import graph_io


class OverBudget(BuildFailed):
    """The int8 model is over its accuracy budget, the fallback done: mode=auto keeps another candidate."""


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


@dataclass
class Judged:
    """The validation and held-out splits, fp32's outputs and figures on them: what every measurement compares
    the int8 model with."""

    kind: str
    verify_cfg: object
    validation: dict[str, np.ndarray]
    labels: np.ndarray | None
    mask: np.ndarray | None
    heldout: dict[str, np.ndarray]
    heldout_labels: np.ndarray | None
    heldout_mask: np.ndarray | None
    streaming: dict
    reference: list[np.ndarray]  # fp32's outputs on the validation split
    names: list[str]
    reading: object  # fidelity.Reading of fp32's outputs
    fp32: dict[str, float]


def judge_fp32(manifest: Manifest, verify_cfg) -> Judged:
    """Load the splits, run fp32 on them and record its figures (manifest.fp32_metrics)."""
    kind = manifest.model_kind
    validation, labels = load_inputs(manifest.path(manifest.validation_file), manifest.input_names)
    heldout, heldout_labels = load_inputs(manifest.path(manifest.heldout_file), manifest.input_names)
    streaming = streaming_layout(manifest, verify_cfg, layout.count(validation, manifest.batch_axes.get("inputs")))
    reference = run_model(manifest.path(manifest.reference_file), validation, streaming)
    reference_heldout = run_model(manifest.path(manifest.reference_file), heldout, streaming)
    if streaming.get("state") and labels is not None:  # whole sequences only
        labels = labels[:len(reference[0])]
        heldout_labels = heldout_labels[:len(reference_heldout[0])] if heldout_labels is not None else None
    mask, heldout_mask = validation.get("attention_mask"), heldout.get("attention_mask")
    names = graph_io(manifest.path(manifest.reference_file))[1]
    reading = fidelity.output_reading(dict(zip(names, reference)), kind, mask, verify_cfg)
    fp32 = metrics(kind, reference, reference, labels, mask, reading, names, verify_cfg.threshold)
    if labels is not None and "accuracy" not in fp32:
        check_labels_judged(kind, labels, reference, manifest.output_names)
    manifest.fp32_metrics = {f"validation_{k}": v for k, v in fp32.items()}
    if heldout_labels is not None and (correct := heldout_accuracy(
            kind, reference_heldout, heldout_labels, heldout_mask, verify_cfg.threshold)) is not None:
        manifest.fp32_metrics["test_accuracy"] = correct
    return Judged(kind, verify_cfg, validation, labels, mask, heldout, heldout_labels, heldout_mask, streaming,
                  reference, names, reading, fp32)


def measure(manifest: Manifest, judged: Judged) -> tuple[bool, str, dict[str, float]]:
    """The int8 model's figures on the validation split: within budget, in words, and the figures."""
    verify_cfg, streaming, names = judged.verify_cfg, judged.streaming, judged.names
    outputs = run_model(manifest.path(manifest.model_file), judged.validation, streaming)
    quantized, holders = named_metrics(judged.kind, outputs, judged.reference, judged.labels, judged.mask,
                                       judged.reading, names, verify_cfg.threshold)
    ok, description = within_budget(judged.kind, quantized, judged.fp32, verify_cfg, holders)
    if streaming.get("state"):  # the carried state's drift over the sequences, held as verification holds it
        drift, problems = fidelity.state_drift(dict(zip(names, outputs)), dict(zip(names, judged.reference)),
                                               streaming["state"], streaming["steps"], verify_cfg.max_state_drift)
        quantized["state_drift"] = max((figures["worst"] for figures in drift.values()), default=0.0)
        ok, description = ok and not problems, "; ".join([description, *problems]) if problems else (
            f"{description}; state drift {quantized['state_drift']:.3g} (budget <= {verify_cfg.max_state_drift})")
    return ok, description, quantized


def next_nodes(cfg, manifest: Manifest, judged: Judged, excluded: list[str], op_types: list[str]) -> list[str]:
    """The quantized nodes to take out next, noisiest first: the ranked ones, then those the probe cannot rank."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = qdq_probe(cfg, manifest, excluded, Path(scratch))
        ranked = [name for name, _ in rank_sensitive_nodes(
            manifest.path(manifest.reference_file), probe, judged.validation,
            quantized_op_types(manifest.quantization.mode, op_types), excluded,
            manifest.batch_axes.get("inputs"))]
    wanted = set(cfg.mode.nodes_to_quantize)  # empty: every node of the op types
    return ranked + [name for name in unmeasured_nodes(
        manifest.path(manifest.reference_file), op_types, excluded + ranked + list(cfg.mode.nodes_to_exclude))
        if not wanted or name in wanted]


def fall_back(cfg, manifest: Manifest, judged: Judged, fallback: FallbackRecord, measured: tuple) -> tuple:
    """Take the noisiest nodes out of int8, a few per step, requantizing and measuring after each, until the budget
    holds or verify.fallback_max_excluded_nodes is reached; returns (manifest, the last measurement, whether no node
    was left to take out)."""
    verify_cfg, mode = judged.verify_cfg, manifest.quantization.mode
    limit, per_step = int(verify_cfg.fallback_max_excluded_nodes), max(1, int(verify_cfg.fallback_nodes_per_step))
    op_types = list(QuantizerKnobs.from_config(cfg).for_graph(manifest.path(manifest.reference_file), mode).op_types)
    while not measured[0] and len(fallback.excluded_nodes) < limit:
        chosen = next_nodes(cfg, manifest, judged, fallback.excluded_nodes, op_types)[
            : min(per_step, limit - len(fallback.excluded_nodes))]
        if not chosen:
            return manifest, measured, True
        fallback.excluded_nodes.extend(chosen)
        where = "dynamic int8 for MatMuls, fp32 otherwise" if mode == "static" else "fp32"
        say(f"gate: taking {', '.join(chosen)} out of {mode} int8 (the noisiest quantized nodes; {where}); "
            f"requantizing")
        manifest = quantize.run(cfg, manifest, fallback_nodes=fallback.excluded_nodes)
        fallback.dynamic_nodes = [name for name in fallback.excluded_nodes
                                  if name in manifest.quantization.dynamic_nodes]
        measured = measure(manifest, judged)
        fallback.steps.append({"excluded_nodes": len(fallback.excluded_nodes), "added": chosen, **measured[2]})
        say(f"gate: with {len(fallback.excluded_nodes)} node(s) out of {mode} int8 "
            f"({len(fallback.dynamic_nodes)} dynamic): {measured[1]}")
    return manifest, measured, False


def over_budget(manifest: Manifest, fallback: FallbackRecord, description: str, nothing_left: bool,
                limit: int) -> OverBudget:
    """The refusal of an int8 model over budget: its figures, each fallback step's, and what to do."""
    mode = manifest.quantization.mode
    steps = "; ".join(f"{s['excluded_nodes']} node(s) out of {mode} int8: " + ", ".join(
        f"{k} {v:.4f}" for k, v in s.items() if isinstance(v, float)) for s in fallback.steps)
    if mode == "qat":
        hint = "QAT has no fp32 fallback; train longer (mode.qat_steps) or use mode=static"
    elif nothing_left:
        hint = (f"no quantized node is left to take out of {mode} int8 (the fallback took out "
                f"{', '.join(fallback.excluded_nodes) or 'none'}); keep nodes fp32 with "
                f"mode.nodes_to_exclude=[...], calibrate with more data, or relax the budget in verify/")
    else:
        hint = (f"stopped at verify.fallback_max_excluded_nodes={limit}; raise it, calibrate with more data, or "
                f"relax the budget in verify/")
    return OverBudget(f"the int8 model is over its accuracy budget on the validation split: {description}. "
                      f"Steps: {steps}. {hint}")


def _gate(cfg, manifest: Manifest) -> Manifest:
    verify_cfg = cfg.verify
    judged = judge_fp32(manifest, verify_cfg)
    measured = measure(manifest, judged)
    fallback = FallbackRecord(budget=budget_text(judged.fp32, verify_cfg))
    fallback.steps.append({"excluded_nodes": 0, **measured[2]})
    say(f"gate: validation {measured[1]}: {'within budget' if measured[0] else 'OVER BUDGET'}")
    nothing_left = False
    if verify_cfg.build_gate and manifest.quantization.mode in ("static", "dynamic"):
        manifest, measured, nothing_left = fall_back(cfg, manifest, judged, fallback, measured)
    ok, description, quantized = measured
    fallback.within_budget = ok
    manifest.fallback = fallback
    manifest.int8_metrics = {f"validation_{k}": v for k, v in quantized.items()}
    if judged.heldout_labels is not None:
        outputs = run_model(manifest.path(manifest.model_file), judged.heldout, judged.streaming)
        if (correct := heldout_accuracy(judged.kind, outputs, judged.heldout_labels, judged.heldout_mask,
                                        verify_cfg.threshold)) is not None:
            manifest.int8_metrics["test_accuracy"] = correct
    if not ok and verify_cfg.build_gate:
        raise over_budget(manifest, fallback, description, nothing_left, int(verify_cfg.fallback_max_excluded_nodes))
    return manifest

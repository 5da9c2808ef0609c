"""How close an artifact's outputs are: to the fp32 reference, and to the same artifact on the reference CPU.

Every output of the model is judged, whatever its rank:

- element-wise, on the output's own scale (the RMS of the fp32 reference over the positions that count),
  so a few destroyed values show even when a whole-vector cosine stays at 0.9999;
- by its kind:
  - `logits` (a classifier: argmax along the last axis, at every position of a token classifier);
  - `label_sets` (a multi-label classifier's independent yes/no labels: a logit above 0, or above 0.5 for outputs
    that are probabilities; the share of samples whose set of labels equals fp32's, held to the top-1 agreement
    bound; with multi-hot labels, subset accuracy and macro-F1 over the labels);
  - `score` (one value per sample, a reranker's or a regression's score or a one-logit classifier, or one value
    per token, `(batch, tokens, 1)`; the cosine of one number is only its sign, so scores are judged by their
    correlation with fp32's across the samples, or across the non-padding tokens, held to the cosine-mean bound);
  - `ids` (an integer output: a class id from ArgMax, a tag per token; the share of values equal to fp32's, at
    non-padding positions, held to the top-1 agreement bound);
  - `token_states` (an output whose first two axes are the batch and the sequence of an `attention_mask`: cosine
    per non-padding token, and after pooling when asked);
  - `events` (model.kind=event: one score per chunk of a detector; the share of chunks whose decision, score above
    `verify.threshold`, equals fp32's, held to the top-1 agreement bound; with 0/1 labels, accuracy of both);
  - `vector` (cosine per sample over the flattened output).
  Models of kind `embedding` and `generic` (a model a user brings, whose outputs mean nothing quantgate knows) are
  judged as token states or vectors; only `classifier` gives logits and only `multi_label` label sets;
- in groups: parts of one output on different scales (box pixels beside class probabilities) are also judged each
  as an output of its own, on its own scale (pipeline.verify.groups);
- a detector (`model.kind=detector`) also by its detections after the score threshold and NMS, matched to fp32's
  (pipeline.verify.detection): recall, precision, mean IoU.

Near-empty samples: where fp32's output of a sample is near zero (a text detector's probability map of a page
without text, ~1e-7), its direction is rounding noise and a cosine says nothing. A sample (a token, for token
states) whose fp32 RMS is under `verify.near_empty_ratio` of the output's scale is judged by magnitude instead: its
RMS error to fp32 in units of the output's scale, held to what the worst-cosine bound lets a typical sample be off
by, sqrt(2 (1 - min_cosine_worst)) (0.32 at 0.95). The output's scale is the RMS over all samples, never below
`verify.near_zero` (absolute): an output near zero on every input is judged in units of that floor.

Per-CPU numerics: int8 kernels differ by ISA (u8s8 without VNNI saturates in VPMADDUBSW), so each
profile's outputs are also compared with the same artifact's outputs on the reference CPU, on the
same samples. Kernel-to-kernel noise is not small for dynamic int8 (fp32 parts round differently by
ISA, and every layer quantizes its activations again: MiniLM differs by about half its output scale
between SSE and AVX2 kernels) but it leaves the error to fp32 where it was; saturation makes it many
times worse. So a profile fails when its largest error to fp32 exceeds the reference CPU's by more
than `verify.max_cpu_excess_error` (in units of the output's scale) and by more than
`verify.max_cpu_error_ratio` times. The bounds and the noise they were set from: docs/verification.md.

numpy only: the parent imports this, never a child.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.verify.detection import DetectionSettings, detection_figures, detection_problems
from pipeline.verify.groups import detection_settings, find_groups, with_groups

IDS, LABEL_SETS, LOGITS, SCORE, TOKEN_STATES, VECTOR = "ids", "label_sets", "logits", "score", "token_states", "vector"
EVENTS = "events"
# The figure each kind of decision is held to `verify.min_top1_agreement` by, and its name in words.
AGREEMENT = {LOGITS: ("top1_agreement", "top-1 agreement"), IDS: ("top1_agreement", "share of values equal to fp32's"),
             LABEL_SETS: ("label_set_agreement", "label-set agreement"),
             EVENTS: ("decision_agreement", "agreement of the per-chunk decisions (score above verify.threshold)")}
WORST_SHOWN = 5  # worst values listed per profile in verify.json and the signoff
# A correlation of fewer values says nothing (two are always +-1, one has none): such scores are judged element-wise
# only (one emulated sample, a padding check of two).
MIN_SCORE_VALUES = 3


@dataclass
class Limits:
    """The bounds one comparison is held to (from `verify.*`)."""

    min_cosine_mean: float | None  # None: not judged on these samples (see per_sample_only)
    min_cosine_worst: float
    min_top1_agreement: float | None
    max_abs_error: float | None = None
    max_scaled_error: float | None = None
    pooling: str = "none"  # mean | cls | none: token_states also judged after pooling
    # Against labels (when the data has them): fp32 figure minus int8 figure, at most this; None = not judged.
    max_accuracy_drop: float | None = None
    max_macro_f1_drop: float | None = None
    threshold: float = 0.5  # model.kind=event: a chunk is an event where its score is above this
    # Near-empty samples (the module's docstring): the share of the output's scale under which a sample is judged by
    # magnitude (0: never), and the largest RMS error such a sample may have, in units of the output's scale.
    near_empty_ratio: float = 0.0
    max_near_empty_error: float | None = None
    # Detectors (pipeline.verify.detection): set figures over every sample; None = not judged.
    min_detection_recall: float | None = None
    min_detection_precision: float | None = None
    min_detection_mean_iou: float | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items()}

    def per_sample_only(self) -> "Limits":
        """The bounds that hold for any subset of samples. Means and agreement rates are properties of the
        whole held-out set (judged on the native run); on the few samples chosen for emulation, the hardest
        ones, they would be biased low, so there only per-sample bounds (and the per-CPU comparison) apply: the
        set bounds are None, and verify.json and the signoff say they were not judged there."""
        return Limits(None, self.min_cosine_worst, None, self.max_abs_error, self.max_scaled_error, self.pooling,
                      threshold=self.threshold, near_empty_ratio=self.near_empty_ratio,
                      max_near_empty_error=self.max_near_empty_error)


def macro_f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The mean over classes of F1 (classes that occur in the labels or the predictions), on 1-D arrays."""
    classes = np.union1d(np.unique(labels), np.unique(predicted))
    if classes.size == 0:
        return 1.0
    scores = []
    for cls in classes:
        true_positive = float(np.sum((predicted == cls) & (labels == cls)))
        denominator = float(np.sum(predicted == cls) + np.sum(labels == cls))
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


def classification_figures(output: np.ndarray, reference: np.ndarray, mask: np.ndarray | None,
                           labels: np.ndarray | None) -> dict[str, float]:
    """Top-1 agreement with fp32 (argmax along the last axis, at every non-padding position of a per-token
    output), and with labels accuracy and macro-F1 of both (positions labelled -100 are not counted)."""
    predicted, expected = output.argmax(-1), reference.argmax(-1)
    tokens = token_mask(mask, output)
    counted = tokens if tokens is not None else np.ones(predicted.shape, bool)
    agree = (predicted == expected)[counted]
    figures = {"top1_agreement": float(agree.mean()) if agree.size else 1.0}
    if labels is not None and labels.shape == predicted.shape:
        counted = counted & (labels >= 0)  # -100: positions a token classifier ignores
        if counted.any():
            figures["accuracy"] = float((predicted == labels)[counted].mean())
            figures["reference_accuracy"] = float((expected == labels)[counted].mean())
            figures["macro_f1"] = macro_f1(predicted[counted], labels[counted])
            figures["reference_macro_f1"] = macro_f1(expected[counted], labels[counted])
    return figures


def label_decisions(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each label's yes or no, for the output and fp32's: a logit above 0 (sigmoid above 0.5), or, when fp32's values
    all lie in [0, 1] (a graph that applies the sigmoid itself), a probability above 0.5."""
    probabilities = reference.size > 0 and float(reference.min()) >= 0.0 and float(reference.max()) <= 1.0
    threshold = 0.5 if probabilities else 0.0
    return output > threshold, reference > threshold


def binary_macro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The mean over labels (last axis) of each label's F1, over labels that occur in the truth or the predictions,
    on (examples, labels) boolean arrays."""
    true_positive = (predicted & truth).sum(0).astype(np.float64)
    denominator = (predicted.sum(0) + truth.sum(0)).astype(np.float64)
    occurring = denominator > 0
    return float(np.mean(2 * true_positive[occurring] / denominator[occurring])) if occurring.any() else 1.0


def multi_label_figures(output: np.ndarray, reference: np.ndarray, mask: np.ndarray | None,
                        labels: np.ndarray | None) -> dict[str, float]:
    """The share of samples (non-padding tokens, per token) whose set of labels equals fp32's, and of single label
    decisions; with multi-hot labels of the output's shape, subset accuracy (the whole set right) and macro-F1
    over the labels, of both."""
    predicted, expected = label_decisions(output, reference)
    tokens = token_mask(mask, output)
    counted = tokens if tokens is not None else np.ones(predicted.shape[:-1], bool)
    same = predicted == expected
    sets = same.all(-1)[counted]
    figures = {"label_set_agreement": float(sets.mean()) if sets.size else 1.0,
               "label_agreement": float(same[counted].mean()) if sets.size else 1.0}
    if labels is not None and labels.shape == predicted.shape and counted.any():
        truth = labels[counted] > 0
        for prefix, decided in (("", predicted[counted]), ("reference_", expected[counted])):
            figures[f"{prefix}accuracy"] = float((decided == truth).all(-1).mean())
            figures[f"{prefix}macro_f1"] = binary_macro_f1(decided, truth)
    return figures


@dataclass
class Judgement:
    """Figures per output, a flat summary (the worst of each figure over outputs), and what broke a bound."""

    by_output: dict[str, dict] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def token_mask(mask: np.ndarray | None, output: np.ndarray) -> np.ndarray | None:
    """The attention mask when this output is per token (first two axes = the mask's), else None."""
    if mask is None or output.ndim < 3 or output.shape[:2] != mask.shape[:2]:
        return None
    return mask.astype(bool)


def score_values(output: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """The values of a score output, flat: one per sample ((batch,) or (batch, 1)), or one per non-padding token
    ((batch, tokens, 1) under an attention mask); None for any other output."""
    if output.ndim >= 1 and len(output) > 0 and output.size == len(output):
        return output.reshape(-1)
    tokens = token_mask(mask, output)
    if tokens is not None and output.size == tokens.size:
        return output.reshape(tokens.shape)[tokens]
    return None


def score_correlation(output: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of the scores with fp32's (flat arrays of the same values); scores that do not vary
    agree (1.0) only where they are equal."""
    a, b = output.reshape(-1).astype(np.float64), reference.reshape(-1).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b, rtol=1e-5, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def output_kind(output: np.ndarray, model_kind: str, mask: np.ndarray | None) -> str:
    """How an output is judged (the module's docstring): by its dtype, the model's kind and its shape."""
    if not np.issubdtype(output.dtype, np.floating):
        return IDS
    if model_kind == "multi_label" and output.ndim >= 2:
        return LABEL_SETS
    if model_kind == "classifier" and output.ndim >= 2 and output.shape[-1] > 1:
        return LOGITS
    if model_kind == "event" and score_values(output, mask) is not None:
        return EVENTS
    if score_values(output, mask) is not None:
        return SCORE
    if token_mask(mask, output) is not None:
        return TOKEN_STATES
    return VECTOR


def valid_values(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The values that count: non-padding positions of a per-token output, everything otherwise."""
    tokens = token_mask(mask, array)
    return array[tokens] if tokens is not None else array


def output_scale(reference: np.ndarray, mask: np.ndarray | None, floor: float = 1e-12) -> float:
    """The RMS of the fp32 output over the positions that count, at least `floor` (verify.near_zero): the unit of
    element-wise errors."""
    values = valid_values(reference, mask).astype(np.float64)
    return max(float(np.sqrt(np.mean(values ** 2))) if values.size else 0.0, floor, 1e-12)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two 2-D arrays; two all-zero rows count as identical."""
    dot = (a * b).sum(1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    return np.where(both_zero, 1.0, dot / np.maximum(norms, 1e-30))


def _directions(a: np.ndarray, b: np.ndarray, scale: float | None, ratio: float) -> dict[str, float]:
    """Cosine mean and worst of the rows of two 2-D arrays (samples or tokens); rows whose fp32 RMS is under `ratio`
    times `scale` are near-empty: judged by their RMS error in units of `scale` instead (the module's docstring)."""
    empty = np.zeros(len(b), bool)
    if scale is not None and ratio > 0 and b.shape[1]:
        empty = np.sqrt(np.mean(b ** 2, axis=1)) < ratio * scale
    figures = {}
    if (~empty).any():
        cosine = _cosines(a[~empty], b[~empty])
        figures = {"cosine_mean": float(cosine.mean()), "cosine_worst": float(cosine.min())}
    if empty.any():
        errors = np.sqrt(np.mean((a[empty] - b[empty]) ** 2, axis=1)) / scale
        figures |= {"near_empty_samples": int(empty.sum()), "near_empty_error_worst": float(errors.max())}
    return figures


def _pool(array: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    if how == "cls":
        return array[:, 0].reshape(len(array), -1)
    weights = mask.astype(np.float64).reshape(*mask.shape[:2], *([1] * (array.ndim - 2)))
    return ((array * weights).sum(1) / np.maximum(weights.sum(1), 1)).reshape(len(array), -1)


def event_figures(output: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
                  threshold: float) -> dict[str, float]:
    """A detector's per-chunk decisions (score above `threshold`) against fp32's, and with 0/1 labels (one per
    chunk) the accuracy of both."""
    decided, expected = output.reshape(-1) > threshold, reference.reshape(-1) > threshold
    figures = {"decision_agreement": float((decided == expected).mean()) if decided.size else 1.0,
               "event_rate": float(decided.mean()) if decided.size else 0.0, "threshold": threshold}
    if labels is not None and labels.size == decided.size:
        truth = labels.reshape(-1) > 0
        figures["accuracy"], figures["reference_accuracy"] = float((decided == truth).mean()), float(
            (expected == truth).mean())
    return figures


def kind_figures(kind: str, output: np.ndarray, reference: np.ndarray, mask: np.ndarray | None,
                 labels: np.ndarray | None, pooling: str = "none", scale: float | None = None,
                 near_empty_ratio: float = 0.0, threshold: float = 0.5) -> dict[str, float]:
    """The figures an output of this kind is judged by (float64 arrays of one shape): top-1 agreement (and
    accuracy and macro-F1 against labels) for logits, the correlation for scores, cosine mean and worst per
    sample or per non-padding token otherwise (and after pooling, when asked, for token states), near-empty
    samples or tokens by magnitude on `scale`."""
    if kind == LOGITS:
        return classification_figures(output, reference, mask, labels)
    if kind == LABEL_SETS:
        return multi_label_figures(output, reference, mask, labels)
    if kind == EVENTS:
        return event_figures(output, reference, labels, threshold)
    if kind == IDS:
        equal = output == reference
        if mask is not None and output.ndim >= 2 and output.shape[:2] == mask.shape:
            equal = equal[mask.astype(bool)]
        return {"top1_agreement": float(equal.mean()) if equal.size else 1.0}
    if kind == SCORE:
        values = score_values(output, mask)
        if values.size < MIN_SCORE_VALUES:
            return {}
        return {"score_correlation": score_correlation(values, score_values(reference, mask))}
    tokens = token_mask(mask, output) if kind == TOKEN_STATES else None
    if tokens is not None:
        count = int(tokens.sum())
        rows = output[tokens].reshape(count, -1), reference[tokens].reshape(count, -1)
    else:
        rows = output.reshape(len(output), -1), reference.reshape(len(reference), -1)
    figures = _directions(*rows, scale, near_empty_ratio)
    if tokens is not None and pooling in ("mean", "cls"):
        pooled = _cosines(_pool(output, tokens, pooling), _pool(reference, tokens, pooling))
        figures |= {"pooled_cosine_mean": float(pooled.mean()), "pooled_cosine_worst": float(pooled.min()),
                    "pooling": pooling}
    return figures


def judge_output(name: str, kind: str, output: np.ndarray, reference: np.ndarray, mask: np.ndarray | None,
                 labels: np.ndarray | None, limits: Limits, scale: float,
                 detection: DetectionSettings | None = None) -> tuple[dict, list[str]]:
    """One output against its fp32 reference on the same samples."""
    if output.shape != reference.shape:
        return {}, [f"{name}: shape {list(output.shape)} differs from the fp32 reference's {list(reference.shape)}"]
    a, b = output.astype(np.float64), reference.astype(np.float64)
    if not np.isfinite(a).all():  # NaN compares false with every threshold: catch it before it passes
        return {}, [f"{name}: {int((~np.isfinite(a)).sum())} output values are NaN or infinite"]
    difference = np.abs(valid_values(a, mask) - valid_values(b, mask))
    max_abs = float(difference.max()) if difference.size else 0.0
    figures = {"kind": kind, "max_abs_error": max_abs, "max_scaled_error": max_abs / scale, "scale": scale,
               "max_rel_error": max_abs / max(float(np.abs(valid_values(b, mask)).max(initial=0.0)), 1e-12)}
    figures |= kind_figures(kind, a, b, mask, labels, limits.pooling, scale, limits.near_empty_ratio,
                            limits.threshold)
    problems = direction_problems(name, kind, figures, limits, output)
    if detection is not None:
        figures |= detection_figures(a, b, detection)
        problems += detection_problems(name, figures, limits)
    if limits.max_abs_error is not None and max_abs > limits.max_abs_error:
        problems.append(f"{name}: max abs error {max_abs:.4g} > {limits.max_abs_error}")
    if limits.max_scaled_error is not None and figures["max_scaled_error"] > limits.max_scaled_error:
        problems.append(f"{name}: max error {figures['max_scaled_error']:.3g}x the output's scale > "
                        f"{limits.max_scaled_error}")
    return figures, problems


def direction_problems(name: str, kind: str, figures: dict, limits: Limits, output: np.ndarray) -> list[str]:
    """The kind's figures past their bounds, in words: agreements, accuracy drops, score correlations, cosines, and
    near-empty samples' errors."""
    problems = []
    if kind in AGREEMENT:
        key, what = AGREEMENT[kind]
        if limits.min_top1_agreement is not None and figures[key] < limits.min_top1_agreement:
            problems.append(f"{name}: {what} {figures[key]:.4f} < {limits.min_top1_agreement}")
        for what, key, limit in (("accuracy", "accuracy", limits.max_accuracy_drop),
                                 ("macro-F1", "macro_f1", limits.max_macro_f1_drop)):
            if limit is not None and key in figures and figures[f"reference_{key}"] - figures[key] > limit:
                problems.append(f"{name}: {what} {figures[key]:.4f} vs fp32 {figures[f'reference_{key}']:.4f} "
                                f"(drop {figures[f'reference_{key}'] - figures[key]:.4f} > {limit})")
    elif kind == SCORE:
        if limits.min_cosine_mean is not None and figures.get("score_correlation", 1.0) < limits.min_cosine_mean:
            over = "tokens" if output.size > len(output) else "samples"
            problems.append(f"{name}: score correlation with fp32 across the {over} {figures['score_correlation']:.4f}"
                            f" < {limits.min_cosine_mean}")
    else:
        what = "per-token cosine" if kind == TOKEN_STATES else "cosine"
        checks = [(what, figures["cosine_mean"], figures["cosine_worst"])] if "cosine_mean" in figures else []
        if "pooled_cosine_mean" in figures:
            checks.append((f"{limits.pooling}-pooled cosine", figures["pooled_cosine_mean"],
                           figures["pooled_cosine_worst"]))
        for label, mean, worst in checks:
            if limits.min_cosine_mean is not None and mean < limits.min_cosine_mean:
                problems.append(f"{name}: {label} mean {mean:.4f} < {limits.min_cosine_mean}")
            if worst < limits.min_cosine_worst:
                problems.append(f"{name}: {label} worst {worst:.4f} < {limits.min_cosine_worst}")
        bound, error = limits.max_near_empty_error, figures.get("near_empty_error_worst")
        if bound is not None and error is not None and error > bound:
            rows = "tokens" if kind == TOKEN_STATES else "samples"
            problems.append(f"{name}: {figures['near_empty_samples']} near-empty {rows} (fp32 under "
                            f"{limits.near_empty_ratio:g}x the output's scale {figures['scale']:.3g}, judged by "
                            f"magnitude): RMS error up to {error:.3g}x the scale > {bound:.3g}")
    return problems


SUMMARY_WORST = {"cosine_mean": min, "near_empty_error_worst": max, "detection_recall": min,
                 "detection_precision": min, "detection_mean_iou": min, "cosine_worst": min, "pooled_cosine_mean": min, "pooled_cosine_worst": min,
                 "score_correlation": min,
                 "top1_agreement": min, "label_set_agreement": min, "label_agreement": min, "decision_agreement": min,
                 "accuracy": min, "reference_accuracy": min,
                 "macro_f1": min, "reference_macro_f1": min, "max_abs_error": max,
                 "max_scaled_error": max, "max_rel_error": max}


def judge(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], *, model_kind: str,
          mask: np.ndarray | None, labels: np.ndarray | None, limits: Limits,
          scales: dict[str, float], groups=(), detection: DetectionSettings | None = None) -> Judgement:
    """Every output of `outputs` against `reference` (same samples, same order), then every group of an output
    (pipeline.verify.groups; `scales` has their names too), and the detections of `detection.output`."""
    judgement = Judgement()
    kinds = {group.name: group.kind for group in groups if group.kind}
    reference, outputs = with_groups(reference, groups), with_groups(outputs, groups)
    for name, ref in reference.items():
        if name not in outputs:
            if name not in {group.name for group in groups}:  # a group of a missing output: said once, above
                judgement.problems.append(f"{name}: the artifact has no such output (it has {sorted(outputs)})")
            continue
        kind = kinds.get(name) or output_kind(ref, model_kind, mask)
        figures, problems = judge_output(name, kind, outputs[name], ref, mask, labels, limits, scales[name],
                                         detection if detection is not None and name == detection.output else None)
        group = next((group for group in groups if group.name == name), None)
        judgement.by_output[name] = figures | ({"group": group.to_json()} if group else {})
        judgement.problems += problems
    judgement.summary = summarize(judgement.by_output)
    return judgement


def summarize(by_output: dict[str, dict]) -> dict:
    """The worst of each figure over outputs and groups, and `worst_of`: which output or group holds it."""
    summary, holders = {}, {}
    for key, pick in SUMMARY_WORST.items():
        held = {name: figures[key] for name, figures in by_output.items() if key in figures}
        if held:
            holders[key] = pick(held, key=held.get)
            summary[key] = float(held[holders[key]])
    return summary | ({"worst_of": holders} if holders else {})


def keep_decisions_within_noise(kind: str, moved: np.ndarray, alone: np.ndarray, mask: np.ndarray | None,
                                noise: float) -> tuple[np.ndarray, int]:
    """`moved` (the same samples after a change such as padding) with every sample that lies no further from `alone`
    than `noise` (the artifact's own largest error to fp32 on this output) taken as alone's, and how many of those
    had changed a decision. A move that small flips only a decision within int8 noise of its boundary, which int8
    decides either way. Decisions only: classes (argmax) and label sets; other kinds are returned as they are."""
    if kind not in (LOGITS, LABEL_SETS) or moved.shape != alone.shape or not len(alone):
        return moved, 0
    tokens = token_mask(mask, alone)
    counted = tokens if tokens is not None else np.ones(alone.shape[:1], bool)
    weights = counted.reshape(*counted.shape, *([1] * (alone.ndim - counted.ndim)))
    distance = (np.abs(moved.astype(np.float64) - alone) * weights).reshape(len(alone), -1).max(axis=1)
    if kind == LABEL_SETS:
        after, before = label_decisions(moved, alone)
        changed = (after != before).any(axis=-1)
    else:
        changed = moved.argmax(-1) != alone.argmax(-1)
    changed = (changed & counted.reshape(*counted.shape, *([1] * (changed.ndim - counted.ndim)))).reshape(
        len(alone), -1).any(axis=1)
    within = distance <= noise
    kept = np.where(within.reshape(-1, *([1] * (alone.ndim - 1))), alone, moved)
    return kept, int((within & changed).sum())


@dataclass
class Reading:
    """How a model's outputs are read beyond their kinds, found once on fp32's outputs of every sample."""

    groups: list  # pipeline.verify.groups.Group: parts of outputs judged on their own scales
    detection: DetectionSettings | None  # a detector's detections
    scales: dict[str, float]  # of every output and group: the RMS of fp32 over every sample, verify.near_zero at least
    near_empty_ratio: float = 0.0  # verify.near_empty_ratio


def output_reading(reference: dict[str, np.ndarray], model_kind: str, mask: np.ndarray | None,
                   verify_cfg) -> Reading:
    """The Reading of these fp32 outputs under `verify.*` (output_groups, group_scale_ratio, detection, near_zero)."""
    detection = detection_settings(verify_cfg, model_kind, reference)
    kinds = {name: output_kind(array, model_kind, mask) for name, array in reference.items()}
    tokens = {name: token_mask(mask, array) for name, array in reference.items()}
    groups = find_groups(reference, kinds, tokens, verify_cfg, detection)
    scales = {name: output_scale(array, mask, float(verify_cfg.near_zero))
              for name, array in with_groups(reference, groups).items()}
    return Reading(groups, detection, scales, float(verify_cfg.near_empty_ratio))


# --- the same artifact on two CPUs ------------------------------------------------------------------
@dataclass
class CpuComparison:
    """A profile's outputs against the reference CPU's, on the same samples."""

    status: str  # pass | fail | not_measured
    reason: str
    reference_cpu: str
    bounds: dict = field(default_factory=dict)  # max_excess_error (x scale), max_error_ratio
    divergence: float | None = None  # max |profile - reference CPU| / output scale, worst output
    excess_error: float | None = None  # (profile's max error to fp32 - the reference CPU's) / scale, worst output
    error_ratio: float | None = None  # profile's max error to fp32 / the reference CPU's, on that output
    by_output: dict[str, dict] = field(default_factory=dict)
    worst: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def compare_cpus(profile_name: str, outputs: dict[str, np.ndarray], on_reference_cpu: dict[str, np.ndarray],
                 fp32: dict[str, np.ndarray], *, reference_cpu: str, mask: np.ndarray | None,
                 sample_ids: list[int], scales: dict[str, float], max_excess_error: float,
                 max_error_ratio: float, hint: str = "", groups=()) -> CpuComparison:
    """Two CPUs' outputs of one artifact, element-wise on each output's scale (and each group's, on its own):
    how far apart they are, and how much worse this profile's error to fp32 is than the reference CPU's."""
    outputs, on_reference_cpu, fp32 = (with_groups(arrays, groups) for arrays in (outputs, on_reference_cpu, fp32))
    comparison = CpuComparison("pass", "", reference_cpu, {"max_excess_error": max_excess_error,
                                                           "max_error_ratio": max_error_ratio})
    candidates = []
    for name, ref_cpu in on_reference_cpu.items():
        if name not in outputs or outputs[name].shape != ref_cpu.shape:
            continue
        here, there, exact = (x.astype(np.float64) for x in (outputs[name], ref_cpu, fp32[name]))
        tokens = token_mask(mask, here)
        valid = tokens if tokens is not None else np.ones(here.shape, bool)
        if tokens is not None:
            valid = valid.reshape(*tokens.shape, *([1] * (here.ndim - 2))) & np.ones(here.shape, bool)
        gap = np.where(valid, np.abs(here - there), 0.0)
        scale = scales[name]
        error_here = float(np.where(valid, np.abs(here - exact), 0.0).max(initial=0.0))
        error_there = float(np.where(valid, np.abs(there - exact), 0.0).max(initial=0.0))
        figures = {"divergence": float(gap.max(initial=0.0)) / scale, "max_abs_difference": float(gap.max(initial=0.0)),
                   "max_error_to_fp32": error_here, "reference_cpu_max_error_to_fp32": error_there,
                   "excess_error": (error_here - error_there) / scale,
                   "error_ratio": error_here / max(error_there, 1e-6 * scale)}
        comparison.by_output[name] = figures
        for flat in np.argsort(gap, axis=None)[::-1][:WORST_SHOWN]:
            index = np.unravel_index(int(flat), gap.shape)
            candidates.append({"output": name, "sample": sample_ids[index[0]], "position": [int(i) for i in index[1:]],
                               "value": float(here[index]), "reference_cpu_value": float(there[index]),
                               "fp32_value": float(exact[index]), "scaled_difference": float(gap[index]) / scale})
    if not comparison.by_output:
        comparison.status, comparison.reason = "not_measured", "no output shared with the reference CPU's run"
        return comparison
    worst_name = max(comparison.by_output, key=lambda n: comparison.by_output[n]["excess_error"])
    worst = comparison.by_output[worst_name]
    comparison.divergence = max(figures["divergence"] for figures in comparison.by_output.values())
    comparison.excess_error, comparison.error_ratio = worst["excess_error"], worst["error_ratio"]
    comparison.worst = sorted(candidates, key=lambda c: -c["scaled_difference"])[:WORST_SHOWN]
    if comparison.excess_error <= max_excess_error or comparison.error_ratio <= max_error_ratio:
        comparison.reason = (f"error to fp32 {comparison.error_ratio:.3g}x {reference_cpu}'s ({comparison.excess_error:+.3g}x "
                             f"the output scale; bounds {max_error_ratio:g}x and {max_excess_error:+g}); outputs differ "
                             f"from {reference_cpu}'s by up to {comparison.divergence:.3g}x the scale: kernel noise")
        return comparison
    top = next(c for c in comparison.worst if c["output"] == worst_name) if any(
        c["output"] == worst_name for c in comparison.worst) else comparison.worst[0]
    comparison.status = "fail"
    comparison.reason = (
        f"outputs on {profile_name} are materially worse than on {reference_cpu}: the largest error to fp32 of "
        f"{worst_name} is {comparison.error_ratio:.3g}x {reference_cpu}'s ({comparison.excess_error:+.3g}x the output's "
        f"scale; bounds {max_error_ratio:g}x and {max_excess_error:+g}); sample {top['sample']} position "
        f"{top['position']}: {top['value']:.5g} on {profile_name} vs {top['reference_cpu_value']:.5g} on "
        f"{reference_cpu}, fp32 {top['fp32_value']:.5g}" + (f"; {hint}" if hint else ""))
    return comparison


# --- which samples the emulated profiles run ---------------------------------------------------------
def choose_samples(native: dict[str, np.ndarray], fp32: dict[str, np.ndarray], mask: np.ndarray | None,
                   scales: dict[str, float], k: int) -> tuple[list[int], str]:
    """The k samples that stress the kernels most, judged from the native run: alternately the largest
    element-wise error to fp32 and the largest fp32 magnitude (the largest accumulations)."""
    n = len(next(iter(fp32.values())))
    if k >= n:
        return list(range(n)), f"all {n} held-out samples"
    error, magnitude = np.zeros(n), np.zeros(n)
    for name, exact in fp32.items():
        if name not in native or native[name].shape != exact.shape:
            continue
        tokens = token_mask(mask, exact)
        weight = 1.0 if tokens is None else tokens.reshape(*tokens.shape, *([1] * (exact.ndim - 2)))
        flat_error = (np.abs(native[name].astype(np.float64) - exact) * weight).reshape(n, -1).max(1)
        flat_size = (np.abs(exact.astype(np.float64)) * weight).reshape(n, -1).max(1)
        error = np.maximum(error, flat_error / scales[name])
        magnitude = np.maximum(magnitude, flat_size / scales[name])
    chosen: list[int] = []
    by_error, by_magnitude = list(np.argsort(-error, kind="stable")), list(np.argsort(-magnitude, kind="stable"))
    while len(chosen) < k:
        for ranking in (by_error, by_magnitude):
            pick = next(int(i) for i in ranking if int(i) not in chosen)
            if len(chosen) < k:
                chosen.append(pick)
    why = (f"{k} of {n} held-out samples chosen from the native run: alternately the largest element-wise error "
           f"to fp32 and the largest fp32 output magnitude (the largest accumulations), where kernels that "
           f"saturate or round differently show first")
    return chosen, why


# --- stateful models, run streamed ---------------------------------------------------------------------
def choose_sequences(native: dict[str, np.ndarray], fp32: dict[str, np.ndarray], scales: dict[str, float],
                     steps: int, k: int) -> tuple[list[int], str]:
    """The samples of the k sequences (of `steps` consecutive samples) that stress the kernels most, chosen as
    choose_samples chooses samples, each sequence taken whole: the state must be carried through it."""
    sequences = len(next(iter(fp32.values()))) // steps
    as_sequences = {name: array[:sequences * steps].reshape(sequences, -1) for name, array in fp32.items()}
    ran = {name: array[:sequences * steps].reshape(sequences, -1) for name, array in native.items() if name in fp32}
    picked, _ = choose_samples(ran, as_sequences, None, scales, max(1, k))
    samples = [s * steps + t for s in picked for t in range(steps)]
    return samples, (f"{len(picked)} of {sequences} held-out sequences of {steps} chunks, run streamed (the state "
                     f"carried), chosen from the native run: alternately the largest element-wise error to fp32 and "
                     f"the largest fp32 output magnitude")


def state_drift(outputs: dict[str, np.ndarray], fp32: dict[str, np.ndarray], pairs: dict[str, str], steps: int,
                max_drift: float) -> tuple[dict, list[str]]:
    """How far each carried state (outputs paired with inputs) drifts from fp32's as the sequences run: per step,
    the RMS of its error over the RMS of fp32's state (both over every sequence); a step past `max_drift` is a
    problem that names the state, the step and the growth from the first step."""
    figures, problems = {}, []
    for name, fed in pairs.items():
        if name not in outputs or name not in fp32 or outputs[name].shape != fp32[name].shape:
            continue
        sequences = len(fp32[name]) // steps
        here = outputs[name][:sequences * steps].astype(np.float64).reshape(sequences, steps, -1)
        exact = fp32[name][:sequences * steps].astype(np.float64).reshape(sequences, steps, -1)
        scale = max(float(np.sqrt(np.mean(exact ** 2))), 1e-12)
        by_step = [float(np.sqrt(np.mean((here[:, t] - exact[:, t]) ** 2))) / scale for t in range(steps)]
        worst = int(np.argmax(by_step))
        figures[name] = {"feeds": fed, "steps": steps, "sequences": sequences, "by_step": by_step,
                         "first": by_step[0], "last": by_step[-1], "worst": by_step[worst], "worst_step": worst + 1,
                         "growth": by_step[-1] / max(by_step[0], 1e-12), "max_state_drift": max_drift}
        if by_step[worst] > max_drift:
            problems.append(f"{name} (the state fed back as {fed}) drifts from fp32's as the sequence runs: "
                            f"{by_step[0]:.3g} of its scale at step 1, {by_step[worst]:.3g} at step {worst + 1} of "
                            f"{steps} (> verify.max_state_drift {max_drift:g}); int8 error accumulates in the "
                            f"recurrent state")
    return figures, problems

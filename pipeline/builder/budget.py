"""The accuracy budget at build time: the figures verification judges, computed on the validation split, and
whether they hold the verify thresholds.

Top-1 agreement with fp32 and (with labels) the accuracy and macro-F1 drops for classifiers, the correlation for
scores, cosine for embeddings (near-empty samples by magnitude), every group of an output on its own scale and a
detector's detections (pipeline/verify/fidelity/, groups.py, detection.py); each worst figure names the output or
group that holds it. The gate (pipeline/builder/gate.py), export=aoti and `quantgate bench` ask it.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.errors import InputError
from pipeline.progress import say
from pipeline.verify import fidelity
from pipeline.verify.detection import detection_figures
from pipeline.verify.groups import with_groups

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

"""The figures of one output against fp32's, by its kind: decisions (classes, label sets, ids, events) and their
agreement, accuracy and macro-F1 against labels, score correlation, cosines per sample or per token (pooled when
asked) and element-wise errors on the output's scale."""
from __future__ import annotations

import numpy as np

from pipeline.verify.fidelity.kinds import (EVENTS, IDS, LABEL_SETS, LOGITS, MIN_SCORE_VALUES, SCORE, TOKEN_STATES,
                                            score_values, token_mask)


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


def score_correlation(output: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of the scores with fp32's (flat arrays of the same values); scores that do not vary
    agree (1.0) only where they are equal."""
    a, b = output.reshape(-1).astype(np.float64), reference.reshape(-1).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b, rtol=1e-5, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


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

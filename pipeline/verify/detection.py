"""What a detector is for: its boxes after the score threshold and NMS, matched to fp32's by class and IoU.

A detector's raw head (YOLO-style: one tensor `[batch, 4 + classes, anchors]`, box centre, width and height in
pixels beside class probabilities) says little through a cosine: the boxes carry its norm. What a user keeps are the
detections, so `model.kind=detector` decodes both outputs the way a deployment does (`verify.detection.*`: the score
threshold, class-wise NMS, at most `max_detections`) and judges int8's detections against fp32's:

- recall: the share of fp32's detections that int8 also finds (same class, IoU >= `match_iou`);
- precision: the share of int8's detections that match one of fp32's;
- mean IoU of the matched pairs (how well int8 keeps the boxes it finds).

Layouts (`verify.detection.layout`): `packed` `[batch, 4 + classes, anchors]` (cx, cy, w, h, then one score per
class); `packed_last` `[batch, anchors, 4 + classes]`; `boxes` `[batch, detections, 6]` (x1, y1, x2, y2, score,
class: a head that already ran NMS; only the score threshold applies); `auto` = packed when the feature axis (the
smaller of the two) comes first, packed_last otherwise.

numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAYOUTS = ("auto", "packed", "packed_last", "boxes")
BOX_ROWS = 4  # cx, cy, w, h in a packed head


@dataclass(frozen=True)
class DetectionSettings:
    """How detections are read from an output (from `verify.detection`)."""

    output: str
    layout: str = "auto"
    score_threshold: float = 0.25
    nms_iou: float = 0.45
    match_iou: float = 0.5
    max_detections: int = 300

    def resolved_layout(self, shape: tuple[int, ...]) -> str:
        if self.layout != "auto":
            return self.layout
        return "packed" if len(shape) == 3 and shape[1] <= shape[2] else "packed_last"

    def check(self, shape: tuple[int, ...]) -> str | None:
        """What is wrong with reading detections from an fp32 output of `shape` this way, or None."""
        layout = self.resolved_layout(shape)
        if len(shape) != 3:
            return f"has shape {list(shape)}; a detector head has 3 axes ([batch, 4 + classes, anchors])"
        width = shape[1] if layout == "packed" else shape[2]
        if layout == "boxes" and width < 6:
            return f"has {width} values per detection; layout boxes needs 6 (x1, y1, x2, y2, score, class)"
        if layout != "boxes" and width < BOX_ROWS + 1:
            return f"has {width} features per anchor; layout {layout} needs 4 box values and at least one class score"
        return None


@dataclass
class Detections:
    """One sample's detections: boxes (x1, y1, x2, y2), scores and classes."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (x1, y1, x2, y2) with each of `boxes`."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """Class-wise greedy non-maximum suppression: indices kept, best score first."""
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlapping = (iou(boxes[best], boxes[rest]) > threshold) & (classes[rest] == classes[best])
        order = rest[~overlapping]
    return np.asarray(keep, dtype=np.int64)


def decode(sample: np.ndarray, settings: DetectionSettings, layout: str) -> Detections:
    """One sample's detections (`sample` without its batch axis) after the score threshold and NMS."""
    sample = sample.astype(np.float64)
    if layout == "boxes":
        kept = sample[sample[:, 4] >= settings.score_threshold]
        kept = kept[np.argsort(-kept[:, 4], kind="stable")][:settings.max_detections]
        return Detections(kept[:, :4], kept[:, 4], kept[:, 5].round().astype(np.int64))
    rows = sample if layout == "packed" else sample.T  # [4 + classes, anchors]
    class_scores = rows[BOX_ROWS:]
    classes, scores = class_scores.argmax(0), class_scores.max(0)
    chosen = np.flatnonzero(scores >= settings.score_threshold)
    cx, cy, w, h = (rows[i, chosen] for i in range(BOX_ROWS))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = nms(boxes, scores[chosen], classes[chosen], settings.nms_iou)[:settings.max_detections]
    return Detections(boxes[keep], scores[chosen][keep], classes[chosen][keep])


def match(found: Detections, expected: Detections, threshold: float) -> list[float]:
    """Greedy matching, fp32's most confident detection first: each takes the unmatched detection of its class with
    the highest IoU, at least `threshold`. The IoUs of the matched pairs."""
    free, matched = np.ones(len(found.scores), bool), []
    for index in np.argsort(-expected.scores, kind="stable"):
        candidates = np.flatnonzero(free & (found.classes == expected.classes[index]))
        if not candidates.size:
            continue
        overlaps = iou(expected.boxes[index], found.boxes[candidates])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= threshold:
            free[candidates[best]] = False
            matched.append(float(overlaps[best]))
    return matched


def detection_figures(output: np.ndarray, reference: np.ndarray, settings: DetectionSettings) -> dict[str, float]:
    """Recall and precision of fp32's detections over all samples, the mean IoU of the matched pairs, and the
    counts they come from."""
    layout = settings.resolved_layout(reference.shape)
    found_total = expected_total = 0
    ious: list[float] = []
    for sample, exact in zip(output, reference):
        found, expected = decode(sample, settings, layout), decode(exact, settings, layout)
        found_total, expected_total = found_total + len(found.scores), expected_total + len(expected.scores)
        ious += match(found, expected, settings.match_iou)
    figures = {"detection_recall": len(ious) / expected_total if expected_total else 1.0,
               "detection_precision": len(ious) / found_total if found_total else (0.0 if expected_total else 1.0),
               "detections": float(found_total), "fp32_detections": float(expected_total), "layout": layout}
    if ious:
        figures["detection_mean_iou"] = float(np.mean(ious))
    return figures


# figure, its Limits field, its key under verify.detection, its words
BUDGETS = (("detection_recall", "min_detection_recall", "min_recall", "detection recall of fp32's detections"),
           ("detection_precision", "min_detection_precision", "min_precision",
            "detection precision against fp32's detections"),
           ("detection_mean_iou", "min_detection_mean_iou", "min_mean_iou", "mean IoU of matched detections"))


def detection_problems(name: str, figures: dict, limits) -> list[str]:
    """Each detection figure under its budget, in words naming the output, the figure and the budget."""
    problems = []
    for key, limit_key, config_key, words in BUDGETS:
        limit = getattr(limits, limit_key)
        if limit is not None and key in figures and figures[key] < limit:
            problems.append(f"{name}: {words} {figures[key]:.4f} < {limit} (verify.detection.{config_key}; "
                            f"{int(figures['fp32_detections'])} fp32 detections, {int(figures['detections'])} int8)")
    return problems

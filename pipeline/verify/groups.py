"""Groups of one output judged each on its own scale: parts of an output that live on different scales.

A YOLO-style head `[batch, 4 + classes, anchors]` holds box coordinates in pixels (0-320) beside class probabilities
(0-1); keypoints sit beside their confidences; heads are concatenated. Judged whole, the largest part carries the
output's norm and its RMS: the cosine and the scaled error measure only it. So such an output is also judged in
groups, slices along one feature axis, each on its own scale (`fidelity.judge` judges a group like an output, named
`output0[4:84]` or, labelled, `output0[4:84] (scores)`).

Where groups come from, first match wins per output:

1. `verify.output_groups`: slices named in config (output, axis, start, stop, kind, label);
2. `model.kind=detector` with a packed head (pipeline.verify.detection): rows 0:4 `boxes`, 4: `scores`;
3. found automatically for outputs judged as vectors or token states: along the output's feature axis
   (`feature_axis`: never the batch, a token axis or one of two position axes; 2 to MAX_SPLIT_AXIS long), the fp32
   RMS of every index over all samples; indices whose RMS is under 1/`verify.group_scale_ratio` of the RMS of all
   indices are drowned by the rest. If some are and some are not, each contiguous run of drowned or of carrying
   indices is a group, when there are at most MAX_AUTO_GROUPS runs and each holds two values per sample or more
   (an embedding's scattered quiet dimensions, or one number per sample, are not parts of a head).

numpy only (the parent imports this, never a child).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError
from pipeline.verify.detection import BOX_ROWS, LAYOUTS, DetectionSettings

MAX_SPLIT_AXIS = 1024  # longer axes are positions (anchors, pixels, tokens), not features
# Parts of a head are a few contiguous blocks (boxes | scores, coordinates | confidences); quiet indices scattered over
# an embedding (MiniLM's sentence_embedding has single dimensions 30x under its RMS) are not parts.
MAX_AUTO_GROUPS = 3
SPLIT_KINDS = ("vector", "token_states")  # the kinds judged by direction, which one large part dominates
GROUP_KINDS = ("vector", "token_states", "score", "logits", "label_sets")


@dataclass(frozen=True)
class Group:
    """A slice `start:stop` of `output` along `axis` (the batch axis is 0), judged as `kind` (None: as the
    output's kind would be), named with its `label` when it has one."""

    output: str
    axis: int
    start: int
    stop: int
    kind: str | None = None
    label: str = ""

    @property
    def name(self) -> str:
        index = ":, " * (self.axis - 1) + f"{self.start}:{self.stop}"
        return f"{self.output}[{index}]" + (f" ({self.label})" if self.label else "")

    def fits(self, array: np.ndarray) -> bool:
        return array.ndim > self.axis and self.stop <= array.shape[self.axis]

    def take(self, array: np.ndarray) -> np.ndarray:
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.start, self.stop)
        return array[tuple(index)]

    def to_json(self) -> dict:
        return {"output": self.output, "axis": self.axis, "start": self.start, "stop": self.stop, "kind": self.kind,
                "label": self.label}


def with_groups(arrays: dict[str, np.ndarray], groups) -> dict[str, np.ndarray]:
    """`arrays` and, after them, every group of an output they hold (by the group's name)."""
    return arrays | {group.name: group.take(arrays[group.output]) for group in groups
                     if group.output in arrays and group.fits(arrays[group.output])}


def index_rms(array: np.ndarray, axis: int, tokens: np.ndarray | None) -> np.ndarray:
    """The RMS of every index along `axis` over all samples (over non-padding tokens of a per-token output)."""
    values, where = (array[tokens], axis - 1) if tokens is not None else (array, axis)
    rows = np.moveaxis(values.astype(np.float64), where, 0).reshape(values.shape[where], -1)
    return np.sqrt(np.mean(rows ** 2, axis=1)) if rows.shape[1] else np.zeros(len(rows))


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """The contiguous runs of equal values in a 1-D boolean array, as (start, stop)."""
    edges = [0, *(np.flatnonzero(flags[1:] != flags[:-1]) + 1).tolist(), len(flags)]
    return list(zip(edges[:-1], edges[1:]))


def feature_axis(array: np.ndarray, tokens: np.ndarray | None) -> int | None:
    """The axis that holds an output's features, or None: the last of a per-token output; axis 1 of `[batch,
    features]` and of channels-first maps `[batch, channels, height, width]`; of `[batch, a, b]` the shorter of a and
    b when at most a quarter of the other (`[batch, 4 + classes, anchors]`, `[batch, anchors, 4 + classes]`), never
    one of two position axes (`[batch, height, width]`)."""
    if tokens is not None:
        axis = array.ndim - 1 if array.ndim >= 3 else None
    elif array.ndim == 3:
        short, long = sorted((1, 2), key=lambda a: array.shape[a])
        axis = short if 4 * array.shape[short] <= array.shape[long] else None
    else:
        axis = 1 if array.ndim >= 2 else None
    return axis if axis is not None and 2 <= array.shape[axis] <= MAX_SPLIT_AXIS else None


def split_by_scale(name: str, array: np.ndarray, tokens: np.ndarray | None, ratio: float) -> list[Group]:
    """The groups of one fp32 output whose indices along its feature axis differ in scale by `ratio` or more."""
    axis = feature_axis(array, tokens)
    if axis is None:
        return []
    rms = index_rms(array, axis, tokens)
    drowned = rms < float(np.sqrt(np.mean(rms ** 2))) / ratio
    if not drowned.any() or drowned.all():
        return []
    found = runs(drowned)
    per_index = int(np.prod(array.shape[1:])) // array.shape[axis]  # values per sample in one index of the axis
    if len(found) > MAX_AUTO_GROUPS or any((stop - start) * per_index < 2 for start, stop in found):
        return []  # scattered small indices (an embedding's quiet dimensions), or single numbers: not parts
    return [Group(name, axis, start, stop) for start, stop in found]


def configured_groups(entries, reference: dict[str, np.ndarray]) -> list[Group]:
    """`verify.output_groups` as Groups, refused (exit 2) when one does not fit the model's fp32 outputs."""
    groups = []
    for number, entry in enumerate(entries or []):
        group = Group(str(entry.output), int(entry.axis), int(entry.start), int(entry.stop),
                      str(entry.kind) if entry.kind is not None else None, str(entry.label or ""))
        where = f"verify.output_groups[{number}] ({group.name})"
        if group.output not in reference:
            raise InputError(f"{where}: the model has no output {group.output!r} (outputs: {sorted(reference)}); "
                             f"name one of them")
        shape = list(reference[group.output].shape)
        if not 1 <= group.axis < len(shape) or not 0 <= group.start < group.stop <= shape[group.axis]:
            raise InputError(f"{where}: does not fit the output's shape {shape}: axis must be 1..{len(shape) - 1} "
                             f"(0 is the batch) and 0 <= start < stop <= the axis' length")
        if group.kind is not None and group.kind not in GROUP_KINDS:
            raise InputError(f"{where}: unknown kind {group.kind!r}; one of {', '.join(GROUP_KINDS)} (or null)")
        groups.append(group)
    return groups


def detector_groups(settings: DetectionSettings, reference: np.ndarray) -> list[Group]:
    """A packed detector head's box rows and score rows."""
    layout = settings.resolved_layout(reference.shape)
    if layout == "boxes":
        return []
    axis = 1 if layout == "packed" else 2
    return [Group(settings.output, axis, 0, BOX_ROWS, label="boxes"),
            Group(settings.output, axis, BOX_ROWS, reference.shape[axis], label="scores")]


def find_groups(reference: dict[str, np.ndarray], kinds: dict[str, str], tokens: dict[str, np.ndarray | None],
                verify_cfg, detection: DetectionSettings | None) -> list[Group]:
    """Every output's groups (the module's docstring), from the fp32 outputs of every sample, their kinds and their
    token masks (None: not per token)."""
    groups = configured_groups(verify_cfg.output_groups, reference)
    named = {group.output for group in groups}
    if detection is not None and detection.output not in named:
        groups += detector_groups(detection, reference[detection.output])
        named.add(detection.output)
    if verify_cfg.group_scale_ratio is None:
        return groups
    for name, array in reference.items():
        if name not in named and kinds.get(name) in SPLIT_KINDS:
            groups += split_by_scale(name, array, tokens.get(name), float(verify_cfg.group_scale_ratio))
    return groups


def detection_settings(verify_cfg, model_kind: str, reference: dict[str, np.ndarray]) -> DetectionSettings | None:
    """`verify.detection` for a detector (its output: the one named, else the first), refused (exit 2) when that
    output cannot hold detections; None for other kinds of model."""
    if model_kind != "detector":
        return None
    d = verify_cfg.detection
    output = d.output or next(iter(reference))
    if output not in reference:
        raise InputError(f"verify.detection.output={output!r}: the model has no such output (outputs: "
                         f"{sorted(reference)})")
    settings = DetectionSettings(output, str(d.layout), float(d.score_threshold), float(d.nms_iou),
                                 float(d.match_iou), int(d.max_detections))
    problem = settings.check(reference[output].shape)
    if problem:
        raise InputError(f"model.kind=detector: output {output} {problem}; name the detections' output with "
                         f"verify.detection.output and its layout with verify.detection.layout ({', '.join(LAYOUTS)})")
    return settings

"""The bounds one comparison of outputs is held to (from `verify.*`)."""
from __future__ import annotations

from dataclasses import dataclass


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

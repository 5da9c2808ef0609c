"""The evidence every profile's outputs are judged against: fp32's outputs on the native sample set, the same
artifact's on the reference CPU, and the padding baselines; and what the runs before the profiles found."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.verify.detection import DetectionSettings
from pipeline.verify.fidelity import Limits
from pipeline.verify.padding import Baselines


@dataclass
class Evidence:
    """What every profile's outputs are judged against: the fp32 outputs on the native sample set, and the
    same artifact's outputs on the reference CPU (on the samples that CPU ran)."""

    fp32: dict[str, np.ndarray]
    mask: np.ndarray | None
    labels: np.ndarray | None
    scales: dict[str, float]
    limits: Limits
    model_kind: str
    reference_cpu: str
    reference_cpu_outputs: dict[str, np.ndarray] | None = None
    reference_cpu_ids: list[int] = field(default_factory=list)
    reference_cpu_reason: str = ""
    padding: Baselines | None = None  # fp32's own padded run and the artifact's native one (pipeline.verify.padding)
    batch_axes: dict = field(default_factory=dict)  # {"inputs": ..., "outputs": ...}: pipeline/layout.py
    groups: list = field(default_factory=list)  # parts of outputs judged on their own scales (verify/groups.py)
    detection: DetectionSettings | None = None  # a detector's detections (verify/detection.py)

    def rows(self, ids: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
        labels = self.labels[ids] if self.labels is not None and len(self.labels) > max(ids) else None
        return ({name: array[ids] for name, array in self.fp32.items()},
                self.mask[ids] if self.mask is not None else None, labels)


@dataclass
class Measured:
    """What the runs before the profiles found: the fp32 reference's record, the evidence (None when the reference
    did not run), the samples chosen for the emulated profiles and their .npz, the reference CPU's record, and the
    first native run's wall time (which sizes every later child's timeout)."""

    emulated_inputs: Path
    reference_record: dict | None = None
    evidence: Evidence | None = None
    selection: dict | None = None
    reference_cpu_record: dict | None = None
    native_seconds: float | None = None

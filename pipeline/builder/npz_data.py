"""The data of the models users bring (`model=onnx`, `model=torch`): `calibration=npz`.

Arrays named after the model's inputs, in the model's own layout (`calibration/arrays.py` checks them against the
model; each input's batch axis from `pipeline/layout.py`), drawn like
any other source: one pool, deduplicated by content, seeded, split into disjoint calibration / validation /
held-out samples (`pipeline/builder/calibrate.py`). An example of the pool is the sha256 of its values, so
deduplication and the calibration fingerprint are about the data, not row numbers.
"""
from __future__ import annotations

import numpy as np

from calibration.arrays import ArrayData, InputSpec, load_arrays
from pipeline.builder.checkpoints import DataSplits
from pipeline.builder.reproducible import portable_path_value
from pipeline.errors import UsageError
from pipeline.manifest import sha256_bytes, sha256_file


def dataset_name(data: ArrayData, path: str) -> str:
    """The stamp's name for the data: file names and the sha256 of their bytes, never where they lie."""
    from pathlib import Path
    if len(data.files) == 1 and not Path(path).expanduser().is_dir():
        return portable_path_value(path)
    digest = sha256_bytes("".join(f"{f.name}:{sha256_file(f)}\n" for f in data.files).encode())
    return f"{Path(path).expanduser().name}/ ({len(data.files)} .npz files) sha256:{digest}"


class NpzData:
    """data() and encode() for a family with `input_specs()` and `cfg` (mixed into OnnxFamily, TorchFamily)."""

    _arrays: ArrayData | None = None
    _rows: dict[str, int] | None = None

    def input_specs(self) -> list[InputSpec]:
        raise NotImplementedError

    def arrays(self) -> ArrayData:
        if self._arrays is None:
            self._arrays = load_arrays(self.cfg.calibration.path, self.input_specs())
        return self._arrays

    def data(self) -> DataSplits:
        calibration_cfg = self.cfg.calibration
        arrays = self.arrays()
        digests = arrays.row_digests()
        self._rows = {}
        for row, digest in enumerate(digests):
            self._rows.setdefault(digest, row)
        labels = None
        if arrays.labels is not None:
            if arrays.labels.ndim == 1:
                labels = [int(label) for label in arrays.labels]
            elif self.kind == "multi_label" and arrays.labels.ndim == 2:
                labels = [tuple(int(v) for v in row) for row in arrays.labels]  # a stratum per set of labels
            elif calibration_cfg.strategy == "stratified":
                raise UsageError(f"calibration.strategy=stratified needs one label per example; the labels in "
                                 f"calibration.path have shape {list(arrays.labels.shape)}: use calibration.strategy="
                                 f"random")
            else:
                labels = list(arrays.labels)
        return DataSplits(digests, digests, digests, labels, labels, labels, shared_pool=True,
                          dataset_name=dataset_name(arrays, calibration_cfg.path),
                          calibration_source=f"calibration.path={calibration_cfg.path}")

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        if self._rows is None:
            self.data()
        rows = [self._rows[digest] for digest in examples]
        return self.arrays().take(rows)  # in the model's layout: each input's batch axis, inputs given once whole

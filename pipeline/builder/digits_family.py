"""`model=digits_cnn`: a small CNN the pipeline trains, seeded, on scikit-learn's digits.

Its data: the digits' own splits (calibration=digits), or a user's 8x8 images as 64 numeric pixel columns and a
`label` column (calibration=files). Nothing to fuse (a CNN), no checkpoint. The family contract it implements:
pipeline/builder/family.py.
"""
from __future__ import annotations

import numpy as np

from calibration.digits import digits_splits, to_model_input
from calibration.sources import load_table
from pipeline.builder.checkpoints import DataSplits, dataset_identity
from pipeline.builder.family import FamilyBase
from pipeline.errors import InputError, QuantgateError
from pipeline.manifest import sha256_bytes


def as_number(value) -> float | None:
    """A table cell as a number (a missing one: NaN), or None if it is not one. A numeral written as text
    counts: csv reads a whole column as text when one of its cells is a word."""
    if value is None:
        return float("nan")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def class_ids(values: list, where: str, n_classes: int) -> list[int]:
    """Labels as integer class ids 0..n_classes-1; names ("cat") or fractions are refused, never guessed."""
    ids = []
    for number, value in enumerate(values, start=1):
        label = as_number(value)
        if label is None or not label.is_integer() or not 0 <= label < n_classes:
            raise InputError(f"{where}, row {number}: {value!r} is not a class id; labels must be integer class ids "
                             f"0..{n_classes - 1}: map names to ids first (e.g. {{'cat': 0, 'dog': 1}})")
        ids.append(int(label))
    return ids



class DigitsCnnFamily(FamilyBase):
    """A small CNN the pipeline trains, seeded, on scikit-learn's digits (or a user's 8x8 images)."""

    input_names = ["pixels"]
    output_names = ["logits"]
    kind = "classifier"

    def __init__(self, cfg):
        self.cfg = cfg
        self._splits = None
        self._model = None

    source_name = "digits_cnn (trained on sklearn.datasets.load_digits)"

    def splits(self):
        if self._splits is None:
            self._splits = digits_splits(int(self.cfg.calibration.seed))
        return self._splits

    @staticmethod
    def architecture():
        import torch.nn as nn
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def load_torch(self):
        """Train the fp32 model (seeded, a few seconds on 2 cores); cached for the build."""
        if self._model is None:
            import torch
            from tqdm import tqdm

            torch.manual_seed(int(self.cfg.model.seed))
            model = self.architecture()
            train = self.splits()["train"]
            inputs = torch.from_numpy(to_model_input(train["pixels"]))
            labels = torch.tensor(train["label"])
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
            generator = torch.Generator().manual_seed(int(self.cfg.model.seed))
            for _ in tqdm(range(int(self.cfg.model.train_steps)), desc="train digits_cnn (fp32)", unit="step"):
                batch = torch.randint(0, len(labels), (64,), generator=generator)
                loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            self._model = model.eval()
        return self._model

    def weights_sha256(self) -> str:
        state = self.load_torch().state_dict()
        return sha256_bytes(b"".join(key.encode() + state[key].numpy().tobytes() for key in sorted(state)))

    def example_inputs(self):
        import torch
        return (torch.zeros(2, 1, 8, 8),)

    def dynamic_shapes(self):
        import torch
        return ({0: torch.export.Dim("batch", min=1, max=4096)},)

    def data(self) -> DataSplits:
        splits = self.splits()
        source = self.cfg.calibration.source
        origin, columns = "the calibration data", None
        if source == "digits":
            calibration_pixels, calibration_labels = splits["calibration"]["pixels"], splits["calibration"]["label"]
        elif source == "files":
            origin = f"calibration.data_files={[str(f) for f in self.cfg.calibration.data_files]}"
            calibration_pixels, calibration_labels, columns = self._pixels_from_files(origin)
        else:
            raise QuantgateError(f"model=digits_cnn calibrates on images: use calibration=digits, or "
                                 f"calibration=files with 64 numeric pixel columns (0..1) and a label column; "
                                 f"got calibration.source={source}")
        train = splits["train"]
        return DataSplits(
            calibration_pixels, splits["validation"]["pixels"], splits["test"]["pixels"],
            calibration_labels, splits["validation"]["label"], splits["test"]["label"],
            train_inputs={"pixels": to_model_input(train["pixels"])}, train_labels=np.asarray(train["label"]),
            dataset_name=dataset_identity(self.cfg.calibration) if source == "files" else "sklearn.datasets.load_digits",
            calibration_source=origin, calibration_columns=columns)

    def _pixels_from_files(self, origin: str) -> tuple[list, list[int] | None, list[str]]:
        """User images from csv/json/parquet (`origin` names them): 64 numeric pixel columns (scaled 0..1) and
        `label`; also the pixel columns' names."""
        table = load_table(self.cfg.calibration)
        pixel_columns = [c for c in table.column_names if c != "label"]
        if len(pixel_columns) != 64:
            raise QuantgateError(f"calibration.data_files must have 64 pixel columns (8x8) plus an optional "
                                 f"`label` column; found {len(pixel_columns)} other columns")
        rows = []
        for number, row in enumerate(table.select_columns(pixel_columns).to_list(), start=1):
            values = [as_number(row[c]) for c in pixel_columns]
            if None in values:
                column = pixel_columns[values.index(None)]
                raise InputError(f"{origin} row {number}, column {column}: {row[column]!r} is non-numeric; every "
                                 f"pixel column must be a number between 0 and 1")
            rows.append(values)
        labels = class_ids(table["label"], f"{origin} column label", 10) if "label" in table.column_names else None
        return rows, labels, pixel_columns

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        return {"pixels": to_model_input(examples)}

"""onnxruntime `CalibrationDataReader`s: one method, `get_next() -> dict | None`."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader


def tokenize(tokenizer, texts: list[str], max_length: int, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
    """int64 input_ids / attention_mask, padded to the longest text (the graph takes the mask).

    Histogram calibrators (entropy, percentile) stack every batch into one array, so they need
    one sequence length throughout: `pad_to_max_length`.
    """
    padding = "max_length" if pad_to_max_length else "longest"
    encoded = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


class BatchReader(CalibrationDataReader):
    """Feeds precomputed input batches; `on_batch` lets a progress bar count them."""

    def __init__(self, batches: list[dict[str, np.ndarray]], on_batch: Callable[[], None] | None = None):
        self._batches = batches
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(batches)
        self._on_batch = on_batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iterator, None)
        if batch is not None and self._on_batch:
            self._on_batch()
        return batch

    def rewind(self) -> None:
        self._iterator = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

"""Where the examples lie in each array: its batch axis (an int), or None for an input given once and broadcast.

A model's inputs need not be batch-first: a recurrent state is `[num_directions, batch, hidden]` (the ONNX
standard's `LSTM`/`GRU`/`RNN` layout), a sample rate a scalar. Arrays stay in the model's own layout everywhere
(the `.npz` files, calibration batches, held-out inputs); only these functions know which axis holds the
examples. numpy only: the verification child imports nothing heavier.
"""
from __future__ import annotations

import numpy as np

Axes = dict  # input (or output) name -> batch axis (int) or None (not batched: given once)


def axis_of(axes: Axes | None, name: str) -> int | None:
    """The batch axis of `name`: axis 0 unless `axes` says otherwise."""
    return (axes or {}).get(name, 0)


def count(arrays: dict[str, np.ndarray], axes: Axes | None) -> int:
    """How many examples the batched arrays hold (the first one's length along its batch axis)."""
    for name, array in arrays.items():
        axis = axis_of(axes, name)
        if axis is not None and array.ndim > axis:
            return int(array.shape[axis])
    raise ValueError("no array has a batch axis")


def take(arrays: dict[str, np.ndarray], rows, axes: Axes | None) -> dict[str, np.ndarray]:
    """The examples `rows` (indices or a slice) of every batched array; arrays given once are kept whole."""
    taken = {}
    for name, array in arrays.items():
        axis = axis_of(axes, name)
        if axis is None or array.ndim <= axis:
            taken[name] = array
        elif isinstance(rows, slice):
            index = [slice(None)] * array.ndim
            index[axis] = rows
            taken[name] = array[tuple(index)]
        else:
            taken[name] = np.take(array, np.asarray(rows, dtype=np.int64), axis=axis)
    return taken


def concatenate(parts: list[dict[str, np.ndarray]], axes: Axes | None) -> dict[str, np.ndarray]:
    """Batches joined along each array's batch axis; an array given once is taken from the first batch."""
    joined = {}
    for name, first in parts[0].items():
        axis = axis_of(axes, name)
        joined[name] = first if axis is None else np.concatenate([part[name] for part in parts], axis=axis)
    return joined


def batch_first(array: np.ndarray, axis: int | None) -> np.ndarray:
    """The array with its examples on axis 0 (what the fidelity figures judge per sample)."""
    return array if not axis or array.ndim <= axis else np.moveaxis(array, axis, 0)


def model_layout(array: np.ndarray, axis: int | None) -> np.ndarray:
    """The inverse of batch_first: examples moved from axis 0 back to `axis`."""
    return array if not axis or array.ndim <= axis else np.moveaxis(array, 0, axis)

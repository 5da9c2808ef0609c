"""Checking one verification's input files before anything runs: the two ONNX models (readable, safe to open, the
same model), the held-out .npz (fits the model's inputs, varies, labels that are class ids) and the examples'
layout in the graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration import layout
from calibration.arrays import check_declared_sizes
from calibration.errors import CalibrationError
from pipeline.errors import InputError, QuantgateError
from pipeline.guard import StampError, check_stamp, read_onnx_header, read_stamp
from pipeline.guard.onnx import UnsafeModelError, check_external_data
from pipeline.layout import find_layout
from pipeline.verify.fidelity import classification_figures


def graph_io(path: Path) -> tuple[list[str], list[str]]:
    import onnx
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # protobuf's DecodeError and friends
        raise QuantgateError(f"{path} is not a readable ONNX model: {error}") from None
    initializers = {init.name for init in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers], [o.name for o in graph.output]


def preflight(*models: Path) -> None:
    """Refuse, before onnx or onnxruntime opens them, files that are not ONNX, point outside their
    folder for external data, or carry a stamp this quantgate cannot read."""
    import onnx

    for model in models:
        try:
            read_onnx_header(model)
            check_external_data(model)
        except (StampError, UnsafeModelError) as error:
            raise QuantgateError(str(error)) from None
        try:  # what onnxruntime tolerates (an unused initializer declaring terabytes) other tools reject
            onnx.checker.check_model(str(model))
        except onnx.checker.ValidationError as error:
            first = str(error).strip().splitlines()[0]
            raise InputError(f"{model} is not a valid ONNX model (onnx.checker: {first}); fix or re-export it") from None
    stamp = read_stamp(models[0])
    if stamp:
        try:
            check_stamp(stamp, host_features=frozenset(), artifact=models[0].name)  # validates the stamp only
        except StampError as error:
            raise QuantgateError(str(error)) from None


def input_specs(path: Path) -> dict[str, tuple[np.dtype, int | None]]:
    """Each graph input's numpy dtype (float32, int64, bool, ...) and rank (None if unknown)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    specs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
        specs[value.name] = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), rank)
    return specs


def load_inputs(inputs: Path, input_names: list[str],
                specs: dict[str, tuple[np.dtype, int | None]] | None = None,
                input_axes: dict | None = None) -> tuple[int, np.ndarray | None, np.ndarray | None, list[str]]:
    """Samples available, labels, attention mask and ignored arrays of the held-out .npz, whose arrays are in the
    model's layout (`input_axes`: each input's batch axis, None for one given once; axis 0 by default); refuses,
    before any profile runs, a file whose arrays do not fit the model's inputs (names, ranks, kinds of numbers,
    values the input's type cannot hold, sample counts) or whose labels are not integer class ids."""
    try:
        check_declared_sizes(inputs)
    except CalibrationError as error:
        raise InputError(f"{error} (the verification inputs)") from None
    try:
        with np.load(inputs, allow_pickle=False) as arrays:
            absent = [name for name in input_names if name not in arrays.files]
            if absent:
                raise InputError(f"{inputs} has no array for model input(s) {absent}; it has {arrays.files}")
            loaded = {name: arrays[name] for name in arrays.files}  # an object array raises: no pickles
    except (ValueError, OSError, EOFError) as error:
        reason = "it holds an object array (pickles are not loaded)" if "allow_pickle" in str(error) else str(error)
        raise InputError(f"{inputs} cannot be used as inputs: {reason}; save plain numeric arrays named "
                         f"after the model inputs {input_names}") from None
    axes = {name: layout.axis_of(input_axes, name) for name in input_names}
    counts = {name: (loaded[name].shape[axes[name]] if loaded[name].ndim > axes[name] else None)
              for name in input_names if axes[name] is not None}
    if any(count is None for count in counts.values()) or len(set(counts.values())) != 1 or 0 in counts.values():
        where = {name: axis for name, axis in axes.items() if axis is not None}
        raise InputError(f"{inputs}: every batched model input needs the same number of samples on its batch axis "
                         f"{where} (and at least one); shapes: { {name: list(loaded[name].shape) for name in input_names} }"
                         f"; inputs given once: {[name for name, axis in axes.items() if axis is None] or 'none'}")
    n = next(iter(counts.values()))
    for name, (dtype, rank) in (specs or {}).items():
        array = loaded[name]
        if rank is not None and array.ndim != rank:
            where = "given once" if axes[name] is None else f"samples on axis {axes[name]}"
            raise InputError(f"{inputs}: array {name} has {array.ndim} axes {list(array.shape)}, but the model "
                             f"input {name} has {rank} ({where})")
        if dtype.kind == "f":
            check_float_values(inputs, name, array, dtype)
        elif dtype.kind in "iub" and array.dtype.kind not in "iub":
            raise InputError(f"{inputs}: array {name} holds {array.dtype}, but the model input {name} takes "
                             f"integers (token ids, masks)")
    check_inputs_vary(inputs, {name: layout.batch_first(loaded[name], axes[name]) for name in input_names
                               if axes[name] is not None}, n)  # inputs given once are the same for every sample
    labels = loaded.get("labels")
    if labels is not None:
        check_labels(inputs, labels, n)
    mask = loaded.get("attention_mask") if "attention_mask" in input_names else None
    ignored = [name for name in loaded if name not in input_names and name != "labels"]
    return n, labels, mask, ignored


def graph_layout(reference: Path, cfg) -> dict:
    """Where the examples lie in the model's inputs and outputs, and the state it carries from chunk to chunk ({} when
    batch-first and stateless), from its graph, `model.batch_axes` and `model.state` (pipeline/layout.py)."""
    import onnx
    found = find_layout(onnx.load(str(reference), load_external_data=False), dict(cfg.model.batch_axes),
                        str(reference), dict(cfg.model.state))
    return found.to_json()


def check_inputs_vary(inputs: Path, arrays: dict[str, np.ndarray], n: int) -> None:
    """Inputs that carry no evidence are refused: every value of every input the same (all zeros), or most
    samples copies of others (one sample repeated): int8 would be judged on one point, and pass on it."""
    if not arrays:  # no batched input: nothing varies by sample
        return
    if all(array.size and np.all(array == array.flat[0]) for array in arrays.values()):
        values = ", ".join(f"{name} = {array.flat[0].item()!r}" for name, array in arrays.items())
        raise InputError(f"{inputs}: every value of every input is the same ({values}): such inputs say nothing "
                         f"about the model; give real held-out samples (the build's heldout.npz, or traffic)")
    if n < 2:
        return
    rows = [b"".join(np.ascontiguousarray(arrays[name][i]).tobytes() for name in sorted(arrays)) for i in range(n)]
    distinct = len(set(rows))
    if distinct * 2 < n:
        raise InputError(f"{inputs}: of its {n} samples only {distinct} are distinct (the rest repeat them): "
                         f"fidelity would be judged on {distinct} point(s) counted {n} times; give {n} different "
                         f"held-out samples (or fewer: verify.native_max_samples)")


def check_labels_fit(inputs: Path, labels: np.ndarray | None, fp32: dict[str, np.ndarray], model_kind: str,
                     notes: list[str]) -> None:
    """Labels that no output is judged against are named in the notes (never silently ignored); a classifier's
    labels that its own fp32 reference agrees with no better than always guessing the commonest class do not
    belong to these inputs (shuffled, another order): refused, since accuracy against them proves nothing."""
    if labels is None or model_kind == "multi_label":  # label sets are judged as such (fidelity.py)
        return
    if model_kind != "classifier":
        notes.append(f"labels in {inputs.name} are not judged: accuracy applies to model.kind=classifier (this "
                     f"model is {model_kind}); fidelity to fp32 is what was judged")
        return
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    for output in fp32.values():
        if output.ndim < 2 or output.shape[-1] < 2 or output.argmax(-1).shape != labels.shape:
            continue
        figures = classification_figures(output, output, None, labels)
        if "reference_accuracy" not in figures or len(classes) < 2 or counts.sum() < 20:
            return
        majority = counts.max() / counts.sum()
        if figures["reference_accuracy"] <= majority:
            raise InputError(f"{inputs}: the fp32 reference agrees with only {figures['reference_accuracy']:.0%} of "
                             f"its labels, no better than always guessing the commonest class ({majority:.0%}): the "
                             f"labels do not belong to these inputs (shuffled, or in another order); fix them or "
                             f"leave `labels` out")
        return
    notes.append(f"labels in {inputs.name} fit no output (shape {list(labels.shape)}): they were not judged")


def check_float_values(inputs: Path, name: str, array: np.ndarray, dtype: np.dtype) -> None:
    """A float input's array: floating-point, every value finite and within the input's type (1e39 is
    finite in float64 but inf in the model's float32)."""
    if array.dtype.kind != "f":
        raise InputError(f"{inputs}: array {name} holds {array.dtype}, but the model input {name} takes "
                         f"floating-point values")
    limit = float(np.finfo(dtype).max)
    bad = ~(np.abs(array) <= limit)  # NaN compares false too
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{inputs}: array {name} holds {array[where]} at index {list(where)} (sample {where[0]}); the "
                         f"model input {name} takes finite {dtype} values (+-{limit:.4g}): clean or rescale the inputs")


def check_labels(inputs: Path, labels: np.ndarray, n: int) -> None:
    """Labels: one integer class id per sample (accuracy against names such as "cat" would read 0 and pass)."""
    if labels.dtype.kind not in "iu":
        raise InputError(f"{inputs}: labels holds {labels.dtype} values; labels must be integer class ids (0, 1, ...): "
                         f"map names to ids first, e.g. ids = np.unique(names, return_inverse=True)[1]")
    if labels.ndim == 0 or labels.shape[0] != n:
        raise InputError(f"{inputs}: labels has shape {list(labels.shape)}, but the inputs hold {n} samples; give one "
                         f"label per sample")

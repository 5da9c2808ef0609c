"""Calibration data as arrays: an `.npz` (or a folder of them) whose arrays are named after the model's inputs.

Arrays are in the model's own layout: the examples lie on each input's batch axis (`InputSpec.batch_axis`: axis 0,
axis 1 of a recurrent state `[num_directions, batch, hidden]`, ...; `calibration/layout.py`), and an input that is
not batched (a scalar sample rate) is given once, as the model takes it, and broadcast to every example. An optional
`labels` array (integer class ids, first axis = examples). Every array is checked against the model's inputs
(name, rank, fixed axes, kind of number) before any work, and refused in words that name the inputs the model
takes, the batch axis found and the fix. Within a kind, values are cast to the input's type (float64 ->
float32, int32 -> int64) when they fit.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration import layout
from calibration.errors import CalibrationError, one_line

LABELS = "labels"
KINDS = {"f": "floating-point", "i": "integer", "u": "integer", "b": "boolean"}


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, numpy dtype and shape (None for a dynamic axis; the whole shape None when the
    model does not say its rank), the axis its examples lie on (None: not batched, given once) and why."""

    name: str
    dtype: np.dtype
    shape: tuple | None
    batch_axis: int | None = 0
    axis_source: str = ""

    def batch_words(self) -> str:
        """Where this input's examples lie, in words, with how it was found."""
        found = f" ({self.axis_source})" if self.axis_source else ""
        if self.batch_axis is None:
            return f"not batched{found}: give it once, as the model takes it"
        return f"examples on axis {self.batch_axis}{found}"

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name} {np.dtype(self.dtype).name} [any rank]"
        axes = ", ".join("?" if size is None or isinstance(size, str) else str(size) for size in self.shape)
        return f"{self.name} {np.dtype(self.dtype).name} [{axes}]"


def describe_inputs(specs: list[InputSpec]) -> str:
    return "; ".join(spec.describe() for spec in specs)


@dataclass
class ArrayData:
    """The examples of every file, concatenated: arrays in the model's dtypes, labels, where they came from."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    files: list[Path]
    axes: dict[str, int | None] | None = None  # batch axis per input (calibration/layout.py); None: all axis 0

    def __len__(self) -> int:
        return layout.count(self.arrays, self.axes)

    def take(self, rows) -> dict[str, np.ndarray]:
        """The examples `rows` of every input, in the model's layout (inputs given once kept whole)."""
        return layout.take(self.arrays, rows, self.axes)

    def row_digests(self) -> list[str]:
        """The sha256 of each example's values (every input, in name order): equal examples, equal digest."""
        digests = []
        for row in range(len(self)):
            digest = hashlib.sha256()
            for name in sorted(self.arrays):
                axis = layout.axis_of(self.axes, name)
                array = self.arrays[name]
                value = np.ascontiguousarray(array if axis is None else np.take(array, row, axis=axis))
                digest.update(name.encode() + str(value.shape).encode() + value.tobytes())
            digests.append(digest.hexdigest())
        return digests


def npz_files(path: str | Path) -> list[Path]:
    where = Path(path).expanduser()
    if not where.exists():
        raise CalibrationError(f"calibration.path={str(path)!r} does not exist; give an .npz file (arrays named after "
                               f"the model's inputs) or a folder of them")
    if where.is_dir():
        files = sorted(f for f in where.iterdir() if f.suffix == ".npz" and f.is_file())
        if not files:
            raise CalibrationError(f"calibration.path={str(path)!r} is a folder with no .npz files in it")
        return files
    return [where]


# The most an .npz may unpack to: its arrays are loaded whole into memory. A zip bomb declares terabytes in a
# few kilobytes; checked from the zip's and each .npy's headers before anything is unpacked.
MAX_NPZ_BYTES = 4 << 30


def check_declared_sizes(file: Path, limit: int = MAX_NPZ_BYTES) -> None:
    """Refuse an .npz whose members declare more than `limit` bytes in all, or whose .npy header declares an
    array of another size than the member holds (a crafted or damaged file), before any array is unpacked."""
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            total = sum(info.file_size for info in members)
            if total > limit:
                largest = max(members, key=lambda info: info.file_size)
                raise CalibrationError(f"{file} unpacks to more than {limit / 2**30:.0f} GiB ({total / 2**30:.3g} GiB; "
                                       f"{largest.filename} alone declares {largest.file_size / 2**30:.3g} GiB): a zip "
                                       f"bomb, or data too large to load whole; give a smaller sample")
            for info in members:
                if info.filename.endswith(".npy"):
                    _check_npy_header(file, archive, info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CalibrationError(f"{file} is not a readable .npz ({one_line(error)})") from None


def _check_npy_header(file: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(stream, max_header_size=1 << 16)
        except (ValueError, SyntaxError, EOFError, OSError) as error:
            raise CalibrationError(f"{file}: {info.filename} has no valid .npy header ({one_line(error)})") from None
        header = stream.tell()
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False), in words, by the caller
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != info.file_size - header:
        raise CalibrationError(f"{file}: {info.filename} declares a {dtype} array of shape {list(shape)} "
                               f"({declared:,} bytes) but holds {info.file_size - header:,}: a crafted or damaged "
                               f"file; save it again with np.savez")


def _read(file: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    expected = describe_inputs(specs)
    if not zipfile.is_zipfile(file):
        raise CalibrationError(f"{file} is not an .npz file (a zip of named .npy arrays); save the calibration data "
                               f"with np.savez(path, NAME=array, ...) naming the model's inputs: {expected}")
    check_declared_sizes(file)
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except CalibrationError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = ("it holds an object array (pickles are not loaded)" if "allow_pickle" in str(error)
                  else f"it is not a readable .npz ({one_line(error)})")
        raise CalibrationError(f"{file} cannot be used as calibration data: {reason}; save plain numeric arrays "
                               f"named after the model's inputs: {expected}") from None


def _fits(shape: tuple, spec: InputSpec) -> bool:
    """Whether `shape` has the input's rank and every fixed axis but the batch axis."""
    return spec.shape is not None and len(shape) == len(spec.shape) and all(
        index == spec.batch_axis or not isinstance(wanted, int) or size == wanted
        for index, (size, wanted) in enumerate(zip(shape, spec.shape)))


def _check_shape(file: Path, spec: InputSpec, array: np.ndarray, expected: str) -> None:
    """The array's axes against the input's: its rank, every fixed axis but the batch axis; the error names where
    the examples must lie and the fix (moving the axis, or naming it in model.batch_axes)."""
    axis, rank = spec.batch_axis, len(spec.shape) if spec.shape is not None else None
    fix = f"name the axis in config: model.batch_axes={{{spec.name}: AXIS}} (null: given once)"
    if axis is None:
        if rank is not None and array.ndim != rank:
            given_per_example = array.ndim == rank + 1
            raise CalibrationError(
                f"{file}: array {spec.name} has shape {list(array.shape)}, but the model input {spec.describe()} is "
                f"{spec.batch_words()}" + (f" (e.g. np.savez(..., {spec.name}={spec.name}[0]) when every example "
                                           f"shares it)" if given_per_example else "") + f"; or {fix}")
    elif array.ndim == 0:
        raise CalibrationError(f"{file}: array {spec.name} is a single value; the model input {spec.describe()} has "
                               f"{spec.batch_words()}: give one per example there, or {fix}")
    elif rank is not None and array.ndim != rank:
        raise CalibrationError(f"{file}: array {spec.name} has {array.ndim} axes {list(array.shape)}, but the model "
                               f"input takes {rank} ({spec.batch_words()}): {spec.describe()}. The model's "
                               f"inputs: {expected}")
    for index, (size, wanted) in enumerate(zip(array.shape, spec.shape or ())):
        if index != axis and isinstance(wanted, int) and size != wanted:
            moved = bool(axis) and _fits(np.moveaxis(np.empty(array.shape, bool), 0, axis).shape, spec)
            hint = (f"; the examples look like they are on axis 0: save the array in the model's layout, "
                    f"np.moveaxis({spec.name}, 0, {axis})") if moved else ""
            raise CalibrationError(f"{file}: array {spec.name} has shape {list(array.shape)}, but axis {index} of the "
                                   f"model input is fixed at {wanted}: {spec.describe()}, {spec.batch_words()}"
                                   f"{hint}; or {fix}")


def _check_array(file: Path, spec: InputSpec, array: np.ndarray, expected: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    _check_shape(file, spec, array, expected)
    have_kind, want_kind = KINDS.get(array.dtype.kind), KINDS.get(want.kind)
    if have_kind is None or have_kind != want_kind:
        raise CalibrationError(f"{file}: array {spec.name} holds {array.dtype} values, but the model input takes "
                               f"{want.name} ({want_kind}): {spec.describe()}; convert it, e.g. "
                               f"array.astype(np.{want.name})")
    if want.kind == "f":
        limit = float(np.finfo(want).max)
        bad = ~(np.abs(array) <= limit)  # NaN compares false too
        if bad.any():
            where = [int(i) for i in np.argwhere(bad)[0]]
            raise CalibrationError(f"{file}: array {spec.name} holds {array[tuple(where)]} at index {where} (example "
                                   f"{where[0]}); the model input takes finite {want.name} values (+-{limit:.4g}): "
                                   f"clean or rescale the data")
    elif want.kind in "iu" and array.size:
        info = np.iinfo(want)
        if array.min() < info.min or array.max() > info.max:
            raise CalibrationError(f"{file}: array {spec.name} holds values from {array.min()} to {array.max()}, "
                                   f"outside {want.name} ({info.min}..{info.max}) that the model input takes")
    return array.astype(want, copy=False)


def load_arrays(path: str | Path, specs: list[InputSpec]) -> ArrayData:
    """Every example of the .npz file (or folder of them) at `path`, checked against the model's inputs."""
    expected = describe_inputs(specs)
    names = [spec.name for spec in specs]
    per_file: list[dict[str, np.ndarray]] = []
    files = npz_files(path)
    for file in files:
        arrays = _read(file, specs)
        missing = [name for name in names if name not in arrays]
        unknown = [name for name in arrays if name not in names and name != LABELS]
        if missing or unknown:
            problem = "; ".join(part for part in (
                f"no array for model input(s) {missing}" if missing else "",
                f"array(s) {unknown} match no model input" if unknown else "") if part)
            raise CalibrationError(f"{file}: {problem}. It has {sorted(arrays)}; the model's inputs are: {expected} "
                                   f"(plus an optional `labels`)")
        checked = {spec.name: _check_array(file, spec, arrays[spec.name], expected) for spec in specs}
        counts = {spec.name: checked[spec.name].shape[spec.batch_axis] for spec in specs if spec.batch_axis is not None}
        if LABELS in arrays and LABELS not in names:  # a model input named `labels` is an input
            labels = arrays[LABELS]
            if labels.dtype.kind not in "iu" or labels.ndim == 0:
                raise CalibrationError(f"{file}: labels holds {labels.dtype} values of shape {list(labels.shape)}; "
                                       f"labels must be integer class ids, one per example (axis 0)")
            counts[LABELS] = labels.shape[0]
            checked[LABELS] = labels.astype(np.int64)
        if len(set(counts.values())) != 1 or 0 in counts.values():
            axes = {spec.name: spec.batch_axis for spec in specs if spec.batch_axis is not None} | {LABELS: 0}
            raise CalibrationError(f"{file}: every array needs the same number of examples on its batch axis (at "
                                   f"least one); examples {counts} on axes { {n: axes[n] for n in counts} }; shapes: "
                                   f"{ {name: list(a.shape) for name, a in checked.items()} }")
        per_file.append(checked)
    if len({LABELS in arrays for arrays in per_file}) > 1:
        raise CalibrationError(f"calibration.path={str(path)!r}: some files have `labels` and some do not; give "
                               f"labels in every file or in none")
    axes = {spec.name: spec.batch_axis for spec in specs} | {LABELS: 0}
    merged = {name: _merge(path, name, [arrays[name] for arrays in per_file], axes[name], files)
              for name in per_file[0]}
    labels = merged.pop(LABELS, None) if LABELS not in names else None
    return ArrayData(merged, labels, files, {spec.name: spec.batch_axis for spec in specs})


def _merge(path, name: str, arrays: list[np.ndarray], axis: int | None, files: list[Path]) -> np.ndarray:
    """One input's arrays of every file: joined along its batch axis, or (given once) the same in every file."""
    if axis is None:
        if any(array.shape != arrays[0].shape or not np.array_equal(array, arrays[0]) for array in arrays[1:]):
            raise CalibrationError(f"calibration.path={str(path)!r}: the files give {name} different values; it is "
                                   f"not batched (given once for every example): give the same value in every file, "
                                   f"or keep the files apart")
        return arrays[0]
    shapes = {file.name: [size for index, size in enumerate(array.shape) if index != axis]
              for file, array in zip(files, arrays)}
    if len({tuple(shape) for shape in shapes.values()}) > 1:
        raise CalibrationError(f"calibration.path={str(path)!r}: the files disagree on the shape of {name} past its "
                               f"batch axis {axis} ({shapes}); examples are batched together, so give one shape per "
                               f"input (pad to a common length)")
    return np.concatenate(arrays, axis=axis)

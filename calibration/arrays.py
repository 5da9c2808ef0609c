"""Calibration data as arrays: an `.npz` (or a folder of them) whose arrays are named after the model's inputs.

First axis = examples; an optional `labels` array (integer class ids, first axis = examples). Every array is
checked against the model's inputs (name, rank, fixed axes, kind of number) before any work, and refused in
words that name the inputs the model takes. Within a kind, values are cast to the input's type (float64 ->
float32, int32 -> int64) when they fit.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError, one_line

LABELS = "labels"
KINDS = {"f": "floating-point", "i": "integer", "u": "integer", "b": "boolean"}


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, numpy dtype and shape (None for a dynamic axis; axis 0 = examples; the
    whole shape None when the model does not say its rank)."""

    name: str
    dtype: np.dtype
    shape: tuple | None

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

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def row_digests(self) -> list[str]:
        """The sha256 of each example's values (every input, in name order): equal examples, equal digest."""
        digests = []
        for row in range(len(self)):
            digest = hashlib.sha256()
            for name in sorted(self.arrays):
                value = np.ascontiguousarray(self.arrays[name][row])
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


def _check_array(file: Path, spec: InputSpec, array: np.ndarray, expected: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if array.ndim == 0:
        raise CalibrationError(f"{file}: array {spec.name} is a single value; it needs one row per example on axis 0: "
                               f"{spec.describe()}")
    if spec.shape is not None and array.ndim != len(spec.shape):
        raise CalibrationError(f"{file}: array {spec.name} has {array.ndim} axes {list(array.shape)}, but the model "
                               f"input takes {len(spec.shape)} (axis 0 = examples): {spec.describe()}. The model's "
                               f"inputs: {expected}")
    for axis, (size, wanted) in enumerate(zip(array.shape[1:], (spec.shape or ())[1:]), start=1):
        if isinstance(wanted, int) and size != wanted:
            raise CalibrationError(f"{file}: array {spec.name} has shape {list(array.shape)}, but axis {axis} of the "
                                   f"model input is fixed at {wanted}: {spec.describe()}")
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
        counts = {name: array.shape[0] for name, array in checked.items()}
        if LABELS in arrays and LABELS not in names:  # a model input named `labels` is an input
            labels = arrays[LABELS]
            if labels.dtype.kind not in "iu" or labels.ndim == 0:
                raise CalibrationError(f"{file}: labels holds {labels.dtype} values of shape {list(labels.shape)}; "
                                       f"labels must be integer class ids, one per example (axis 0)")
            counts[LABELS] = labels.shape[0]
            checked[LABELS] = labels.astype(np.int64)
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise CalibrationError(f"{file}: every array needs the same number of examples on axis 0 (at least "
                                   f"one); shapes: { {name: list(a.shape) for name, a in checked.items()} }")
        per_file.append(checked)
    if len({LABELS in arrays for arrays in per_file}) > 1:
        raise CalibrationError(f"calibration.path={str(path)!r}: some files have `labels` and some do not; give "
                               f"labels in every file or in none")
    for name in per_file[0]:
        shapes = {file.name: list(arrays[name].shape[1:]) for file, arrays in zip(files, per_file)}
        if len({tuple(shape) for shape in shapes.values()}) > 1:
            raise CalibrationError(f"calibration.path={str(path)!r}: the files disagree on the shape of {name} past "
                                   f"axis 0 ({shapes}); examples are batched together, so give one shape per input "
                                   f"(pad to a common length)")
    merged = {name: np.concatenate([arrays[name] for arrays in per_file]) for name in per_file[0]}
    labels = merged.pop(LABELS, None) if LABELS not in names else None
    return ArrayData(merged, labels, files)

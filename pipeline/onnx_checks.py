"""Checks on an ONNX file before onnx or onnxruntime opens it (stdlib only).

External data: an initializer may point at a file by a relative `location`. A crafted model can
point outside its folder (`../../etc/passwd`, `/etc/shadow`) and make a loader read it; such a
model is refused here, before any library follows the path.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from pipeline.guard import StampError, _read_varint

_GRAPH, _INITIALIZER, _EXTERNAL_DATA, _NODE, _ATTRIBUTE = 7, 5, 13, 1, 5
_ATTRIBUTE_TENSOR, _ATTRIBUTE_GRAPH, _ATTRIBUTE_TENSORS, _ATTRIBUTE_GRAPHS = 5, 6, 10, 11


class UnsafeModelError(ValueError):
    """The model file must not be opened; the message says why."""


def _fields(data: bytes):
    import io
    handle, end = io.BytesIO(data), len(data)
    while handle.tell() < end:
        key = _read_varint(handle)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, _read_varint(handle)
        elif wire == 2:
            length = _read_varint(handle)
            if handle.tell() + length > end:
                raise EOFError
            yield number, handle.read(length)
        elif wire in (1, 5):
            handle.seek(8 if wire == 1 else 4, 1)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _tensor_locations(tensor: bytes) -> list[str]:
    locations = []
    for number, value in _fields(tensor):
        if number == _EXTERNAL_DATA:
            entry = dict((field, raw.decode("utf-8")) for field, raw in _fields(value) if isinstance(raw, bytes))
            if entry.get(1) == "location":
                locations.append(entry.get(2, ""))
    return locations


def _graph_locations(graph: bytes) -> list[str]:
    locations = []
    for number, value in _fields(graph):
        if number == _INITIALIZER:
            locations += _tensor_locations(value)
        elif number == _NODE:
            for field, attribute in _fields(value):
                if field != _ATTRIBUTE:
                    continue
                for kind, payload in _fields(attribute):
                    if kind in (_ATTRIBUTE_TENSOR, _ATTRIBUTE_TENSORS):
                        locations += _tensor_locations(payload)
                    elif kind in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS):
                        locations += _graph_locations(payload)
    return locations


def external_data_locations(path: str | Path) -> list[str]:
    data = Path(path).read_bytes()
    try:
        return [location for number, value in _fields(data) if number == _GRAPH for location in _graph_locations(value)]
    except (EOFError, ValueError, UnicodeDecodeError):
        raise StampError(f"{path} is not a readable ONNX model (truncated or not ONNX); check the file") from None


def check_external_data(path: str | Path) -> None:
    """Refuse external-data locations that are absolute or leave the model's folder."""
    folder = Path(path).resolve().parent
    for location in external_data_locations(path):
        pure = PurePosixPath(location.replace("\\", "/"))
        target = (folder / location).resolve()
        if pure.is_absolute() or ".." in pure.parts or folder not in (target, *target.parents):
            raise UnsafeModelError(
                f"{Path(path).name} refers to external data at {location!r}, outside its folder; quantgate does "
                f"not open such models. Keep external data files next to the model with relative names")

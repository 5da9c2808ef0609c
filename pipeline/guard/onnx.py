"""The guard for ONNX artifacts: read the stamp without `onnx`, judge it, then (only then) open the model.

The stamp lives in ModelProto.metadata_props; this reads it, the IR version and the opset imports with
the guard's protobuf walker over an mmap of the file, so the graph's bytes are never read. Only once
the CPU passes does the guard import the installed onnxruntime and ask it (probe.py) which IR version
and opsets it loads, to predict in words whether this artifact will load at all.

    ensure_can_run("model.onnx")     # ArtifactRefused before the model is loaded; the verdict otherwise
    session = open_session("model.onnx", sess_options=options)   # the guard, then onnxruntime's session

External data: an initializer may point at a file by a relative `location`. A crafted model can point
outside its folder (`../../etc/passwd`, `/etc/shadow`) and make a loader read it; check_external_data
refuses such a model before any library follows the path (open_session runs it).
"""
from __future__ import annotations

import mmap
from pathlib import Path, PurePosixPath

from . import protobuf
from .errors import ArtifactRefused, UnreadableArtifact, UnsafeModelError
from .stamp import GuardVerdict, ModelVersions, check_stamp, unprefixed

# ModelProto fields (onnx/onnx.proto3)
_IR_VERSION, _GRAPH, _OPSET_IMPORT, _METADATA_PROPS = 1, 7, 8, 14
# GraphProto.node/.initializer, NodeProto.attribute, TensorProto.external_data, AttributeProto.t/g/tensors/graphs
_NODE, _INITIALIZER, _ATTRIBUTE, _EXTERNAL_DATA = 1, 5, 5, 13
_ATTRIBUTE_TENSOR, _ATTRIBUTE_GRAPH, _ATTRIBUTE_TENSORS, _ATTRIBUTE_GRAPHS = 5, 6, 10, 11


class _MappedModel:
    """The model file as a read-only mmap (`with _MappedModel(path) as data:`), or UnreadableArtifact."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self):
        if not self.path.is_file():
            raise UnreadableArtifact(f"{self.path} does not exist or is not a file")
        try:
            with open(self.path, "rb") as handle:
                if not self.path.stat().st_size:
                    raise UnreadableArtifact(f"{self.path} is empty, not an ONNX model; check the file")
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as error:
            raise UnreadableArtifact(f"{self.path} cannot be read ({error.strerror or error})") from None
        return self._map

    def __exit__(self, kind, error, trace):
        self._map.close()
        if isinstance(error, protobuf.ProtobufError):
            raise UnreadableArtifact(f"{self.path} is not a readable ONNX model (truncated or not ONNX: {error}); "
                                     f"rebuild it or check the file") from None


def _entry(data, span) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    key = value = ""
    for number, wire, field in protobuf.fields(data, *span):
        if wire != protobuf.LENGTH_DELIMITED:
            raise protobuf.ProtobufError("malformed key/value entry")
        if number == 1:
            key = protobuf.text(data, field)
        elif number == 2:
            value = protobuf.text(data, field)
    return key, value


def _opset(data, span) -> tuple[str, int]:
    """An OperatorSetIdProto: (domain, version)."""
    domain, version = "", 0
    for number, wire, field in protobuf.fields(data, *span):
        if number == 1 and wire == protobuf.LENGTH_DELIMITED:
            domain = protobuf.text(data, field)
        elif number == 2 and wire == protobuf.VARINT:
            version = field
        else:
            raise protobuf.ProtobufError("malformed opset_import entry")
    return domain, version


def read_header(path: str | Path) -> tuple[ModelVersions, dict[str, str]]:
    """(IR version and opsets, metadata_props) of an ONNX file, without reading its graph."""
    ir_version, opsets, props = 0, {}, {}
    with _MappedModel(path) as data:
        for number, wire, value in protobuf.fields(data):
            if number == 0:
                raise protobuf.ProtobufError("field number 0")
            if number == _IR_VERSION and wire == protobuf.VARINT:
                ir_version = value
            elif number == _OPSET_IMPORT and wire == protobuf.LENGTH_DELIMITED:
                domain, version = _opset(data, value)
                opsets["" if domain == "ai.onnx" else domain] = version
            elif number == _METADATA_PROPS and wire == protobuf.LENGTH_DELIMITED:
                key, text = _entry(data, value)
                props[key] = text
    if ir_version == 0:
        raise UnreadableArtifact(f"{path} is not an ONNX model (no ir_version field); check the file")
    return ModelVersions(ir_version, opsets), props


def read_onnx_header(path: str | Path) -> tuple[int, dict[str, str]]:
    """(ir_version, metadata_props) of an ONNX file, without loading the graph."""
    versions, props = read_header(path)
    return versions.ir_version, props


def read_onnx_versions(path: str | Path) -> ModelVersions:
    return read_header(path)[0]


def read_onnx_stamp(path: str | Path) -> dict[str, str]:
    """The quantgate.* keys of an ONNX model, prefix removed; {} when it carries none."""
    return unprefixed(read_header(path)[1])


def ensure_can_run(path: str | Path, host_features: frozenset[str] | set[str] | None = None,
                   runtime: dict | None = None, check_runtime: bool = True,
                   public_key: str | Path | None = None) -> GuardVerdict:
    """Raise ArtifactRefused (or StampError) unless this host can run the ONNX model at `path`.

    With `public_key`, the model's folder must first carry a valid signature by that key over all its
    files (signature.py). The CPU is checked next, with the standard library only; only a CPU that
    passes imports the installed onnxruntime to ask what it loads (unless `runtime` is given)."""
    if public_key is not None:
        from .signature import check_signature
        check_signature(path, public_key)
    versions, props = read_header(path)
    stamp = unprefixed(props)
    if host_features is None:
        from .cpuid import host_features as read_host_features
        host_features = read_host_features()
    verdict = check_stamp(stamp, host_features, artifact=Path(path).name)
    if verdict.can_run and check_runtime:
        if runtime is None:
            from .probe import installed_limits
            runtime = installed_limits()
        verdict = check_stamp(stamp, host_features, versions, runtime, artifact=Path(path).name)
    if not verdict.can_run:
        raise ArtifactRefused(f"{Path(path).name}: {verdict.message()}")
    return verdict


def open_session(path: str | Path, *, host_features: frozenset[str] | set[str] | None = None,
                 public_key: str | Path | None = None, **session_kwargs):
    """ensure_can_run, check_external_data, then `onnxruntime.InferenceSession(path, **session_kwargs)`
    (providers default to the CPU provider, the one the stamp speaks for). A refused model is never opened."""
    ensure_can_run(path, host_features, public_key=public_key)
    check_external_data(path)
    import onnxruntime
    session_kwargs.setdefault("providers", ["CPUExecutionProvider"])
    return onnxruntime.InferenceSession(str(path), **session_kwargs)


# --- external data --------------------------------------------------------------------------------------
def _tensor_locations(data, span) -> list[str]:
    locations = []
    for number, wire, value in protobuf.fields(data, *span):
        if number == _EXTERNAL_DATA and wire == protobuf.LENGTH_DELIMITED:
            key, location = _entry(data, value)
            if key == "location":
                locations.append(location)
    return locations


def _graph_locations(data, span) -> list[str]:
    locations = []
    for number, wire, value in protobuf.fields(data, *span):
        if wire != protobuf.LENGTH_DELIMITED:
            continue
        if number == _INITIALIZER:
            locations += _tensor_locations(data, value)
        elif number == _NODE:
            for field, field_wire, attribute in protobuf.fields(data, *value):
                if field != _ATTRIBUTE or field_wire != protobuf.LENGTH_DELIMITED:
                    continue
                for kind, kind_wire, payload in protobuf.fields(data, *attribute):
                    if kind_wire != protobuf.LENGTH_DELIMITED:
                        continue
                    if kind in (_ATTRIBUTE_TENSOR, _ATTRIBUTE_TENSORS):
                        locations += _tensor_locations(data, payload)
                    elif kind in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS):
                        locations += _graph_locations(data, payload)
    return locations


def external_data_locations(path: str | Path) -> list[str]:
    """Every external-data `location` the model's tensors (subgraphs included) name."""
    with _MappedModel(path) as data:
        return [location for number, wire, value in protobuf.fields(data)
                if number == _GRAPH and wire == protobuf.LENGTH_DELIMITED for location in _graph_locations(data, value)]


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

"""The registry of artifact kinds: what an artifact is, as data, and the handler each stage runs for it.

A kind is a frozen row: the container the guard reads (pipeline/guard/artifact.py: model file, suffix, stamp
reader), the quantization scheme and bit width, the config that builds it (`export`, modes), the stamp values that
name it, its OCI media type and the graph count that proves the quantization. Stages ask the registry instead of
testing a suffix, `cfg.export` or the word "int8":

    kind_for_config(cfg)        the kind a build makes (builder/task.py: its stages)
    kind_of_manifest(manifest)  the kind a built folder holds (verify/stage.py, release/evidence.py)
    kind_of_file(path)          the kind of a model file, with its stamp (inspect, audit)
    handler(layer, kind)        the handler a layer registered for the kind

Each layer registers one handler per kind when it is imported (`register_handlers`: builder/task.py "build",
verify/stage.py "verify", pipeline/inspect.py "inspect"), the torchao way: one verb plus a handler registry. The
registration is checked both ways: a layer that leaves a known kind without a handler, or a kind registered after a
layer without that layer's handler, is named at once (KindError), never a KeyError at the lookup.
Adding a kind (docs/architecture.md "Adding an artifact kind"): its row and `register_kind`, plus its handlers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from pipeline.errors import UsageError
from pipeline.guard.artifact import CONTAINERS, ONNX, PT2, Container, container_of

ACTIVATIONS, WEIGHT_ONLY = "activations and weights", "weight-only"
WEIGHT_ONLY_FORMAT = "MatMulNBits (weight-only, blockwise)"  # the stamp's quant_format of a weight-only decoder


class KindError(UsageError):
    """No kind matches, or a kind and a layer's handlers do not cover each other."""


@dataclass(frozen=True)
class ArtifactKind:
    name: str
    container: str  # the guard's container (pipeline/guard/artifact.py CONTAINERS): file, suffix, stamp reader
    scheme: str  # ACTIVATIONS (int8 activations and weights) or WEIGHT_ONLY (MatMulNBits, float activations)
    bits: int  # of the quantized weights
    export: str  # cfg.export that builds it
    modes: tuple[str, ...]  # cfg.mode.name values that build it
    quant_format: str  # the stamp's quant_format
    media_type: str  # OCI layer media type of its model file (pipeline/release/oci.py)
    # The GraphCounts field (pipeline/builder/graph_counts.py) that must be non-zero for the graph to be what the
    # stamp says (builder/stamp.py); "" when the kind's own stage proves it (a .pt2: its ISA audit).
    proven_by: str
    proof_ops: tuple[str, ...]  # the compute nodes that prove it, in words (messages, docs)
    stamp_match: tuple[tuple[str, str], ...] = ()  # further stamp key/value pairs that name it (the bits)
    folder_suffix: str = ""  # after <model>-<mode>-<target>[-runtime] in artifacts/ (builder/task.py)
    native_code: bool = False  # the file holds machine code (pipeline/isa/audit.py audits it)

    @property
    def guard(self) -> Container:
        return CONTAINERS[self.container]

    @property
    def model_file(self) -> str:
        return self.guard.model_file

    @property
    def suffix(self) -> str:
        return self.guard.suffix

    @property
    def stamp_kind(self) -> Optional[str]:
        """The stamp's `artifact_kind` value, for containers whose guard requires one."""
        return self.guard.stamp_kind

    def names(self, stamp: Mapping[str, str]) -> bool:
        """Whether a stamp (quantgate.* keys, prefix removed) is one of this kind's."""
        return stamp.get("quant_format") == self.quant_format and all(
            stamp.get(key) == value for key, value in self.stamp_match) and (
            self.stamp_kind is None or stamp.get("artifact_kind") == self.stamp_kind)


_INT8_OPS = ("MatMul/Conv/Gemm with dequantized operands", "MatMulInteger", "ConvInteger", "QLinearMatMul",
             "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeMatMul", "QEmbedLayerNormalization")


def _weight_only(bits: int) -> ArtifactKind:
    return ArtifactKind(f"onnx-int{bits}-weight-only", ONNX, WEIGHT_ONLY, bits, "onnx", (f"int{bits}",),
                        WEIGHT_ONLY_FORMAT, "application/vnd.onnx.model", "blockwise_weights", ("MatMulNBits",),
                        stamp_match=(("bits", str(bits)),))


ONNX_QDQ = ArtifactKind("onnx-int8-qdq", ONNX, ACTIVATIONS, 8, "onnx", ("static", "qat", "auto"), "QDQ",
                        "application/vnd.onnx.model", "int8_nodes", _INT8_OPS)
ONNX_QOPERATOR = ArtifactKind("onnx-int8-qoperator", ONNX, ACTIVATIONS, 8, "onnx", ("dynamic", "static"), "QOperator",
                              "application/vnd.onnx.model", "int8_nodes", _INT8_OPS)
AOTI_PT2 = ArtifactKind("aoti-int8-pt2", PT2, ACTIVATIONS, 8, "aoti", ("static", "qat"), "PT2E",
                        "application/vnd.pytorch.pt2", "", ("the package's int8 kernels, audited",),
                        folder_suffix="-aoti", native_code=True)
ONNX_INT4_WEIGHT_ONLY, ONNX_INT8_WEIGHT_ONLY = _weight_only(4), _weight_only(8)

KINDS: dict[str, ArtifactKind] = {}
_HANDLERS: dict[str, dict[str, Any]] = {}  # layer -> kind name -> handler


def register_kind(kind: ArtifactKind, handlers: Mapping[str, Any] | None = None) -> ArtifactKind:
    """Add a kind, with its handler for each layer already registered (a layer left without one is named)."""
    handlers = dict(handlers or {})
    if kind.container not in CONTAINERS:
        raise KindError(f"artifact kind {kind.name!r}: the guard has no container {kind.container!r} "
                        f"(pipeline/guard/artifact.py register_container; known: {', '.join(CONTAINERS)})")
    if kind.name in KINDS:
        raise KindError(f"artifact kind {kind.name!r} is registered already")
    missing = sorted(set(_HANDLERS) - set(handlers))
    if missing:
        raise KindError(f"artifact kind {kind.name!r} has no handler for {', '.join(missing)}: give one per layer "
                        f"(register_kind(kind, handlers={{layer: handler}}))")
    KINDS[kind.name] = kind
    for layer, layer_handler in handlers.items():
        _HANDLERS.setdefault(layer, {})[kind.name] = layer_handler
    return kind


def register_handlers(layer: str, handlers: Mapping[str, Any]) -> None:
    """A layer's handler for every registered kind, by kind name; a kind left out, or a name no kind has, is named."""
    known = _HANDLERS.get(layer, {})
    unknown = sorted(set(handlers) - set(KINDS))
    missing = sorted(set(KINDS) - set(handlers) - set(known))
    if unknown or missing:
        raise KindError(f"the {layer!r} handlers do not match the artifact kinds: "
                        + "; ".join(part for part in (unknown and f"no such kind {', '.join(unknown)}",
                                                      missing and f"no handler for {', '.join(missing)}") if part))
    _HANDLERS[layer] = {**known, **handlers}


def handler(layer: str, kind: ArtifactKind) -> Any:
    try:
        return _HANDLERS[layer][kind.name]
    except KeyError:
        raise KindError(f"no {layer!r} handler is registered for artifact kind {kind.name!r}") from None


def kind_for_config(cfg) -> ArtifactKind:
    """The kind a build of `cfg` makes: its export and mode (static: its mode.quant_format tells QDQ from QOperator).
    mode=auto builds as QDQ's stages; the stamp names the kind it kept."""
    export, mode = str(cfg.export), str(cfg.mode.name)
    found = [kind for kind in KINDS.values() if kind.export == export and mode in kind.modes]
    if len(found) > 1:
        found = [kind for kind in found if kind.quant_format == str(cfg.mode.quant_format)] or found[:1]
    if not found:
        builds = ", ".join(f"export={kind.export} mode={'|'.join(kind.modes)}" for kind in KINDS.values())
        raise KindError(f"no artifact kind is built by export={export} mode={mode}; the kinds: {builds}")
    return found[0]


def folder_suffix(export: str) -> str:
    """What an export adds to an artifact folder's name (`-aoti`); "" for one no kind builds (rules refuse it)."""
    return next((kind.folder_suffix for kind in KINDS.values() if kind.export == str(export)), "")


def kind_of_stamp(stamp: Mapping[str, str], container: str) -> Optional[ArtifactKind]:
    """The kind a stamp names in this container, or None (no stamp, or one no kind matches)."""
    return next((kind for kind in KINDS.values() if kind.container == container and kind.names(stamp)), None)


def container_kind(container: str) -> ArtifactKind:
    """The first kind of a container: what an unstamped file of it is read as."""
    return next(kind for kind in KINDS.values() if kind.container == container)


def kind_of_file(path: str | Path) -> tuple[ArtifactKind, dict[str, str]]:
    """(kind, stamp) of a model file or artifact folder: its stamp's kind, else its container's first kind."""
    container, path = container_of(path)
    stamp = container.read_stamp(path)
    return kind_of_stamp(stamp, container.name) or container_kind(container.name), stamp


def kind_of_manifest(manifest) -> ArtifactKind:
    """The kind of a built folder: the stamp its manifest.json records, else its mode and model file's container."""
    container, _ = container_of(manifest.path(manifest.model_file))
    kind = kind_of_stamp(manifest.stamp or {}, container.name)
    if kind is not None:
        return kind
    found = [kind for kind in KINDS.values() if kind.container == container.name and manifest.mode in kind.modes]
    if not found:
        raise KindError(f"{manifest.folder}: no artifact kind holds {manifest.model_file} built with mode="
                        f"{manifest.mode}; rebuild it with this quantgate")
    return found[0]


def media_types() -> dict[str, str]:
    """Model file suffix -> OCI media type, from the kinds (kinds of one container share theirs)."""
    return {kind.suffix: kind.media_type for kind in KINDS.values()}


for _kind in (ONNX_QDQ, ONNX_QOPERATOR, AOTI_PT2, ONNX_INT4_WEIGHT_ONLY, ONNX_INT8_WEIGHT_ONLY):
    register_kind(_kind)

"""Refuse, in words, to run an artifact on a CPU or runtime it was not built for.

The error a user should have seen instead of "Illegal instruction (core dumped)". Standard
library only: it must run on CPUs where importing numpy or onnxruntime already dies (numpy 2.4
does on Nehalem), so it reads the ONNX stamp with a tiny protobuf walker and the CPU through
CPUID (`pipeline.cpuid`).

    from pipeline.guard import ensure_can_run
    ensure_can_run("model.onnx")          # raises ArtifactRefused, before any runtime is loaded
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

STAMP_PREFIX = "quantgate."
STAMP_SCHEMA = "1"
REQUIRED_STAMP_KEYS = (
    "schema", "target_isa", "required_cpu_features", "mode", "quant_format", "weight_type",
    "activation_type", "per_channel", "reduce_range", "calibration", "source_model", "versions",
    "opset", "config_sha256",
)
EXIT_REFUSED = 3  # the exit code of `python -m pipeline.guard` and of verification children refused


class ArtifactRefused(RuntimeError):
    """This host must not run the artifact; the message says why and what to do."""


class StampError(ValueError):
    """The artifact carries no readable quantgate stamp."""


# --- a minimal reader of ONNX ModelProto fields, enough for metadata_props (14) and ir_version (1)
def _read_varint(handle) -> int:
    shift = result = 0
    while True:
        byte = handle.read(1)
        if not byte:
            raise EOFError
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _read_fields(handle, end: int):
    """Yield (field_number, wire_type, value) where value is int or bytes; skips nothing silently."""
    while handle.tell() < end:
        key = _read_varint(handle)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, _read_varint(handle)
        elif wire == 2:
            length = _read_varint(handle)
            if handle.tell() + length > end:
                raise EOFError
            if number == 14:
                yield number, wire, handle.read(length)
            else:
                handle.seek(length, os.SEEK_CUR)
                yield number, wire, None
        elif wire == 1:
            handle.seek(8, os.SEEK_CUR)
        elif wire == 5:
            handle.seek(4, os.SEEK_CUR)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _parse_entry(data: bytes) -> tuple[str, str]:
    import io
    handle = io.BytesIO(data)
    key = value = ""
    while handle.tell() < len(data):
        tag = _read_varint(handle)
        if tag & 7 != 2:
            raise ValueError("malformed metadata entry")
        raw = handle.read(_read_varint(handle)).decode("utf-8")
        if tag >> 3 == 1:
            key = raw
        elif tag >> 3 == 2:
            value = raw
    return key, value


def read_onnx_header(path: str | Path) -> tuple[int, dict[str, str]]:
    """(ir_version, metadata_props) of an ONNX file, without loading the graph."""
    path = Path(path)
    if not path.is_file():
        raise StampError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    ir_version, props = 0, {}
    try:
        with open(path, "rb") as handle:
            for number, wire, value in _read_fields(handle, size):
                if number == 1 and wire == 0:
                    ir_version = value
                elif number == 14 and wire == 2:
                    key, text = _parse_entry(value)
                    props[key] = text
    except (EOFError, ValueError, UnicodeDecodeError) as error:
        raise StampError(f"{path} is not a readable ONNX model (truncated or not ONNX: {error or 'unexpected end'}); "
                         f"rebuild it or check the file") from None
    if ir_version == 0:
        raise StampError(f"{path} is not an ONNX model (no ir_version field); check the file")
    return ir_version, props


def read_stamp(path: str | Path) -> dict[str, str]:
    """The quantgate.* keys of an artifact, prefix removed."""
    _, props = read_onnx_header(path)
    return {k[len(STAMP_PREFIX):]: v for k, v in props.items() if k.startswith(STAMP_PREFIX)}


@dataclass
class GuardVerdict:
    can_run: bool
    target_isa: str
    required_cpu_features: list[str]
    missing_cpu_features: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def message(self) -> str:
        return "; ".join(self.problems) if self.problems else f"this host can run the artifact built for {self.target_isa}"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_stamp(stamp: dict[str, str], host_features: frozenset[str] | set[str] | None = None,
                runtime_versions: dict[str, str] | None = None) -> GuardVerdict:
    """Compare a stamp with a host's CPU features (CPUID by default) and installed runtime."""
    if not stamp:
        raise StampError("the artifact carries no quantgate stamp (no quantgate.* metadata_props); "
                         "build it with quantgate or verify it with an explicit TARGET=")
    missing_keys = [key for key in REQUIRED_STAMP_KEYS if key not in stamp]
    if missing_keys:
        raise StampError(f"the artifact's stamp lacks keys {missing_keys}; rebuild it with this quantgate version")
    if stamp["schema"] != STAMP_SCHEMA:
        raise StampError(f"the artifact's stamp schema is {stamp['schema']!r}, this quantgate reads schema "
                         f"{STAMP_SCHEMA!r}; use the quantgate version that built it or rebuild it")
    required = json.loads(stamp["required_cpu_features"])
    verdict = GuardVerdict(True, stamp["target_isa"], required)
    if host_features is None:
        from pipeline.cpuid import host_features as read_host_features
        host_features = read_host_features()
    missing = sorted(set(required) - set(host_features))
    if missing:
        verdict.missing_cpu_features = missing
        verdict.problems.append(
            f"artifact built for {stamp['target_isa']} needs {', '.join(required_headline(required, missing))}; "
            f"this CPU lacks: {', '.join(missing)}. Build for a lower target (e.g. TARGET=x86_64_v2) "
            f"or deploy on a CPU with these features")
    if runtime_versions is None:
        runtime_versions = installed_runtime_versions()
    built_with = json.loads(stamp["versions"]).get("onnxruntime")
    installed = runtime_versions.get("onnxruntime")
    if installed is None:
        verdict.problems.append("onnxruntime is not installed; `pip install onnxruntime` to run this artifact")
    elif built_with and _version_tuple(installed) < _version_tuple(built_with):
        verdict.problems.append(
            f"artifact built with onnxruntime {built_with}; this host runs {installed}, which may not load it. "
            f"Upgrade onnxruntime to >= {built_with} or rebuild against the deployed runtime")
    verdict.can_run = not verdict.problems
    return verdict


def required_headline(required: list[str], missing: list[str]) -> list[str]:
    """The few features worth naming first: the missing ones, in the target's order."""
    return [feature for feature in required if feature in missing] or required


def installed_runtime_versions() -> dict[str, str]:
    versions = {}
    for package in ("onnxruntime", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def ensure_can_run(path: str | Path, host_features: frozenset[str] | set[str] | None = None,
                   runtime_versions: dict[str, str] | None = None) -> GuardVerdict:
    """Raise ArtifactRefused (or StampError) unless this host can run the artifact at `path`."""
    verdict = check_stamp(read_stamp(path), host_features, runtime_versions)
    if not verdict.can_run:
        raise ArtifactRefused(f"{Path(path).name}: {verdict.message()}")
    return verdict


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.guard MODEL.onnx`: exit 0 if this host can run it, 3 if refused."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipeline.guard MODEL.onnx", file=sys.stderr)
        return 2
    try:
        verdict = ensure_can_run(args[0])
    except (ArtifactRefused, StampError) as error:
        print(f"quantgate guard: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"quantgate guard: ok: {verdict.message()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Refuse, in words, to run an artifact on a CPU or runtime it was not built for.

The error a user should have seen instead of "Illegal instruction (core dumped)". Standard
library only: it must run on CPUs where importing numpy or onnxruntime already dies (numpy 2.4
does on Nehalem), so it reads the ONNX stamp with a tiny protobuf walker and the CPU through
CPUID (`pipeline.cpuid`). Only once the CPU passes does it import the installed onnxruntime and
ask it (`pipeline.runtime_probe`) which IR version and opsets it loads, to predict in words
whether this artifact will load at all.

    from pipeline.guard import ensure_can_run
    ensure_can_run("model.onnx")          # raises ArtifactRefused, before the model is loaded
    ensure_can_run("deploy/minilm-dynamic-avx2/model.onnx", public_key="keys/quantgate.pub")
                                          # also refuses an unsigned or altered artifact folder

Signature checks are optional and the one thing here beyond the standard library: only with
`public_key` does the guard import model-signing (pipeline.release.sign), and says so if it is missing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


class SignatureCheckUnavailable(ArtifactRefused):
    """A public key was given, but the package that checks signatures (model-signing) is not installed."""


class StampError(ValueError):
    """The artifact carries no readable quantgate stamp."""


# --- a minimal reader of ONNX ModelProto fields: ir_version (1), opset_import (8), metadata_props (14)
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
            if number in (8, 14):  # opset_import, metadata_props: small messages we parse
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


def _parse_opset(data: bytes) -> tuple[str, int]:
    import io
    handle, domain, version = io.BytesIO(data), "", 0
    while handle.tell() < len(data):
        tag = _read_varint(handle)
        if tag == (1 << 3 | 2):
            domain = handle.read(_read_varint(handle)).decode("utf-8")
        elif tag == (2 << 3):
            version = _read_varint(handle)
        else:
            raise ValueError("malformed opset_import entry")
    return domain, version


@dataclass
class ModelVersions:
    """What a runtime must support to load a model: its IR version and opset per domain ("" = ai.onnx)."""

    ir_version: int
    opsets: dict[str, int]


def read_onnx_header(path: str | Path) -> tuple[int, dict[str, str]]:
    """(ir_version, metadata_props) of an ONNX file, without loading the graph."""
    versions, props = _read_header(path)
    return versions.ir_version, props


def read_onnx_versions(path: str | Path) -> ModelVersions:
    return _read_header(path)[0]


def _read_header(path: str | Path) -> tuple[ModelVersions, dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise StampError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    ir_version, props, opsets = 0, {}, {}
    try:
        with open(path, "rb") as handle:
            for number, wire, value in _read_fields(handle, size):
                if number == 1 and wire == 0:
                    ir_version = value
                elif number == 8 and wire == 2:
                    domain, version = _parse_opset(value)
                    opsets["" if domain == "ai.onnx" else domain] = version
                elif number == 14 and wire == 2:
                    key, text = _parse_entry(value)
                    props[key] = text
    except (EOFError, ValueError, UnicodeDecodeError) as error:
        raise StampError(f"{path} is not a readable ONNX model (truncated or not ONNX: {error or 'unexpected end'}); "
                         f"rebuild it or check the file") from None
    if ir_version == 0:
        raise StampError(f"{path} is not an ONNX model (no ir_version field); check the file")
    return ModelVersions(ir_version, opsets), props


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


def check_stamp(stamp: dict[str, str], host_features: frozenset[str] | set[str] | None = None,
                model: ModelVersions | None = None, runtime: dict | None = None) -> GuardVerdict:
    """Compare a stamp with a host's CPU features (CPUID by default) and, given both `model`
    (read_onnx_versions) and `runtime` (pipeline.runtime_probe.probe()), predict whether it loads."""
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
            f"this CPU lacks: {', '.join(missing)}. " + (
                # fp/asimd are the Arm baseline: a host without them is no Arm CPU at all.
                "This artifact is for 64-bit Arm (aarch64); run it on an Arm CPU"
                if {"fp", "asimd"} <= set(missing) else
                "Build for a lower target (e.g. TARGET=x86_64_v2) or deploy on a CPU with these features"))
    if model is not None and runtime is not None:
        verdict.problems += predict_load(model, runtime)
    verdict.can_run = not verdict.problems
    return verdict


def predict_load(model: ModelVersions, runtime: dict) -> list[str]:
    """Why `runtime` (limits from pipeline.runtime_probe) will refuse to load `model`, in words; [] = it loads."""
    version = runtime.get("versions", {}).get("onnxruntime")
    if not version:
        return ["onnxruntime is not installed; `pip install onnxruntime` to run this artifact"]
    fix = f"rebuild with RUNTIME=onnxruntime=={version} or upgrade the runtime"
    problems = []
    if model.ir_version > runtime["max_ir_version"]:
        problems.append(f"artifact has IR version {model.ir_version}; onnxruntime {version} loads at most "
                        f"{runtime['max_ir_version']}; {fix}")
    limits = runtime["max_opsets"]
    for domain, opset in sorted(model.opsets.items()):
        # A domain the probe did not ask about (a custom op library) is not predicted either way.
        if domain in limits and opset > limits[domain]:
            problems.append(f"artifact imports opset {opset} of {domain or 'ai.onnx'}; onnxruntime {version} "
                            f"loads at most {limits[domain]}; {fix}")
    return problems


def required_headline(required: list[str], missing: list[str]) -> list[str]:
    """The few features worth naming first: the missing ones, in the target's order."""
    return [feature for feature in required if feature in missing] or required


def ensure_can_run(path: str | Path, host_features: frozenset[str] | set[str] | None = None,
                   runtime: dict | None = None, check_runtime: bool = True,
                   public_key: str | Path | None = None) -> GuardVerdict:
    """Raise ArtifactRefused (or StampError) unless this host can run the artifact at `path`.

    With `public_key`, the artifact's folder must first carry a valid signature by that key over all
    its files (check_signature). The CPU is checked next, with the standard library only; only a CPU
    that passes imports the installed onnxruntime to ask what it loads (unless `runtime` is given)."""
    if public_key is not None:
        check_signature(path, public_key)
    versions, props = _read_header(path)
    stamp = {k[len(STAMP_PREFIX):]: v for k, v in props.items() if k.startswith(STAMP_PREFIX)}
    verdict = check_stamp(stamp, host_features)
    if verdict.can_run and check_runtime:
        if runtime is None:
            from pipeline.runtime_probe import installed_limits
            runtime = installed_limits()
        verdict = check_stamp(stamp, host_features, versions, runtime)
    if not verdict.can_run:
        raise ArtifactRefused(f"{Path(path).name}: {verdict.message()}")
    return verdict


def check_signature(path: str | Path, public_key: str | Path) -> None:
    """Refuse an artifact whose folder is unsigned, altered after signing, or signed with another key."""
    try:
        import model_signing  # noqa: F401 - optional: imported only when a public key is given
    except ImportError:
        raise SignatureCheckUnavailable(
            f"{Path(path).name}: a public key was given, but signature checks need the model-signing package, "
            f"which is not installed: `pip install model-signing==1.1.1 pyopenssl==26.4.0` (or drop public_key)") from None
    from pipeline.release import TrustError
    from pipeline.release.sign import Trust, verify_folder
    try:
        verify_folder(Path(path).parent, Trust.of(public_key))
    except TrustError as error:
        raise ArtifactRefused(str(error)) from None  # the words name the folder and the fix


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.guard MODEL.onnx|MODEL.pt2`: exit 0 if this host can run it, 3 if refused."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    public_key = None
    if len(args) == 3 and args[1] == "--public-key":  # also check the folder's signature (pipeline.release)
        args, public_key = args[:1], args[2]
    if len(args) != 1:
        print("usage: python -m pipeline.guard MODEL.onnx|MODEL.pt2 [--public-key KEY.pub]", file=sys.stderr)
        return 2
    check = ensure_can_run
    if args[0].endswith(".pt2"):  # a torch AOTInductor package: its stamp travels inside the zip
        from pipeline.guard_torch import ensure_can_run as check
    try:
        if public_key is not None:
            check_signature(args[0], public_key)
        verdict = check(args[0])
    except (ArtifactRefused, StampError) as error:
        print(f"quantgate guard: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"quantgate guard: ok: {verdict.message()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a quantgate stamp holds and how it is judged against a host: its CPU, and the runtime it has.

The same `quantgate.*` keys travel in an ONNX model's metadata_props (onnx.py) and in a .pt2 package's
`extra/quantgate_stamp.json` (pt2.py); both readers hand the keys, prefix removed, to check_stamp.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import StampError

STAMP_PREFIX = "quantgate."
STAMP_SCHEMA = "1"
REQUIRED_STAMP_KEYS = (
    "schema", "target_isa", "required_cpu_features", "mode", "quant_format", "weight_type",
    "activation_type", "per_channel", "reduce_range", "calibration", "source_model", "versions",
    "opset", "config_sha256",
)
# Keys whose values the guard decodes from JSON and judges; every other value is text it only reports.
FEATURE_LIST_KEYS = ("required_cpu_features", "audited_cpu_features")
JSON_OBJECT_KEYS = ("versions",)
# The oldest onnxruntime that runs the artifact, where its opsets cannot say (a contrib operator whose inputs changed
# within com.microsoft opset 1: a decoder's GroupQueryAttention); judged against the runtime at hand when one is.
RUNTIME_FLOOR_KEY = "min_onnxruntime"
REBUILD = "rebuild the artifact with quantgate"


@dataclass
class ModelVersions:
    """What a runtime must support to load a model: its IR version and opset per domain ("" = ai.onnx)."""

    ir_version: int
    opsets: dict[str, int]


@dataclass
class GuardVerdict:
    can_run: bool
    target_isa: str
    required_cpu_features: list[str]
    missing_cpu_features: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def message(self) -> str:
        return "; ".join(self.problems) if self.problems else f"this host can run the artifact built for {self.target_isa}"


def unprefixed(props: dict[str, str]) -> dict[str, str]:
    """The quantgate.* entries of a key/value mapping, prefix removed."""
    return {key[len(STAMP_PREFIX):]: value for key, value in props.items() if key.startswith(STAMP_PREFIX)}


def _json_value(stamp: dict[str, str], key: str, artifact: str):
    """A stamp value that holds JSON (a list or an object), or StampError naming the key."""
    try:
        return json.loads(stamp[key])
    except ValueError:
        raise StampError(f"{artifact}'s stamp value {key} is not JSON ({stamp[key][:60]!r}); {REBUILD}") from None


def decode_stamp(stamp: dict[str, str], artifact: str = "the artifact") -> dict[str, Any]:
    """The stamp as docs/schemas/stamp.schema.json describes it (the judged values decoded from JSON), or a
    StampError naming the key and the fix. The guard has the standard library only, so this is the schema's
    hand-written mirror; tests/unit/project/test_schemas.py checks that both accept and refuse the same stamps.
    Keys it does not know are kept: the guard judges only what it reads, and a stamp whose meaning
    changes gets a new `schema`."""
    if not stamp:
        raise StampError(f"{artifact} carries no quantgate stamp (no quantgate.* metadata_props); "
                         "build it with quantgate or verify it with an explicit TARGET=")
    missing_keys = [key for key in REQUIRED_STAMP_KEYS if key not in stamp]
    if missing_keys:
        raise StampError(f"{artifact}'s stamp lacks keys {missing_keys}; rebuild it with this quantgate version")
    for key, value in stamp.items():
        if not isinstance(value, str):
            raise StampError(f"{artifact}'s stamp value {key} is a JSON {type(value).__name__}, not a string; "
                             f"{REBUILD}")
    if stamp["schema"] != STAMP_SCHEMA:
        raise StampError(f"{artifact}'s stamp schema is {stamp['schema']!r}, this quantgate reads schema "
                         f"{STAMP_SCHEMA!r}; use the quantgate version that built it or rebuild it")
    decoded: dict[str, Any] = dict(stamp)
    for key in FEATURE_LIST_KEYS:
        if key in stamp:
            decoded[key] = _json_value(stamp, key, artifact)
            if not isinstance(decoded[key], list) or not all(isinstance(name, str) and name for name in decoded[key]):
                raise StampError(f"{artifact}'s stamp value {key} must be a JSON list of CPU feature names "
                                 f"(like [\"sse4_2\", \"avx2\"]), not {stamp[key][:60]!r}; {REBUILD}")
    if RUNTIME_FLOOR_KEY in stamp and _release(stamp[RUNTIME_FLOOR_KEY]) is None:
        raise StampError(f"{artifact}'s stamp value {RUNTIME_FLOOR_KEY} must be a release like \"1.23.0\", not "
                         f"{stamp[RUNTIME_FLOOR_KEY][:60]!r}; {REBUILD}")
    for key in JSON_OBJECT_KEYS:
        decoded[key] = _json_value(stamp, key, artifact)
        if not isinstance(decoded[key], dict):
            raise StampError(f"{artifact}'s stamp value {key} must be a JSON object, not {stamp[key][:60]!r}; "
                             f"{REBUILD}")
    return decoded


def check_stamp(stamp: dict[str, str], host_features: frozenset[str] | set[str] | None = None,
                model: ModelVersions | None = None, runtime: dict | None = None,
                artifact: str = "the artifact") -> GuardVerdict:
    """Compare a stamp with a host's CPU features (CPUID by default) and, given both `model`
    (onnx.read_onnx_versions) and `runtime` (probe.installed_limits()), predict whether it loads.
    A stamp that names features no CPU has is refused on every host."""
    values = decode_stamp(stamp, artifact)
    required = values["required_cpu_features"]
    verdict = GuardVerdict(True, stamp["target_isa"], required)
    from .cpuid import KNOWN_FEATURES
    unknown = [feature for feature in required if feature not in KNOWN_FEATURES]
    if unknown:  # a damaged or hand-made stamp: no CPU has these, so no CPU may run it
        verdict.problems.append(f"the stamp names CPU features no CPU has (unknown to this guard): "
                                f"{', '.join(unknown)}; {REBUILD}")
        verdict.can_run = False
        return verdict
    if host_features is None:
        from .cpuid import host_features as read_host_features
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
    if runtime is not None:
        verdict.problems += runtime_floor_problems(stamp, runtime)
    verdict.can_run = not verdict.problems
    return verdict


def predict_load(model: ModelVersions, runtime: dict) -> list[str]:
    """Why `runtime` (limits from probe.installed_limits) will refuse to load `model`, in words; [] = it loads."""
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


RELEASE = re.compile(r"([0-9]+)\.([0-9]+)(?:\.([0-9]+))?([^.0-9].*)?")  # 1.23.0, 1.32.0+cpu, 1.23.0rc1


def _release(version: str) -> tuple[int, ...] | None:
    """(1, 23, 0) from "1.23.0" (a local or pre-release tail such as "+cpu" or "rc1" ignored); None if not a release."""
    found = RELEASE.fullmatch(version.strip())
    return tuple(int(part) for part in found.groups()[:3] if part is not None) if found else None


def runtime_floor_problems(stamp: dict[str, str], runtime: dict) -> list[str]:
    """The stamp's min_onnxruntime against the runtime's onnxruntime version, in words; [] = new enough or no floor."""
    floor, version = stamp.get(RUNTIME_FLOOR_KEY), runtime.get("versions", {}).get("onnxruntime")
    if not floor or not version or _release(version) is None or _release(version) >= _release(floor):
        return []
    return [f"artifact needs onnxruntime >= {floor} (its contrib operators changed their inputs before then); this "
            f"runtime is onnxruntime {version}: upgrade it (`pip install 'onnxruntime>={floor}'`)"]


def required_headline(required: list[str], missing: list[str]) -> list[str]:
    """The few features worth naming first: the missing ones, in the target's order."""
    return [feature for feature in required if feature in missing] or required

"""What a quantgate stamp holds and how it is judged against a host: its CPU, and the runtime it has.

The same `quantgate.*` keys travel in an ONNX model's metadata_props (onnx.py) and in a .pt2 package's
`extra/quantgate_stamp.json` (pt2.py); both readers hand the keys, prefix removed, to check_stamp.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .errors import StampError

STAMP_PREFIX = "quantgate."
STAMP_SCHEMA = "1"
REQUIRED_STAMP_KEYS = (
    "schema", "target_isa", "required_cpu_features", "mode", "quant_format", "weight_type",
    "activation_type", "per_channel", "reduce_range", "calibration", "source_model", "versions",
    "opset", "config_sha256",
)


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


def json_value(stamp: dict[str, str], key: str):
    """A stamp value that holds JSON (a list or an object), or StampError naming the key."""
    try:
        return json.loads(stamp[key])
    except ValueError:
        raise StampError(f"the artifact's stamp value {key} is not JSON ({stamp[key][:60]!r}); "
                         f"rebuild it with quantgate") from None


def check_stamp(stamp: dict[str, str], host_features: frozenset[str] | set[str] | None = None,
                model: ModelVersions | None = None, runtime: dict | None = None) -> GuardVerdict:
    """Compare a stamp with a host's CPU features (CPUID by default) and, given both `model`
    (onnx.read_onnx_versions) and `runtime` (probe.installed_limits()), predict whether it loads."""
    if not stamp:
        raise StampError("the artifact carries no quantgate stamp (no quantgate.* metadata_props); "
                         "build it with quantgate or verify it with an explicit TARGET=")
    missing_keys = [key for key in REQUIRED_STAMP_KEYS if key not in stamp]
    if missing_keys:
        raise StampError(f"the artifact's stamp lacks keys {missing_keys}; rebuild it with this quantgate version")
    if stamp["schema"] != STAMP_SCHEMA:
        raise StampError(f"the artifact's stamp schema is {stamp['schema']!r}, this quantgate reads schema "
                         f"{STAMP_SCHEMA!r}; use the quantgate version that built it or rebuild it")
    required = json_value(stamp, "required_cpu_features")
    verdict = GuardVerdict(True, stamp["target_isa"], required)
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


def required_headline(required: list[str], missing: list[str]) -> list[str]:
    """The few features worth naming first: the missing ones, in the target's order."""
    return [feature for feature in required if feature in missing] or required

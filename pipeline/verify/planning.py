"""Plan a verification: which CPU profiles a target needs and what each must show, which CPU every
profile is compared with (verify.reference_cpu), and the fidelity bounds from the config."""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass

from pipeline.errors import QuantgateError
from pipeline.guard import cpuid
from pipeline.isa.targets import PROFILES, profile
from pipeline.runtimes import venvs
from pipeline.verify import remote
from pipeline.verify.cpu_kinds import kind_of
from pipeline.verify.fidelity import Limits

HOST_FAMILY = "aarch64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
VNNI_FEATURES = frozenset({"avx512_vnni", "avx_vnni"})  # int8 dot products without 16-bit saturation


@dataclass
class Plan:
    name: str  # the CPU profile
    expected: str  # pass | refused_by_guard
    required: bool
    why: str
    not_verified: str | None = None  # why this profile cannot be run here
    runtime: venvs.Runtime = venvs.Runtime(venvs.PINNED)
    host: dict | None = None  # an SSH host as read there: machine, cpu_features, versions (remote.read_host)

    @property
    def key(self) -> str:
        """The deployment profile's name in verify.json: the CPU, plus @runtime unless pinned."""
        return self.name if self.runtime.pinned else f"{self.name}@{self.runtime.name}"


def child_timeout(v, cpu, native_seconds: float | None) -> float:
    """Seconds a child on `cpu` may run: verify.timeout_seconds when set, else sized to the work by the first native
    run's wall time `native_seconds` (None: this is that run); see VerifyConfig."""
    if v.timeout_seconds is not None:
        return float(v.timeout_seconds)
    if native_seconds is None:
        return float(v.first_run_timeout_seconds)
    return round(float(v.startup_timeout_seconds) + kind_of(cpu).slowdown(cpu, v) * native_seconds, 1)


def host_cpu_features(cfg) -> frozenset[str]:
    if cfg.verify.assume_host_features is not None:
        return frozenset(cfg.verify.assume_host_features)
    return cpuid.host_features()  # read through the module: a test can make this host another CPU


def plan_profiles(cfg, required_features: list[str], stamped: bool, host: frozenset[str],
                  runtime: venvs.Runtime = venvs.Runtime(venvs.PINNED)) -> list[Plan]:
    """Deployment profiles: CPU names from the target or verify.profiles, each `cpu[@runtime]`
    (a runtime profile name or pip lines); without @, the artifact's `runtime`."""
    plans = _plan_cpus(cfg, required_features, stamped, host)
    for plan in plans:
        cpu, _, named = plan.name.partition("@")
        plan.name, plan.runtime = cpu, venvs.parse(named) if named else runtime
        if named and kind_of(profile(cpu)).remote:
            plan.not_verified = (f"{cpu} is an SSH host: its runs use the interpreter its profile names (`python:`), "
                                 f"so no runtime can be chosen with @{named}")
    return plans


def with_extra_profiles(cfg, names: list[str]) -> list[str]:
    """The profiles to verify on: `names`, then verify.extra_profiles (lab hosts, say) not already among them."""
    return list(dict.fromkeys([*names, *cfg.verify.extra_profiles]))


def _plan_cpus(cfg, required_features: list[str], stamped: bool, host: frozenset[str]) -> list[Plan]:
    target = cfg.target
    # `native` is a profile only where this host is of the target's family (an x86 host cannot run Arm code).
    native = "native" if target.family == HOST_FAMILY else None
    names = list(cfg.verify.profiles) if cfg.verify.profiles is not None else \
        [name for name in (target.floor_profile, native, *target.below_floor_profiles) if name]
    names = with_extra_profiles(cfg, names)
    if not names:
        return [Plan(target.family, "pass", True, f"the {target.name} floor CPU",
                     f"no emulated {target.family} CPU profile is named for {target.name} and this host is not one")]
    plans = []
    for name in names:
        try:
            cpu = profile(name.partition("@")[0])
        except KeyError as error:
            raise QuantgateError(error.args[0]) from None
        if cpu.family != target.family and cpu.name != "native":
            same = ", ".join(n for n, p in PROFILES.items() if p.family == target.family and kind_of(p).emulated(p))
            raise QuantgateError(f"profile {cpu.name} is a {cpu.family} CPU; target {target.name} runs on "
                                 f"{target.family}: use {same or 'a ' + target.family + ' profile'}")
        if kind_of(cpu).remote:
            plans.append(remote_plan(name, cpu, required_features, stamped))
            continue
        missing = sorted(set(required_features) - (host if cpu.name == "native" else cpu.features()))
        if not missing:
            plans.append(Plan(name, "pass", True, f"{name} has every feature the artifact needs"))
        elif cpu.name == "native":
            no_emulator = any(feature.startswith("avx512") for feature in missing)
            plans.append(Plan(name, "pass", target.floor_profile is None, "this host as a target CPU",
                              f"this host lacks {', '.join(missing)}" + (
                                  "; QEMU 7.2 cannot emulate AVX-512, so this target needs a host that has it"
                                  if no_emulator else "")))
        elif stamped:
            plans.append(Plan(name, "refused_by_guard", True, f"{name} lacks {', '.join(missing)}: the guard must refuse"))
        else:
            plans.append(Plan(name, "refused_by_guard", False, f"{name} lacks {', '.join(missing)}, but the artifact "
                              f"has no quantgate stamp, so no guard can refuse it: this is what a user there would see"))
    return plans


def remote_plan(name: str, cpu, required_features: list[str], stamped: bool) -> Plan:
    """An SSH host is judged by the CPU read there: below the artifact's floor the guard must refuse it,
    at or above it the artifact must run. A host without the microarchitecture its profile claims is
    reported (`host.mismatch`, and a note); the expectation follows the real CPU."""
    try:
        seen = remote.read_host(cpu) | {"host": cpu.host, "python": cpu.python}
    except remote.HostUnavailable as unavailable:
        return Plan(name, "pass", True, f"the lab host {cpu.host}", str(unavailable))
    mismatch = remote.claim_mismatch(cpu, frozenset(seen["cpu_features"]))
    if mismatch:
        seen["mismatch"] = mismatch
    missing = sorted(set(required_features) - set(seen["cpu_features"]))
    if not missing:
        return Plan(name, "pass", True, f"the lab host {cpu.host} has every feature the artifact needs", host=seen)
    lacks = f"the lab host {cpu.host} lacks {', '.join(missing)}"
    if stamped:
        return Plan(name, "refused_by_guard", True, f"{lacks}: the guard must refuse", host=seen)
    return Plan(name, "refused_by_guard", False, f"{lacks}, and the artifact has no quantgate stamp: this is what "
                f"a user there would see", host=seen)


def limits_from(cfg) -> Limits:
    v = cfg.verify
    # A near-empty sample may be off by what a typical sample at the worst cosine allowed is: sqrt(2 (1 - c)) of
    # its norm (pipeline/verify/fidelity/).
    return Limits(v.min_cosine_mean, v.min_cosine_worst, v.min_top1_agreement, v.max_abs_error, v.max_scaled_error,
                  str(v.pooling), v.max_accuracy_drop, v.max_macro_f1_drop, threshold=float(v.threshold),
                  near_empty_ratio=v.near_empty_ratio, max_near_empty_error=math.sqrt(2 * (1 - v.min_cosine_worst)),
                  min_detection_recall=v.detection.min_recall, min_detection_precision=v.detection.min_precision,
                  min_detection_mean_iou=v.detection.min_mean_iou)


def resolve_reference_cpu(cfg, host: frozenset[str]) -> str:
    """The CPU whose run of the artifact every profile is compared with (verify.reference_cpu)."""
    name = str(cfg.verify.reference_cpu)
    if name != "auto":
        try:
            cpu = profile(name)
        except KeyError as error:
            raise QuantgateError(f"verify.reference_cpu: {error.args[0]}") from None
        if kind_of(cpu).remote:
            raise QuantgateError(f"verify.reference_cpu={name} is an SSH host; the reference CPU is this host "
                                 f"(native) or an emulated profile")
        return cpu.name
    if HOST_FAMILY != "x86_64" or host & VNNI_FEATURES:
        return "native"
    return "sandybridge"  # SSE/AVX int8 kernels widen products to 16 bits: exact, where AVX2's saturate


def numerics_hint(cpu_name: str, host: frozenset[str]) -> str:
    cpu = profile(cpu_name)
    features = host if cpu.name == "native" else (cpu.features() or frozenset())
    if cpu.family == "x86_64" and not features & VNNI_FEATURES:
        return (f"likely u8s8 saturation on CPUs without VNNI ({cpu_name} adds pairs of u8 x s8 products in 16 bits, "
                f"VPMADDUBSW); rebuild with reduce_range or u8 weights, or target avx512_vnni")
    return f"the int8 kernels on {cpu_name} compute differently from the reference CPU's"

"""Targets (the lowest CPU an artifact must run on) and CPU profiles (named CPUs to verify on).

A target's required CPU features come from archspec's microarchitecture data; the quantization
policy a target implies lives in its YAML under conf/target/. Stdlib-only at import time (archspec
is pure Python) because the guard imports this under emulated CPUs.
"""
from __future__ import annotations

from dataclasses import dataclass

import archspec.cpu


class UnknownFeatureError(ValueError):
    pass


def microarchitecture_features(name: str) -> frozenset[str]:
    """Every feature archspec lists for a microarchitecture, inherited ones included."""
    if name not in archspec.cpu.TARGETS:
        known = ", ".join(sorted(t for t in archspec.cpu.TARGETS if archspec.cpu.TARGETS[t].family.name in ("x86_64", "aarch64")))
        raise UnknownFeatureError(f"archspec does not know the microarchitecture {name!r}; known: {known}")
    return frozenset(archspec.cpu.TARGETS[name].features)


def known_feature_names(family: str) -> frozenset[str]:
    return frozenset().union(*(t.features for t in archspec.cpu.TARGETS.values() if t.family.name == family))


# Features archspec lists that are not instructions a program can need: Arm's `evtstrm` is the kernel's
# timer event stream. QEMU user mode does not report it in AT_HWCAP, and no kernel decides what runs on it.
NOT_INSTRUCTION_FEATURES = frozenset({"evtstrm"})


def required_cpu_features(microarchitecture: str, extra_features: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The target's feature set: archspec's microarchitecture plus named extras (e.g. avx512_vnni)."""
    features = set(microarchitecture_features(microarchitecture)) - NOT_INSTRUCTION_FEATURES
    family = archspec.cpu.TARGETS[microarchitecture].family.name
    unknown = set(extra_features) - known_feature_names(family)
    if unknown:
        raise UnknownFeatureError(
            f"unknown CPU feature(s) {sorted(unknown)} for {family}; use archspec's names, e.g. avx512_vnni")
    return sorted(features | set(extra_features))


@dataclass(frozen=True)
class CpuProfile:
    """A named CPU to run an artifact on: emulated by QEMU user mode, or this host (`native`)."""

    name: str
    family: str  # x86_64 | aarch64
    qemu_cpu: str | None  # `qemu-x86_64 -cpu MODEL`; None = run natively
    microarchitecture: str | None  # archspec name of what the profile provides; None = the host's
    extra_features: tuple[str, ...] = ()  # what the emulated model has beyond archspec's microarchitecture

    @property
    def emulated(self) -> bool:
        return self.qemu_cpu is not None

    def features(self) -> frozenset[str] | None:
        """Features the profile provides, from archspec; None for native (read by CPUID at run time)."""
        if self.microarchitecture is None:
            return None
        return microarchitecture_features(self.microarchitecture) | frozenset(self.extra_features)


PROFILES: dict[str, CpuProfile] = {
    "nehalem": CpuProfile("nehalem", "x86_64", "Nehalem", "nehalem"),
    "sandybridge": CpuProfile("sandybridge", "x86_64", "SandyBridge", "sandybridge"),
    "haswell": CpuProfile("haswell", "x86_64", "Haswell", "haswell"),
    "native": CpuProfile("native", "x86_64", None, None),
    # 64-bit Arm under qemu-aarch64 with an arm64 sysroot (pipeline.arm); features read by AT_HWCAP match
    # archspec's for these models under QEMU 7.2 (evtstrm aside).
    "cortex-a72": CpuProfile("cortex-a72", "aarch64", "cortex-a72", "cortex_a72"),  # Armv8.0 + crypto, NEON
    "neoverse-n1": CpuProfile("neoverse-n1", "aarch64", "neoverse-n1", "neoverse_n1"),  # Armv8.2, dot product
    # Armv8.2 + SVE, no dot product; QEMU 7.2's a64fx model also reports aes and pmull (AT_HWCAP), archspec's not.
    "a64fx": CpuProfile("a64fx", "aarch64", "a64fx", "a64fx", ("aes", "pmull")),
    # QEMU's newest Arm (Armv8.x/9 with SVE2, i8mm, bf16; what it holds grows with the QEMU version): at least
    # neoverse_n1 plus these, as AT_HWCAP showed under QEMU 7.2.
    "max": CpuProfile("max", "aarch64", "max", "neoverse_n1", ("sve", "sve2", "i8mm", "bf16", "svei8mm", "svebf16",
                                                           "asimdfhm", "sha3", "sha512", "jscvt", "fcma", "ilrcpc",
                                                           "flagm", "frint")),
}


def profile(name: str) -> CpuProfile:
    if name not in PROFILES:
        raise KeyError(f"unknown CPU profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]

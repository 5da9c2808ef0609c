"""Targets (the lowest CPU an artifact must run on) and CPU profiles (named CPUs to verify on).

A target's required CPU features come from archspec's microarchitecture data; the quantization
policy a target implies lives in its YAML under conf/target/. Stdlib-only at import time (archspec
is pure Python) because the guard imports this under emulated CPUs. CPU profiles are YAML files,
conf/cpu/<name>.yaml, read on first use of PROFILES.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import archspec.cpu
from pipeline.paths import CONF_DIR


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


# One YAML file per profile (conf/cpu/<name>.yaml, keys: CpuProfile's fields), read on first use: the guard
# side imports this module under emulated CPUs, where only the standard library and archspec may load.
CPU_DIR = CONF_DIR / "cpu"


class CpuProfileError(ValueError):
    pass


def load_profile(path: Path) -> CpuProfile:
    """conf/cpu/<name>.yaml as a CpuProfile: the file name is the profile's name; keys are CpuProfile's fields."""
    import yaml

    values = yaml.safe_load(path.read_text()) or {}
    fields = {f.name: f for f in dataclasses.fields(CpuProfile) if f.name != "name"}
    unknown = sorted(set(values) - set(fields))
    missing = sorted(name for name, f in fields.items() if name not in values
                     and f.default is dataclasses.MISSING)
    if unknown or missing:
        raise CpuProfileError(f"{path}: " + "; ".join(
            ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else []))
            + f"; a CPU profile has {', '.join(fields)}")
    for key, value in values.items():
        if key == "extra_features":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CpuProfileError(f"{path}: extra_features must be a list of archspec feature names")
        elif value is not None and not isinstance(value, str):
            raise CpuProfileError(f"{path}: {key} must be a string or null, not {value!r}")
    return CpuProfile(name=path.stem, **{**values, "extra_features": tuple(values.get("extra_features", ()))})


class _Profiles(Mapping[str, CpuProfile]):
    """Every CPU profile by name, loaded from conf/cpu/ once, when first used."""

    def __init__(self, folder: Path):
        self._folder, self._loaded = folder, None

    def _profiles(self) -> dict[str, CpuProfile]:
        if self._loaded is None:
            self._loaded = {path.stem: load_profile(path) for path in sorted(self._folder.glob("*.yaml"))}
        return self._loaded

    def __getitem__(self, name: str) -> CpuProfile:
        return self._profiles()[name]

    def __iter__(self):
        return iter(self._profiles())

    def __len__(self) -> int:
        return len(self._profiles())


PROFILES: Mapping[str, CpuProfile] = _Profiles(CPU_DIR)


def profile(name: str) -> CpuProfile:
    if name not in PROFILES:
        raise KeyError(f"unknown CPU profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]

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


# What onnxruntime needs of a CPU, by family: the only features an ONNX artifact's stamp requires (runtime_floor).
# - x86-64: its Python package's baseline, numpy 2.4's (built for x86-64-v2: SSE to SSE4.2, POPCNT, CX16, LAHF), and
#   the features MLAS, onnxruntime's kernel library, selects kernels on (onnxruntime/core/mlas/lib/platform.cpp):
#   AVX2 kernels on avx2 + fma (their fp16 casts use f16c without asking), AVX-512 core kernels on avx512f + bw + dq +
#   vl, VNNI kernels on avx512_vnni or avx_vnni. A target requires those of its microarchitecture, so the guard
#   refuses a CPU below the kernels its numerics were verified with (reduce_range is chosen for them).
# - 64-bit Arm: NEON (fp, asimd), and the dot product, fp16 and i8mm kernels MLAS picks where a target has them.
# Everything else archspec lists for a microarchitecture is what a compiler targeting it may emit (x86: aes,
# pclmulqdq, rdrand, movbe, bmi1/2, abm, xsave, mmx; Arm: aes, pmull, sha1, sha2, crc32) and no onnxruntime kernel
# uses: a Raspberry Pi 4 (Cortex-A72 without the crypto extension) and x86 cores without AES-NI run these artifacts.
# A .pt2 package holds code compiled with -march for the microarchitecture and keeps all of its features.
RUNTIME_FEATURES = {
    "x86_64": frozenset({"sse", "sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm",
                         "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                         "avx512_vnni", "avx_vnni"}),
    "aarch64": frozenset({"fp", "asimd", "asimddp", "asimdhp", "fphp", "i8mm"}),
}


def runtime_floor(microarchitecture: str, extra_features: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What an ONNX artifact for this target requires of a CPU: the features of required_cpu_features that
    onnxruntime needs (RUNTIME_FEATURES), plus the named extras."""
    features = required_cpu_features(microarchitecture, extra_features)
    needed = RUNTIME_FEATURES.get(archspec.cpu.TARGETS[microarchitecture].family.name)
    return features if needed is None else sorted((set(features) & needed) | set(extra_features))


@dataclass(frozen=True)
class CpuProfile:
    """A named CPU to run an artifact on: this host (`native`), a CPU emulated by QEMU user mode (`qemu`),
    or a real lab machine reached over SSH (`ssh`, pipeline/verify/remote.py)."""

    name: str
    family: str = "x86_64"  # x86_64 | aarch64
    qemu_cpu: str | None = None  # `qemu-x86_64 -cpu MODEL`; None = run natively
    microarchitecture: str | None = None  # archspec name of what the profile provides (or claims); None = read by CPUID
    extra_features: tuple[str, ...] = ()  # what the emulated model has beyond archspec's microarchitecture
    kind: str = "native"  # native | qemu | ssh (PROFILE_KINDS); a YAML without `kind` is qemu when it names qemu_cpu
    # kind ssh: where the host is and the interpreter (or command, "qemu-x86_64 -cpu Nehalem python3") there.
    host: str | None = None
    user: str | None = None
    port: int = 22
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"  # the host's key must be in it: an unknown key is refused
    python: str = "python3"
    # kind ssh: a runtime quantgate prepares on the host once, as a cached venv made by `python` (a shipped
    # runtime's name, conf/runtime/, or pip lines "onnxruntime==1.20.1 numpy<2"); null = `python` itself.
    runtime: str | None = None
    runtime_cache: str = "~/.cache/quantgate/runtimes"  # on the host

    # What the YAML says; how a profile's child runs, and whether that is emulated, the verifiers ask its kind's
    # runner (pipeline/verify/cpu_kinds/).
    @property
    def emulated(self) -> bool:
        return self.qemu_cpu is not None

    @property
    def remote(self) -> bool:
        return self.kind == "ssh"

    def features(self) -> frozenset[str] | None:
        """Features the profile provides, from archspec; None when only CPUID can tell (native, an ssh host
        that claims no microarchitecture)."""
        if self.microarchitecture is None:
            return None
        return microarchitecture_features(self.microarchitecture) | frozenset(self.extra_features)


# One YAML file per profile (conf/cpu/<name>.yaml, keys: CpuProfile's fields), read on first use: the guard
# side imports this module under emulated CPUs, where only the standard library and archspec may load.
CPU_DIR = CONF_DIR / "cpu"
# Each profile kind by name -> the keys a profile of that kind must set. How a kind runs a verification child is its
# runner's business, registered under the same name (pipeline/verify/cpu_kinds/, which registers new kinds here).
PROFILE_KINDS: dict[str, tuple[str, ...]] = {"native": (), "qemu": ("qemu_cpu", "microarchitecture"), "ssh": ("host",)}


def register_profile_kind(name: str, required_keys: tuple[str, ...] = ()) -> None:
    """Let profiles say `kind: <name>` (pipeline.verify.cpu_kinds.register calls this for a new kind)."""
    PROFILE_KINDS[name] = tuple(required_keys)


class CpuProfileError(ValueError):
    pass


def load_profile(path: Path) -> CpuProfile:
    """<name>.yaml as a CpuProfile: the file name is the profile's name; keys are CpuProfile's fields."""
    import yaml

    values = yaml.safe_load(path.read_text()) or {}
    fields = {f.name: f for f in dataclasses.fields(CpuProfile) if f.name != "name"}
    kind = values.setdefault("kind", "qemu" if values.get("qemu_cpu") else "native")
    if kind not in PROFILE_KINDS:
        raise CpuProfileError(f"{path}: kind {kind!r} is not one of {', '.join(PROFILE_KINDS)}")
    unknown = sorted(set(values) - set(fields))
    missing = sorted(name for name in PROFILE_KINDS[kind] if values.get(name) is None)
    if unknown or missing:
        raise CpuProfileError(f"{path}: " + "; ".join(
            ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else []))
            + f"; a CPU profile has {', '.join(fields)}")
    for key, value in values.items():
        if key == "extra_features":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CpuProfileError(f"{path}: extra_features must be a list of archspec feature names")
        elif key == "port":
            if not isinstance(value, int) or isinstance(value, bool):
                raise CpuProfileError(f"{path}: port must be a number, not {value!r}")
        elif value is not None and not isinstance(value, str):
            raise CpuProfileError(f"{path}: {key} must be a string or null, not {value!r}")
    return CpuProfile(name=path.stem, **{**values, "extra_features": tuple(values.get("extra_features", ()))})


class _Profiles(Mapping[str, CpuProfile]):
    """Every CPU profile by name, loaded from conf/cpu/ (and the folders of verify.cpu_profile_dirs) once,
    when first used."""

    def __init__(self, folder: Path):
        self._folders, self._loaded = (folder,), None

    def use_extra_folders(self, folders) -> None:
        """Also read the profiles in `folders` (verify.cpu_profile_dirs), instead of any named before."""
        folders = (self._folders[0], *(Path(folder).expanduser() for folder in folders))
        absent = [str(folder) for folder in folders if not folder.is_dir()]
        if absent:
            raise CpuProfileError(f"verify.cpu_profile_dirs: no such folder {', '.join(absent)}")
        if folders != self._folders:
            self._folders, self._loaded = folders, None

    def _profiles(self) -> dict[str, CpuProfile]:
        if self._loaded is None:
            loaded = {}
            for folder in self._folders:
                for path in sorted(folder.glob("*.yaml")):
                    if path.stem in loaded:
                        raise CpuProfileError(f"{path}: a CPU profile named {path.stem} is already defined in "
                                              f"{self._folders[0]} or an earlier verify.cpu_profile_dirs folder")
                    loaded[path.stem] = load_profile(path)
            self._loaded = loaded
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

"""What verification asks of a kind of CPU profile (`kind:` in conf/cpu/<name>.yaml): the interface.

A kind runs a verifier's child process on one of its profiles and says where it ran, how many intra-op threads
and held-out samples the child gets there, whether the CPU is emulated, and whether the child runs on another
machine (its files copied there, its runtime that machine's). The ONNX, .pt2 and decoder verifiers ask only
this; they never test a kind's name. The kinds are registered by name in pipeline/verify/cpu_kinds/__init__.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pipeline.isa.targets import CpuProfile
from pipeline.verify.sandbox import ChildRun


@dataclass(frozen=True)
class ChildJob:
    """How one child runs, whatever the kind: its limits, and what a kind may need beyond the command."""

    timeout_seconds: float
    memory_limit_mb: int
    emulator_args: tuple[str, ...] = ()  # after `qemu-<arch> -cpu MODEL`: an Arm sysroot's -L ... -E ...
    uploads: dict[str, Path] = field(default_factory=dict)  # remote kinds: name in the child's folder -> local file
    out_dir: Path | None = None  # remote kinds: where `results` come back to
    results: tuple[str, ...] = ()  # remote kinds: what the child writes, relative to its folder there


class CpuKind:
    """One kind of CPU profile. Subclasses set `name` (the YAML's `kind:`) and `required_keys` (what a profile
    of the kind must set, checked when it is loaded) and implement `run`; the defaults are a local, unemulated
    CPU's."""

    name: ClassVar[str]
    required_keys: ClassVar[tuple[str, ...]] = ()
    remote: ClassVar[bool] = False  # the child runs on another machine, in a folder its files are copied to

    def emulated(self, cpu: CpuProfile) -> bool:
        return False

    def threads(self, cpu: CpuProfile) -> int:
        """onnxruntime's intra-op threads for a child (0: its default); its spinning pool crawls under QEMU."""
        return 1 if self.emulated(cpu) else 0

    def max_samples(self, cpu: CpuProfile, v) -> int:
        """At most how many held-out samples a child runs here (`v`: cfg.verify)."""
        return int(v.emulated_max_samples if self.emulated(cpu) else v.native_max_samples)

    def latency_repeats(self, cpu: CpuProfile, v) -> int:
        """Batch-1 timing repeats a child measures here: none where the clock is an emulator's."""
        return 0 if self.emulated(cpu) else int(v.latency_repeats)

    def slowdown(self, cpu: CpuProfile, v) -> float:
        """How many times the first native run's wall time a child here may take (pipeline.verify.planning)."""
        return float(v.emulation_slowdown if self.emulated(cpu) else v.native_slowdown)

    def where(self, cpu: CpuProfile) -> str:
        """Where a child runs, in words for the progress lines."""
        return "native"

    def run(self, command: list[str], cpu: CpuProfile, job: ChildJob) -> ChildRun:
        """Run `command` on `cpu` in its own child process; never raises for the child's death (a signal is a
        finding), raises sandbox.ProfileUnavailable when no run could happen at all."""
        raise NotImplementedError

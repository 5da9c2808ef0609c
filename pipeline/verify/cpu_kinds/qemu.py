"""CPU profile kind `qemu`: a CPU model emulated by QEMU user mode on this machine (`qemu-<arch> -cpu MODEL`).

x86-64 models run under qemu-x86_64; 64-bit Arm ones under qemu-aarch64 with an arm64 sysroot, whose `-L SYSROOT
-E PYTHONPATH=...` arrive as the job's emulator_args (pipeline/runtimes/arm.py prepares them).
"""
from __future__ import annotations

import shutil

from pipeline.isa.targets import CpuProfile
from pipeline.verify.cpu_kinds.base import ChildJob, CpuKind
from pipeline.verify.sandbox import ChildRun, EmulatorMissing, run_local

QEMU_BY_FAMILY = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}


def emulator_prefix(cpu: CpuProfile, emulator_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`qemu-x86_64 -cpu MODEL`, or for Arm `qemu-aarch64 -cpu MODEL` + emulator_args (-L SYSROOT -E ...)."""
    binary = QEMU_BY_FAMILY[cpu.family]
    qemu = shutil.which(binary)
    if qemu is None:
        raise EmulatorMissing(f"{binary} is not on PATH, so {cpu.name} cannot be emulated: "
                              f"`apt-get install qemu-user`")
    return [qemu, "-cpu", cpu.qemu_cpu, *emulator_args]


class Qemu(CpuKind):
    name = "qemu"
    required_keys = ("qemu_cpu", "microarchitecture")

    def emulated(self, cpu: CpuProfile) -> bool:
        return True

    def where(self, cpu: CpuProfile) -> str:
        return f"qemu -cpu {cpu.qemu_cpu}"

    def run(self, command: list[str], cpu: CpuProfile, job: ChildJob) -> ChildRun:
        return run_local(command, cpu.name, job.timeout_seconds, job.memory_limit_mb,
                         emulator_prefix(cpu, job.emulator_args))

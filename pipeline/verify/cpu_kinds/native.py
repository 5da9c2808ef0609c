"""CPU profile kind `native`: this machine, as it is; its features are read by CPUID at run time."""
from __future__ import annotations

from pipeline.isa.targets import CpuProfile
from pipeline.verify.cpu_kinds.base import ChildJob, CpuKind
from pipeline.verify.sandbox import ChildRun, run_local


class Native(CpuKind):
    name = "native"

    def run(self, command: list[str], cpu: CpuProfile, job: ChildJob) -> ChildRun:
        return run_local(command, cpu.name, job.timeout_seconds, job.memory_limit_mb)

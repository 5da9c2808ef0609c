"""CPU profile kind `ssh`: a real lab machine reached over SSH (pipeline/verify/remote.py); the child runs there
with the host's own interpreter, in a private folder its files (the job's uploads) are copied to."""
from __future__ import annotations

from pipeline.isa.targets import CpuProfile
from pipeline.verify import remote
from pipeline.verify.cpu_kinds.base import ChildJob, CpuKind
from pipeline.verify.sandbox import ChildRun


class Ssh(CpuKind):
    name = "ssh"
    required_keys = ("host",)
    remote = True

    def where(self, cpu: CpuProfile) -> str:
        return f"ssh {cpu.host}, {cpu.python}"

    def run(self, command: list[str], cpu: CpuProfile, job: ChildJob) -> ChildRun:
        return remote.run_child(cpu, command, dict(job.uploads), job.out_dir, list(job.results), job.timeout_seconds,
                                job.memory_limit_mb)

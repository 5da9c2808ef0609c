"""CPU profile kinds by name: the one runner of each kind (`native`, `qemu`, `ssh`), and how a new kind is added.

    from pipeline.verify.cpu_kinds import kind_of
    kind = kind_of(cpu)                  # the runner of cpu.kind (pipeline/verify/cpu_kinds/base.py: CpuKind)
    run = kind.run(command, cpu, ChildJob(timeout_seconds, memory_limit_mb))

A new kind is one module with a CpuKind subclass (its `name`, the `required_keys` its profiles must set, `run`)
and one line in KINDS below (or `register(...)` at run time): profiles then say `kind: <name>`.
"""
from __future__ import annotations

from pipeline.isa.targets import PROFILE_KINDS, CpuProfile, register_profile_kind
from pipeline.verify.cpu_kinds.base import ChildJob, CpuKind
from pipeline.verify.cpu_kinds.native import Native
from pipeline.verify.cpu_kinds.qemu import Qemu
from pipeline.verify.cpu_kinds.ssh import Ssh

__all__ = ["ChildJob", "CpuKind", "KINDS", "kind_of", "register", "unregister"]

KINDS: dict[str, CpuKind] = {}


def register(kind: CpuKind) -> CpuKind:
    """Make `kind` the runner of profiles whose `kind:` is kind.name; a kind new to pipeline.isa.targets has its
    required keys registered there too (the built-in kinds' are written there: profiles load without this package)."""
    if kind.name not in PROFILE_KINDS:
        register_profile_kind(kind.name, kind.required_keys)
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget a kind registered at run time (a test's toy kind); the built-in ones stay."""
    if name in (Native.name, Qemu.name, Ssh.name):
        raise ValueError(f"{name} is a built-in CPU profile kind")
    KINDS.pop(name, None)
    PROFILE_KINDS.pop(name, None)


def kind_of(cpu: CpuProfile) -> CpuKind:
    """The runner of `cpu`'s kind."""
    try:
        return KINDS[cpu.kind]
    except KeyError:
        raise KeyError(f"CPU profile {cpu.name} has kind {cpu.kind!r}, which no runner is registered for; "
                       f"kinds: {', '.join(KINDS)}") from None


for _kind in (Native(), Qemu(), Ssh()):
    register(_kind)

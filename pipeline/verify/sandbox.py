"""Run one command on this machine in its own child process, and say in words how it ended.

The child runs in its own session (killed with its whole group on timeout), after an emulator prefix when the
profile's kind gives one (`qemu-<arch> -cpu MODEL`, pipeline/verify/cpu_kinds/qemu.py), with an address-space
limit and no core dumps, and dies with its parent. A child killed by a signal is a finding (`classify`), never
a crash of this process.
"""
from __future__ import annotations

import os
import resource
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.guard import EXIT_REFUSED
from pipeline.paths import code_root
from pipeline.verify.child_onnx import EXIT_LOAD_FAILED, EXIT_OUT_OF_MEMORY, LOAD_FAILED_PREFIX, OUT_OF_MEMORY_WORDS

STDERR_TAIL_LINES = 15
QEMU_NOISE = "TCG doesn't support requested feature"  # QEMU warns once per unsupported CPUID bit
SIGNAL_WORDS = {
    signal.SIGILL: "this artifact or its runtime executes an instruction that {cpu} lacks (SIGILL)",
    signal.SIGSEGV: "segmentation fault (SIGSEGV): the runtime touched memory it does not own; a runtime bug "
                    "or a malformed model, not a missing instruction",
    signal.SIGABRT: "aborted (SIGABRT): the runtime stopped on a fatal internal error (a failed check or an "
                    "uncaught C++ exception)",
    signal.SIGKILL: "killed (SIGKILL) on {cpu}: most often the kernel's out-of-memory killer (see `dmesg`)",
    signal.SIGBUS: "bus error (SIGBUS): a misaligned or unmapped memory access, e.g. a truncated memory-mapped file",
    signal.SIGFPE: "arithmetic fault (SIGFPE): an integer division by zero or overflow in a kernel",
}


class ProfileUnavailable(RuntimeError):
    """No run could happen on the profile (no emulator, an unreachable host): nothing is known about it there."""


class EmulatorMissing(ProfileUnavailable):
    pass


@dataclass
class ChildRun:
    """What happened to one child process: exit code or signal, timeout, time, and its last words."""

    profile: str
    command: list[str]
    returncode: int | None  # None when it was killed for running past the timeout
    timed_out: bool
    wall_seconds: float
    timeout_seconds: float
    memory_limit_mb: int
    stderr_tail: list[str] = field(default_factory=list)  # last lines of stderr and stdout, QEMU's noise removed
    emulator: list[str] = field(default_factory=list)  # the command's emulator prefix (qemu-x86_64 -cpu ...), if any
    host: str | None = None  # the SSH host it ran on (pipeline/verify/remote.py); None = this machine

    @property
    def signal_name(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def reproduce(self) -> str:
        return f"cd {shlex.quote(str(code_root()))} && {shlex.join(self.command)}"


@dataclass
class Outcome:
    status: str  # pass | fail | refused_by_guard | crashed | not_verified  (pass = it ran; fidelity may fail it)
    failure: str | None  # sigill, sigsegv, ..., out_of_memory, timeout, error; None when it ran or was refused
    reason: str


def die_with_parent() -> None:
    """In a child before exec: the kernel kills it when the verifying process dies, even by SIGKILL, so no
    emulator is left running orphaned with nothing to enforce its timeout (Linux PR_SET_PDEATHSIG)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run_local(command: list[str], profile_name: str, timeout_seconds: float, memory_limit_mb: int,
              emulator: list[str] | tuple[str, ...] = ()) -> ChildRun:
    """Run `emulator + command` here in its own session, as profile `profile_name`; never raises for its death."""
    full = [*emulator, *(str(part) for part in command)]
    returncode, timed_out, seconds, lines = run_limited(full, timeout_seconds, memory_limit_mb)
    return ChildRun(profile_name, full, returncode, timed_out, seconds, timeout_seconds, memory_limit_mb,
                    lines[-STDERR_TAIL_LINES:], list(emulator))


def run_limited(full_command: list[str], timeout_seconds: float,
                 memory_limit_mb: int | None) -> tuple[int | None, bool, float, list[str]]:
    """(exit code or -signal, None when timed out; timed out; seconds; output lines without QEMU's noise)."""

    def limit_child() -> None:  # runs in the child before exec; QEMU itself fits well within the limit
        if memory_limit_mb is not None:
            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # QEMU dumps qemu_*.core into the cwd on SIGILL
        die_with_parent()

    started = time.monotonic()
    process = subprocess.Popen(full_command, cwd=code_root(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit_child)
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: QEMU and anything the child started
        output, _ = process.communicate()
    except BaseException:  # Ctrl-C reaches only our session: take the child's down with us
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    lines = [line for line in output.decode(errors="replace").splitlines() if QEMU_NOISE not in line]
    return None if timed_out else process.returncode, timed_out, time.monotonic() - started, lines


def diagnose(run: ChildRun) -> Outcome | None:
    """A child here that failed or crashed: was it the emulator or the memory limit rather than the artifact?
    The child's own interpreter, asked to do nothing (`python -c pass`), first under the emulator alone,
    then under the same memory limit. None when both start: the artifact or its runtime is to blame."""
    program = run.command[len(run.emulator)]
    if run.host is not None or run.timed_out or run.returncode in (0, EXIT_REFUSED, EXIT_LOAD_FAILED) or \
            not Path(program).name.startswith("python"):
        return None
    cpu = "this host" if run.profile == "native" else run.profile
    trivial = run.emulator + [program, "-c", "pass"]
    if run.emulator:
        code, _, _, lines = run_limited(trivial, 300, None)
        if code != 0:
            said = next((line for line in reversed(lines) if line.strip()), f"exit code {code}")
            return Outcome("not_verified", "emulator", f"the emulator {run.emulator[0]} does not run programs for "
                           f"{cpu}: even `python -c pass` fails under it ({said}); reinstall it (`apt-get install "
                           f"--reinstall qemu-user`) or put a working one first on PATH")
    code, _, _, lines = run_limited(trivial, 300, run.memory_limit_mb)
    if code != 0:
        return Outcome("crashed", "out_of_memory", f"verify.memory_limit_mb={run.memory_limit_mb} is too small for "
                       f"the Python interpreter even to start on {cpu}; raise it (the default is 8192)")
    return None


def classify(run: ChildRun) -> Outcome:
    """Name what happened to a child in words a user can act on (the emulator and the memory limit first;
    a child on an SSH host is classified by the same rules, without re-running anything there)."""
    diagnosed = diagnose(run)
    if diagnosed is not None:
        return diagnosed
    return _classify(run)


def timed_out(run: ChildRun, cpu: str) -> Outcome:
    """A child past its timeout could not be verified: the emulator, the runtime or the host it ran on hung or is far
    slower than the work needs. Named, never blamed on the artifact or the guard."""
    if run.emulator:
        what = f"the emulator {Path(run.emulator[0]).name} ({' '.join(run.emulator[1:3])})"
        check = f"check it runs programs (`{shlex.join([run.emulator[0], *run.emulator[1:3]])} /bin/true`)"
    elif run.host is not None:
        what, check = f"the lab host {run.host} ({run.command[0] if run.command else 'its runtime'})", "check the host"
    else:
        program = run.command[0] if run.command else "the runtime"
        what, check = f"the runtime ({program})", "check it runs (`" + shlex.join([program, "-c", "pass"]) + "`)"
    return Outcome("not_verified", "timeout", f"{what} did not finish on {cpu} within {run.timeout_seconds:g} s and was "
                   f"killed with its process group: it hung or is far slower than this work needs; {check}, or give it "
                   f"longer with verify.timeout_seconds")


def _classify(run: ChildRun) -> Outcome:
    cpu = "this host" if run.profile == "native" else run.profile
    last_line = next((line for line in reversed(run.stderr_tail) if line.strip()), "(no output)")
    if run.timed_out:
        return timed_out(run, cpu)
    if run.returncode == 0:
        return Outcome("pass", None, "ran to completion")
    if run.returncode == EXIT_REFUSED:
        return Outcome("refused_by_guard", None, last_line.removeprefix("quantgate guard: "))
    if run.returncode == EXIT_LOAD_FAILED:
        said = next((line for line in run.stderr_tail if line.startswith(LOAD_FAILED_PREFIX)), last_line)
        return Outcome("fail", "load", said.removeprefix(LOAD_FAILED_PREFIX))
    # "failed to map segment": the dynamic loader could not map a library under the address-space limit.
    memory_words = OUT_OF_MEMORY_WORDS + ("MemoryError", "failed to map segment", "Cannot allocate memory",
                                          "Memory allocation still failed", "Unable to reserve")
    if run.returncode == EXIT_OUT_OF_MEMORY or any(w in line for line in run.stderr_tail for w in memory_words):
        return Outcome("crashed", "out_of_memory", f"ran out of memory on {cpu} (address space limited to "
                       f"{run.memory_limit_mb} MB by verify.memory_limit_mb)")
    if run.returncode < 0:
        words = SIGNAL_WORDS.get(-run.returncode, f"killed by {run.signal_name}")
        return Outcome("crashed", run.signal_name.lower(), words.format(cpu=cpu))
    return Outcome("fail", "error", f"exited with code {run.returncode} on {cpu}: {last_line}")



"""Run a verification child on a real lab machine over SSH (a CPU profile of `kind: ssh`, pipeline/verify/cpu_kinds/ssh.py).

    # conf/cpu/lab-haswell.yaml (or a folder named by verify.cpu_profile_dirs)
    kind: ssh
    host: 10.0.0.17
    user: qa
    port: 22
    identity_file: ~/.ssh/quantgate_lab
    known_hosts: ~/.ssh/known_hosts     # the host's key must already be there
    python: /usr/bin/python3            # or a command: "qemu-x86_64 -cpu Nehalem /usr/bin/python3"
    microarchitecture: haswell          # optional: what the host is claimed to be; checked against CPUID
    runtime: ort116                     # optional: a venv quantgate prepares there once (or pip lines)

Each session copies what a run needs into a private folder made by `mktemp -d` on the host, runs there,
brings the outputs back and removes the folder, also after a failed or timed-out run (as long as the
host can still be reached). What is copied needs only the standard library, numpy and onnxruntime on
the host: the stdlib-only guard (pipeline/guard/), the child runner (pipeline/verify/child_onnx.py),
the artifact and its inputs. The child runs under the host's `timeout` (one process group, killed whole
when the time is up, as sandbox.py does locally), with `ulimit -v` (verify.memory_limit_mb) and no core
dumps; its exit code or signal is classified by sandbox.classify exactly like a local child's.

`read_host` reads the host's CPU there with the guard's CPUID reader, and its interpreter's numpy and
onnxruntime versions from package metadata (importing numpy can itself die with SIGILL below its floor).

Why the system's OpenSSH client rather than paramiko or asyncssh: it is what the lab's administrators
already configure and trust (~/.ssh/config, ProxyJump, agents, certificates, known_hosts with hashed
names), it adds no Python dependency, and BatchMode=yes with StrictHostKeyChecking=yes gives exactly the
policy wanted: never a prompt, never a silently accepted host key. Anything that keeps a run from
happening (unreachable host, refused login, unknown host key, no such interpreter, a dropped connection)
raises HostUnavailable with the reason, which the verifier records as `not_verified`.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.guard.cpuid import KNOWN_FEATURES
from pipeline.isa.targets import CpuProfile
from pipeline.paths import SOURCE_ROOT
from pipeline.runtimes import venvs
from pipeline.verify.sandbox import STDERR_TAIL_LINES, ChildRun, ProfileUnavailable, run_limited
from pipeline.verify.scratch import OWNER_FILE, scratch_folder

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4")
SSH_EXIT_ERROR = 255  # OpenSSH's own failure: the remote command's status is never 255 here (see EXIT_MARKER)
EXIT_MARKER = "quantgate-remote-exit "  # the remote shell's last line: the child's status, as the shell saw it
TIMEOUT_STATUS = 124  # coreutils `timeout`: the child ran past its time and was killed
SESSION_SECONDS = 120  # copying, cleaning up, reading the CPU: far more than any of them needs
# What a child needs on the host, relative to the repository (see child_onnx.py: stdlib, numpy, onnxruntime).
CHILD_SOURCES = ("pipeline/__init__.py", "pipeline/guard", "pipeline/verify/__init__.py",
                 "pipeline/verify/child_onnx.py")
# Runs on the host, in the copied folder: its CPU by the guard's CPUID reader, versions without importing them.
PROBE = ("import json, platform, sys\nfrom importlib import metadata\nfrom pipeline.guard.cpuid import host_features\n"
         "def version(name):\n    try:\n        return metadata.version(name)\n    except metadata.PackageNotFoundError:\n"
         "        return None\n"
         "print(json.dumps({'machine': platform.machine(), 'cpu_features': sorted(host_features()),\n"
         "    'versions': {'python': platform.python_version(), 'numpy': version('numpy'),\n"
         "                 'onnxruntime': version('onnxruntime')}}))\n")


class HostUnavailable(ProfileUnavailable):
    """The host could not be used: no run happened, so nothing about the artifact is known there."""


@dataclass(frozen=True)
class Host:
    """One `kind: ssh` profile as OpenSSH command lines."""

    cpu: CpuProfile

    @property
    def where(self) -> str:
        return f"{self.cpu.user + '@' if self.cpu.user else ''}{self.cpu.host}:{self.cpu.port}"

    def options(self, port_flag: str) -> list[str]:
        known_hosts = Path(self.cpu.known_hosts).expanduser()
        options = [*SSH_OPTIONS, "-o", f"UserKnownHostsFile={known_hosts}", port_flag, str(self.cpu.port)]
        if self.cpu.identity_file:
            options += ["-o", "IdentitiesOnly=yes", "-i", str(Path(self.cpu.identity_file).expanduser())]
        return options + (["-o", f"User={self.cpu.user}"] if self.cpu.user else [])

    def ssh(self, remote_command: str) -> list[str]:
        return ["ssh", *self.options("-p"), self.cpu.host, remote_command]

    def remote_path(self, path: str) -> str:
        host = f"[{self.cpu.host}]" if ":" in self.cpu.host else self.cpu.host  # IPv6
        return f"{host}:{path}"

    def run(self, remote_command: str, timeout_seconds: float = SESSION_SECONDS) -> tuple[int | None, list[str]]:
        """(remote status, output lines); raises HostUnavailable when OpenSSH itself failed or hung."""
        code, timed_out, _, lines = run_limited(self.ssh(remote_command), timeout_seconds, None)
        if timed_out:
            raise HostUnavailable(f"{self.where}: no answer within {timeout_seconds:g} s (the connection hung "
                                  f"or dropped); the run there is still bounded by its own timeout")
        if code == SSH_EXIT_ERROR:
            raise HostUnavailable(self.why_failed(lines))
        return code, lines

    def stream(self, remote_command: str, what: str, stdin=None, stdout=None) -> None:
        """Run `remote_command` with a local file as its stdin or stdout, over the SSH channel itself: files travel
        as a tar stream (`tar -x` / `tar -c` there), so a host whose sshd has no SFTP subsystem (dropbear, hardened
        hosts; OpenSSH's scp speaks SFTP since 9.0) works as well as any other."""
        process = subprocess.Popen(self.ssh(remote_command), stdin=stdin or subprocess.DEVNULL,
                                   stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, errors = process.communicate(timeout=SESSION_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise HostUnavailable(f"{self.where}: {what} hung (no end within {SESSION_SECONDS} s)") from None
        lines = errors.decode(errors="replace").splitlines()
        if process.returncode == SSH_EXIT_ERROR:
            raise HostUnavailable(self.why_failed(lines))
        if process.returncode != 0:
            said = " ".join(line.strip() for line in lines if line.strip())[-300:] or f"exit {process.returncode}"
            raise HostUnavailable(f"{self.where}: {what} failed there ({said}); the host needs `tar` on its PATH")

    def upload(self, sources: list[Path], destination: str, scratch: Path) -> None:
        """Copy local files and folders `sources` into the remote folder `destination` (one tar stream)."""
        bundle = scratch / ".upload.tar"
        with tarfile.open(bundle, "w") as tar:
            for source in sources:
                tar.add(source, arcname=source.name)
        try:
            with open(bundle, "rb") as stdin:
                self.stream(f"tar -xf - -C {shlex.quote(destination)}", "copying to the host", stdin=stdin)
        finally:
            bundle.unlink(missing_ok=True)

    def download(self, folder: str, names: list[str], out_dir: Path) -> None:
        """Copy the remote files `names` (relative to `folder`) into `out_dir`, each by its base name."""
        bundle = out_dir / ".download.tar"
        try:
            with open(bundle, "wb") as stdout:
                self.stream(f"cd {shlex.quote(folder)} && tar -cf - {shlex.join(names)}", "copying from the host",
                            stdout=stdout)
            with tarfile.open(bundle) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        member.name = Path(member.name).name
                        tar.extract(member, out_dir, filter="data")
        finally:
            bundle.unlink(missing_ok=True)

    def why_failed(self, lines: list[str]) -> str:
        said = " ".join(line.strip() for line in lines if line.strip())[-400:] or "no message"
        hints = {
            "Host key verification failed": f"its host key is not in {self.cpu.known_hosts} (StrictHostKeyChecking: "
                                            f"an unknown key is never accepted): check the key, then add it "
                                            f"(`ssh-keyscan -p {self.cpu.port} {self.cpu.host} >> {self.cpu.known_hosts}`)",
            "host key is known": f"its host key is not in {self.cpu.known_hosts}: an unknown key is never accepted",
            "REMOTE HOST IDENTIFICATION HAS CHANGED": "its host key differs from the one in known_hosts: refused",
            "Permission denied": f"the login was refused (user {self.cpu.user or '(default)'}, key "
                                 f"{self.cpu.identity_file or '(default)'})",
            "Connection refused": "nothing listens for SSH there",
            "Could not resolve": "the host name does not resolve",
            "timed out": "the host does not answer",
            "No route to host": "the host cannot be reached",
            "closed by remote host": "the connection dropped",
            "Connection reset": "the connection dropped",
            "Broken pipe": "the connection dropped",
        }
        hint = next((words for key, words in hints.items() if key in said), "OpenSSH failed")
        return f"ssh {self.where}: {hint} ({said})"

    def session(self) -> _Session:
        return _Session(self)


class _Session:
    """A private folder on the host for one run (`mktemp -d`), removed on exit while the host can be reached."""

    def __init__(self, host: Host):
        self.host, self.folder = host, None

    def __enter__(self) -> _Session:
        code, lines = self.host.run("mktemp -d -t quantgate-remote.XXXXXXXX")
        folder = lines[-1].strip() if lines else ""
        if code != 0 or not folder.startswith("/"):
            raise HostUnavailable(f"{self.host.where}: `mktemp -d` failed there: {' '.join(lines)[-300:]}")
        self.folder = folder
        return self

    def upload(self, files: dict[str, Path]) -> None:
        """Copy the child's sources and `files` (name in the folder -> local path) there, in one tar stream."""
        with scratch_folder("quantgate-upload-") as staging:
            for source in CHILD_SOURCES:
                copy_into(SOURCE_ROOT / source, staging / source)
            for name, path in files.items():
                copy_into(path, staging / name)
            self.host.upload(sorted(p for p in staging.iterdir() if p.name != OWNER_FILE), self.folder, staging)

    def run(self, command: list[str], timeout_seconds: float | None = None, memory_limit_mb: int | None = None
            ) -> tuple[int | None, bool, list[str]]:
        """Run `command` in the folder: (exit code or -signal, None when timed out; timed out; output lines).
        Under the host's `timeout`, the child and everything it starts are one process group, killed whole."""
        limits = "ulimit -c 0" + (f" && ulimit -v {memory_limit_mb * 1024}" if memory_limit_mb else "")
        bounded = f"timeout -k 5 {timeout_seconds:g} " if timeout_seconds else ""
        script = (f"cd {shlex.quote(self.folder)} && {limits} && {{ {bounded}{shlex.join(command)} 2>&1; "
                  f"echo \"{EXIT_MARKER}$?\"; }}")
        session_seconds = SESSION_SECONDS + (timeout_seconds or 0)
        _, lines = self.host.run(f"sh -c {shlex.quote(script)}", session_seconds)
        if not lines or EXIT_MARKER not in lines[-1]:
            raise HostUnavailable(f"{self.host.where}: the connection dropped during the run ({' '.join(lines)[-300:]})")
        unfinished, _, status = lines[-1].rpartition(EXIT_MARKER)  # output without a final newline comes first
        status, output = int(status), lines[:-1] + [unfinished] * bool(unfinished)
        if status in (126, 127):  # the shell's or `timeout`'s "not found" / "cannot execute"
            raise HostUnavailable(f"{self.host.where}: {command[0]} cannot be run there ({' '.join(output)[-300:]}); "
                                  f"set `python:` in the profile to an interpreter with numpy and onnxruntime")
        if bounded and status == TIMEOUT_STATUS:
            return None, True, output
        return (-(status - 128) if status > 128 else status), False, output

    def download(self, names: list[str], out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.host.download(self.folder, names, out_dir)

    def __exit__(self, *failure) -> None:
        try:
            self.host.run(f"rm -rf {shlex.quote(self.folder)}")
        except HostUnavailable as unreachable:  # what the run found stands; the leftover is only named
            print(f"quantgate verify: {self.folder} is left on {self.host.where} (its temporary folder): {unreachable}",
                  file=sys.stderr, flush=True)


def copy_into(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copyfile(source, destination)


def interpreter(cpu: CpuProfile) -> list[str]:
    """The host's interpreter as a command: `python:` may be a path or a whole command (an emulator first); with
    a `runtime:`, the python of the venv prepared for it there (under the same emulator)."""
    command = shlex.split(cpu.python)
    if cpu.runtime is None:
        return command
    return [*command[:-1], f"{host_runtime_folder(cpu)}/venv/bin/python"]


def host_runtime_requirements(cpu: CpuProfile) -> tuple[str, ...]:
    """The pip lines of the profile's `runtime:`: a shipped runtime's (conf/runtime/) or the lines themselves."""
    runtime = venvs.parse(str(cpu.runtime))
    if runtime.pinned:
        raise HostUnavailable(f"{cpu.name}: runtime {cpu.runtime!r} names no pip lines; give a runtime profile "
                              f"with requirements (ort116) or pip lines such as 'onnxruntime==1.20.1 numpy<2'")
    return runtime.requirements


def host_runtime_folder(cpu: CpuProfile) -> str:
    """Where the venv lies on the host: <runtime_cache>/<sha256 of the interpreter command and the lines>, `~`
    being the login's home there."""
    import hashlib
    spec = json.dumps({"python": cpu.python, "requirements": sorted(host_runtime_requirements(cpu))})
    cache = cpu.runtime_cache.rstrip("/")
    if cache == "~" or cache.startswith("~/"):
        cache = host_home(cpu) + cache[1:]
    return f"{cache}/{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


_HOMES: dict[str, str] = {}


def host_home(cpu: CpuProfile) -> str:
    host = Host(cpu)
    if host.where not in _HOMES:
        code, lines = host.run('echo "$HOME"')
        if code != 0 or not lines or not lines[-1].startswith("/"):
            raise HostUnavailable(f"{host.where}: could not read the home folder there ({' '.join(lines)[-200:]})")
        _HOMES[host.where] = lines[-1].strip()
    return _HOMES[host.where]


def prepare_host_runtime(cpu: CpuProfile, progress=None) -> None:
    """Build the profile's runtime venv on the host once: made in a temporary folder beside it, a COMPLETE
    marker written last, then renamed into place; a folder without the marker, or whose python cannot import
    numpy and onnxruntime, is built again. pip on the host needs its package index."""
    if cpu.runtime is None:
        return
    folder = shlex.quote(host_runtime_folder(cpu))
    healthy = f"test -f {folder}/COMPLETE && {shlex.join(interpreter(cpu))} -c 'import numpy, onnxruntime'"
    build = (f"rm -rf {folder}.tmp && mkdir -p {folder}.tmp && {shlex.join(shlex.split(cpu.python))} -m venv "
             f"{folder}.tmp/venv && {folder}.tmp/venv/bin/python -m pip install -q --disable-pip-version-check "
             f"{shlex.join(host_runtime_requirements(cpu))} && touch {folder}.tmp/COMPLETE && rm -rf {folder} && "
             f"mv {folder}.tmp {folder}")
    host = Host(cpu)
    _, lines = host.run(f"sh -c {shlex.quote(f'if {healthy} >/dev/null 2>&1; then echo reused; else {build}; fi')}",
                        SESSION_SECONDS + 900)
    reused = any(line.strip() == "reused" for line in lines)
    check, check_lines = host.run(f"sh -c {shlex.quote(healthy)}", SESSION_SECONDS)
    if check != 0:
        raise HostUnavailable(f"{host.where}: the runtime {cpu.runtime!r} could not be prepared in "
                              f"{host_runtime_folder(cpu)} ({' '.join(lines + check_lines)[-400:]})")
    if progress is not None:
        progress(f"{cpu.name}: runtime {cpu.runtime} {'reused' if reused else 'prepared'} on {host.where} "
                 f"({host_runtime_folder(cpu)})")


def read_host(cpu: CpuProfile) -> dict:
    """The host's machine, CPU features (its CPUID, read there by the guard) and interpreter versions (of the
    runtime prepared there, when the profile names one)."""
    prepare_host_runtime(cpu)
    with Host(cpu).session() as session:
        session.upload({})
        code, _, lines = session.run([*interpreter(cpu), "-c", PROBE])
    try:
        if code != 0:
            raise ValueError(f"exit {code}")
        seen = json.loads(lines[-1])
    except (ValueError, IndexError) as error:
        raise HostUnavailable(f"{Host(cpu).where}: {cpu.python} could not read the CPU there ({error}): "
                              f"{' '.join(lines)[-300:]}") from None
    absent = [name for name in ("numpy", "onnxruntime") if not seen["versions"][name]]
    if absent:
        raise HostUnavailable(f"{Host(cpu).where}: {cpu.python} has no {' or '.join(absent)}; a child needs the "
                              f"standard library, numpy and onnxruntime there")
    return seen


def claim_mismatch(cpu: CpuProfile, seen: frozenset[str]) -> str | None:
    """Words when the host lacks features its profile's `microarchitecture` claims; None when it has them."""
    claimed = cpu.features()
    lacking = sorted(((claimed or frozenset()) & KNOWN_FEATURES) - seen)
    if not lacking:
        return None
    return (f"{cpu.name} claims {cpu.microarchitecture}, but its CPU (read there by CPUID) lacks {', '.join(lacking)}: "
            f"fix the profile's microarchitecture, or check which machine {cpu.host} is")


def run_child(cpu: CpuProfile, command: list[str], files: dict[str, Path], out_dir: Path, outputs: list[str],
              timeout_seconds: float, memory_limit_mb: int) -> ChildRun:
    """Run child_onnx's `command` (its paths relative to the remote folder, its interpreter replaced by the
    host's) on the host, with `files` copied there; when it exits 0, `outputs` come back into `out_dir`."""
    host = Host(cpu)
    remote_command = [*interpreter(cpu), *command[1:]]
    with host.session() as session:
        session.upload(files)
        started = time.monotonic()
        returncode, timed_out, lines = session.run(remote_command, timeout_seconds, memory_limit_mb)
        seconds = time.monotonic() - started
        if returncode == 0:
            session.download(outputs, out_dir)
        shown = host.ssh(f"cd {session.folder} && {shlex.join(remote_command)}")
    return ChildRun(cpu.name, shown, returncode, timed_out, seconds, timeout_seconds, memory_limit_mb,
                    lines[-STDERR_TAIL_LINES:], host=host.where)

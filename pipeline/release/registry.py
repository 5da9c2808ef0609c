"""A local OCI registry for trying publishing out and for tests: Debian's `docker-registry` (the CNCF
distribution registry), on 127.0.0.1 only, with its own config file and storage folder.

    quantgate registry start [--dir .registry] [--port 5000]     (`make registry`)
    quantgate registry stop  [--dir .registry]                   (`make registry-stop`)

`start` writes DIR/config.yml, stores blobs under DIR/storage/, logs to DIR/registry.log, records the
process id in DIR/registry.pid and returns once the registry answers on /v2/. `stop` ends exactly that
process (its id from the pid file, checked against its command line).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pipeline.release import TrustError

BINARY = "docker-registry"
DEFAULT_DIR = Path(".registry")
DEFAULT_PORT = 5000


def binary() -> str:
    found = shutil.which(BINARY) or ("/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").is_file() else None)
    if not found:
        raise TrustError(f"{BINARY} is not installed: `make system-tools` (or `apt-get install -y docker-registry`, "
                         f"Debian's CNCF distribution registry)")
    return found


def write_config(folder: Path, port: int, read_only: bool = False) -> Path:
    """A config for one registry on 127.0.0.1:port storing under folder/storage (YAML written as text)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "storage").mkdir(exist_ok=True)
    path = folder / "config.yml"
    path.write_text(f"""# written by quantgate (pipeline/release/registry.py)
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {(folder / "storage").resolve()}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: {"true" if read_only else "false"}
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
""")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start(folder: Path = DEFAULT_DIR, port: int = DEFAULT_PORT, read_only: bool = False,
          timeout: float = 20) -> subprocess.Popen:
    """Start the registry in its own session (it outlives this process); return once it answers."""
    folder = Path(folder)
    pid_file = folder / "registry.pid"
    if pid_file.is_file() and _ours(int(pid_file.read_text()), folder):
        raise TrustError(f"a registry from {folder} is already running (pid {pid_file.read_text().strip()}): "
                         f"`make registry-stop` first")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise TrustError(f"port {port} on 127.0.0.1 is taken by another program: `make registry "
                             f"REGISTRY_PORT=5001`")
    config = write_config(folder, port, read_only)
    log = open(folder / "registry.log", "ab")
    process = subprocess.Popen([binary(), "serve", str(config.resolve())], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            tail = (folder / "registry.log").read_text(errors="replace")[-800:]
            raise TrustError(f"the registry did not start on 127.0.0.1:{port} (see {folder}/registry.log): {tail}")
        time.sleep(0.05)
    return process


def _ours(pid: int, folder: Path) -> bool:
    """Whether `pid` is a docker-registry serving folder's config (not a recycled id of another program)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(BINARY.encode() in part for part in command[:1]) and \
        str((folder / "config.yml").resolve()).encode() in command


def stop(folder: Path = DEFAULT_DIR, timeout: float = 10) -> bool:
    """End the registry started from `folder`; False if none was running."""
    folder = Path(folder)
    pid_file = folder / "registry.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    running = _ours(pid, folder)
    if running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _ours(pid, folder) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if _ours(pid, folder):
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    pid_file.unlink(missing_ok=True)
    return running

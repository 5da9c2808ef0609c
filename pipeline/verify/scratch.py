"""Verification's temporary folders (`quantgate-verify-*`, `quantgate-snapshot-*`, `quantgate-upload-*` in the
system's temp folder),
removed on every exit path and, after a kill (SIGKILL leaves no exit path), by the next verification.

Each folder holds a marker naming the process that owns it (its pid and that process's start time, so a reused pid
is not mistaken for the owner); the next run removes only folders whose marker it can read and whose owner is dead.
A folder without the marker (anyone's `quantgate-verify-notes/`) is never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

OWNER_FILE = ".quantgate-owner"
PREFIXES = ("quantgate-verify-", "quantgate-snapshot-", "quantgate-upload-")


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (/proc/PID/stat field 22), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def owner_alive(owner: dict) -> bool:
    pid = owner.get("pid")
    return isinstance(pid, int) and pid > 0 and start_time(pid) == owner.get("started")


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the temporary folders of verifications whose process is dead; return them."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for prefix in PREFIXES:
        for folder in root.glob(f"{prefix}*"):
            try:
                owner = json.loads((folder / OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # not provably ours
            if isinstance(owner, dict) and owner.get("quantgate") == "verify" and not owner_alive(owner):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


@contextmanager
def scratch_folder(prefix: str):
    """A new temporary folder marked as this process's; earlier runs' dead ones are swept first."""
    sweep()
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        owner = {"quantgate": "verify", "pid": os.getpid(), "started": start_time(os.getpid())}
        (folder / OWNER_FILE).write_text(json.dumps(owner))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

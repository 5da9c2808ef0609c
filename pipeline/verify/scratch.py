"""Verification's temporary folders (`quantgate-verify-*`, `quantgate-snapshot-*`, `quantgate-upload-*` in the
system's temp folder),
removed on every exit path and, after a kill (SIGKILL leaves no exit path), by the next verification.

Each folder holds a marker naming the process that owns it (its pid and that process's start time, so a reused pid
is not mistaken for the owner); the next run removes only folders whose marker it can read and whose owner is dead.
A folder without the marker (anyone's `quantgate-verify-notes/`) is never touched.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipeline.owners import dead_owner, this_process

OWNER_FILE = ".quantgate-owner"
PREFIXES = ("quantgate-verify-", "quantgate-snapshot-", "quantgate-upload-")


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
            if dead_owner(owner, "verify"):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


@contextmanager
def scratch_folder(prefix: str):
    """A new temporary folder marked as this process's; earlier runs' dead ones are swept first."""
    sweep()
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        (folder / OWNER_FILE).write_text(json.dumps(this_process("verify")))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

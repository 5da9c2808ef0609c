"""Build a cached folder once, under a lock, and reuse it: what the runtime venvs and the Arm sysroot share.

A folder is complete when it holds the COMPLETE marker, written last; install.json beside it records how it
was built. Two processes preparing one folder: the second waits on the lock, then reuses the first's. A
folder without the marker (a build that died) or one its `check` finds broken is rebuilt from scratch.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

COMPLETE = "COMPLETE"
INSTALL_RECORD = "install.json"


def build_once(folder: Path, build: Callable[[Path], dict], label: str, progress: Callable[[str], None],
               check: Callable[[Path], str | None] | None = None, in_place: bool = False) -> dict:
    """The install record of `folder`, built by `build(path) -> record` unless a complete one is cached.

    `check(folder)`: a problem in words that makes a complete folder unusable, else None. `in_place`: build
    in `folder` itself (a venv cannot move); otherwise in a hidden sibling renamed into place when done."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / COMPLETE).is_file():
            problem = check(folder) if check is not None else None
            if problem is None:
                return json.loads((folder / INSTALL_RECORD).read_text()) | {"status": "reused"}
            progress(f"{label}: the cached environment {folder} is broken ({problem}); rebuilding it")
        elif folder.exists():
            progress(f"{label}: {folder} is half-built (no {COMPLETE} marker); rebuilding it")
        shutil.rmtree(folder, ignore_errors=True)
        work = folder if in_place else folder.with_name(f".{folder.name}.building")
        shutil.rmtree(work, ignore_errors=True)
        started = time.monotonic()
        try:
            record = build(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        record = {"status": "built", **record, "seconds": round(time.monotonic() - started, 1),
                  "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (work / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if not in_place:
            os.rename(work, folder)
        (folder / COMPLETE).write_text(label + "\n")  # last: only a complete folder has it
        return record

"""One writer per release at a time: `quantgate matrix`, `sign` and `publish` of one release folder hold its lock.

Two matrices of one release started at once would each write matrix.json, the second replacing the first's record
(one result lost while both report success); two publishes would push tags over each other. The lock is an
advisory `flock` on `<release_dir>/.quantgate-release.lock` (released by the kernel when the holder dies, so a
killed run never blocks the next); the file says who holds it, so the second run is refused naming the first.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from pipeline.errors import UsageError

LOCK_FILE = ".quantgate-release.lock"


class ReleaseBusy(UsageError):
    """Another quantgate run holds the release's lock: exit 2, nothing done."""


def acquire(release_dir: Path, what: str) -> IO:
    """The open, locked lock file of `release_dir` (close it to release), or ReleaseBusy naming the holder."""
    release_dir = Path(release_dir)
    release_dir.mkdir(parents=True, exist_ok=True)
    handle = open(release_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        handle.close()
        raise ReleaseBusy(f"another quantgate {holder.get('what', 'run')} (pid {holder.get('pid', '?')}, started "
                          f"{holder.get('started_utc', '?')}) is writing the release {release_dir}; wait for it to "
                          f"finish, then run `quantgate {what}` again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"what": what, "pid": os.getpid(),
                             "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    handle.flush()
    return handle


@contextmanager
def release_lock(release_dir: Path, what: str) -> Iterator[None]:
    handle = acquire(release_dir, what)
    try:
        yield
    finally:
        handle.close()

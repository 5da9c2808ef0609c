"""Which process owns a leftover: a record of its pid and start time, written into a marker by the process that
makes something it must clean up, so a later run can prove the owner is dead (a reused pid is another process:
its start time differs) before it removes or rolls back what was left. Standard library only."""
from __future__ import annotations

import os
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (/proc/PID/stat field 22), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def this_process(kind: str) -> dict:
    """The owner record of this process, for a marker of `kind` ("verify", "sign", ...)."""
    return {"quantgate": kind, "pid": os.getpid(), "started": start_time(os.getpid())}


def dead_owner(record, kind: str) -> bool:
    """Whether `record` is a quantgate owner record of `kind` whose process is gone: only then may its leftover go."""
    if not isinstance(record, dict) or record.get("quantgate") != kind:
        return False
    pid = record.get("pid")
    return not (isinstance(pid, int) and pid > 0 and start_time(pid) == record.get("started"))

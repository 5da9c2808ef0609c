"""What a build killed half-way may leave beside its artifact folder (its staging folder, a kept rejected build, the
replaced folder on its way out), and how the next build proves them its own before it removes them: each is
announced first by a marker file beside it, `<leftover>.quantgate`, holding LEFTOVER_MARK, written before the
folder exists. The next build removes exactly those, never a folder that only looks like one by its name
(the user's `.model.old-2025/`).
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
from pathlib import Path

from pipeline.manifest import atomic_write_bytes

LEFTOVER_MARK = "quantgate build leftover: the next build of this folder removes it\n"
MARKER_SUFFIX = ".quantgate"


def leftover_path(folder: Path, kind: str) -> Path:
    """A new hidden path beside `folder` (`.<name>.<kind>-<pid>-<random>`), its marker written before it exists."""
    path = folder.parent / f".{folder.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    atomic_write_bytes(path.parent / (path.name + MARKER_SUFFIX), f"{LEFTOVER_MARK}pid {os.getpid()}\n".encode())
    return path


def marked_leftovers(folder: Path, kind: str = "*") -> list[Path]:
    """The leftovers of builds of `folder` (of one kind), proved by their markers."""
    found = []
    for marker in folder.parent.glob(f".{glob.escape(folder.name)}.{kind}-*{MARKER_SUFFIX}"):
        try:
            if not marker.read_text().startswith(LEFTOVER_MARK):
                continue
        except (OSError, UnicodeDecodeError):
            continue
        found.append(marker.with_name(marker.name[:-len(MARKER_SUFFIX)]))
    return sorted(found)


def forget_leftover(path: Path) -> None:
    """`path` was published or removed: drop its marker."""
    (path.parent / (path.name + MARKER_SUFFIX)).unlink(missing_ok=True)


def remove_leftover(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    if not path.exists():
        forget_leftover(path)


def remove_leftovers(folder: Path) -> None:
    """Under the build lock: every marked leftover of an earlier build of `folder` (staging, rejected, old)."""
    for stale in marked_leftovers(folder):
        remove_leftover(stale)


def kept_build(folder: Path) -> Path | None:
    """The rejected build this process kept beside `folder`, if any."""
    mine = [path for path in marked_leftovers(folder, "rejected") if f"-{os.getpid()}-" in path.name and path.is_dir()]
    return mine[-1] if mine else None

"""Files quantgate reads from a user's folder and copies into an artifact: each must be a regular file inside that
folder. A symlink that leads out of it (`merges.txt -> ~/.ssh/id_rsa`) would put the target's bytes into a
world-readable, signed and published artifact; it is refused, naming the link and where it leads.

The local hub cache is the one place whose links legitimately leave the folder: a snapshot
(`models--ORG--NAME/snapshots/REV/`) links every file to `../../blobs/`, inside the same cached repository.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.errors import InputError


def allowed_roots(folder: Path) -> tuple[Path, ...]:
    """Where files of `folder` may really lie: the folder itself, and for a hub-cache snapshot its repository's
    blobs."""
    real = Path(os.path.realpath(folder))
    roots = [real]
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith(("models--", "datasets--")):
        roots.append(real.parent.parent / "blobs")
    return tuple(roots)


def contained_file(folder: Path, name: str, what: str = "") -> Path | None:
    """`folder / name` if it is there, checked to be a regular file inside `folder` (after every symlink);
    None when there is no such entry. InputError (exit 2) naming the file and the fix otherwise."""
    path = folder / name
    if not os.path.lexists(path):
        return None
    real = Path(os.path.realpath(path))
    roots = allowed_roots(folder)
    if not any(real == root or root in real.parents for root in roots):
        raise InputError(f"{path} is a symlink to {real}, outside {folder}{what}; quantgate copies only files that "
                         f"lie inside the model's folder into an artifact (it would ship that file's bytes): replace "
                         f"the link with a copy of the file, or remove it")
    try:
        mode = os.stat(real).st_mode
    except OSError as error:
        raise InputError(f"{path} cannot be read ({error.strerror}); fix or remove it") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path} is not a regular file (a folder, device or pipe){what}; quantgate copies only "
                         f"regular files into an artifact: replace it with the file itself, or remove it")
    return path


def check_contained(folder: Path, names, what: str = "") -> list[Path]:
    """Every one of `names` present in `folder`, checked as `contained_file` does."""
    return [path for name in names if (path := contained_file(folder, name, what)) is not None]

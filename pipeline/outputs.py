"""Where a command may write a report the user names (`verify --out`, `audit --json`): never over a file quantgate
did not write, never into an artifact folder beside the files its manifest and signature cover, never into a signed
folder. Checked before any work, so a refusal costs nothing and changes nothing."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from pipeline.errors import UsageError
from pipeline.guard.signature import SIGNATURE_FILE as SIGNATURE
from pipeline.manifest import MANIFEST_FILE as MANIFEST


def has_keys(*keys: str) -> Callable[[Path], bool]:
    """A proof that a JSON report is quantgate's: a JSON object holding these keys."""
    def ours(path: Path) -> bool:
        try:
            payload = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(payload, dict) and all(key in payload for key in keys)
    return ours


def check_output_file(out: Path, option: str, ours: Callable[[Path], bool], folder_name: str | None = None,
                      signed_fix: str = "") -> None:
    """Refuse `out` (given as `option`) unless writing it destroys nothing: a new file, or one `ours` proves is a
    report quantgate wrote. Inside an artifact folder only `folder_name` may be written (whatever it holds: a
    damaged report there is replaced, as the signoff advises), and not in a signed one."""
    where = f"cannot use {out}"
    if out.is_dir():
        raise UsageError(f"{where}: it is a folder; give {option} a file path (e.g. {out / (folder_name or 'report.json')})")
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"{where}: {out.parent} is a file, not a folder; give {option} a path in an existing folder")
    home = out.parent.resolve()
    if (home / MANIFEST).is_file() and out.name != folder_name:
        default = f", or omit {option} to write {out.parent / folder_name}" if folder_name else ""
        raise UsageError(f"{where}: {out.parent} is an artifact folder and {out.name} would become a file of it "
                         f"(its manifest and signature cover every file); write the report outside it{default}")
    if (home / SIGNATURE).is_file():
        raise UsageError(f"{where}: {out.parent} is signed ({SIGNATURE} covers every file in it: rewriting {out.name} "
                         f"would break the release's signature); write this report elsewhere with {option} FILE"
                         f"{signed_fix}")
    own_place = (home / MANIFEST).is_file() and out.name == folder_name  # an artifact folder's own report file
    if os.path.lexists(out) and (out.is_symlink() or not (own_place or ours(out))):
        raise UsageError(f"{where}: it exists and is not a report quantgate wrote, so it would be overwritten; give "
                         f"{option} a new file name, or move that file away first")

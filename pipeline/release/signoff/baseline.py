"""A signoff already made: a release's signoff.json read back (for `sign`, and as the baseline of the next
release's trend), checked against docs/schemas/signoff.schema.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.jsonfiles import read_json
from pipeline.release.signoff.rows import SignoffError


def load_signoff(path: Path, release: str) -> dict[str, Any]:
    """A release's signoff.json, valid against docs/schemas/signoff.schema.json, or SignoffError naming the key."""
    return read_json(path, "signoff", f"make the signoff again (`make signoff RELEASE={release}`)", SignoffError)


def load_baseline(baseline: str, out_dir: Path) -> dict[str, Any]:
    """The previous release's signoff.json: a path to it (or its folder), else reports/<baseline>/ beside out_dir."""
    given = Path(baseline)
    for path in (given, given / "signoff.json", out_dir.parent / baseline / "signoff.json"):
        if path.is_file():
            return load_signoff(path, baseline)
    raise SignoffError(f"no signoff.json for the baseline {baseline!r} (looked in {given} and "
                       f"{out_dir.parent / baseline}): sign off that release first (`make signoff RELEASE={baseline}`)")

"""Signing a release is all or nothing, even across SIGKILL: before the first folder is touched, the trust files
it will replace (signoff.json, provenance.intoto.json, model.sig of every folder) are copied aside into a journal,
`<release>/.quantgate-sign-<pid>-<random>/`; the journal is removed once every folder is signed. A journal left
by a process that is dead (its owner marker: pid and start time) is rolled back by the next `sign` or `signoff`:
the release is as it was before the killed run, never half-signed.
"""
from __future__ import annotations

import json
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from pipeline.manifest import atomic_write_bytes, atomic_write_json
from pipeline.owners import dead_owner, this_process
from pipeline.release import TRUST_FILES

JOURNAL_PREFIX = ".quantgate-sign-"
OWNER_FILE = "owner.json"
SAVED_FILE = "journal.json"  # written once every backup is in place: only then were folders touched


def _restore(journal: Path, release_dir: Path) -> None:
    saved = json.loads((journal / SAVED_FILE).read_text())
    for entry in saved["files"]:
        path = release_dir / entry["path"]
        if entry["backup"] is None:
            path.unlink(missing_ok=True)
        elif path.parent.is_dir():
            atomic_write_bytes(path, (journal / entry["backup"]).read_bytes())


def recover(release_dir: Path) -> list[Path]:
    """Roll back every signing run of `release_dir` that died half-way; return their journals."""
    recovered = []
    for journal in sorted(Path(release_dir).glob(f"{JOURNAL_PREFIX}*")):
        try:
            owner = json.loads((journal / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not provably a journal of ours
        if not dead_owner(owner, "sign"):
            continue
        if (journal / SAVED_FILE).is_file():
            _restore(journal, release_dir)
        shutil.rmtree(journal, ignore_errors=True)
        recovered.append(journal)
    return recovered


def _save(journal: Path, release_dir: Path, folders: list[Path]) -> None:
    files = []
    for folder in folders:
        for name in TRUST_FILES:
            relative = (Path(folder).resolve().relative_to(release_dir.resolve()) / name).as_posix()
            backup = None
            if (Path(folder) / name).is_file():
                backup = f"backup/{relative}"
                (journal / backup).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(folder) / name, journal / backup)
            files.append({"path": relative, "backup": backup})
    atomic_write_json(journal / SAVED_FILE, {"files": files})


@contextmanager
def signing(release_dir: Path, folders: list[Path]):
    """Sign `folders` inside this block: any exception, or a kill (rolled back by the next run), takes back every
    trust file the block wrote."""
    release_dir = Path(release_dir)
    recover(release_dir)
    journal = release_dir / f"{JOURNAL_PREFIX}{this_process('sign')['pid']}-{secrets.token_hex(4)}"
    journal.mkdir()
    try:
        atomic_write_json(journal / OWNER_FILE, this_process("sign"))
        _save(journal, release_dir, folders)
        try:
            yield
        except BaseException:
            _restore(journal, release_dir)
            raise
    finally:
        shutil.rmtree(journal, ignore_errors=True)

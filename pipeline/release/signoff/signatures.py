"""Release trust in the signoff: one `signature` row per artifact folder once signatures are required, a public
key is given, or any folder is signed (a release is signed as a whole: pipeline/release/sign.py). A missing or
invalid signature is never waivable.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.release import SIGNATURE_FILE, TrustError
from pipeline.release.signoff.rows import Row, row
from pipeline.release.trust import Trust, verify_folder


def signature_rows(folders: list[Path], public_key: Path | None = None, require: bool = False) -> list[Row]:
    """One `signature` row per artifact folder (never waivable).

    A signature is required when `require` is set or when any folder of the release is signed (a release is
    signed as a whole: a folder whose signature was removed blocks). Without a public key a signature
    cannot be checked: reported, and blocking only where signatures are required."""
    signed = [f for f in folders if (f / SIGNATURE_FILE).is_file()]
    required = require or bool(signed)
    if not signed and not required and public_key is None:
        return []
    return [signature_row(folder, public_key, require, required) for folder in folders]


def signature_row(folder: Path, public_key: Path | None, require: bool, required: bool) -> Row:
    """The folder's signature: unsigned, unchecked (no key), invalid, or verified against `public_key`."""
    name = folder.name
    if not (folder / SIGNATURE_FILE).is_file():
        why = "the release requires signatures" if require else "other artifacts of this release are signed"
        return row(name, "signature", "unsigned", False if required else None,
                   f"no {SIGNATURE_FILE}: {why}; sign the release (`make sign`)" if required else
                   "not signed (`make sign` signs a ready release)", waivable=False, required=required)
    if public_key is None:
        return row(name, "signature", "unchecked", False if require else None,
                   "signed, but no public key was given to check it with (PUBLIC_KEY=keys/quantgate.pub)",
                   waivable=False, required=require)
    try:
        result = verify_folder(folder, Trust.of(public_key))
    except TrustError as error:
        return row(name, "signature", "invalid", False, str(error), waivable=False)
    return row(name, "signature", "verified", True, f"model-signing signature over all {result['files']} "
               f"files and signed provenance verified with {public_key}", waivable=False)

"""`quantgate provenance PATH [--public-key keys/quantgate.pub] [--json]` (also `python -m
pipeline.commands.provenance`): print an artifact folder's provenance and check it against the files (and its
signature). The work and the command's description are pipeline/release/provenance.py's."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.errors import VerificationFailed
from pipeline.manifest import MANIFEST_FILE
from pipeline.release import TrustError, provenance
from pipeline.release.keys import load_public_key

PROG = "quantgate provenance"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, provenance.__doc__)
    parser.add_argument("path", type=Path, help="an artifact folder (or a file in it)")
    parser.add_argument("--public-key", type=Path, help="also check the DSSE signature with this public key")
    parser.add_argument("--json", action="store_true", help="print the whole statement as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    folder = args.path if args.path.is_dir() else args.path.parent
    if not (folder / MANIFEST_FILE).is_file():
        raise TrustError(f"{args.path} is not an artifact folder (no {MANIFEST_FILE}): give a folder built by "
                         f"quantgate")
    envelope, statement = provenance.read_provenance(folder)
    if args.public_key:
        provenance.verify_envelope(envelope, load_public_key(args.public_key), folder.name)
    print(json.dumps(statement, indent=2) if args.json else provenance.summary(statement))
    problems = provenance.check_files(folder, statement)
    signed = "signature verified, " if args.public_key else ""
    if problems:
        raise VerificationFailed(f"{folder.name}: does NOT match the files: {'; '.join(problems)}")
    print(f"provenance: {signed}every subject's sha256 matches the files in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

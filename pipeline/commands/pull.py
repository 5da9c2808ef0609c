"""`quantgate pull REF --out DIR [--public-key keys/quantgate.pub] [--force]` (also `python -m
pipeline.commands.pull`, `make pull`): download one published artifact, verified before it is written. The work and
the command's description are pipeline/release/pull.py's."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.manifest import Manifest
from pipeline.release import pull

PROG = "quantgate pull"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, pull.__doc__)
    parser.add_argument("reference", help="<host[:port]>/<repository>:<tag>")
    parser.add_argument("--out", type=Path, required=True, help="the folder to put <artifact>/ in")
    parser.add_argument("--public-key", type=Path, default=Path("keys/quantgate.pub"))
    parser.add_argument("--force", action="store_true", help="replace OUT/<artifact>/ if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    destination = pull.pull(args.reference, args.out, args.public_key, args.force)
    manifest = Manifest.load(destination)
    print(f"quantgate pull: {destination} (target {manifest.target}); check this host before loading it: "
          f"`python -m pipeline.guard {destination / manifest.model_file} --public-key {args.public_key}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

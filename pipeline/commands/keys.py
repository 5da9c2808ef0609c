"""`quantgate keys [--out keys] [--days 365] [--force]` (also `python -m pipeline.commands.keys`, `make keys`): a
development signing key pair; the work and the command's description are pipeline/release/keys.py's."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.release import keys

PROG = "quantgate keys"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, keys.__doc__)
    parser.add_argument("--out", type=Path, default=keys.DEFAULT_DIR, help="folder for the key pair (default keys/)")
    parser.add_argument("--days", type=float, default=365, help="lifetime of the key's certificate (default 365)")
    parser.add_argument("--force", action="store_true", help="replace an existing key pair")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    key, pub, cert = keys.generate_keys(args.out, args.days, force=args.force)
    print(f"quantgate keys: wrote {key} (private: keep it out of git), {pub} (give it to whoever verifies) and "
          f"{cert} (valid {args.days:g} days)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`quantgate arm [--requirements 'PIP LINES']` (also `python -m pipeline.commands.arm`): prepare (once) the arm64
sysroot and aarch64 wheels of a runtime for the Arm CPU profiles, and print the prepared runtime as JSON. The work
and the command's description are pipeline/runtimes/arm.py's."""
from __future__ import annotations

import argparse
import json

from pipeline.commandline import command_parser, run_command
from pipeline.runtimes import arm
from pipeline.runtimes.venvs import Runtime

PROG = "quantgate arm"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, arm.__doc__)
    parser.add_argument("--requirements", help="pip lines, space-separated; default: this venv's onnxruntime and numpy")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    runtime = Runtime("custom", tuple(args.requirements.split())) if args.requirements else Runtime("pinned")
    print(json.dumps(arm.prepare(runtime).record(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

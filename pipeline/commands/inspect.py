"""Print an artifact's quantgate stamp and whether this host can run it (exit 3 when it must not: the guard's verdict).

`quantgate inspect PATH [--nodes | --node NAME]` (also `python -m pipeline.commands.inspect`); pipeline/inspect.py
does the work.
"""
from __future__ import annotations

import argparse

from pipeline.commandline import command_parser, run_command
from pipeline.inspect import inspect, inspect_nodes

PROG = "quantgate inspect"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, __doc__)
    parser.add_argument("path", metavar="MODEL.onnx|MODEL.pt2", help="an artifact (ONNX model or AOTInductor package)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--nodes", action="store_true",
                       help="list the ONNX nodes with recorded source files (debug/<file>.nodes.json beside it)")
    which.add_argument("--node", metavar="NAME", help="the source files and stack one ONNX node came from")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes or args.node is not None:
        return inspect_nodes(args.path, args.node)
    return inspect(args.path)


if __name__ == "__main__":
    raise SystemExit(main())

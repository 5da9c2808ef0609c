"""`quantgate registry start|stop [--dir .registry] [--port 5000]` (also `python -m pipeline.commands.registry`,
`make registry`, `make registry-stop`): a local OCI registry. The work and the command's description are
pipeline/release/registry.py's."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.release import registry

PROG = "quantgate registry"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, registry.__doc__)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", type=Path, default=registry.DEFAULT_DIR,
                        help="config, storage, log and pid (default .registry)")
    parser.add_argument("--port", type=int, default=registry.DEFAULT_PORT)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "start":
        process = registry.start(args.dir, args.port)
        print(f"quantgate registry: running on 127.0.0.1:{args.port} (pid {process.pid}, storage {args.dir}/storage);"
              f" publish with `make publish REGISTRY=localhost:{args.port}/quantgate`, stop with "
              f"`make registry-stop`")
    else:
        stopped = registry.stop(args.dir)
        print("quantgate registry: stopped" if stopped else f"quantgate registry: none running from {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

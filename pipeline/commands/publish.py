"""`quantgate publish --release NAME --registry HOST[:PORT][/NAMESPACE] ...` (also `python -m
pipeline.commands.publish`, `make publish`): push a ready, signed release to an OCI registry. The work and the
command's description are pipeline/release/publish.py's."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.release import publish
from pipeline.release.sign import check_built

PROG = "quantgate publish"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, publish.__doc__)
    parser.add_argument("--release", required=True)
    parser.add_argument("--registry", required=True, help="host[:port][/namespace], e.g. localhost:5000/quantgate")
    parser.add_argument("--artifacts-dir", type=Path, help="default artifacts/<release>")
    parser.add_argument("--report", type=Path, help="the signoff's folder; default reports/<release>")
    parser.add_argument("--waivers", type=Path, help="waivers YAML; default conf/waivers/<release>.yaml if it exists")
    parser.add_argument("--public-key", type=Path, default=Path("keys/quantgate.pub"),
                        help="checks every artifact's signature before the push")
    parser.add_argument("--force", action="store_true", help="replace tags that hold other content")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    release_dir = args.artifacts_dir or Path("artifacts") / args.release
    check_built(args.release, release_dir)
    records = publish.publish_release(args.release, release_dir, args.report or Path("reports") / args.release,
                                      args.registry, args.public_key, args.force, args.waivers)
    print(f"quantgate publish: release {args.release}: {len(records)} artifact(s) in {args.registry}; pull one with "
          f"`make pull REF={records[0]['reference']} OUT=deploy/`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`quantgate audit ARTIFACT [--target NAME | --features A,B] [--json OUT] [key=value ...]` (also `python -m
pipeline.commands.audit`): the static ISA audit of pipeline/isa/audit.py, whose docstring is the command's
description; the features it is held to come from --features, --target (with the overrides that shape the
target), else the artifact's own stamp."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.errors import UsageError
from pipeline.isa import audit
from pipeline.isa.targets import required_cpu_features
from pipeline.manifest import atomic_write_json
from pipeline.outputs import check_output_file, has_keys

PROG = "quantgate audit"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, audit.__doc__, overrides=True)
    parser.add_argument("artifact", help=".pt2 package, .so library, .onnx model or artifact folder")
    parser.add_argument("--target", help="compare with this target's features (conf/target/NAME.yaml); default: "
                                          "the artifact's own stamp, if any")
    parser.add_argument("--features", help="compare with these archspec feature names, comma-separated")
    parser.add_argument("--json", help="also write the report as JSON to this path")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.json:  # never over a file quantgate did not write, nor into an artifact folder (pipeline/outputs.py)
        check_output_file(Path(args.json), "--json", has_keys("audited_cpu_features"))
    report = audit.audit_path(args.artifact)
    allowed, target = _allowed(args, Path(args.artifact))
    print(audit.describe(report, allowed, target))
    if args.json:
        atomic_write_json(args.json, report.to_json() | {"target": target or None, "allowed": allowed})
    return audit.verdict(report, allowed)


def _allowed(args: argparse.Namespace, path: Path) -> tuple[list[str] | None, str]:
    """The features the artifact may use: --features, --target, else its own stamp, else none."""
    if args.features:
        return sorted(f.strip() for f in args.features.split(",") if f.strip()), "custom"
    overrides = [*([f"target={args.target}"] if args.target else []), *args.overrides]
    if any(o.startswith("target=") for o in overrides):
        from pipeline.config import compose_config  # Hydra (a few tenths of a second): only when a target is named
        cfg = compose_config(overrides)
        return required_cpu_features(cfg.target.microarchitecture, list(cfg.target.extra_features)), cfg.target.name
    if overrides:
        raise UsageError(f"config overrides ({' '.join(overrides)}) shape the target's features: give --target NAME")
    return audit.stamped_features(path)


if __name__ == "__main__":
    raise SystemExit(main())

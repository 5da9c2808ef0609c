"""`quantgate verify` (also `python -m pipeline.commands.verify`): verify a build folder or an ONNX artifact built
anywhere on every CPU profile of its target. The work and the command's description are pipeline/verify/stage.py's.

The child processes a verification starts (`python -m pipeline.verify.child_onnx ...`, child_pt2, child_decoder)
parse their own argv: a protocol between the verifier and its children, not a user command, so it stays there.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.config import compose_config, rules
from pipeline.errors import UsageError
from pipeline.manifest import Manifest
from pipeline.outputs import check_output_file
from pipeline.paths import CONF_DIR
from pipeline.verify import stage
from pipeline.verify.onnx import verify_files
from pipeline.verify.report import VERIFY_FILE, VerifyReport, VerifyReportError

PROG = "quantgate verify"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, stage.__doc__, overrides=True)
    parser.add_argument("--artifact-dir", type=Path, help="a folder built by quantgate (manifest.json inside)")
    parser.add_argument("--artifact", type=Path, help="an int8 ONNX model built anywhere")
    parser.add_argument("--reference", type=Path, help="its fp32 ONNX reference")
    parser.add_argument("--inputs", type=Path, help=".npz with one array per model input (and optionally labels)")
    parser.add_argument("--target", help="e.g. avx2; default for --artifact-dir: the manifest's target")
    parser.add_argument("--out", type=Path, help="where to write verify.json; default: beside the artifact")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.artifact_dir is not None:
        if args.artifact or args.reference or args.inputs:
            raise UsageError("give either --artifact-dir or --artifact/--reference/--inputs, not both")
        manifest = Manifest.load(args.artifact_dir)
        check_report_destination(args.out or manifest.path(VERIFY_FILE), manifest.folder)
        report = stage.verify_folder(load_config(args.target or manifest.target, args.overrides), manifest, args.out)
    else:
        if not (args.artifact and args.reference and args.inputs and args.target):
            raise UsageError("give --artifact-dir DIR, or all of --artifact, --reference, --inputs and --target")
        out = args.out or args.artifact.parent / VERIFY_FILE
        check_report_destination(out)
        cfg = load_config(args.target, args.overrides)
        report = verify_files(args.artifact, args.reference, args.inputs, cfg, out)
    return stage.exit_code(report["status"])


def load_config(target: str, overrides: list[str]):
    """The config for verifying an artifact built for `target`, with the verify.* rules checked."""
    from hydra.errors import HydraException
    try:
        cfg = compose_config([f"target={target}", *overrides])
    except HydraException as error:
        if f"target/{target}" not in str(error):
            raise  # the command line turns it into a usage error
        known = sorted(p.stem for p in (CONF_DIR / "target").glob("*.yaml"))
        raise UsageError(f"unknown target {target!r}; valid targets: {', '.join(known)}") from None
    rules.check_verify(cfg)
    return cfg


def check_report_destination(out: Path, folder: Path | None = None) -> None:
    """Refuse, before any work, a report path whose writing would destroy or change something quantgate did not
    make for it (pipeline/outputs.py): a file that is not a verify report (`--out notes.txt`, `--out A/model.onnx`),
    a new file in an artifact folder, or the verify.json of a signed folder (its signature covers it)."""
    def ours(path: Path) -> bool:
        try:
            VerifyReport.load(path)
        except VerifyReportError:
            return False
        return True
    check_output_file(out, "--out", ours, VERIFY_FILE, f" (`make verify ARTIFACT_DIR={folder or out.parent} OUT=FILE`)")


if __name__ == "__main__":
    raise SystemExit(main())

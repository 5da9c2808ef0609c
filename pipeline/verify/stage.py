"""Verify an artifact folder (the build's last stage, and `quantgate verify`), whichever its kind.

    quantgate verify --artifact-dir artifacts/minilm-dynamic-avx2
    quantgate verify --artifact q.onnx --reference fp32.onnx --inputs in.npz --target avx2 \
        [--out verify.json] [verify.emulated_max_samples=2 model.kind=classifier ...]

A target's profiles: its floor CPU (emulated by QEMU, must run and stay accurate), `native` when this
host has the target's features, and the CPUs just below the floor, where the guard must refuse the
artifact cleanly (exit 3) instead of letting it die. ONNX models are verified by pipeline/verify/onnx.py,
torch AOTInductor packages (.pt2) by pipeline/verify/pt2.py, weight-only decoders token by token by
pipeline/verify/decoder.py: the handler registered for the artifact's kind (pipeline/kinds.py) picks.
Exit codes: 0 every required check passed; 1 a check failed; 4 a required check could not be
verified (e.g. AVX-512 without such a host); 2 a user error (missing file, unknown target).
"""
from __future__ import annotations

from pathlib import Path

from pipeline import kinds
from pipeline.commandline import command_parser, run_command
from pipeline.config import compose_config, rules
from pipeline.errors import ExitCode, QuantgateError, UsageError
from pipeline.manifest import Manifest
from pipeline.paths import CONF_DIR
from pipeline.verify import decoder, onnx, pt2
from pipeline.verify.onnx import progress, verify_files
from pipeline.verify.report import VERIFY_FILE


def _verify_package(cfg, manifest: Manifest, out: Path | None, shown_folder: Path | None) -> dict:
    return pt2.verify_package(cfg, manifest)


# artifact kind -> verify(cfg, manifest, out, shown_folder) -> verify.json as a dict
VERIFIERS = {kinds.ONNX_QDQ.name: onnx.verify_snapshot, kinds.ONNX_QOPERATOR.name: onnx.verify_snapshot,
             kinds.AOTI_PT2.name: _verify_package, kinds.ONNX_INT4_WEIGHT_ONLY.name: decoder.verify_decoder,
             kinds.ONNX_INT8_WEIGHT_ONLY.name: decoder.verify_decoder}
kinds.register_handlers("verify", VERIFIERS)


def verify_folder(cfg, manifest: Manifest, out: Path | None = None, shown_folder: Path | None = None) -> dict:
    """Verify a build folder whose files still match its manifest, with the verifier of its artifact's kind."""
    changed = manifest.tampered_files()
    if changed:
        raise QuantgateError(f"{manifest.folder}: {', '.join(changed)} changed since the build (sha256 differs from "
                             f"manifest.json); rebuild the artifact instead of verifying edited files")
    return kinds.handler("verify", kinds.kind_of_manifest(manifest))(cfg, manifest, out, shown_folder)


def run(cfg, manifest: Manifest, shown_folder: Path | None = None) -> Manifest:
    """The verify stage: writes verify.json beside the artifact and sets manifest.verify_status.
    `shown_folder`: where the folder will be published (a build verifies its staging folder first)."""
    if not cfg.verify.enabled:
        progress("verify: skipped (verify.enabled=false)")
        manifest.verify_status = "skipped"
        return manifest
    manifest.verify_status = verify_folder(cfg, manifest, shown_folder=shown_folder)["status"]
    return manifest


def exit_code(status: str) -> int:
    """A verify status as the process exit code (pipeline/errors.py): pass 0, not_verified 4, else 1."""
    return {"pass": ExitCode.OK, "not_verified": ExitCode.NOT_VERIFIED}.get(status, ExitCode.FAILED)


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
    from pipeline.outputs import check_output_file
    from pipeline.verify.report import VerifyReport, VerifyReportError

    def ours(path: Path) -> bool:
        try:
            VerifyReport.load(path)
        except VerifyReportError:
            return False
        return True
    check_output_file(out, "--out", ours, VERIFY_FILE, f" (`make verify ARTIFACT_DIR={folder or out.parent} OUT=FILE`)")


def main(argv: list[str] | None = None) -> int:
    """`quantgate verify` (also `python -m pipeline.verify.stage`)."""
    return run_command("quantgate verify", _command, argv)


def _command(argv: list[str]) -> int:
    parser = command_parser("quantgate verify", __doc__, overrides=True)
    parser.add_argument("--artifact-dir", type=Path, help="a folder built by quantgate (manifest.json inside)")
    parser.add_argument("--artifact", type=Path, help="an int8 ONNX model built anywhere")
    parser.add_argument("--reference", type=Path, help="its fp32 ONNX reference")
    parser.add_argument("--inputs", type=Path, help=".npz with one array per model input (and optionally labels)")
    parser.add_argument("--target", help="e.g. avx2; default for --artifact-dir: the manifest's target")
    parser.add_argument("--out", type=Path, help="where to write verify.json; default: beside the artifact")
    args = parser.parse_args(argv)
    if args.artifact_dir is not None:
        if args.artifact or args.reference or args.inputs:
            raise UsageError("give either --artifact-dir or --artifact/--reference/--inputs, not both")
        manifest = Manifest.load(args.artifact_dir)
        check_report_destination(args.out or manifest.path(VERIFY_FILE), manifest.folder)
        report = verify_folder(load_config(args.target or manifest.target, args.overrides), manifest, args.out)
    else:
        if not (args.artifact and args.reference and args.inputs and args.target):
            raise UsageError("give --artifact-dir DIR, or all of --artifact, --reference, --inputs and --target")
        out = args.out or args.artifact.parent / VERIFY_FILE
        check_report_destination(out)
        cfg = load_config(args.target, args.overrides)
        report = verify_files(args.artifact, args.reference, args.inputs, cfg, out)
    return exit_code(report["status"])


if __name__ == "__main__":
    raise SystemExit(main())

"""Verify an artifact folder (the build's last stage, and `quantgate verify`), whichever its kind.

    quantgate verify --artifact-dir artifacts/minilm-dynamic-avx2
    quantgate verify --artifact q.onnx --reference fp32.onnx --inputs in.npz --target avx2 \
        [--out verify.json] [verify.emulated_max_samples=2 model.kind=classifier ...]

A target's profiles: its floor CPU (emulated by QEMU, must run and stay accurate), `native` when this
host has the target's features, and the CPUs just below the floor, where the guard must refuse the
artifact cleanly (exit 3) instead of letting it die. ONNX models are verified by pipeline/verify/onnx/,
torch AOTInductor packages (.pt2) by pipeline/verify/pt2.py, weight-only decoders token by token by
pipeline/verify/decoder.py: the handler registered for the artifact's kind (pipeline/kinds.py) picks.
Exit codes: 0 every required check passed; 1 a check failed; 4 a required check could not be
verified (e.g. AVX-512 without such a host); 2 a user error (missing file, unknown target).
The command's options are parsed in pipeline/commands/verify.py.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import kinds
from pipeline.errors import ExitCode, QuantgateError
from pipeline.manifest import Manifest
from pipeline.verify import decoder, onnx, pt2
from pipeline.verify.onnx import progress


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

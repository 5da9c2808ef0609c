"""Verify a weight-only decoder (mode=int4 | int8) on each CPU profile of its target.

The fp32 reference (reference/model.onnx, built from the same checkpoint) runs natively; then on each profile the
sandboxed child (pipeline/verify/child_decoder.py: guard, then plain onnxruntime, one intra-op thread, empty KV
cache) runs the artifact teacher-forced over the held-out token sequences (emulated CPUs: the first
verify.emulated_max_samples of them), and its next-token distributions are judged against fp32's with the same
figures and budgets as the build gate (pipeline/verify/language_model.py). CPUs below the target's floor must be
refused by the guard. verify.json is the same typed report as for int8 models (pipeline/verify/report.py).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.isa.targets import profile
from pipeline.manifest import MANIFEST_FILE, Manifest, sha256_file
from pipeline.verify import child_decoder, language_model
from pipeline.verify.cpu_kinds import ChildJob, kind_of
from pipeline.verify.onnx import progress
from pipeline.verify.planning import Plan, host_cpu_features, plan_profiles
from pipeline.verify.report import VERIFY_FILE, ArtifactRef, InputsRef, ProfileResult, VerifyReport, \
    counted_why, overall_status
from pipeline.verify.sandbox import classify


def child_command(model: Path, sequences: Path, out: Path, limit: int) -> list[str]:
    return [sys.executable, "-m", "pipeline.verify.child_decoder", str(model), str(sequences), str(out),
            "--sequences", str(limit), "--threads", "1"]


def base_result(plan: Plan, thresholds: dict) -> dict:
    return {"cpu": plan.name, "expected": plan.expected, "required": plan.required, "why": plan.why,
            "counted": plan.required, "counted_why": counted_why(plan.required, plan.why), "thresholds": thresholds}


def judge_run(record: dict, plan: Plan, out: Path, reference: list, sequences: list, thresholds: dict,
              native: list | None = None) -> dict:
    """The profile's verdict from its child's outcome and, when it ran, its figures against fp32 (and, reported only,
    against the same artifact run natively: `native`)."""
    if record["status"] != "pass":
        record["requirement_met"] = record["status"] == plan.expected
        return record
    if plan.expected == "refused_by_guard":
        record.update(status="fail", failure="guard", requirement_met=False,
                      reason=f"ran on {plan.name} although it lacks features the artifact needs: the guard should "
                             f"have refused it")
        return record
    with np.load(out) as saved:
        logits = [saved[f"logits_{i}"] for i in range(len(saved.files))]
    found = language_model.figures(reference[:len(logits)], logits, sequences[:len(logits)])
    wrong = language_model.problems(found, thresholds)
    record.update(fidelity=found, samples=len(logits), sample_ids=list(range(len(logits))))
    if native is not None and plan.name != "native":
        record["cpu_comparison"] = language_model.cpu_difference(native[:len(logits)], logits)
    if wrong:
        record.update(status="fail", failure="fidelity", reason="; ".join(wrong), requirement_met=False)
    else:
        record.update(reason=f"KL {found['kl_divergence']:.4f}, next-token agreement "
                             f"{found['next_token_agreement']:.3f}, perplexity +{found['perplexity_increase']:.1%} "
                             f"over {found['positions']} tokens", requirement_met=True)
    return record


def verify_on_profile(plan: Plan, artifact: Path, sequences_file: Path, work: Path, cfg, reference: list,
                      sequences: list, native: list | None = None) -> dict:
    thresholds = language_model.thresholds(cfg.verify)
    record = base_result(plan, thresholds)
    if plan.not_verified:
        return record | {"status": "not_verified", "reason": plan.not_verified, "requirement_met": False}
    cpu = profile(plan.name)
    kind = kind_of(cpu)
    limit = kind.max_samples(cpu, cfg.verify)
    out = work / f"{plan.name}.npz"
    progress(f"verify: {plan.name}: {min(limit, len(sequences))} sequence(s) teacher-forced")
    run = kind.run(child_command(artifact, sequences_file, out, limit), cpu,
                   ChildJob(cfg.verify.timeout_seconds, cfg.verify.memory_limit_mb))
    outcome = classify(run)
    record |= {"status": outcome.status, "failure": outcome.failure, "reason": outcome.reason,
               "exit_code": run.returncode, "signal": run.signal_name, "wall_seconds": round(run.wall_seconds, 3),
               "command": run.reproduce(), "stderr_tail": run.stderr_tail, "emulated": kind.emulated(cpu),
               "qemu_cpu": cpu.qemu_cpu if kind.emulated(cpu) else None, "threads": 1}
    return judge_run(record, plan, out, reference, sequences, thresholds, native)


def verify_decoder(cfg, manifest: Manifest, out: Path | None = None, shown_folder: Path | None = None) -> dict:
    """Verify the decoder in `manifest`'s folder on its target's profiles; writes verify.json, returns it."""
    started = time.perf_counter()
    folder = manifest.folder
    artifact, sequences_file = folder / manifest.model_file, folder / manifest.heldout_file
    sequences = child_decoder.load_sequences(str(sequences_file))
    progress("verify: the fp32 reference natively")
    reference = child_decoder.run(str(folder / manifest.reference_file), sequences, min(2, os.cpu_count() or 1))
    host = host_cpu_features(cfg)
    plans = plan_profiles(cfg, manifest.required_cpu_features, True, host)
    # The artifact on this host, for the per-CPU comparison (a measurement: no guard), when this host can run it.
    native = child_decoder.run(str(artifact), sequences, 1) \
        if not set(manifest.required_cpu_features) - set(host) else None
    with tempfile.TemporaryDirectory(prefix="quantgate-decoder-") as work:
        profiles = {plan.key: verify_on_profile(plan, artifact, sequences_file, Path(work), cfg, reference, sequences,
                                                native) for plan in plans}
    report = VerifyReport(
        status=overall_status(profiles), target=manifest.target,
        artifact=ArtifactRef(str(shown_folder / manifest.model_file if shown_folder else artifact),
                             manifest.model_sha256, "onnx", True, manifest.target),
        required_cpu_features=manifest.required_cpu_features,
        profiles={key: ProfileResult(**record) for key, record in profiles.items()},
        model_kind="language_model", output_names=["logits"],
        # The fp32 reference is named in settings, not as `reference`: the signoff matches the files verify.json
        # judged by basename, and reference/model.onnx shares the artifact's.
        inputs=InputsRef(manifest.heldout_file, manifest.calibration.heldout_sha256 if manifest.calibration else "",
                         len(sequences)),
        settings={"judged": "teacher-forced next-token distributions against fp32, empty KV cache",
                  "reference": {"path": manifest.reference_file,
                                "sha256": sha256_file(folder / manifest.reference_file)},
                  **language_model.thresholds(cfg.verify)},
        manifest_sha256=sha256_file(folder / MANIFEST_FILE), wall_seconds=round(time.perf_counter() - started, 1))
    report.save(out or folder / VERIFY_FILE)
    for key, record in profiles.items():
        progress(f"verify: {key}: {record['status']} ({record['reason']})")
    return report.to_json()

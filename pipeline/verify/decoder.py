"""Verify a weight-only decoder (mode=int4 | int8) on each CPU profile of its target.

The fp32 reference (reference/model.onnx, built from the same checkpoint) runs natively; then on each profile the
sandboxed child (pipeline/verify/child_decoder.py: guard, then plain onnxruntime, one intra-op thread, empty KV
cache) runs the artifact teacher-forced over the held-out token sequences (emulated CPUs and lab hosts: the first
verify.emulated_max_samples of them), and its next-token distributions are judged against fp32's with the same
figures and budgets as the build gate (pipeline/verify/language_model.py). Where a profile runs: this host, QEMU
x86 (this venv's interpreter), qemu-aarch64 (the arm64 sysroot and aarch64 wheels of pipeline/runtimes/arm.py), or
an SSH lab host (pipeline/verify/remote.py, with this child's source, the model, its weights and genai_config.json
copied there). Per-CPU numerics: each profile's logits against the same artifact's on the reference CPU
(verify.reference_cpu, as for int8 artifacts; a measurement, run without the guard), budgeted by
verify.max_cpu_kl_divergence. CPUs below the target's floor must be refused by the guard. verify.json is the same
typed report as for int8 models (pipeline/verify/report.py).
"""
from __future__ import annotations

import dataclasses

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import kinds
from pipeline.errors import QuantgateError
from pipeline.isa.targets import profile
from pipeline.manifest import MANIFEST_FILE, Manifest, sha256_file
from pipeline.paths import SOURCE_ROOT
from pipeline.runtimes import arm, venvs
from pipeline.verify import child_decoder, language_model
from pipeline.verify.cpu_kinds import ChildJob, kind_of
from pipeline.verify.onnx import progress
from pipeline.verify.planning import Plan, child_timeout, host_cpu_features, plan_profiles, resolve_reference_cpu
from pipeline.verify.report import VERIFY_FILE, ArtifactRef, InputsRef, ProfileResult, VerifyReport, \
    counted_why, overall_status
from pipeline.verify.sandbox import ChildRun, ProfileUnavailable, classify

CHILD_SOURCE = "pipeline/verify/child_decoder.py"  # copied to a lab host beside the guard the runner copies
REMOTE_SEQUENCES, REMOTE_OUT = "heldout.npz", "out/logits.npz"  # in the child's folder on an SSH host


def child_command(model: Path, sequences: Path, out: Path, limit: int, python: str | None = None,
                  guard: bool = True) -> list[str]:
    return [python or sys.executable, "-m", "pipeline.verify.child_decoder", str(model), str(sequences), str(out),
            "--sequences", str(limit), "--threads", "1"] + ["--no-guard"] * (not guard)


def host_files(artifact: Path, sequences_file: Path) -> dict[str, Path]:
    """What a child on an SSH host reads, by name in its folder: the decoder child's source, the model with its
    external weights and genai_config.json (the head size), and the held-out sequences."""
    from pipeline.guard.onnx import external_data_locations
    files = {CHILD_SOURCE: SOURCE_ROOT / CHILD_SOURCE, artifact.name: artifact, REMOTE_SEQUENCES: sequences_file}
    files |= {location: artifact.parent / location for location in external_data_locations(artifact)}
    config = artifact.with_name("genai_config.json")
    return files | ({config.name: config} if config.is_file() else {})


def arm_runtime(plans: list[Plan]):
    """The pinned runtime prepared for qemu-aarch64 (sysroot + aarch64 wheels, cached) when a profile is Arm; a
    QuantgateError says why it could not be (each Arm profile is then not verified, with it)."""
    arm_here = (profile(plan.name) for plan in plans if not plan.not_verified)
    if not any(cpu.family == "aarch64" and kind_of(cpu).emulated(cpu) for cpu in arm_here):
        return None
    try:
        return arm.prepare(venvs.Runtime(venvs.PINNED), progress=lambda m: progress(f"verify: {m}"))
    except QuantgateError as error:
        return error


def run_child(cpu, artifact: Path, sequences_file: Path, out: Path, limit: int, cfg, arm_env=None,
              native_seconds: float | None = None, guard: bool = True) -> ChildRun:
    """The decoder child on `cpu` through its kind's runner (pipeline/verify/cpu_kinds/), writing its logits to
    `out` (its own folder); raises sandbox.ProfileUnavailable when no run can happen there."""
    kind = kind_of(cpu)
    job = ChildJob(child_timeout(cfg.verify, cpu, native_seconds), cfg.verify.memory_limit_mb)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind.remote:
        command = child_command(Path(artifact.name), Path(REMOTE_SEQUENCES), Path(REMOTE_OUT), limit, guard=guard)
        return kind.run(command, cpu, dataclasses.replace(job, uploads=host_files(artifact, sequences_file),
                                                          out_dir=out.parent, results=(REMOTE_OUT,)))
    on_arm = cpu.family == "aarch64" and kind.emulated(cpu)
    command = child_command(artifact, sequences_file, out, limit, arm_env.python if on_arm else None, guard)
    emulator_args = tuple(arm_env.emulator_args) if on_arm else ()
    return kind.run(command, cpu, dataclasses.replace(job, emulator_args=emulator_args))


def read_logits(out: Path) -> list[np.ndarray]:
    with np.load(out) as saved:
        return [saved[f"logits_{i}"] for i in range(len(saved.files))]


def base_result(plan: Plan, thresholds: dict) -> dict:
    return {"cpu": plan.name, "expected": plan.expected, "required": plan.required, "why": plan.why,
            "counted": plan.required, "counted_why": counted_why(plan.required, plan.why), "thresholds": thresholds}


def thresholds_of(cfg) -> dict:
    return language_model.thresholds(cfg.verify) | {"max_cpu_kl_divergence": float(cfg.verify.max_cpu_kl_divergence)}


class ReferenceCpu:
    """The same artifact's logits on the reference CPU (verify.reference_cpu), which every profile is compared with:
    this host in process, or an emulated CPU in a child; without the guard (a measurement, not a deployment)."""

    def __init__(self, name: str, logits: list | None, record: dict):
        self.name, self.logits, self.record = name, logits, record

    @classmethod
    def run(cls, cfg, host: frozenset[str], artifact: Path, sequences_file: Path, sequences: list, work: Path,
            native_seconds: float) -> ReferenceCpu:
        name = resolve_reference_cpu(cfg, host)
        cpu = profile(name)
        if not kind_of(cpu).emulated(cpu):
            logits = child_decoder.run(str(artifact), sequences[: int(cfg.verify.native_max_samples)], 1)
            return cls(name, logits, {"cpu": name, "status": "pass", "samples": len(logits),
                                      "configured": str(cfg.verify.reference_cpu), "reason": "this host, no guard"})
        progress(f"verify: reference CPU {name} ({kind_of(cpu).where(cpu)}): the run every profile is compared with")
        out = work / "reference-cpu" / "logits.npz"
        try:
            run = run_child(cpu, artifact, sequences_file, out, int(cfg.verify.emulated_max_samples), cfg,
                            native_seconds=native_seconds, guard=False)
        except ProfileUnavailable as missing:
            return cls(name, None, {"cpu": name, "status": "not_verified", "reason": str(missing)})
        outcome = classify(run)
        logits = read_logits(out) if outcome.status == "pass" and out.is_file() else None
        return cls(name, logits, {"cpu": name, "status": outcome.status, "reason": outcome.reason,
                                  "configured": str(cfg.verify.reference_cpu), "samples": len(logits or []),
                                  "wall_seconds": round(run.wall_seconds, 3), "command": run.reproduce()})

    def compare(self, cpu_name: str, logits: list, limit: float) -> tuple[dict | None, str | None]:
        """This profile's logits against the reference CPU's on the sequences both ran: the comparison, and the
        budget it breaks in words (None when within it, or when nothing was compared)."""
        if cpu_name == self.name:
            return None, None
        if not self.logits:
            return {"reference_cpu": self.name, "status": "not_measured", "reason": self.record["reason"]}, None
        shared = min(len(self.logits), len(logits))
        comparison = language_model.cpu_difference(self.logits[:shared], logits[:shared], self.name)
        return comparison, language_model.cpu_problem(comparison, limit)


def judge_run(record: dict, plan: Plan, out: Path, reference: list, sequences: list, thresholds: dict,
              reference_cpu: ReferenceCpu | None = None) -> dict:
    """The profile's verdict from its child's outcome and, when it ran, its figures against fp32 and against the same
    artifact on the reference CPU (per-CPU numerics, verify.max_cpu_kl_divergence)."""
    if record["status"] != "pass":
        record["requirement_met"] = record["status"] == plan.expected
        return record
    if plan.expected == "refused_by_guard":
        record.update(status="fail", failure="guard", requirement_met=False,
                      reason=f"ran on {plan.name} although it lacks features the artifact needs: the guard should "
                             f"have refused it")
        return record
    if not out.is_file():
        record.update(status="fail", failure="error", requirement_met=False,
                      reason="the child exited 0 but wrote no logits")
        return record
    logits = read_logits(out)
    found = language_model.figures(reference[:len(logits)], logits, sequences[:len(logits)])
    wrong = language_model.problems(found, thresholds)
    record.update(fidelity=found, samples=len(logits), sample_ids=list(range(len(logits))))
    comparison, numerics = reference_cpu.compare(plan.name, logits, thresholds["max_cpu_kl_divergence"]) \
        if reference_cpu else (None, None)
    record["cpu_comparison"] = comparison
    if wrong or numerics:
        record.update(status="fail", failure="fidelity" if wrong else "cpu_numerics",
                      reason="; ".join(wrong + [numerics] * bool(numerics)), requirement_met=False)
    else:
        record.update(reason=f"KL {found['kl_divergence']:.4f}, next-token agreement "
                             f"{found['next_token_agreement']:.3f}, perplexity +{found['perplexity_increase']:.1%} "
                             f"over {found['positions']} tokens", requirement_met=True)
    return record


def verify_on_profile(plan: Plan, artifact: Path, sequences_file: Path, work: Path, cfg, reference: list,
                      sequences: list, reference_cpu: ReferenceCpu | None = None, arm_env=None,
                      native_seconds: float | None = None) -> dict:
    thresholds = thresholds_of(cfg)
    record = base_result(plan, thresholds)
    if isinstance(arm_env, QuantgateError) and profile(plan.name).family == "aarch64" and not plan.not_verified:
        plan.not_verified = f"the arm64 runtime could not be prepared: {arm_env}"
    if plan.not_verified:
        return record | {"status": "not_verified", "reason": plan.not_verified, "requirement_met": False}
    cpu = profile(plan.name)
    kind = kind_of(cpu)
    limit = kind.max_samples(cpu, cfg.verify)
    out = work / plan.key / "logits.npz"
    progress(f"verify: {plan.name} ({kind.where(cpu)}): {min(limit, len(sequences))} sequence(s) teacher-forced")
    try:
        run = run_child(cpu, artifact, sequences_file, out, limit, cfg, arm_env, native_seconds)
    except ProfileUnavailable as missing:
        return record | {"status": "not_verified", "reason": str(missing), "requirement_met": False}
    outcome = classify(run)
    record |= {"status": outcome.status, "failure": outcome.failure, "reason": outcome.reason,
               "exit_code": run.returncode, "signal": run.signal_name, "wall_seconds": round(run.wall_seconds, 3),
               "command": run.reproduce(), "stderr_tail": run.stderr_tail, "emulated": kind.emulated(cpu),
               "qemu_cpu": cpu.qemu_cpu if kind.emulated(cpu) else None, "threads": 1}
    if kind.remote:
        record["host"] = plan.host
    return judge_run(record, plan, out, reference, sequences, thresholds, reference_cpu)


def verify_decoder(cfg, manifest: Manifest, out: Path | None = None, shown_folder: Path | None = None) -> dict:
    """Verify the decoder in `manifest`'s folder on its target's profiles; writes verify.json, returns it."""
    started = time.perf_counter()
    folder = manifest.folder
    artifact, sequences_file = folder / manifest.model_file, folder / manifest.heldout_file
    sequences = child_decoder.load_sequences(str(sequences_file))
    progress("verify: the fp32 reference natively")
    reference = child_decoder.run(str(folder / manifest.reference_file), sequences, min(2, os.cpu_count() or 1))
    native_seconds = time.perf_counter() - started  # sizes every child's timeout (verify.timeout_seconds: null)
    host = host_cpu_features(cfg)
    plans = plan_profiles(cfg, manifest.required_cpu_features, True, host)
    arm_env = arm_runtime(plans)
    with tempfile.TemporaryDirectory(prefix="quantgate-decoder-") as work:
        reference_cpu = ReferenceCpu.run(cfg, host, artifact, sequences_file, sequences, Path(work), native_seconds)
        profiles = {plan.key: verify_on_profile(plan, artifact, sequences_file, Path(work), cfg, reference, sequences,
                                                reference_cpu, arm_env, native_seconds) for plan in plans}
    report = VerifyReport(
        status=overall_status(profiles), target=manifest.target,
        artifact=ArtifactRef(str(shown_folder / manifest.model_file if shown_folder else artifact),
                             manifest.model_sha256, kinds.kind_of_manifest(manifest).container, True,
                             manifest.target),
        required_cpu_features=manifest.required_cpu_features,
        profiles={key: ProfileResult(**record) for key, record in profiles.items()},
        model_kind="language_model", output_names=["logits"], reference_cpu=reference_cpu.record,
        # The fp32 reference is named in settings, not as `reference`: the signoff matches the files verify.json
        # judged by basename, and reference/model.onnx shares the artifact's.
        inputs=InputsRef(manifest.heldout_file, manifest.calibration.heldout_sha256 if manifest.calibration else "",
                         len(sequences)),
        settings={"judged": "teacher-forced next-token distributions against fp32, empty KV cache",
                  "reference": {"path": manifest.reference_file,
                                "sha256": sha256_file(folder / manifest.reference_file)},
                  "reference_cpu": str(cfg.verify.reference_cpu), **thresholds_of(cfg)},
        manifest_sha256=sha256_file(folder / MANIFEST_FILE), wall_seconds=round(time.perf_counter() - started, 1))
    report.save(out or folder / VERIFY_FILE)
    for key, record in profiles.items():
        progress(f"verify: {key}: {record['status']} ({record['reason']})")
    return report.to_json()

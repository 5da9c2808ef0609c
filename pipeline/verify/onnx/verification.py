"""One ONNX verification from its files to verify.json: plan it (pipeline.verify.onnx.job), measure the evidence
(measurement), run and judge every profile (profiles), then the report (pipeline.verify.report.VerifyReport); and
the same for a build folder, on a snapshot of its files."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.errors import QuantgateError
from pipeline.guard.onnx import external_data_locations
from pipeline.manifest import MANIFEST_FILE, Manifest, atomic_write_bytes, sha256_file
from pipeline.verify.onnx.evidence import Measured
from pipeline.verify.onnx.job import Job, plan_job
from pipeline.verify.onnx.measurement import measure
from pipeline.verify.onnx.profiles import run_profiles
from pipeline.verify.onnx.table import format_table
from pipeline.verify.padding import summarize
from pipeline.verify.report import (VERIFY_FILE, ArtifactRef, InputsRef, ProfileResult, ReferenceRef, VerifyReport,
                                    overall_status)
from pipeline.verify.scratch import scratch_folder


def verify_files(artifact, reference, inputs, cfg, out, *, model_kind: str | None = None,
                 output_names: list[str] | None = None, folder: Path | None = None,
                 manifest_sha256: str | None = None, batch_axes: dict | None = None) -> dict:
    """Verify `artifact` against `reference` on held-out `inputs` for cfg.target; write the report to `out`.
    `folder`: the build folder these files are a snapshot of (the report names the files there);
    `manifest_sha256`: its manifest.json's, which binds the report to that build; `batch_axes`: where the
    examples lie in each input and output as the build found it (else found here: pipeline/layout.py)."""
    artifact, reference, inputs, out = Path(artifact), Path(reference), Path(inputs), Path(out)
    job = plan_job(artifact, reference, inputs, cfg, model_kind, output_names, folder, manifest_sha256, batch_axes)
    started = time.monotonic()
    with scratch_folder("quantgate-verify-") as work:  # the work folder, marked as this process's (verify/scratch.py)
        measured = measure(job, work)
        profiles = run_profiles(job, measured, work)
    report = build_report(job, measured, profiles, started)
    report.save(out)
    payload = report.to_json()
    print(format_table(payload))
    if folder is None:  # a build folder's report is written by verify_snapshot, once it is safe to
        print(f"wrote {out}")
    return payload


def build_report(job: Job, measured: Measured, profiles: dict[str, dict], started: float) -> VerifyReport:
    """The report: every profile's record, the padding summary, the native latency beside fp32's, the verdict."""
    v, evidence, reference_record = job.cfg.verify, measured.evidence, measured.reference_record
    # The host's own run: `native`, or `native@<runtime>` when the build named a runtime.
    native_names = sorted((name for name in profiles if name.split("@")[0] == "native"), key=lambda n: n != "native")
    native_latency = profiles[native_names[0]].get("latency") if native_names else None
    if native_latency and reference_record and "latency" in reference_record:
        native_latency["fp32"] = reference_record["latency"]
    padding = summarize(job.padding, profiles, evidence.padding if evidence else None)
    # the fp32 reference did not run: a failure, unless it could not be run at all here (a wedged runtime)
    reference_lost = reference_record is not None and evidence is None
    reference_wedged = reference_lost and reference_record["status"] == "not_verified"
    status = overall_status(profiles, failed_elsewhere=(reference_lost and not reference_wedged)
                            or padding["status"] == "fail", unverified_elsewhere=reference_wedged)
    artifact, reference, inputs, stamp = job.artifact, job.reference, job.inputs, job.stamp
    return VerifyReport(
        status=status, target=job.cfg.target.name, required_cpu_features=job.required, model_kind=job.model_kind,
        output_names=job.judged,
        artifact=ArtifactRef(job.shown(artifact), sha256_file(artifact), "onnx", bool(stamp), stamp.get("target_isa")),
        reference=ReferenceRef(job.shown(reference), sha256_file(reference), reference_record),
        inputs=InputsRef(job.shown(inputs), sha256_file(inputs), job.n_available),
        manifest_sha256=job.manifest_sha256, reference_cpu=measured.reference_cpu_record,
        sample_selection=measured.selection,
        host={"cpu_features": sorted(job.host), "assumed": v.assume_host_features is not None},
        settings={"timeout_seconds": v.timeout_seconds, "memory_limit_mb": v.memory_limit_mb,
                  "emulated_max_samples": v.emulated_max_samples, "native_max_samples": v.native_max_samples,
                  "latency_repeats": v.latency_repeats, "reference_cpu": str(v.reference_cpu),
                  "max_cpu_excess_error": v.max_cpu_excess_error, "max_cpu_error_ratio": v.max_cpu_error_ratio}
        | ({"stream_steps": job.batch_axes["steps"], "state": job.batch_axes["state"],
            "max_state_drift": v.max_state_drift} if "steps" in job.batch_axes else {}),
        profiles={name: ProfileResult(**record) for name, record in profiles.items()}, padding=padding,
        latency=native_latency, notes=job.notes, wall_seconds=round(time.monotonic() - started, 3))


def verify_snapshot(cfg, manifest: Manifest, out: Path | None = None, shown_folder: Path | None = None) -> dict:
    """Verify a build folder's ONNX artifact on a snapshot of its files: a rebuild that replaces the folder
    meanwhile can neither mix old and new files into one verification nor receive a verify.json made for
    other bytes."""
    manifest_file = manifest.folder / MANIFEST_FILE
    manifest_sha256 = sha256_file(manifest_file)
    recorded = {record.path: record.sha256 for record in manifest.files}
    names = [manifest.model_file, manifest.reference_file, manifest.heldout_file]
    for model in names[:2]:
        names += [str(Path(model).parent / location) for location in external_data_locations(manifest.path(model))]
    with scratch_folder("quantgate-snapshot-") as snapshot:
        for name in dict.fromkeys(names):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(manifest.path(name), snapshot / name)
            except FileNotFoundError:
                raise QuantgateError(f"{manifest.folder}: {name} vanished while being read: another build is replacing "
                                     f"this folder; verify again once it has finished") from None
            if name in recorded and sha256_file(snapshot / name) != recorded[name]:
                raise QuantgateError(f"{manifest.folder}: {name} changed while being read (another build is replacing "
                                     f"this folder); verify again once it has finished")
        report_path = out or manifest.path(VERIFY_FILE)
        staged = snapshot / VERIFY_FILE
        report = verify_files(snapshot / manifest.model_file, snapshot / manifest.reference_file,
                              snapshot / manifest.heldout_file, cfg, staged, model_kind=manifest.model_kind,
                              output_names=manifest.output_names or None, folder=shown_folder or manifest.folder,
                              manifest_sha256=manifest_sha256, batch_axes=manifest.batch_axes or None)
        if not manifest_file.is_file() or sha256_file(manifest_file) != manifest_sha256:
            raise QuantgateError(f"{manifest.folder} was replaced by another build while it was being verified; its "
                                 f"verify.json was not written (it would judge other bytes): verify again")
        atomic_write_bytes(report_path, staged.read_bytes())
    print(f"wrote {(shown_folder / report_path.name) if shown_folder and out is None else report_path}")
    return report

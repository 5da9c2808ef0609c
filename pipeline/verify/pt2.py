"""Verify a `model.pt2` folder (export=aoti) on its target's CPU profiles, and audit it again.

The .pt2 counterpart of pipeline/verify/onnx/ (pipeline/verify/stage.py picks by kind), built from
the same pieces (each profile kind's runner, pipeline/verify/cpu_kinds/; `sandbox.classify`; `fidelity`):
the static audit of the package (`pipeline.isa.audit`) against the target; the floor CPU under QEMU and
this host when it has the features (the package must load, run and match the fp32 torch model on held-out
samples); and the CPUs below the floor, where `pipeline.verify.child_pt2`'s guard must refuse it (exit 3)
before the library is mapped. Writes verify.json beside the package.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from pipeline.isa import audit
from pipeline.isa.targets import profile
from pipeline.manifest import REFERENCE_OUTPUTS_FILE, Manifest, sha256_file
from pipeline.verify.cpu_kinds import ChildJob, kind_of
from pipeline.verify.fidelity import compare_cpus, judge, output_scale
from pipeline.verify.planning import child_timeout, host_cpu_features, limits_from, with_extra_profiles
from pipeline.verify.report import (VERIFY_FILE, ArtifactRef, InputsRef, ProfileResult, ReferenceRef, VerifyReport,
                                    counted_why, overall_status)
from pipeline.verify.sandbox import classify
from pipeline.verify.scratch import scratch_folder



def _child(package: Path, inputs: Path, out: Path, samples: int) -> list[str]:
    import sys
    return [sys.executable, "-m", "pipeline.verify.child_pt2", "--package", str(package.resolve()),
            "--inputs", str(inputs.resolve()), "--out", str(out), "--samples", str(samples)]


def verify_package(cfg, manifest: Manifest) -> dict:

    started = time.monotonic()
    target, v = cfg.target, cfg.verify
    package, required = manifest.path(manifest.model_file), manifest.required_cpu_features
    shipped = audit.audit_path(package)
    problems = audit.check(shipped, required, target.name)
    audit_record = {"status": "fail" if problems else "pass" if shipped.audited else "not_verified",
                    "audited_cpu_features": shipped.features(), "instructions": shipped.counts(),
                    "reason": " | ".join(problems) or shipped.note or "within the target"}
    reference_path = manifest.path(REFERENCE_OUTPUTS_FILE)
    with np.load(reference_path) as archive:
        fp32_all = {"output": archive[archive.files[0]]}
    with np.load(manifest.path(manifest.heldout_file)) as archive:
        labels = archive["labels"] if "labels" in archive.files else None
    host = host_cpu_features(cfg)
    limits = limits_from(cfg)
    scales = {name: output_scale(array, None) for name, array in fp32_all.items()}

    names = list(v.profiles) if v.profiles is not None else \
        [name for name in ("native", target.floor_profile, *target.below_floor_profiles) if name]
    names = with_extra_profiles(cfg, names)
    names.sort(key=lambda name: name != "native")  # native first: the other profiles are compared with it
    profiles, native_outputs = {}, None
    for name in names:
        cpu = profile(name)
        features = host if name == "native" else cpu.features()
        missing = None if kind_of(cpu).remote else sorted(set(required) - features)
        skipped = not_run(name, cpu, missing, target)
        if skipped is not None:
            profiles[name] = skipped
            continue
        record, outputs, samples = run_on_profile(name, cpu, missing, package, manifest, cfg,
                                                  len(fp32_all["output"]))
        if outputs is not None:
            judge_run(record, outputs, samples, fp32_all, labels, native_outputs, manifest.model_kind, limits,
                      scales, v)
            native_outputs = outputs if name == "native" else native_outputs
        record["requirement_met"] = record["status"] == record["expected"]
        profiles[name] = record
    for record in profiles.values():
        record |= {"counted": record["required"], "counted_why": counted_why(record["required"], record["why"])}
    status = overall_status(profiles, failed_elsewhere=audit_record["status"] == "fail")
    heldout = manifest.path(manifest.heldout_file)
    report = VerifyReport(
        status=status, target=target.name, required_cpu_features=required, model_kind=manifest.model_kind,
        output_names=["output"], artifact=ArtifactRef(str(package), sha256_file(package), "pt2", True, manifest.target),
        reference=ReferenceRef(str(reference_path), sha256_file(reference_path), None),
        inputs=InputsRef(str(heldout), sha256_file(heldout), len(fp32_all["output"])),
        reference_cpu={"cpu": "native", "configured": "native",
                       "why": "a .pt2 package holds machine code compiled for the target; the native run is the "
                              "reference for the others"},
        host={"cpu_features": sorted(host), "assumed": v.assume_host_features is not None},
        settings={"timeout_seconds": v.timeout_seconds, "memory_limit_mb": v.memory_limit_mb,
                  "emulated_max_samples": v.emulated_max_samples, "native_max_samples": v.native_max_samples,
                  "max_cpu_excess_error": v.max_cpu_excess_error, "max_cpu_error_ratio": v.max_cpu_error_ratio},
        profiles={name: ProfileResult(**record) for name, record in profiles.items()}, audit=audit_record,
        manifest_sha256=sha256_file(manifest.folder / "manifest.json"),
        wall_seconds=round(time.monotonic() - started, 1))
    report.save(manifest.path(VERIFY_FILE))
    for name, record in profiles.items():
        print(f"verify {target.name}: {name:<12} {record['status']:<17} (expected {record['expected']}) "
              f"{record['reason']}", flush=True)
    print(f"verify {target.name}: audit {audit_record['status']}: {json.dumps(audit_record['audited_cpu_features'])}",
          flush=True)
    return report.to_json()


def not_run(name: str, cpu, missing: list[str] | None, target) -> dict | None:
    """The record of a profile no child runs on (a lab host: `missing` None; this host below the package's features),
    else None."""
    if missing is None:
        return {"cpu": name, "status": "not_verified", "expected": "pass", "why": f"the lab host {cpu.host}",
                "required": True, "requirement_met": False,
                "reason": "torch .pt2 packages are verified on native and emulated profiles only; SSH "
                          "hosts run ONNX artifacts"}
    if name == "native" and missing:
        return {"cpu": name, "status": "not_verified", "expected": "pass", "why": "this host",
                "required": target.floor_profile is None,
                "reason": f"this host lacks {', '.join(missing)}", "requirement_met": False}
    return None


def run_on_profile(name: str, cpu, missing: list[str], package: Path, manifest: Manifest, cfg,
                   available: int) -> tuple[dict, dict | None, int]:
    """The package's child on one profile, through its kind's runner: the record of how it ended, its outputs
    (None unless it ran) and the samples it was given."""
    v, kind = cfg.verify, kind_of(cpu)
    samples = min(kind.max_samples(cpu, v), available)
    outputs = None
    with scratch_folder("quantgate-verify-") as scratch:
        out = scratch / "outputs.npz"
        run = kind.run(_child(package, manifest.path(manifest.heldout_file), out, samples), cpu,
                       ChildJob(child_timeout(v, cpu, None), v.memory_limit_mb))
        outcome = classify(run)
        record = {"cpu": name, "status": outcome.status, "expected": "pass" if not missing else "refused_by_guard",
                  "required": True, "why": f"{name} has every feature the package needs" if not missing else
                  f"{name} lacks {', '.join(missing)}: the guard must refuse",
                  "failure": outcome.failure, "reason": outcome.reason, "command": run.reproduce(),
                  "wall_seconds": round(run.wall_seconds, 1), "exit_code": run.returncode,
                  "signal": run.signal_name, "stderr_tail": run.stderr_tail, "emulated": kind.emulated(cpu),
                  "qemu_cpu": cpu.qemu_cpu, "threads": 1}
        if outcome.status == "pass" and out.is_file():
            with np.load(out) as archive:
                outputs = {"output": archive["output"]}
    return record, outputs, samples


def judge_run(record: dict, outputs: dict, samples: int, fp32_all: dict, labels, native_outputs: dict | None,
              model_kind: str, limits, scales: dict, v) -> None:
    """A run's outputs against fp32 and (but for native's own) against the native run's, into `record`."""
    name = record["cpu"]
    ids = list(range(samples))
    fp32 = {key: array[:samples] for key, array in fp32_all.items()}
    judgement = judge(outputs, fp32, model_kind=model_kind, mask=None,
                      labels=labels[:samples] if labels is not None else None, limits=limits, scales=scales)
    record |= {"samples": samples, "sample_ids": ids, "fidelity": judgement.summary,
               "fidelity_by_output": judgement.by_output,
               "thresholds": limits.to_json() | {"max_cpu_excess_error": v.max_cpu_excess_error,
                                                "max_cpu_error_ratio": v.max_cpu_error_ratio}}
    bad = list(judgement.problems)
    if name != "native" and native_outputs is not None:
        comparison = compare_cpus(name, outputs, {k: a[:samples] for k, a in native_outputs.items()},
                                  fp32, reference_cpu="native", mask=None, sample_ids=ids, scales=scales,
                                  max_excess_error=v.max_cpu_excess_error, max_error_ratio=v.max_cpu_error_ratio)
        record["cpu_comparison"] = comparison.to_json()
        if comparison.status == "fail":
            bad.append(comparison.reason)
    if bad:
        record |= {"status": "fail", "failure": "fidelity" if judgement.problems else "cpu_numerics",
                   "reason": "out of bounds: " + "; ".join(bad)}

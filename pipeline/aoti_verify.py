"""Verify a `model.pt2` folder (export=aoti) on its target's CPU profiles, and audit it again.

Until pipeline/stages/verify.py learns the .pt2 kind, this is its small counterpart, built from
the same pieces (`run_under_profile`, `classify`, `fidelity`): the static audit of the package
(`pipeline.audit`) against the target; the floor CPU under QEMU and this host when it has the
features (the package must load, run and match the fp32 torch model on held-out samples); and the
CPUs below the floor, where `pipeline.aoti_child`'s guard must refuse it (exit 3) before the
library is mapped. Writes verify.json beside the package.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.manifest import Manifest, atomic_write_json

VERIFY_FILE = "verify.json"
REPORT_SCHEMA = "quantgate.verify/1"


def _child(package: Path, inputs: Path, out: Path, samples: int) -> list[str]:
    import sys
    return [sys.executable, "-m", "pipeline.aoti_child", "--package", str(package.resolve()),
            "--inputs", str(inputs.resolve()), "--out", str(out), "--samples", str(samples)]


def verify_package(cfg, manifest: Manifest) -> dict:
    from pipeline import audit
    from pipeline.aoti import REFERENCE_OUTPUTS_FILE
    from pipeline.cpuid import host_features
    from pipeline.stages.verify import classify, fidelity, run_under_profile, thresholds
    from pipeline.targets import profile

    started = time.monotonic()
    target, v = cfg.target, cfg.verify
    package, required = manifest.path(manifest.model_file), manifest.required_cpu_features
    shipped = audit.audit_path(package)
    problems = audit.check(shipped, required, target.name)
    audit_record = {"status": "fail" if problems else "pass" if shipped.audited else "not_verified",
                    "audited_cpu_features": shipped.features(), "instructions": shipped.counts(),
                    "reason": " | ".join(problems) or shipped.note or "within the target"}
    with np.load(manifest.path(REFERENCE_OUTPUTS_FILE)) as archive:
        reference = archive[archive.files[0]]
    with np.load(manifest.path(manifest.heldout_file)) as archive:
        labels = archive["labels"] if "labels" in archive.files else None
    host = frozenset(v.assume_host_features) if v.assume_host_features is not None else host_features()

    names = list(v.profiles) if v.profiles is not None else \
        [name for name in (target.floor_profile, "native", *target.below_floor_profiles) if name]
    profiles = {}
    for name in names:
        cpu = profile(name)
        missing = sorted(set(required) - (host if name == "native" else cpu.features()))
        expected = "pass" if not missing else "refused_by_guard"
        if name == "native" and missing:
            profiles[name] = {"status": "not_verified", "expected": "pass", "required": target.floor_profile is None,
                              "reason": f"this host lacks {', '.join(missing)}", "requirement_met": False}
            continue
        samples = v.emulated_max_samples if cpu.emulated else v.native_max_samples
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "outputs.npz"
            run = run_under_profile(_child(package, manifest.path(manifest.heldout_file), out, samples), cpu,
                                    v.timeout_seconds, v.memory_limit_mb)
            outcome = classify(run)
            record = {"status": outcome.status, "expected": expected, "required": True, "failure": outcome.failure,
                      "reason": outcome.reason, "command": run.reproduce(), "wall_seconds": round(run.wall_seconds, 1),
                      "exit_code": run.returncode, "signal": run.signal_name, "stderr_tail": run.stderr_tail}
            if outcome.status == "pass" and out.is_file():
                with np.load(out) as archive:
                    output = archive["output"]
                figures, bad = fidelity(manifest.model_kind, output, reference, labels, thresholds(cfg, manifest.model_kind))
                record["fidelity"] = figures
                if bad:
                    record |= {"status": "fail", "failure": "fidelity", "reason": "out of bounds: " + "; ".join(bad)}
        record["requirement_met"] = record["status"] == expected
        profiles[name] = record
    failed = audit_record["status"] == "fail" or any(
        p["required"] and not p["requirement_met"] and p["status"] != "not_verified" for p in profiles.values())
    unverified = any(p["required"] and p["status"] == "not_verified" for p in profiles.values())
    status = "fail" if failed else "not_verified" if unverified else "pass"
    report = {"schema": REPORT_SCHEMA, "status": status, "passed": status == "pass", "target": target.name,
              "artifact": str(package), "artifact_kind": "aoti", "required_cpu_features": required,
              "audit": audit_record, "profiles": profiles, "wall_seconds": round(time.monotonic() - started, 1)}
    atomic_write_json(manifest.path(VERIFY_FILE), report)
    for name, record in profiles.items():
        print(f"verify {target.name}: {name:<12} {record['status']:<17} (expected {record['expected']}) "
              f"{record['reason']}", flush=True)
    print(f"verify {target.name}: audit {audit_record['status']}: {json.dumps(audit_record['audited_cpu_features'])}",
          flush=True)
    return report


def run(cfg, manifest: Manifest) -> Manifest:
    if not cfg.verify.enabled:
        manifest.verify_status = "skipped"
        return manifest
    manifest.verify_status = verify_package(cfg, manifest)["status"]
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.aoti_verify FOLDER|FOLDER/model.pt2 [verify.* overrides]` (make verify EXPORT=aoti)."""
    import sys

    from pipeline.config import QuantgateError, compose_config
    from pipeline.stages.verify import exit_code
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m pipeline.aoti_verify ARTIFACT_DIR [verify.emulated_max_samples=3 ...]", file=sys.stderr)
        return 2
    folder = Path(args[0])
    folder = folder.parent if folder.is_file() else folder
    try:
        manifest = Manifest.load(folder)
        cfg = compose_config([f"target={manifest.target}", "export=aoti", *args[1:]])
    except (FileNotFoundError, QuantgateError) as error:
        print(f"quantgate: error: {error}", file=sys.stderr)
        return 2
    return exit_code(verify_package(cfg, manifest)["status"])


if __name__ == "__main__":
    raise SystemExit(main())

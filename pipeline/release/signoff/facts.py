"""The facts of one artifact folder: what the report says about it besides its rows (model, mode, target, sizes,
latency, what the build measured, library versions, files and their sha256, calibration coverage, the config it
was built with and how to rebuild it), gathered with its rows by `inspect_artifact`.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from pipeline.manifest import Manifest, sha256_file
from pipeline.release import TrustError
from pipeline.release.grid import host_microarchitecture
from pipeline.release.provenance import build_config
from pipeline.release.signoff.checks import FolderEvidence, folder_rows
from pipeline.release.signoff.figures import latency_figures
from pipeline.release.signoff.rows import Row, mb
from pipeline.verify.report import VERIFY_FILE

COVERAGE_KEYS = ("status", "enforced", "worst_fraction_outside", "warn_threshold", "fail_threshold", "n_tensors")


def inspect_artifact(folder: Path) -> tuple[dict[str, Any], list[Row]]:
    """The facts of one artifact folder and its rows (integrity checks, then one row per CPU profile)."""
    evidence = FolderEvidence.read(folder)
    rows = folder_rows(evidence)
    facts = artifact_facts(evidence)
    manifest = evidence.manifest
    size_words = f"{mb(manifest.model_size_bytes)} / {mb(manifest.reference_size_bytes)} ({facts['size']['ratio']:.2f}x)"
    for found in rows:
        found["size"] = size_words
    return facts, rows


def artifact_facts(evidence: FolderEvidence) -> dict[str, Any]:
    """The JSON-ready facts of the folder (the report's `artifacts[]`)."""
    manifest, verify = evidence.manifest, evidence.verify
    overrides = manifest.build.config_overrides if manifest.build else []
    facts = {
        "name": evidence.name, "folder": str(evidence.folder), "model": manifest.model, "mode": manifest.mode,
        "target": manifest.target, "model_kind": manifest.model_kind, "model_file": manifest.model_file,
        # what a deployment must do to texts and outputs: the pooling, and a prompt before every text
        "sentence_embedding": manifest.sentence_embedding, "verify_status": (verify or {}).get("status", "not_verified"),
        "size": {"int8_bytes": manifest.model_size_bytes, "fp32_bytes": manifest.reference_size_bytes,
                 "ratio": manifest.model_size_bytes / max(manifest.reference_size_bytes, 1)},
        "latency": latency_figures(verify), "model_sha256": manifest.model_sha256,
        "build_speed": _asdict(manifest.speed), "mode_choice": _asdict(manifest.mode_choice),
        "config_sha256": manifest.config_sha256, "quantization": _asdict(manifest.quantization),
        "build": _asdict(manifest.build),
        "build_metrics": {"fp32": manifest.fp32_metrics, "int8": manifest.int8_metrics},
        "coverage_status": manifest.coverage_status, "coverage": coverage(evidence.calibration),
        "fallback": _asdict(manifest.fallback), "versions": versions(manifest, verify), "files": files(evidence),
        "tampered": evidence.changed,
        "reproduce": {"overrides": overrides,
                      "command": shlex.join([".venv/bin/python", "-m", "pipeline", *overrides])},
        **resolved_config(manifest),
        "notes": (verify or {}).get("notes", []),
    }
    host_features = (verify or {}).get("host", {}).get("cpu_features") or []
    facts["native_host"] = {"microarchitecture": host_microarchitecture(host_features, facts["build"]),
                            "features": len(host_features)}
    if facts["build"]:
        facts["build"].pop("host_cpu_features", None)  # long, and in manifest.json for whoever needs it
    return facts


def _asdict(record: Any) -> dict[str, Any] | None:
    return dataclasses.asdict(record) if record else None


def files(evidence: FolderEvidence) -> list[dict[str, Any]]:
    """Each file manifest.json vouches for (and whether it still matches), then verify.json."""
    listed = [{"path": r.path, "sha256": r.sha256, "size_bytes": r.size_bytes,
               "matches_manifest": r.path not in evidence.changed} for r in evidence.manifest.files]
    if evidence.verify is not None:
        path = evidence.folder / VERIFY_FILE
        listed.append({"path": VERIFY_FILE, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
                       "matches_manifest": None})
    return listed


def versions(manifest: Manifest, verify: dict[str, Any] | None) -> dict[str, Any]:
    """The library versions of the build, of the runtime it was built for, and of each verification run."""
    stamp_versions = json.loads(manifest.stamp.get("versions", "{}")) if manifest.stamp else {}
    found = {"build": stamp_versions}
    if getattr(manifest, "runtime", None) and manifest.runtime.get("versions"):
        found["runtime built for"] = manifest.runtime["versions"]
    if verify is not None:
        reference = (verify.get("reference") or {}).get("run") or {}
        if reference.get("versions"):
            found["verify: fp32 reference (native)"] = reference["versions"]
        for profile_name, p in verify.get("profiles", {}).items():
            if p.get("versions"):
                found[f"verify: {profile_name}"] = p["versions"]
    return found


def coverage(report: dict[str, Any] | None) -> dict[str, Any]:
    """The calibration report's coverage summary and its three worst tensors; {} without a report."""
    if report is None:
        return {}
    summary = {key: report.get(key) for key in COVERAGE_KEYS}
    summary["worst_tensors"] = [{"tensor": t["tensor"], "fraction_outside": t["fraction_outside"]}
                                for t in report.get("tensors", [])[:3]]
    return summary


def resolved_config(manifest: Manifest) -> dict[str, Any]:
    """The full config the artifact was built with (recomposed from its overrides, checked against config_sha256)."""
    try:
        config, note = build_config(manifest)
    except TrustError as error:
        config, note = None, str(error)
    return {"resolved_config": config, "resolved_config_note": note}

"""The checks of one artifact folder: its evidence read once (`FolderEvidence`), then each registered check turns it
into rows, in registration order (the order the report lists them).

A check is a small function `(FolderEvidence) -> list[Row]` registered under its kind with `@folder_check(kind)`:
the files against manifest.json, the folder's identity, how much of it computes in int8, whether verify.json exists
and judged these bytes, whether its figures contradict its own verdicts, each CPU profile's requirement, the target's
floor CPU, the fp32 reference run, and the calibration report. The evidence checks themselves live in
pipeline/release/evidence.py; the release-wide findings in pipeline/release/signoff/findings.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from pipeline.manifest import MANIFEST_FILE, Manifest, sha256_file
from pipeline.release.evidence import artifact_stamp, floor_rows, identity_rows, int8_rows, report_rows
from pipeline.release.signoff.figures import fidelity_words, latency_figures, margins, native_profile
from pipeline.release.signoff.rows import Row, row
from pipeline.verify.report import VERIFY_FILE, VerifyReport, VerifyReportError, contradictions, counted_why


@dataclasses.dataclass
class FolderEvidence:
    """What one artifact folder holds, read once: the manifest, the files that changed since, verify.json (typed and
    as JSON, or why it cannot be read) and the calibration report (or the rows saying it is damaged)."""
    folder: Path
    manifest: Manifest
    changed: list[str]  # files whose bytes no longer match manifest.json (or are gone)
    verified: VerifyReport | None = None
    verify: dict[str, Any] | None = None  # verified.to_json()
    unreadable: str | None = None  # why verify.json could not be read
    calibration: dict[str, Any] | None = None
    calibration_rows: list[Row] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    @classmethod
    def read(cls, folder: Path) -> FolderEvidence:
        manifest = Manifest.load(folder)
        evidence = cls(folder, manifest, manifest.tampered_files())
        verify_path = folder / VERIFY_FILE
        if verify_path.is_file():
            try:
                evidence.verified = VerifyReport.load(verify_path)
                evidence.verify = evidence.verified.to_json()
            except VerifyReportError as error:
                evidence.unreadable = str(error)
        evidence.calibration, evidence.calibration_rows = report_rows(row, folder.name,
                                                                      folder / manifest.calibration_report_file)
        return evidence


FolderCheck = Callable[[FolderEvidence], list[Row]]
FOLDER_CHECKS: dict[str, FolderCheck] = {}


def folder_check(kind: str) -> Callable[[FolderCheck], FolderCheck]:
    """Register `check` as the folder check `kind` (run after those registered before it)."""
    def register(check: FolderCheck) -> FolderCheck:
        FOLDER_CHECKS[kind] = check
        return check
    return register


def folder_rows(evidence: FolderEvidence) -> list[Row]:
    """Every registered check's rows for one folder, in order."""
    return [found for check in FOLDER_CHECKS.values() for found in check(evidence)]


@folder_check("files")
def files_rows(evidence: FolderEvidence) -> list[Row]:
    """Tampering: a file whose bytes differ from manifest.json blocks, never waivable (rebuild)."""
    if evidence.changed:
        return [row(evidence.name, "files", "tampered", False, f"{', '.join(evidence.changed)} changed after the "
                    f"build (sha256 differs from manifest.json, or the file is gone): rebuild, a changed artifact "
                    f"cannot be signed off", waivable=False)]
    return [row(evidence.name, "files", "intact", True,
                f"all {len(evidence.manifest.files)} files match the sha256 in manifest.json")]


@folder_check("identity")
def identity(evidence: FolderEvidence) -> list[Row]:
    return identity_rows(row, evidence.folder, evidence.manifest, artifact_stamp(evidence.manifest))


@folder_check("int8")
def int8(evidence: FolderEvidence) -> list[Row]:
    return int8_rows(row, evidence.folder, evidence.manifest)


@folder_check("verify")
def verify_present(evidence: FolderEvidence) -> list[Row]:
    """verify.json that cannot be read blocks (never waivable); none at all: never verified (waivable)."""
    if evidence.unreadable:
        return [row(evidence.name, "verify", "unreadable", False, evidence.unreadable, waivable=False)]
    if evidence.verify is None:
        return [row(evidence.name, "verify", "not_verified", False, "no verify.json: the artifact was never verified "
                    f"(`make verify ARTIFACT_DIR={evidence.folder}` or rebuild with verification)")]
    return []


@folder_check("verify-inputs")
def verify_inputs(evidence: FolderEvidence) -> list[Row]:
    """verify.json names the bytes it judged: they must be the bytes the manifest vouches for (never waivable)."""
    verify = evidence.verify
    if verify is None:
        return []
    recorded = {record.path: record.sha256 for record in evidence.manifest.files}
    judged = {Path(ref["path"]).name: ref["sha256"] for ref in (verify["artifact"], verify.get("reference"),
                                                               verify.get("inputs")) if ref}
    stale = [path for path, digest in judged.items() if recorded.get(path) != digest]
    rows = []
    if stale:
        rows.append(row(evidence.name, "verify-inputs", "stale", False, f"verify.json judged other bytes than "
                        f"manifest.json records for {', '.join(stale)}: verify again", waivable=False))
    bound_to = verify.get("manifest_sha256")
    if bound_to and bound_to != sha256_file(evidence.folder / MANIFEST_FILE):
        rows.append(row(evidence.name, "verify-inputs", "stale", False, "verify.json was made for another build of "
                        "this folder (its manifest.json sha256 differs): verify again", waivable=False))
    return rows


@folder_check("consistency")
def consistency(evidence: FolderEvidence) -> list[Row]:
    """A profile that says pass while its own figures break its own limits: edited (never waivable)."""
    if evidence.verify is None:
        return []
    rows = []
    for profile_name, typed in evidence.verified.profiles.items():
        wrong = contradictions(typed)
        if wrong:
            rows.append(row(evidence.name, profile_name, "inconsistent", False, f"verify.json says pass, but its own "
                            f"figures break its own limits ({'; '.join(wrong)}): was it edited? verify again",
                            waivable=False))
    return rows


@folder_check("profiles")
def profile_rows(evidence: FolderEvidence) -> list[Row]:
    """One row per CPU profile verify.json ran: its requirement met or not; reported-only profiles never decide."""
    if evidence.verify is None:
        return []
    profiles = evidence.verify.get("profiles", {})
    rows = [profile_row(evidence.name, name, result) for name, result in profiles.items()]
    for found in rows:
        if found["profile"] == native_profile(evidence.verify["profiles"]):
            found["latency"] = latency_figures(evidence.verify)
    return rows


def profile_row(artifact: str, profile_name: str, p: dict[str, Any]) -> Row:
    """A CPU profile's row, with its figures, thresholds, margins, command and (on a numerics failure) worst outputs."""
    ok = p.get("requirement_met", False) if p.get("required") else None
    reason = p.get("reason", "")
    if p.get("status") == "refused_by_guard" and "this CPU lacks:" in reason:  # the guard's words: keep the news
        reason = "refused by the guard: lacks " + reason.split("this CPU lacks:")[1].split(".")[0].strip()
    if not p.get("required"):  # reported, never decisive: say so, and why
        reason = f"{reason} ({p.get('counted_why') or counted_why(False, p.get('why', ''))})"
    comparison = p.get("cpu_comparison") or {}
    return row(artifact, profile_name, p.get("status", "unknown"), ok, reason, expected=p.get("expected", ""),
               required=bool(p.get("required")), fidelity=fidelity_words(p), figures=p.get("fidelity") or {},
               thresholds=p.get("thresholds") or {}, failure=p.get("failure"), command=p.get("command"),
               wall_seconds=p.get("wall_seconds"), cpu_comparison=p.get("cpu_comparison"),
               reference_cpu=comparison.get("reference_cpu"),
               worst_outputs=comparison.get("worst") if p.get("failure") == "cpu_numerics" else None, cpu=True,
               samples=p.get("samples"), stderr_tail=p.get("stderr_tail") or [], evidence=p, margins=margins(p))


@folder_check("floor")
def floor(evidence: FolderEvidence) -> list[Row]:
    if evidence.verify is None:
        return []
    return floor_rows(row, evidence.name, evidence.manifest.target, evidence.verify.get("profiles", {}))


@folder_check("reference")
def reference(evidence: FolderEvidence) -> list[Row]:
    """The fp32 reference run that every profile is judged against must have run."""
    run = ((evidence.verify or {}).get("reference") or {}).get("run") or {}
    if run and run.get("status") != "pass":
        return [row(evidence.name, "reference", run.get("status", "unknown"), False,
                    f"the fp32 reference did not run: {run.get('reason', '')}")]
    return []


@folder_check("calibration-report")
def calibration_report(evidence: FolderEvidence) -> list[Row]:
    return evidence.calibration_rows

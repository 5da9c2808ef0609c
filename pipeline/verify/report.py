"""verify.json: one typed report, written by the ONNX and the `.pt2` verifiers, read by signoff, matrix and bench.

`VerifyReport.load(path)` validates what it reads against docs/schemas/verify.schema.json (a hand-edited,
truncated or newer file is one clear error naming the key, never a KeyError three modules later); `save`
writes it atomically. Schema 1 files are upgraded in memory, then validated as schema 2.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.errors import InputError
from pipeline.jsonfiles import load_json, validate
from pipeline.manifest import atomic_write_json

VERIFY_FILE = "verify.json"
SCHEMA = "quantgate.verify/2"


class VerifyReportError(InputError):
    """verify.json cannot be read: malformed, of another schema, or missing what it must hold."""


def fix(where: str) -> str:
    """What to do about an unreadable verify.json at `where`."""
    return f"verify again (`quantgate verify --artifact-dir {Path(where).parent}`)"


@dataclass
class FileRef:
    path: str
    sha256: str


@dataclass
class ArtifactRef(FileRef):
    kind: str = "onnx"  # onnx | pt2
    stamped: bool = False
    stamp_target: Optional[str] = None


@dataclass
class ReferenceRef(FileRef):
    run: Optional[dict] = None  # the fp32 reference's own run (status, versions, latency)


@dataclass
class InputsRef(FileRef):
    samples_available: int = 0


@dataclass
class ProfileResult:
    """One CPU profile (or the reference CPU): what was expected, what happened, and how close it was."""

    cpu: str
    expected: str  # pass | refused_by_guard
    required: bool
    why: str
    status: str  # pass | fail | refused_by_guard | crashed | not_verified
    reason: str
    requirement_met: bool = False
    # Whether this profile decides the verdict, and why: an informational one (below the target for an unstamped
    # file, this host without the target's features) is reported, and none of its checks can fail the verdict.
    counted: Optional[bool] = None
    counted_why: str = ""
    failure: Optional[str] = None  # sigill, timeout, fidelity, cpu_numerics, padding, load, ...
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    wall_seconds: float = 0.0
    command: Optional[str] = None
    emulated: Optional[bool] = None
    qemu_cpu: Optional[str] = None
    threads: Optional[int] = None
    stderr_tail: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    samples: Optional[int] = None
    sample_ids: Optional[list[int]] = None  # which held-out samples ran (emulated runs: chosen on purpose)
    guard: Optional[str] = None
    cpu_features_seen: Optional[list[str]] = None
    thresholds: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)  # the worst of each figure over outputs
    fidelity_by_output: dict = field(default_factory=dict)
    cpu_comparison: Optional[dict] = None  # against the same artifact on the reference CPU
    latency: Optional[dict] = None
    padding: Optional[dict] = None
    # A stateful model run streamed: per carried state, its error to fp32's per step (fidelity.state_drift).
    state_drift: Optional[dict] = None
    runtime: Optional[dict] = None
    host: Optional[dict] = None  # an SSH host as read there: host, python, machine, cpu_features, versions, mismatch


@dataclass
class VerifyReport:
    status: str  # pass | fail | not_verified
    target: str
    artifact: ArtifactRef
    required_cpu_features: list[str]
    profiles: dict[str, ProfileResult]
    model_kind: str = "embedding"
    output_names: list[str] = field(default_factory=list)
    reference: Optional[ReferenceRef] = None
    inputs: Optional[InputsRef] = None
    reference_cpu: Optional[dict] = None  # the run every profile's outputs are compared with
    sample_selection: Optional[dict] = None  # which samples the emulated profiles ran, and why
    host: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    padding: dict = field(default_factory=dict)
    latency: Optional[dict] = None
    audit: Optional[dict] = None  # .pt2: the static ISA audit of the package
    manifest_sha256: Optional[str] = None  # the manifest.json of the build folder verified (binds the two)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    schema: str = SCHEMA

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"passed": self.passed}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, payload: Any, where: str = VERIFY_FILE) -> "VerifyReport":
        """A report from its JSON (schema /1 upgraded first), or VerifyReportError naming the key."""
        payload = upgraded(payload)
        validate(payload, "verify", where, fix(where), VerifyReportError)
        refs = {"artifact": ArtifactRef, "reference": ReferenceRef, "inputs": InputsRef}
        values = {key: refs[key](**value) if key in refs and value is not None else value
                  for key, value in payload.items() if key != "passed"}
        values["profiles"] = {name: ProfileResult(**profile) for name, profile in payload["profiles"].items()}
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "VerifyReport":
        path = Path(path)
        if not path.is_file():
            raise VerifyReportError(f"{path} does not exist: the artifact was never verified")
        return cls.from_json(load_json(path, fix(str(path)), VerifyReportError), str(path))


def upgraded(payload: Any) -> Any:
    """A quantgate.verify/1 report in schema 2's shape (anything else as it is, for the schema to judge)."""
    if not isinstance(payload, dict) or payload.get("schema") != "quantgate.verify/1":
        return payload
    payload = dict(payload, schema=SCHEMA)
    if isinstance(payload.get("artifact"), str):  # the .pt2 verifier's schema 1 wrote a bare path
        payload["artifact"] = {"path": payload["artifact"], "sha256": "", "kind": payload.pop("artifact_kind", "pt2")}
    payload.pop("artifact_kind", None)
    if "output_name" in payload:  # one judged output
        payload["output_names"] = [payload.pop("output_name")] if payload.get("output_name") else []
    return payload


def counted_why(required: bool, why: str) -> str:
    """Why a profile counts toward the verdict or is informational only, in words."""
    if required:
        return f"counts toward the verdict: {why}"
    return (f"informational, never decides the verdict: {why}; its checks (fidelity, padding, per-CPU numerics) "
            f"are reported only")


def overall_status(profiles: dict[str, dict], failed_elsewhere: bool = False, unverified_elsewhere: bool = False) -> str:
    """The verdict of a verification (pass | fail | not_verified), from the profiles that count (`required`) and
    the checks of the artifact as a whole (`failed_elsewhere`; `unverified_elsewhere`: one that could not be made
    here, e.g. a wedged runtime). An informational profile never decides it, whatever its own status; with none
    that counts, nothing was verified."""
    counted = [p for p in profiles.values() if p["required"]]
    failed = failed_elsewhere or any(not p["requirement_met"] and p["status"] != "not_verified" for p in counted)
    unverified = unverified_elsewhere or not counted or any(p["status"] == "not_verified" for p in counted)
    return "fail" if failed else "not_verified" if unverified else "pass"


def contradictions(profile: ProfileResult) -> list[str]:
    """Where a profile's recorded figures break its own recorded limits although its status says it passed.
    The signoff recomputes the verdict this way instead of trusting the status field of a file no hash covers."""
    if profile.status != "pass":
        return []
    limits, found = profile.thresholds or {}, []
    figure_sets = [("", profile.fidelity or {})] + [(f"{name}: ", figures) for name, figures in
                                                    (profile.fidelity_by_output or {}).items()]
    lower = (("cosine_mean", "min_cosine_mean"), ("cosine_worst", "min_cosine_worst"),
             ("pooled_cosine_mean", "min_cosine_mean"), ("pooled_cosine_worst", "min_cosine_worst"),
             ("top1_agreement", "min_top1_agreement"), ("label_set_agreement", "min_top1_agreement"),
             ("decision_agreement", "min_top1_agreement"),
             ("score_correlation", "min_cosine_mean"), ("detection_recall", "min_detection_recall"),
             ("detection_precision", "min_detection_precision"), ("detection_mean_iou", "min_detection_mean_iou"))
    upper = (("max_abs_error", "max_abs_error"), ("max_scaled_error", "max_scaled_error"),
             ("state_drift", "max_state_drift"), ("near_empty_error_worst", "max_near_empty_error"))
    for where, figures in figure_sets:
        for key, limit in lower:
            if isinstance(figures.get(key), (int, float)) and isinstance(limits.get(limit), (int, float)) \
                    and figures[key] < limits[limit]:
                found.append(f"{where}{key} {figures[key]:.4g} < {limit} {limits[limit]:g}")
        for key, limit in upper:
            if isinstance(figures.get(key), (int, float)) and isinstance(limits.get(limit), (int, float)) \
                    and figures[key] > limits[limit]:
                found.append(f"{where}{key} {figures[key]:.4g} > {limit} {limits[limit]:g}")
    comparison = profile.cpu_comparison or {}
    bounds = comparison.get("bounds") or {}
    excess, ratio = comparison.get("excess_error"), comparison.get("error_ratio")
    if None not in (excess, ratio, bounds.get("max_excess_error"), bounds.get("max_error_ratio")) and \
            excess > bounds["max_excess_error"] and ratio > bounds["max_error_ratio"]:
        found.append(f"error to fp32 {ratio:.3g}x the reference CPU's ({excess:+.3g}x scale) is past both bounds")
    return list(dict.fromkeys(found))

"""The release signoff: every artifact folder of a release, judged and written up for a person and for CI.

    quantgate signoff --release NAME [--artifacts-dir artifacts/NAME] [--waivers FILE] [--out reports/NAME]
                      [--baseline PREVIOUS] [release.max_latency_ratio=1.0]

writes reports/<name>/signoff.md, signoff.html (self-contained: plots embedded, no network),
signoff.json (the same facts) and signoff.junit.xml (one testcase per artifact x CPU profile), and exits 0
only when the verdict is `ready`; 1 when `blocked`;
2 on a usage error (no such release, a malformed waivers file).

A release is blocked by any of: a file whose bytes no longer match its manifest (never waivable:
rebuild), a verify.json made for other bytes (never waivable), an artifact never verified, a required
CPU profile that did not meet its requirement, the target's floor CPU not verified at all, a missing, empty or
malformed matrix.json or a combination asked for that is not in the release, a folder whose name, manifest and
stamp disagree (never waivable), a model left mostly fp32, int8 slower than fp32 beyond release.max_latency_ratio
and beyond the timings' noise, or a waiver that covers one of these but has expired. A valid waiver turns a
failure into `waived`. The checks of the evidence itself are in pipeline/release/evidence.py.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shlex
from datetime import date, datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pipeline.config.schema import ReleaseConfig
from pipeline.errors import ExitCode, InputError, UsageError
from pipeline.jsonfiles import read_json
from pipeline.manifest import MANIFEST_FILE, Manifest, artifact_folders, atomic_write_bytes, atomic_write_json, sha256_file
from pipeline.release import SIGNATURE_FILE, TrustError
from pipeline.release.evidence import artifact_stamp, floor_rows, identity_rows, int8_rows, report_rows
from pipeline.release.grid import grid, host_microarchitecture, junit_xml
from pipeline.release.matrix import MATRIX_FILE
from pipeline.release.provenance import build_config, quantgate_source
from pipeline.release.trend import trend
from pipeline.verify.report import VERIFY_FILE, VerifyReport, VerifyReportError, contradictions, counted_why
from pipeline.paths import CONF_DIR

SCHEMA = "quantgate.signoff/1"
READY, BLOCKED = "ready", "blocked"
WAIVERS_DIR = CONF_DIR / "waivers"
JUNIT_FILE = "signoff.junit.xml"
# Rows that are not CPU profiles: checks on the artifact as a whole.
INTEGRITY_ROWS = ("files", "verify-inputs")  # tampering: a waiver cannot cover it
RELEASE_ROWS = "release"  # the artifact name of rows about the release as a whole (its matrix.json)


class SignoffError(InputError):
    """The release or its waivers cannot be judged (no such release, a malformed waivers file): exit 2."""


# --- waivers ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Waiver:
    artifact: str  # artifact folder name; shell-style wildcards allowed (minilm-*-avx512)
    profile: str  # a CPU profile (native, haswell, ...), `build`, `verify`, or a wildcard
    reason: str
    who: str
    expires: date  # valid through this day (UTC)
    used_by: list[str] = dataclasses.field(default_factory=list)

    def matches(self, artifact: str, profile: str) -> bool:
        return fnmatchcase(artifact, self.artifact) and fnmatchcase(profile, self.profile)

    def expired(self, today: date) -> bool:
        return today > self.expires

    def to_json(self, today: date) -> dict[str, Any]:
        return {"artifact": self.artifact, "profile": self.profile, "reason": self.reason, "who": self.who,
                "expires": self.expires.isoformat(), "expired": self.expired(today), "used_by": self.used_by}


def load_waivers(path: Path | None) -> list[Waiver]:
    """A YAML file `waivers: [{artifact, profile, reason, who, expires: YYYY-MM-DD}, ...]`; missing file = none."""
    if path is None or not path.is_file():
        return []
    import yaml
    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SignoffError(f"{path} is not valid YAML: {error}") from None
    entries = payload.get("waivers") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise SignoffError(f"{path}: expected a top-level `waivers:` list")
    waivers = []
    for index, entry in enumerate(entries, 1):
        fields = ("artifact", "profile", "reason", "who", "expires")
        missing = [name for name in fields if not isinstance(entry, dict) or not entry.get(name)]
        if missing:
            raise SignoffError(f"{path}: waiver #{index} lacks {', '.join(missing)} (each waiver needs "
                               f"{', '.join(fields)})")
        expires = entry["expires"]
        if not isinstance(expires, date):
            try:
                expires = date.fromisoformat(str(expires))
            except ValueError:
                raise SignoffError(f"{path}: waiver #{index} expires={expires!r} is not a date (YYYY-MM-DD)") from None
        unknown = sorted(set(entry) - set(fields))
        if unknown:
            raise SignoffError(f"{path}: waiver #{index} has unknown key(s) {', '.join(unknown)}")
        waivers.append(Waiver(str(entry["artifact"]), str(entry["profile"]), str(entry["reason"]).strip(),
                              str(entry["who"]), expires))
    return waivers


# --- one artifact folder ---------------------------------------------------------------------------
def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def fidelity_words(profile: dict[str, Any]) -> str:
    """The figures against their thresholds, e.g. `cosine mean 0.9913 >= 0.98, worst 0.9804 >= 0.95`. A figure of
    the whole held-out set (a mean, an agreement rate, a correlation) is not judged on an emulated profile's few
    samples, whose threshold is null: it is shown as such."""
    figures, limits = profile.get("fidelity") or {}, profile.get("thresholds") or {}
    holders = figures.get("worst_of") or {}
    # which output or group holds a worst figure, when there are several (a detector head's `output0[4:84] (scores)`)
    shown = {key: f" in {name}" for key, name in holders.items()} if len(profile.get("fidelity_by_output") or {}) > 1 \
        else {}
    parts = []

    def against(label, key, limit_key, at_most=False):
        if key in figures:
            limit = limits.get(limit_key)
            if limit is None:
                sign = " (not judged on these samples)" if limit_key in limits else ""
            else:
                within = figures[key] <= limit if at_most else figures[key] >= limit
                sign = ((" ≤ " if within else " > ") if at_most else (" ≥ " if within else " < ")) + f"{limit:.3g}"
            parts.append(f"{label} {figures[key]:.4f}{shown.get(key, '')}{sign}")
    against("cosine mean", "cosine_mean", "min_cosine_mean")
    against("cosine worst", "cosine_worst", "min_cosine_worst")
    against("near-empty samples' error (x scale)", "near_empty_error_worst", "max_near_empty_error", at_most=True)
    against("top-1 agreement", "top1_agreement", "min_top1_agreement")
    against("label-set agreement", "label_set_agreement", "min_top1_agreement")
    against("decision agreement", "decision_agreement", "min_top1_agreement")
    against("score correlation", "score_correlation", "min_cosine_mean")
    against("detection recall", "detection_recall", "min_detection_recall")
    against("detection precision", "detection_precision", "min_detection_precision")
    against("detection mean IoU", "detection_mean_iou", "min_detection_mean_iou")
    if "state_drift" in figures and limits.get("max_state_drift") is not None:  # a stateful model, run streamed
        sign = " ≤ " if figures["state_drift"] <= limits["max_state_drift"] else " > "
        parts.append(f"state drift {figures['state_drift']:.3g}{sign}{limits['max_state_drift']:g} (streamed)")
    if "accuracy" in figures:
        parts.append(f"accuracy {figures['accuracy']:.3f} (fp32 {figures.get('reference_accuracy', float('nan')):.3f})")
    if "macro_f1" in figures:
        parts.append(f"macro-F1 {figures['macro_f1']:.3f} (fp32 {figures.get('reference_macro_f1', float('nan')):.3f})")
    if limits.get("max_abs_error") is not None and "max_abs_error" in figures:
        parts.append(f"max abs error {figures['max_abs_error']:.3g} (limit {limits['max_abs_error']:g})")
    return ", ".join(parts + group_words(profile.get("fidelity_by_output") or {}))


def group_words(by_output: dict[str, Any]) -> list[str]:
    """Each group of an output (pipeline/verify/groups.py) by its name and its direction figure, e.g.
    `output0[4:84] (scores): cosine worst 0.9994`."""
    words = []
    for name, figures in by_output.items():
        if "group" in figures:
            shown = [f"{label} {figures[key]:.4f}" for key, label in (
                ("cosine_worst", "cosine worst"), ("score_correlation", "score correlation"),
                ("top1_agreement", "top-1 agreement"), ("near_empty_error_worst", "near-empty error")) if key in figures]
            words.append(f"{name}: {', '.join(shown) or 'no figure'}")
    return words


def native_profile(profiles: dict[str, Any]) -> str | None:
    """The profile that ran on this host: `native`, or `native@<runtime>` (a prepared runtime, natively)."""
    names = [name for name in profiles if name.split("@")[0] == "native"]
    return "native" if "native" in names else (names[0] if names else None)


def latency_figures(verify: dict[str, Any] | None) -> dict[str, Any] | None:
    """Batch-1 latency measured natively: int8 from the native profile (any runtime), fp32 from the reference run."""
    profiles = (verify or {}).get("profiles") or {}
    native = native_profile(profiles)
    latency = dict((verify or {}).get("latency") or (profiles[native].get("latency") if native else None) or {})
    latency.setdefault("fp32", (((verify or {}).get("reference") or {}).get("run") or {}).get("latency"))
    if not latency.get("int8") or not latency.get("fp32"):
        return None
    figures = {"int8_p50_ms": latency["int8"]["p50_ms"], "int8_p95_ms": latency["int8"]["p95_ms"],
               "fp32_p50_ms": latency["fp32"]["p50_ms"], "fp32_p95_ms": latency["fp32"]["p95_ms"],
               "batch": latency.get("batch", 1), "repeats": latency.get("repeats"), "profile": native}
    figures["p50_ratio"] = figures["int8_p50_ms"] / max(figures["fp32_p50_ms"], 1e-12)
    return figures


# (figure, threshold, +1 when the figure must be at least the threshold, -1 when at most): margin = how far inside
MARGINS = (("cosine_worst", "min_cosine_worst", 1), ("cosine_mean", "min_cosine_mean", 1),
           ("top1_agreement", "min_top1_agreement", 1), ("label_set_agreement", "min_top1_agreement", 1),
           ("decision_agreement", "min_top1_agreement", 1),
           ("score_correlation", "min_cosine_mean", 1), ("detection_recall", "min_detection_recall", 1),
           ("detection_precision", "min_detection_precision", 1), ("detection_mean_iou", "min_detection_mean_iou", 1),
           ("near_empty_error_worst", "max_near_empty_error", -1),
           ("max_abs_error", "max_abs_error", -1),
           ("max_scaled_error", "max_scaled_error", -1), ("state_drift", "max_state_drift", -1))


def margins(profile: dict[str, Any]) -> dict[str, float]:
    """Per metric, the worst case's distance to its threshold (negative: past it), e.g. cosine_worst - min_cosine_worst."""
    figures, limits = profile.get("fidelity") or {}, profile.get("thresholds") or {}
    return {figure: sign * (figures[figure] - limits[limit]) for figure, limit, sign in MARGINS
            if isinstance(figures.get(figure), (int, float)) and isinstance(limits.get(limit), (int, float))}


def _row(artifact: str, profile: str, status: str, ok: bool | None, reason: str, *, expected: str = "",
         required: bool = True, waivable: bool = True, **extra) -> dict[str, Any]:
    """One artifact x profile (or artifact x check) row; `ok` None = informational, never blocks."""
    return {"artifact": artifact, "profile": profile, "expected": expected, "status": status, "ok": ok,
            "required": required, "waivable": waivable, "reason": reason, "outcome": None, "waiver": None,
            "fidelity": "", "figures": {}, "thresholds": {}, "latency": None, "cpu_comparison": None,
            "reference_cpu": None, "worst_outputs": None, "cpu": False, "anchor": anchor(artifact, profile),
            "samples": None, "command": None, "stderr_tail": [], "margins": {}, **extra}


def anchor(artifact: str, profile: str) -> str:
    """The HTML id of an artifact x profile's evidence."""
    return "ev-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{artifact}--{profile}")


def inspect_artifact(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The facts of one artifact folder and its rows (integrity checks, then one row per CPU profile)."""
    manifest = Manifest.load(folder)
    name, rows = folder.name, []
    changed = manifest.tampered_files()
    recorded = {record.path: record.sha256 for record in manifest.files}
    files = [{"path": r.path, "sha256": r.sha256, "size_bytes": r.size_bytes, "matches_manifest": r.path not in changed}
             for r in manifest.files]
    if changed:
        rows.append(_row(name, "files", "tampered", False, f"{', '.join(changed)} changed after the build (sha256 "
                         f"differs from manifest.json, or the file is gone): rebuild, a changed artifact cannot be "
                         f"signed off", waivable=False))
    else:
        rows.append(_row(name, "files", "intact", True, f"all {len(files)} files match the sha256 in manifest.json"))
    rows += identity_rows(_row, folder, manifest, artifact_stamp(manifest)) + int8_rows(_row, folder, manifest)

    verify_path = folder / VERIFY_FILE
    verify, unreadable = None, None
    if verify_path.is_file():
        try:
            verified = VerifyReport.load(verify_path)
            verify = verified.to_json()
        except VerifyReportError as error:
            unreadable = str(error)
    if unreadable:
        rows.append(_row(name, "verify", "unreadable", False, unreadable, waivable=False))
    elif verify is None:
        rows.append(_row(name, "verify", "not_verified", False, "no verify.json: the artifact was never verified "
                         f"(`make verify ARTIFACT_DIR={folder}` or rebuild with verification)"))
    else:
        files.append({"path": VERIFY_FILE, "sha256": sha256_file(verify_path), "size_bytes": verify_path.stat().st_size,
                      "matches_manifest": None})
        # verify.json names the bytes it judged: they must be the bytes the manifest vouches for.
        judged = {Path(ref["path"]).name: ref["sha256"] for ref in (verify["artifact"], verify.get("reference"),
                                                                   verify.get("inputs")) if ref}
        stale = [path for path, digest in judged.items() if recorded.get(path) != digest]
        if stale:
            rows.append(_row(name, "verify-inputs", "stale", False, f"verify.json judged other bytes than manifest.json "
                             f"records for {', '.join(stale)}: verify again", waivable=False))
        bound_to = verify.get("manifest_sha256")
        if bound_to and bound_to != sha256_file(folder / MANIFEST_FILE):
            rows.append(_row(name, "verify-inputs", "stale", False, "verify.json was made for another build of this "
                             "folder (its manifest.json sha256 differs): verify again", waivable=False))
        for profile_name, typed in verified.profiles.items():
            wrong = contradictions(typed)
            if wrong:
                rows.append(_row(name, profile_name, "inconsistent", False, f"verify.json says pass, but its own "
                                 f"figures break its own limits ({'; '.join(wrong)}): was it edited? verify again",
                                 waivable=False))
        for profile_name, p in verify.get("profiles", {}).items():
            ok = p.get("requirement_met", False) if p.get("required") else None
            reason = p.get("reason", "")
            if p.get("status") == "refused_by_guard" and "this CPU lacks:" in reason:  # the guard's words: keep the news
                reason = "refused by the guard: lacks " + reason.split("this CPU lacks:")[1].split(".")[0].strip()
            if not p.get("required"):  # reported, never decisive: say so, and why
                reason = f"{reason} ({p.get('counted_why') or counted_why(False, p.get('why', ''))})"
            row = _row(name, profile_name, p.get("status", "unknown"), ok, reason, expected=p.get("expected", ""),
                       required=bool(p.get("required")), fidelity=fidelity_words(p), figures=p.get("fidelity") or {},
                       thresholds=p.get("thresholds") or {}, failure=p.get("failure"), command=p.get("command"),
                       wall_seconds=p.get("wall_seconds"), cpu_comparison=p.get("cpu_comparison"),
                       reference_cpu=(p.get("cpu_comparison") or {}).get("reference_cpu"),
                       worst_outputs=(p.get("cpu_comparison") or {}).get("worst") if p.get("failure") == "cpu_numerics"
                       else None, cpu=True, samples=p.get("samples"), stderr_tail=p.get("stderr_tail") or [],
                       evidence=p, margins=margins(p))
            if profile_name == native_profile(verify["profiles"]):
                row["latency"] = latency_figures(verify)
            rows.append(row)
        rows += floor_rows(_row, name, manifest.target, verify.get("profiles", {}))
        reference = (verify.get("reference") or {}).get("run") or {}
        if reference and reference.get("status") != "pass":
            rows.append(_row(name, "reference", reference.get("status", "unknown"), False,
                             f"the fp32 reference did not run: {reference.get('reason', '')}"))

    stamp_versions = json.loads(manifest.stamp.get("versions", "{}")) if manifest.stamp else {}
    versions = {"build": stamp_versions}
    if getattr(manifest, "runtime", None) and manifest.runtime.get("versions"):
        versions["runtime built for"] = manifest.runtime["versions"]
    if verify is not None:
        reference = (verify.get("reference") or {}).get("run") or {}
        if reference.get("versions"):
            versions["verify: fp32 reference (native)"] = reference["versions"]
        for profile_name, p in verify.get("profiles", {}).items():
            if p.get("versions"):
                versions[f"verify: {profile_name}"] = p["versions"]
    coverage = {}
    report, unreadable_report = report_rows(_row, name, folder / manifest.calibration_report_file)
    rows += unreadable_report
    if report is not None:
        coverage = {key: report.get(key) for key in ("status", "enforced", "worst_fraction_outside", "warn_threshold",
                                                      "fail_threshold", "n_tensors")}
        coverage["worst_tensors"] = [{"tensor": t["tensor"], "fraction_outside": t["fraction_outside"]}
                                     for t in report.get("tensors", [])[:3]]
    fallback = dataclasses.asdict(manifest.fallback) if manifest.fallback else None
    overrides = manifest.build.config_overrides if manifest.build else []
    facts = {
        "name": name, "folder": str(folder), "model": manifest.model, "mode": manifest.mode, "target": manifest.target,
        "model_kind": manifest.model_kind, "model_file": manifest.model_file,
        # what a deployment must do to texts and outputs: the pooling, and a prompt before every text
        "sentence_embedding": manifest.sentence_embedding, "verify_status": (verify or {}).get("status", "not_verified"),
        "size": {"int8_bytes": manifest.model_size_bytes, "fp32_bytes": manifest.reference_size_bytes,
                 "ratio": manifest.model_size_bytes / max(manifest.reference_size_bytes, 1)},
        "latency": latency_figures(verify), "model_sha256": manifest.model_sha256,
        "build_speed": dataclasses.asdict(manifest.speed) if manifest.speed else None,
        "mode_choice": dataclasses.asdict(manifest.mode_choice) if manifest.mode_choice else None,
        "config_sha256": manifest.config_sha256, "quantization": dataclasses.asdict(manifest.quantization)
        if manifest.quantization else None,
        "build": dataclasses.asdict(manifest.build) if manifest.build else None,
        "build_metrics": {"fp32": manifest.fp32_metrics, "int8": manifest.int8_metrics},
        "coverage_status": manifest.coverage_status, "coverage": coverage, "fallback": fallback,
        "versions": versions, "files": files, "tampered": changed,
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
    size_words = f"{_mb(manifest.model_size_bytes)} / {_mb(manifest.reference_size_bytes)} ({facts['size']['ratio']:.2f}x)"
    for row in rows:
        row["size"] = size_words
    return facts, rows


def resolved_config(manifest: Manifest) -> dict[str, Any]:
    """The full config the artifact was built with (recomposed from its overrides, checked against config_sha256)."""
    try:
        config, note = build_config(manifest)
    except TrustError as error:
        config, note = None, str(error)
    return {"resolved_config": config, "resolved_config_note": note}


def matrix_rows(release: str, release_dir: Path, found: dict[str, dict]) -> tuple[dict | None, list[dict[str, Any]]]:
    """Completeness: rows for a missing matrix.json, for combinations that did not build (unless rebuilt after the
    matrix finished) and for built combinations whose folder is not in the release."""
    path = release_dir / MATRIX_FILE
    if not path.is_file():
        return None, [_row(RELEASE_ROWS, "matrix", "no_matrix", False, f"no {MATRIX_FILE} in {release_dir}: nothing says "
                           f"which combinations this release was asked for, so it cannot be called complete (`make "
                           f"matrix RELEASE={release}`, or waive artifact `release`, profile `matrix`)")]
    fix = f"run the matrix again (`make matrix RELEASE={release}`)"
    try:
        matrix = read_json(path, "matrix", fix)
    except InputError as error:  # damaged or edited: the record of what was asked for is gone
        return None, [_row(RELEASE_ROWS, "matrix", "unreadable", False, f"{error} (a release whose {MATRIX_FILE} "
                           f"cannot be read cannot be called complete)", waivable=False)]
    if not matrix["combinations"]:
        return matrix, [_row(RELEASE_ROWS, "matrix", "empty", False, f"{path} lists no combination: nothing says "
                             f"what this release was asked for, so nothing can be checked complete; {fix}",
                             waivable=False)]
    rows = []
    for combo in matrix.get("combinations", []):
        command = shlex.join([".venv/bin/python", "-m", "pipeline", *combo["overrides"]])
        rebuilt = found.get(combo["artifact"])
        if combo["outcome"] not in ("build_failed", "crashed"):
            if rebuilt is None:
                rows.append(_row(combo["artifact"], "build", "missing", False, f"the matrix built "
                                 f"{' '.join(combo['overrides'])} ({combo['outcome']}) but its folder is not in "
                                 f"{release_dir}", reproduce=command))
            continue
        if rebuilt and (rebuilt.get("build") or {}).get("time_utc", "") > matrix.get("finished_utc", ""):
            continue
        rows.append(_row(combo["artifact"], "build", combo["outcome"], False,
                         f"the matrix combination {' '.join(combo['overrides'])} did not build: {combo['reason']}",
                         reproduce=command))
    asked = {combo["artifact"] for combo in matrix.get("combinations", [])}
    rows += [_row(name, "matrix", "not_asked", None, f"in the release folder, but not one of the {len(asked)} "
                  f"combinations {MATRIX_FILE} records") for name in sorted(set(found) - asked)]
    return matrix, rows


def size_rows(artifacts: list[dict[str, Any]], settings: ReleaseConfig) -> list[dict[str, Any]]:
    """Size as a finding: int8 larger than release.max_size_ratio x fp32 blocks (waivable: `size`)."""
    rows, limit = [], settings.max_size_ratio
    for facts in artifacts:
        size = facts["size"]
        if not size.get("fp32_bytes"):
            continue
        if facts["model_file"].endswith(".pt2"):  # compiled code and weights, against an ONNX graph: not alike
            rows.append(_row(facts["name"], "size", "not_comparable", None, f"a compiled .pt2 package (code and "
                             f"weights, {_mb(size['int8_bytes'])}) is not measured against the fp32 ONNX reference's "
                             f"size ({_mb(size['fp32_bytes'])}); release.max_size_ratio applies to ONNX artifacts"))
            continue
        within = size["ratio"] <= limit
        scheme = "int4" if facts.get("mode") == "int4" else "int8"  # a weight-only decoder's bits, else int8
        rows.append(_row(facts["name"], "size", "within_budget" if within else "too_large", within,
                         f"{scheme} is {size['ratio']:.2f}x the fp32 size ({_mb(size['int8_bytes'])} vs "
                         f"{_mb(size['fp32_bytes'])}): {'<=' if within else '>'} release.max_size_ratio {limit:g}"))
    return rows


# Below this fp32 p50, a batch-1 latency is timer and scheduler noise, not the model: not measurable.
MIN_MEASURABLE_MS = 0.1
MIN_NOISE_MARGIN = 0.05  # the least relative noise assumed of any timing (a quiet host's run-to-run spread)
FEW_REPEATS, FEW_REPEATS_MARGIN = 5, 0.25  # fewer repeats than this: their spread says little


def noise_margin(figures: dict[str, Any]) -> float:
    """The relative noise of the int8/fp32 ratio from the repeats' own spread ((p95 - p50) / p50 of either side),
    at least MIN_NOISE_MARGIN, and FEW_REPEATS_MARGIN when there were too few repeats to tell."""
    spreads = [(figures[f"{side}_p95_ms"] - figures[f"{side}_p50_ms"]) / max(figures[f"{side}_p50_ms"], 1e-12)
               for side in ("int8", "fp32")]
    floor = FEW_REPEATS_MARGIN if (figures.get("repeats") or 0) < FEW_REPEATS else MIN_NOISE_MARGIN
    return max([floor, *spreads])


def latency_rows(artifacts: list[dict[str, Any]], settings: ReleaseConfig) -> list[dict[str, Any]]:
    """Performance as a finding: int8 slower than fp32 beyond release.max_latency_ratio by more than the timings'
    noise blocks (waivable: `latency`); within the noise, or a model too fast to time, it is reported, not judged."""
    rows, limit = [], settings.max_latency_ratio
    for facts in artifacts:
        figures = facts["latency"]
        if figures is None:
            rows.append(_row(facts["name"], "latency", "not_measured", None, "no native latency in verify.json "
                             "(int8 and the fp32 reference, batch 1): performance is unknown"))
            continue
        ratio, margin = figures["p50_ratio"], noise_margin(figures)
        speed = f"{ratio:.2f}x slower than" if ratio > 1 else f"{1 / ratio:.2f}x faster than"
        measured = (f"int8 is {speed} fp32 (p50 {figures['int8_p50_ms']:.3g} ms vs {figures['fp32_p50_ms']:.3g} ms, "
                    f"batch {figures['batch']}, {figures.get('repeats') or '?'} repeats, on {figures['profile']})")
        if figures["fp32_p50_ms"] < MIN_MEASURABLE_MS:
            rows.append(_row(facts["name"], "latency", "not_measurable", None, f"{measured}: a model this fast "
                             f"(under {MIN_MEASURABLE_MS:g} ms) cannot be timed apart from the timer's noise; not "
                             f"judged against release.max_latency_ratio", latency=figures))
            continue
        within, noisy = ratio <= limit, limit < ratio <= limit * (1 + margin)
        status = "within_limit" if within else "within_noise" if noisy else "too_slow"
        judged = ("<=" if within else ">") + f" release.max_latency_ratio {limit:g}"
        if noisy:
            judged += f", but within the timings' noise (±{margin:.0%} from the repeats' spread): not a finding"
        rows.append(_row(facts["name"], "latency", status, None if noisy else within,
                         f"{measured}: int8/fp32 {ratio:.2f} {judged}", latency=figures))
    return rows


def build_speed_rows(artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the build measured on its own host (pipeline/builder/speed.py) as findings: int8 slower than fp32 beyond
    noise, or larger, in words with the cause. Informational: the native latency row above is what blocks."""
    rows = []
    for facts in artifacts:
        speed = facts.get("build_speed")
        for cost, warning in (speed or {}).get("warnings", {}).items():
            rows.append(_row(facts["name"], "build-speed", f"int8_{cost}", None, f"measured at build time: {warning}"))
    return rows


# --- the verdict -----------------------------------------------------------------------------------
def apply_waivers(rows: list[dict[str, Any]], waivers: list[Waiver], today: date) -> None:
    for row in rows:
        if row["ok"] is None:
            row["outcome"] = "info"
            continue
        if row["ok"]:
            row["outcome"] = "ok"
            continue
        row["outcome"] = "failed"
        if not row["waivable"]:
            continue
        waiver = next((w for w in waivers if w.matches(row["artifact"], row["profile"])), None)
        if waiver is None:
            continue
        waiver.used_by.append(f"{row['artifact']}/{row['profile']}")
        row["waiver"] = waiver.to_json(today) | {"used_by": None}
        row["outcome"] = "waiver_expired" if waiver.expired(today) else "waived"


def blocking_words(row: dict[str, Any]) -> str:
    where = f"{row['artifact']} / {row['profile']}"
    if row["outcome"] == "waiver_expired":
        w = row["waiver"]
        return f"{where}: {row['status']}: {row['reason']} (the waiver by {w['who']} expired on {w['expires']})"
    return f"{where}: {row['status']}: {row['reason']}"


def signoff(release: str, release_dir: Path, waivers_path: Path | None, today: date | None = None,
            public_key: Path | None = None, require_signatures: bool = False, settings: ReleaseConfig | None = None,
            baseline: dict[str, Any] | None = None, signing: bool = False) -> dict[str, Any]:
    """Gather, judge and return the report as one JSON-ready dict (no report written; a `sign` killed half-way is
    rolled back first, pipeline/release/journal.py); `baseline` is the previous
    release's signoff.json, for the trend. `signing`: judged by `sign`, which replaces every signature, so the
    signatures there are now (a half-signed release) are not judged: `make sign` is their fix."""
    today = today or datetime.now(timezone.utc).date()
    settings = settings or ReleaseConfig()
    if not release_dir.is_dir():
        raise SignoffError(f"{release_dir} does not exist: build the release first (`make matrix RELEASE={release}`)")
    from pipeline.release import journal
    journal.recover(release_dir)  # a `sign` killed half-way: rolled back, never judged half-signed
    waivers = load_waivers(waivers_path)
    artifacts, rows = [], []
    for folder in artifact_folders(release_dir):
        facts, artifact_rows = inspect_artifact(folder)
        artifacts.append(facts)
        rows += artifact_rows
    matrix, build_rows = matrix_rows(release, release_dir, {a["name"]: a for a in artifacts})
    rows += build_rows + latency_rows(artifacts, settings) + size_rows(artifacts, settings) + build_speed_rows(artifacts)
    # Release trust (issue 18, pipeline/release/sign.py): a `signature` row per artifact once signatures are
    # required, given a key, or present; a missing or invalid signature is never waivable.
    if not signing:
        rows += signoff_rows([Path(a["folder"]) for a in artifacts], public_key, require_signatures)
    apply_waivers(rows, waivers, today)
    # each reason once: a release is read, not counted (two rows can say the same thing, e.g. a shared waiver)
    blocking = list(dict.fromkeys(blocking_words(r) for r in rows if r["outcome"] in ("failed", "waiver_expired")))
    if not artifacts:
        blocking.insert(0, f"no artifact folders (with {MANIFEST_FILE}) in {release_dir}")
    for facts in artifacts:
        mine = [r for r in rows if r["artifact"] == facts["name"]]
        facts["verdict"] = BLOCKED if any(r["outcome"] in ("failed", "waiver_expired") for r in mine) else \
            "ready (waived)" if any(r["outcome"] == "waived" for r in mine) else READY
    counts = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    report = {
        "schema": SCHEMA, "release": release, "verdict": BLOCKED if blocking else READY,
        "generated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "today": today.isoformat(),
        "release_dir": str(release_dir), "waivers_file": str(waivers_path) if waivers_path and waivers_path.is_file() else None,
        "blocking": blocking,
        "waived": [f"{r['artifact']} / {r['profile']}: {r['status']}: {r['reason']} (waived by {r['waiver']['who']} "
                   f"until {r['waiver']['expires']}: {r['waiver']['reason']})" for r in rows if r["outcome"] == "waived"],
        "counts": counts, "artifacts": artifacts, "rows": rows,
        # combinations with no artifact folder (they did not build): rows without facts
        "missing": [{"name": name} for name in sorted({r["artifact"] for r in rows} - {a["name"] for a in artifacts}
                                                     - {RELEASE_ROWS})],
        "waivers": [w.to_json(today) for w in waivers], "matrix": matrix,
        "versions": version_groups(artifacts),
        "settings": {"release": dataclasses.asdict(settings)}, "quantgate": quantgate_commit(),
        "completeness": completeness(matrix, artifacts),
    }
    report["grid"] = grid(report, artifacts[0]["native_host"] if artifacts else {})
    report["trend"] = trend(report, baseline) if baseline else None
    return report


def quantgate_commit() -> dict[str, Any]:
    """The quantgate checkout that judged the release: `git rev-parse HEAD`, `+dirty` when tracked files differ."""
    source = quantgate_source()
    commit = source["commit"] and source["commit"] + ("+dirty" if source["dirty"] else "")
    return {"commit": commit, "note": source.get("note")}


def completeness(matrix: dict | None, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Every combination the matrix was asked for, and whether its artifact is in the release."""
    present = {a["name"] for a in artifacts}
    combinations = [{"artifact": c["artifact"], "overrides": c["overrides"], "outcome": c["outcome"],
                     "in_release": c["artifact"] in present} for c in (matrix or {}).get("combinations", [])]
    return {"matrix": matrix is not None, "asked": len(combinations),
            "in_release": sum(c["in_release"] for c in combinations), "combinations": combinations}


def version_groups(artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct set of library versions, and where it was used (build or a verification profile)."""
    groups: dict[str, dict[str, Any]] = {}
    for facts in artifacts:
        for where, versions in facts["versions"].items():
            key = json.dumps(versions, sort_keys=True)
            group = groups.setdefault(key, {"versions": versions, "used_in": []})
            group["used_in"].append(f"{facts['name']}: {where}")
    for group in groups.values():  # a short column title: what kind of runs, how many
        wheres = [u.split(": ", 1)[1] for u in group["used_in"]]
        kinds = sorted({"verification" if w.startswith("verify: ") else w for w in wheres})
        runs = sorted({w.removeprefix("verify: ") for w in wheres if w.startswith("verify: ")})
        group["label"] = f"{' + '.join(kinds)} ({len(wheres)} run(s)" + (f": {', '.join(runs)})" if runs else ")")
    labels = [group["label"] for group in groups.values()]
    for group in groups.values():  # two sets of versions used the same way: name the artifacts to tell them apart
        if labels.count(group["label"]) > 1:
            group["label"] += ": " + ", ".join(dict.fromkeys(u.split(": ", 1)[0] for u in group["used_in"]))
    for number, group in enumerate(groups.values(), 1):
        if labels.count(group["label"]) > 1 or [g["label"] for g in groups.values()].count(group["label"]) > 1:
            group["label"] += f" (set {number})"
    return list(groups.values())


# --- rendering ---------------------------------------------------------------------------------------
def fidelity_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows fidelity.png shows: every CPU profile that ran and measured fidelity, judged or not (an emulated
    profile's few samples leave the figures of the whole held-out set unjudged: shown as such, never left out)."""
    return [r for r in rows if r.get("cpu") and (r.get("margins") or r.get("figures"))]


def plots(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of: fidelity per artifact x profile against its threshold; latency and size int8/fp32."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    measured = fidelity_rows(report["rows"])
    metrics = [m for m, _, _ in MARGINS if any(m in r["margins"] for r in measured)]
    if metrics:
        figure, axes = plt.subplots(len(metrics), 1, figsize=(8, sum(0.45 * len(measured) + 1.1 for _ in metrics)),
                                    squeeze=False)
        for axis, metric in zip(axes[:, 0], metrics):
            rows = measured
            values = [r["margins"].get(metric, 0.0) for r in rows]
            colors = [{"ok": "#2e7d32", "waived": "#f9a825", "info": "#9e9e9e"}.get(r["outcome"], "#c62828")
                      for r in rows]
            axis.barh(range(len(rows)), values, color=colors, height=0.6)
            axis.axvline(0.0, color="black", linewidth=1.5)
            for y, (row, value) in enumerate(zip(rows, values)):
                words = f" {value:+.4g}" if metric in row["margins"] else " not judged on these samples"
                axis.text(value, y, words, va="center", fontsize=8)
            axis.set_yticks(range(len(rows)), [f"{r['artifact']} / {r['profile']}" for r in rows], fontsize=8)
            axis.invert_yaxis()
            limit = next(limit for figure_key, limit, _ in MARGINS if figure_key == metric)
            axis.set_title(f"{metric}, worst case: margin to verify.{limit} (below 0: past it)", fontsize=9)
            span = max(abs(v) for v in values) or 1e-3
            axis.set_xlim(min(0.0, min(values)) - 0.25 * span, max(0.0, max(values)) + 0.35 * span)
        figure.suptitle("Fidelity margin to each threshold, per artifact and CPU profile", fontsize=11)
        images["fidelity.png"] = _png(figure, plt)
    if report["artifacts"]:
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 0.5 * len(report["artifacts"]) + 1.6), sharey=True)
        names = [a["name"] for a in report["artifacts"]]
        sizes = [a["size"]["ratio"] for a in report["artifacts"]]
        latencies = [a["latency"]["p50_ratio"] if a["latency"] else 0.0 for a in report["artifacts"]]
        limit = report["settings"]["release"]["max_latency_ratio"]
        for axis, values, title, bound in ((left, latencies, "latency p50, batch 1 (native)", limit),
                                           (right, sizes, "file size", report["settings"]["release"]["max_size_ratio"])):
            axis.barh(range(len(names)), values, color=["#1565c0" if v <= bound else "#c62828" for v in values], height=0.6)
            axis.axvline(1.0, color="black", linewidth=1)
            if bound != 1.0:
                axis.axvline(bound, color="#c62828", linewidth=1, linestyle="--")
            for y, value in enumerate(values):
                axis.text(value, y, f" {value:.2f}x" if value else " not measured", va="center", fontsize=8)
            axis.set_title(f"int8 / fp32: {title}", fontsize=10)
            axis.set_xlim(0, max(max(values) * 1.3, 1.2))
        left.set_yticks(range(len(names)), names, fontsize=8)
        left.invert_yaxis()
        figure.suptitle("int8 versus fp32 (below 1 = int8 smaller / faster)", fontsize=11)
        images["ratios.png"] = _png(figure, plt)
    return images


def _png(figure, plt) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def render(report: dict[str, Any], images: dict[str, bytes]) -> tuple[str, str]:
    """(markdown, html) from the same report dict."""
    import jinja2
    environment = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.release", "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "html.j2"]), trim_blocks=True,
                                     lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    environment.filters["mb"] = _mb
    environment.filters["pct"] = lambda value: "-" if value is None else f"{100 * value:.2f}%"
    environment.filters["step"] = lambda step: ", ".join(f"{key.replace('_', ' ')} {value:.4f}" for key, value
                                                         in step.items() if isinstance(value, float))
    environment.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # Markdown tables
    environment.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    embedded = {name: base64.b64encode(data).decode() for name, data in images.items()}
    markdown = environment.get_template("signoff.md.j2").render(r=report, images=sorted(images))
    html = environment.get_template("signoff.html.j2").render(r=report, images=embedded)
    return markdown, html


def bench_plot(out_dir: Path) -> dict[str, bytes]:
    """`make bench`'s figures for this release (reports/<release>/bench/results.json), when it ran: int8 against
    the fused fp32 graph and against plain quantize_dynamic, and the int8 GEMM floor, per artifact and batch."""
    path = out_dir / "bench" / "results.json"
    try:
        bench = json.loads(path.read_text())
        cases = [c for c in bench["artifacts"] if c.get("ratios")]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not cases:
        return {}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    batches = [str(b) for b in bench["settings"]["batches"]]
    series = [("int8 / fused fp32", "int8_vs_fp32_p50", "#1565c0"),
              ("plain quantize_dynamic / fused fp32", "plain_int8_vs_fp32_p50", "#9e9e9e"),
              ("int8 GEMM floor (this host)", "int8_vs_fp32_gemm_floor", "#2e7d32")]
    figure, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 0.6 * len(cases) * len(series) + 1.6),
                                sharey=True, squeeze=False)
    for axis, batch in zip(axes[0], batches):
        labels, values, colours = [], [], []
        for case in cases:
            for title, key, colour in series:
                value = (case["ratios"].get(batch) or {}).get(key)
                if value is not None:
                    labels.append(f"{case['artifact']}: {title}")
                    values.append(value)
                    colours.append(colour)
        axis.barh(range(len(values)), values, color=colours, height=0.6)
        axis.axvline(1.0, color="black", linewidth=1)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:.2f}x", va="center", fontsize=8)
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.set_title(f"batch {batch}: p50 latency ratio (below 1 = faster)", fontsize=9)
        axis.set_xlim(0, max(max(values, default=1.0) * 1.3, 1.2))
    axes[0][0].invert_yaxis()
    figure.suptitle(f"make bench on {bench.get('host', {}).get('cpu') or 'this host'} (interleaved runs, one process)",
                    fontsize=10)
    return {"bench.png": _png(figure, plt)}


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    images = plots(report) | bench_plot(out_dir)
    markdown, html = render(report, images)
    out_dir.mkdir(parents=True, exist_ok=True)
    # signoff.json goes first and comes back last: a run killed in between leaves no signoff.json (sign refuses and
    # names `make signoff`), never the old verdict beside the new report's pages.
    (out_dir / "signoff.json").unlink(missing_ok=True)
    for name, data in images.items():
        atomic_write_bytes(out_dir / name, data)
    atomic_write_bytes(out_dir / "signoff.md", markdown.encode())
    atomic_write_bytes(out_dir / "signoff.html", html.encode())
    atomic_write_bytes(out_dir / JUNIT_FILE, junit_xml(report))
    atomic_write_json(out_dir / "signoff.json", report)  # last: its presence means the set is complete


def load_signoff(path: Path, release: str) -> dict[str, Any]:
    """A release's signoff.json, valid against docs/schemas/signoff.schema.json, or SignoffError naming the key."""
    return read_json(path, "signoff", f"make the signoff again (`make signoff RELEASE={release}`)", SignoffError)


def summary(report: dict[str, Any], out_dir: Path) -> str:
    lines = [f"signoff {report['release']}: {report['verdict'].upper()} "
             f"({len(report['artifacts'])} artifacts; " + ", ".join(f"{n} {k}" for k, n in sorted(report['counts'].items())) + ")"]
    lines += [f"  blocking: {words}" for words in report["blocking"]]
    lines += [f"  waived:   {words}" for words in report["waived"]]
    lines.append(f"  report:   {out_dir}/signoff.html (.md, .json)")
    return "\n".join(lines)


# --- signatures ------------------------------------------------------------------------------------
def signoff_rows(folders: list[Path], public_key: Path | None = None, require: bool = False) -> list[dict[str, Any]]:
    """One `signature` row per artifact folder (never waivable).

    A signature is required when `require` is set or when any folder of the release is signed (a release is
    signed as a whole: a folder whose signature was removed blocks). Without a public key a signature
    cannot be checked: reported, and blocking only where signatures are required."""
    from pipeline.release.trust import Trust, verify_folder
    signed = [f for f in folders if (f / SIGNATURE_FILE).is_file()]
    required = require or bool(signed)
    if not signed and not required and public_key is None:
        return []
    rows = []
    for folder in folders:
        name = folder.name
        if not (folder / SIGNATURE_FILE).is_file():
            why = "the release requires signatures" if require else "other artifacts of this release are signed"
            rows.append(_row(name, "signature", "unsigned", False if required else None,
                             f"no {SIGNATURE_FILE}: {why}; sign the release (`make sign`)" if required else
                             "not signed (`make sign` signs a ready release)", waivable=False, required=required))
            continue
        if public_key is None:
            rows.append(_row(name, "signature", "unchecked", False if require else None,
                             "signed, but no public key was given to check it with (PUBLIC_KEY=keys/quantgate.pub)",
                             waivable=False, required=require))
            continue
        try:
            result = verify_folder(folder, Trust.of(public_key))
        except TrustError as error:
            rows.append(_row(name, "signature", "invalid", False, str(error), waivable=False))
            continue
        rows.append(_row(name, "signature", "verified", True, f"model-signing signature over all {result['files']} "
                         f"files and signed provenance verified with {public_key}", waivable=False))
    return rows


def release_settings(overrides: list[str]) -> ReleaseConfig:
    """ReleaseConfig with `release.KEY=VALUE` overrides, type-checked by OmegaConf against the dataclass."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    wrong = [item for item in overrides if not item.startswith("release.") or "=" not in item]
    if wrong:
        raise UsageError(f"{wrong[0]!r}: the signoff takes release settings as release.KEY=VALUE "
                         f"(keys: {', '.join(f.name for f in dataclasses.fields(ReleaseConfig))})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ReleaseConfig),
                                 OmegaConf.from_dotlist([item.removeprefix("release.") for item in overrides]))
    except OmegaConfBaseException as error:
        raise UsageError(f"release settings {' '.join(overrides)}: {str(error).splitlines()[0]}") from None
    settings = ReleaseConfig(**OmegaConf.to_container(merged))
    for key in ("max_latency_ratio", "max_size_ratio"):
        if getattr(settings, key) <= 0:
            raise UsageError(f"release.{key}={getattr(settings, key)} must be more than 0")
    return settings


def load_baseline(baseline: str, out_dir: Path) -> dict[str, Any]:
    """The previous release's signoff.json: a path to it (or its folder), else reports/<baseline>/ beside out_dir."""
    given = Path(baseline)
    for path in (given, given / "signoff.json", out_dir.parent / baseline / "signoff.json"):
        if path.is_file():
            return load_signoff(path, baseline)
    raise SignoffError(f"no signoff.json for the baseline {baseline!r} (looked in {given} and "
                       f"{out_dir.parent / baseline}): sign off that release first (`make signoff RELEASE={baseline}`)")


def main(argv: list[str] | None = None) -> int:
    """`quantgate signoff` (also `python -m pipeline.release.signoff`)."""
    from pipeline.commandline import run_command
    return run_command("quantgate signoff", _command, argv)


def _command(argv: list[str]) -> int:
    from pipeline.commandline import command_parser
    parser = command_parser("quantgate signoff", __doc__)
    parser.add_argument("--release", required=True, help="the release name (artifacts/<name>/ by default)")
    parser.add_argument("--artifacts-dir", type=Path, help="the release's artifact folder; default artifacts/<release>")
    parser.add_argument("--waivers", type=Path, help="waivers YAML; default conf/waivers/<release>.yaml if it exists")
    parser.add_argument("--out", type=Path, help="report folder; default reports/<release>")
    parser.add_argument("--today", type=date.fromisoformat, help="judge waiver expiry as of this date (YYYY-MM-DD)")
    parser.add_argument("--public-key", type=Path, help="check each artifact's signature with this public key")
    parser.add_argument("--require-signatures", action="store_true", help="an unsigned artifact blocks the release")
    parser.add_argument("--baseline", help="the previous release (reports/<baseline>/signoff.json, beside --out) or "
                        "its signoff.json: what changed since")
    parser.add_argument("overrides", nargs="*", metavar="release.KEY=VALUE",
                        help="release settings (pipeline/config/schema.py ReleaseConfig), e.g. release.max_latency_ratio=1.2")
    args = parser.parse_args(argv)
    release_dir = args.artifacts_dir or Path("artifacts") / args.release
    out_dir = args.out or Path("reports") / args.release
    settings = release_settings(args.overrides)
    baseline = load_baseline(args.baseline, out_dir) if args.baseline else None
    waivers = args.waivers or WAIVERS_DIR / f"{args.release}.yaml"
    if args.waivers and not args.waivers.is_file():
        raise SignoffError(f"the waivers file {args.waivers} does not exist")
    report = signoff(args.release, release_dir, waivers, args.today, args.public_key, args.require_signatures,
                     settings, baseline)
    write_report(report, out_dir)
    print(summary(report, out_dir))
    return ExitCode.OK if report["verdict"] == READY else ExitCode.FAILED


if __name__ == "__main__":
    raise SystemExit(main())

"""The verdict: every artifact folder of a release gathered (facts and rows), the release-wide findings, the
signatures, the waivers applied, and the one JSON-ready report: `ready` only when no row blocks.

A release is blocked by any failed row a valid waiver does not cover (pipeline/release/signoff/checks.py,
findings.py, completeness.py, signatures.py), and when it holds no artifact folder at all.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.config.schema import ReleaseConfig
from pipeline.manifest import MANIFEST_FILE, artifact_folders
from pipeline.release import journal
from pipeline.release.grid import grid
from pipeline.release.provenance import quantgate_source
from pipeline.release.signoff.completeness import completeness, matrix_rows
from pipeline.release.signoff.facts import inspect_artifact
from pipeline.release.signoff.findings import finding_rows
from pipeline.release.signoff.rows import BLOCKED, READY, RELEASE_ROWS, SCHEMA, Row, SignoffError
from pipeline.release.signoff.signatures import signature_rows
from pipeline.release.signoff.waivers import apply_waivers, load_waivers
from pipeline.release.trend import trend

FAILED = ("failed", "waiver_expired")


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
    journal.recover(release_dir)  # a `sign` killed half-way: rolled back, never judged half-signed
    waivers = load_waivers(waivers_path)
    artifacts, rows = gather(release_dir)
    matrix, build_rows = matrix_rows(release, release_dir, {a["name"]: a for a in artifacts})
    rows += build_rows + finding_rows(artifacts, settings)
    # Release trust (issue 18, pipeline/release/sign.py): a `signature` row per artifact once signatures are
    # required, given a key, or present; a missing or invalid signature is never waivable.
    if not signing:
        rows += signature_rows([Path(a["folder"]) for a in artifacts], public_key, require_signatures)
    apply_waivers(rows, waivers, today)
    report = judged_report(release, release_dir, artifacts, rows)
    report.update({
        "today": today.isoformat(),
        "waivers_file": str(waivers_path) if waivers_path and waivers_path.is_file() else None,
        "waivers": [w.to_json(today) for w in waivers], "matrix": matrix,
        "versions": version_groups(artifacts),
        "settings": {"release": dataclasses.asdict(settings)}, "quantgate": quantgate_commit(),
        "completeness": completeness(matrix, artifacts),
    })
    report["grid"] = grid(report, artifacts[0]["native_host"] if artifacts else {})
    report["trend"] = trend(report, baseline) if baseline else None
    return report


def gather(release_dir: Path) -> tuple[list[dict[str, Any]], list[Row]]:
    """Each artifact folder's facts, and all their rows, folder by folder."""
    artifacts, rows = [], []
    for folder in artifact_folders(release_dir):
        facts, artifact_rows = inspect_artifact(folder)
        artifacts.append(facts)
        rows += artifact_rows
    return artifacts, rows


def judged_report(release: str, release_dir: Path, artifacts: list[dict[str, Any]], rows: list[Row]) -> dict[str, Any]:
    """The verdict and what decided it: the blocking and waived rows in words, each artifact's own verdict, counts."""
    # each reason once: a release is read, not counted (two rows can say the same thing, e.g. a shared waiver)
    blocking = list(dict.fromkeys(blocking_words(r) for r in rows if r["outcome"] in FAILED))
    if not artifacts:
        blocking.insert(0, f"no artifact folders (with {MANIFEST_FILE}) in {release_dir}")
    for facts in artifacts:
        mine = [r for r in rows if r["artifact"] == facts["name"]]
        facts["verdict"] = BLOCKED if any(r["outcome"] in FAILED for r in mine) else \
            "ready (waived)" if any(r["outcome"] == "waived" for r in mine) else READY
    counts = {}
    for found in rows:
        counts[found["outcome"]] = counts.get(found["outcome"], 0) + 1
    return {
        "schema": SCHEMA, "release": release, "verdict": BLOCKED if blocking else READY,
        "generated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "release_dir": str(release_dir), "blocking": blocking,
        "waived": [f"{r['artifact']} / {r['profile']}: {r['status']}: {r['reason']} (waived by {r['waiver']['who']} "
                   f"until {r['waiver']['expires']}: {r['waiver']['reason']})" for r in rows if r["outcome"] == "waived"],
        "counts": counts, "artifacts": artifacts, "rows": rows,
        # combinations with no artifact folder (they did not build): rows without facts
        "missing": [{"name": name} for name in sorted({r["artifact"] for r in rows} - {a["name"] for a in artifacts}
                                                     - {RELEASE_ROWS})],
    }


def blocking_words(row: Row) -> str:
    where = f"{row['artifact']} / {row['profile']}"
    if row["outcome"] == "waiver_expired":
        w = row["waiver"]
        return f"{where}: {row['status']}: {row['reason']} (the waiver by {w['who']} expired on {w['expires']})"
    return f"{where}: {row['status']}: {row['reason']}"


def quantgate_commit() -> dict[str, Any]:
    """The quantgate checkout that judged the release: `git rev-parse HEAD`, `+dirty` when tracked files differ."""
    source = quantgate_source()
    commit = source["commit"] and source["commit"] + ("+dirty" if source["dirty"] else "")
    return {"commit": commit, "note": source.get("note")}


def version_groups(artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct set of library versions, and where it was used (build or a verification profile), labelled."""
    groups: dict[str, dict[str, Any]] = {}
    for facts in artifacts:
        for where, versions in facts["versions"].items():
            key = json.dumps(versions, sort_keys=True)
            group = groups.setdefault(key, {"versions": versions, "used_in": []})
            group["used_in"].append(f"{facts['name']}: {where}")
    label_groups(list(groups.values()))
    return list(groups.values())


def label_groups(groups: list[dict[str, Any]]) -> None:
    """A short column title per set: what kind of runs and how many, then whatever tells equal titles apart."""
    for group in groups:
        wheres = [u.split(": ", 1)[1] for u in group["used_in"]]
        kinds = sorted({"verification" if w.startswith("verify: ") else w for w in wheres})
        runs = sorted({w.removeprefix("verify: ") for w in wheres if w.startswith("verify: ")})
        group["label"] = f"{' + '.join(kinds)} ({len(wheres)} run(s)" + (f": {', '.join(runs)})" if runs else ")")
    labels = [group["label"] for group in groups]
    for group in groups:  # two sets of versions used the same way: name the artifacts to tell them apart
        if labels.count(group["label"]) > 1:
            group["label"] += ": " + ", ".join(dict.fromkeys(u.split(": ", 1)[0] for u in group["used_in"]))
    for number, group in enumerate(groups, 1):
        if labels.count(group["label"]) > 1 or [g["label"] for g in groups].count(group["label"]) > 1:
            group["label"] += f" (set {number})"

"""What changed since the previous release: its reports/<baseline>/signoff.json against this signoff, in words.

Fidelity per artifact x profile, latency and size ratios, new failures, and changed library versions; artifacts
that appeared or went away. Small figure noise (below the precision the report shows) is not a change."""
from __future__ import annotations

from typing import Any

FAILING = ("failed", "waiver_expired", "waived")


def _change(artifact: str, what: str, item: str, before, after, words: str) -> dict[str, Any]:
    return {"artifact": artifact, "what": what, "item": item, "before": before, "after": after, "words": words}


def _figure_changes(name: str, now: list[dict], then: list[dict]) -> list[dict[str, Any]]:
    before = {r["profile"]: r.get("figures") or {} for r in then}
    changes = []
    for row in now:
        old = before.get(row["profile"], {})
        for key, value in (row.get("figures") or {}).items():
            if isinstance(value, float) and isinstance(old.get(key), float) and abs(value - old[key]) >= 5e-5:
                changes.append(_change(name, "fidelity", f"{row['profile']} {key}", old[key], value,
                                       f"{row['profile']}: {key.replace('_', ' ')} {old[key]:.4f} -> {value:.4f}"))
    return changes


def _ratio_change(name: str, what: str, before: float | None, after: float | None) -> list[dict[str, Any]]:
    if before is None and after is None or before is not None and after is not None and abs(after - before) < 0.005:
        return []
    shown = lambda v: "not measured" if v is None else f"{v:.2f}x"  # noqa: E731
    return [_change(name, what, f"{what} int8/fp32", before, after, f"{what} int8/fp32 {shown(before)} -> {shown(after)}")]


def _version_changes(name: str, now: dict, then: dict) -> list[dict[str, Any]]:
    changes = []
    for where, libraries in now.items():
        old = then.get(where, {})
        for library, version in libraries.items():
            if library in old and old[library] != version:
                changes.append(_change(name, "versions", f"{where}: {library}", old[library], version,
                                       f"{where}: {library} {old[library]} -> {version}"))
    return changes


def trend(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The changes of `report` against the `baseline` signoff (both signoff.json dicts)."""
    then = {a["name"]: a for a in baseline["artifacts"]}
    changes = []
    for facts in report["artifacts"]:
        name, old = facts["name"], then.get(facts["name"])
        if old is None:
            changes.append(_change(name, "artifact", "artifact", None, name, "new in this release"))
            continue
        rows = [r for r in report["rows"] if r["artifact"] == name]
        changes += _figure_changes(name, rows, [r for r in baseline["rows"] if r["artifact"] == name])
        changes += _ratio_change(name, "latency", (old.get("latency") or {}).get("p50_ratio"),
                                 (facts["latency"] or {}).get("p50_ratio"))
        changes += _ratio_change(name, "size", old["size"]["ratio"], facts["size"]["ratio"])
        changes += _version_changes(name, facts["versions"], old.get("versions") or {})
    gone = sorted(set(then) - {a["name"] for a in report["artifacts"]})
    changes += [_change(name, "artifact", "artifact", name, None, f"in {baseline['release']}, not in this release")
                for name in gone]
    failed_before = {(r["artifact"], r["profile"]) for r in baseline["rows"] if r["outcome"] in FAILING}
    new_failures = [f"{r['artifact']} / {r['profile']}: {r['status']}: {r['reason']}" for r in report["rows"]
                    if r["outcome"] in FAILING and (r["artifact"], r["profile"]) not in failed_before]
    return {"baseline": baseline["release"], "baseline_verdict": baseline["verdict"],
            "baseline_generated_utc": baseline["generated_utc"], "changes": changes, "new_failures": new_failures}

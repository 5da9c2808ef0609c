"""The signoff at a glance: an artifact x CPU profile grid (columns ordered by capability), and the same cells as
JUnit XML for CI. Each cell is judged from the signoff's rows, so the grid, the JUnit file and the verdict agree."""
from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from pipeline.isa.targets import PROFILES

BLOCKS = ("failed", "waiver_expired")
NOT_VERIFIED = "not verified"


def host_microarchitecture(features: list[str], build_host: dict[str, Any] | None) -> str | None:
    """The name of the host verification ran on: the build host's microarchitecture when the CPU features match
    (verification during the build), else archspec's most specific microarchitecture with those features."""
    build_host = build_host or {}
    if set(build_host.get("host_cpu_features") or []) == set(features):
        return build_host.get("host_microarchitecture")
    import archspec.cpu
    built_on = archspec.cpu.TARGETS.get(build_host.get("host_microarchitecture") or "")
    family = built_on.family.name if built_on else "x86_64"
    fits = [t for t in archspec.cpu.TARGETS.values() if t.family.name == family and features
            and set(t.features) <= set(features)]
    return max(fits, key=lambda t: (len(t.features), len(t.ancestors))).name if fits else None


def profile_columns(rows: list[dict[str, Any]], native: dict[str, Any]) -> list[dict[str, Any]]:
    """Every CPU profile any artifact was verified on, fewest CPU features first (below-floor CPUs left, the
    native host right); `native` carries the host's microarchitecture and feature count. `where` tells real
    machines from emulated ones: `this host`, `lab host` (an ssh profile) or `emulated` (QEMU)."""
    columns = {}
    for name in dict.fromkeys(r["profile"] for r in rows if r["cpu"]):
        cpu = name.split("@")[0]
        evidence = [r.get("evidence") or {} for r in rows if r["cpu"] and r["profile"] == name]
        where = profile_where(cpu, evidence)
        if cpu == "native":
            label, rank = f"{name} ({native.get('microarchitecture') or 'host'})", native.get("features") or 0
        else:
            features = PROFILES[cpu].features() if cpu in PROFILES else None
            label, rank = name, len(features or ())
            if where == "lab host":
                address = next((str(e["runtime"]["name"]).partition(":")[0] for e in evidence
                                if (e.get("runtime") or {}).get("name")), "")
                label += f" ({address})" if address else ""
        columns[name] = {"name": name, "label": label, "features": rank, "where": where}
    return sorted(columns.values(), key=lambda c: (c["features"], c["name"]))


def profile_where(cpu: str, evidence: list[dict[str, Any]]) -> str:
    """`this host`, `lab host` or `emulated`, from what the profile's runs recorded (a lab host's CPU was read
    there; an emulated run's command starts QEMU), else from the profile's YAML when it is known here."""
    if cpu == "native":
        return "this host"
    if any(e.get("host") for e in evidence):
        return "lab host"
    if any("qemu" in str(e.get("command") or "") for e in evidence):
        return "emulated"
    kind = getattr(PROFILES[cpu], "kind", None) if cpu in PROFILES else None
    return {"ssh": "lab host", "native": "this host"}.get(str(kind), "emulated")


def cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """pass / fail / refused / waived / not verified, from the rows of one artifact x profile."""
    if not rows:
        return {"state": NOT_VERIFIED, "blocking": False, "samples": None, "anchor": None, "reason": "not planned"}
    main = rows[0]
    blocking = any(r["outcome"] in BLOCKS for r in rows)
    if blocking:
        state = "refused" if main["status"] == "refused_by_guard" else "fail"
    elif any(r["outcome"] == "waived" for r in rows):
        state = "waived"
    else:
        state = {"pass": "pass", "refused_by_guard": "refused", "not_verified": NOT_VERIFIED}.get(main["status"], "fail")
    reasons = "; ".join(r["reason"] for r in rows if r["outcome"] != "ok" and r["reason"])
    return {"state": state, "blocking": blocking, "samples": main.get("samples"), "anchor": main["anchor"],
            "reason": reasons or main["reason"]}


def grid(report: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
    """Rows: every artifact, built or not; columns: CPU profiles; `checks`: the rows that are no CPU profile."""
    rows = report["rows"]
    columns = profile_columns(rows, native)
    lines = []
    for name in [a["name"] for a in report["artifacts"]] + [m["name"] for m in report["missing"]]:
        mine = [r for r in rows if r["artifact"] == name]
        cells = {c["name"]: cell([r for r in mine if r["cpu"] and r["profile"] == c["name"]]) for c in columns}
        if not any(r["cpu"] for r in mine):  # never built or never verified: every column says so, and links why
            why = next((r for r in mine if r["outcome"] in BLOCKS), None)
            cells = {c: v | {"reason": why["reason"] if why else "no verification of this artifact",
                             "anchor": why and why["anchor"]} for c, v in cells.items()}
        checks = [{"check": r["profile"], "status": r["status"], "outcome": r["outcome"], "anchor": r["anchor"],
                   "blocking": r["outcome"] in BLOCKS} for r in mine if not r["cpu"]]
        lines.append({"artifact": name, "cells": cells, "checks": checks,
                      "checks_blocking": any(check["blocking"] for check in checks)})
    return {"columns": columns, "rows": lines}


def junit_xml(report: dict[str, Any]) -> bytes:
    """One testcase per artifact x CPU profile (classname: artifact, name: profile), then one per other check:
    a failure with the reason where the release is blocked, skipped where not verified or waived."""
    cases = []
    for line in report["grid"]["rows"]:
        for profile, c in line["cells"].items():
            outcome = "failure" if c["blocking"] else "skipped" if c["state"] in (NOT_VERIFIED, "waived") else None
            cases.append((line["artifact"], profile, outcome, f"{c['state']}: {c['reason']}"))
        for check in line["checks"]:
            row = next(r for r in report["rows"] if r["anchor"] == check["anchor"])
            outcome = "failure" if row["outcome"] in BLOCKS else "skipped" if row["outcome"] == "waived" else None
            cases.append((line["artifact"], f"check: {check['check']}", outcome, f"{row['status']}: {row['reason']}"))
    in_grid = {line["artifact"] for line in report["grid"]["rows"]}
    for row in report["rows"]:  # checks of the release as a whole (its matrix.json)
        if row["artifact"] not in in_grid:
            outcome = "failure" if row["outcome"] in BLOCKS else "skipped" if row["outcome"] == "waived" else None
            cases.append((row["artifact"], f"check: {row['profile']}", outcome, f"{row['status']}: {row['reason']}"))
    suite = ElementTree.Element("testsuite", name=f"quantgate.signoff.{report['release']}", tests=str(len(cases)),
                                failures=str(sum(c[2] == "failure" for c in cases)),
                                skipped=str(sum(c[2] == "skipped" for c in cases)), timestamp=report["generated_utc"])
    for classname, name, outcome, message in cases:
        case = ElementTree.SubElement(suite, "testcase", classname=classname, name=name)
        if outcome:
            ElementTree.SubElement(case, outcome, message=message).text = message
    ElementTree.indent(suite)
    return ElementTree.tostring(ElementTree.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True)

"""verify.json in a few lines for the terminal: one row per profile, then the padding check, the emulated samples
and the notes."""
from __future__ import annotations


def format_table(report: dict) -> str:
    rows = [("profile", "expected", "status", "ok", "n", "time", "detail")]
    for name, p in report["profiles"].items():
        figures = p.get("fidelity") or {}
        detail = ", ".join(f"{key} {figures[key]:.4g}" for key in (
            "cosine_mean", "cosine_worst", "top1_agreement", "label_set_agreement", "decision_agreement",
            "score_correlation", "accuracy", "macro_f1", "detection_recall", "detection_precision",
            "near_empty_error_worst", "max_scaled_error", "state_drift") if key in figures)
        comparison = p.get("cpu_comparison") or {}
        if comparison.get("divergence") is not None:
            detail += f", vs {comparison['reference_cpu']} {comparison['divergence']:.3g}x scale"
        if p["status"] != "pass" or not detail:
            detail = p["reason"]
        if "this CPU lacks:" in detail:  # the guard's message: the missing features are the news
            detail = "guard: lacks " + detail.split("this CPU lacks:")[1].split(".")[0].strip()
        if "fp32" in (p.get("latency") or {}):
            detail += f"; batch-1 p50 int8 {p['latency']['int8']['p50_ms']:.3g} ms, fp32 {p['latency']['fp32']['p50_ms']:.3g} ms"
        ok = "yes" if p["requirement_met"] else ("no" if p["required"] else "info")
        rows.append((name, p["expected"], p["status"], ok, str(p.get("samples") or "-"),
                     f"{p.get('wall_seconds', 0):.1f}s", detail[:160]))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = [f"verify {report['target']}: {report['status'].upper()}  {report['artifact']['path']}"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[6] for row in rows]
    padding = report.get("padding") or {}
    if padding:
        lines.append(f"  padding invariance: {padding['status']}: {padding['reason']}")
    selection = report.get("sample_selection") or {}
    if selection:
        lines.append(f"  emulated samples {selection['emulated']}: {selection['why']}")
    return "\n".join(lines + [f"  note: {note}" for note in report["notes"]])

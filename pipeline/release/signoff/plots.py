"""The report's figures, as PNG bytes (embedded in signoff.html, beside signoff.md): each CPU profile's fidelity
margin to its thresholds, int8/fp32 latency and size per artifact, and `make bench`'s ratios when it ran.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from pipeline.release.signoff.figures import MARGINS
from pipeline.release.signoff.rows import Row

OUTCOME_COLOURS = {"ok": "#2e7d32", "waived": "#f9a825", "info": "#9e9e9e"}  # anything else: red


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fidelity_rows(rows: list[Row]) -> list[Row]:
    """The rows fidelity.png shows: every CPU profile that ran and measured fidelity, judged or not (an emulated
    profile's few samples leave the figures of the whole held-out set unjudged: shown as such, never left out)."""
    return [r for r in rows if r.get("cpu") and (r.get("margins") or r.get("figures"))]


def plots(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of: fidelity per artifact x profile against its threshold; latency and size int8/fp32."""
    return fidelity_plot(report["rows"]) | ratios_plot(report)


def fidelity_plot(rows: list[Row]) -> dict[str, bytes]:
    """fidelity.png: per metric, each profile's margin to its threshold (below 0: past it)."""
    measured = fidelity_rows(rows)
    metrics = [m for m, _, _ in MARGINS if any(m in r["margins"] for r in measured)]
    if not metrics:
        return {}
    plt = pyplot()
    figure, axes = plt.subplots(len(metrics), 1, figsize=(8, sum(0.45 * len(measured) + 1.1 for _ in metrics)),
                                squeeze=False)
    for axis, metric in zip(axes[:, 0], metrics):
        values = [r["margins"].get(metric, 0.0) for r in measured]
        colors = [OUTCOME_COLOURS.get(r["outcome"], "#c62828") for r in measured]
        axis.barh(range(len(measured)), values, color=colors, height=0.6)
        axis.axvline(0.0, color="black", linewidth=1.5)
        for y, (row, value) in enumerate(zip(measured, values)):
            words = f" {value:+.4g}" if metric in row["margins"] else " not judged on these samples"
            axis.text(value, y, words, va="center", fontsize=8)
        axis.set_yticks(range(len(measured)), [f"{r['artifact']} / {r['profile']}" for r in measured], fontsize=8)
        axis.invert_yaxis()
        limit = next(limit for figure_key, limit, _ in MARGINS if figure_key == metric)
        axis.set_title(f"{metric}, worst case: margin to verify.{limit} (below 0: past it)", fontsize=9)
        span = max(abs(v) for v in values) or 1e-3
        axis.set_xlim(min(0.0, min(values)) - 0.25 * span, max(0.0, max(values)) + 0.35 * span)
    figure.suptitle("Fidelity margin to each threshold, per artifact and CPU profile", fontsize=11)
    return {"fidelity.png": png(figure, plt)}


def ratios_plot(report: dict[str, Any]) -> dict[str, bytes]:
    """ratios.png: int8/fp32 latency p50 (native, batch 1) and file size per artifact, against the release limits."""
    if not report["artifacts"]:
        return {}
    plt = pyplot()
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
    return {"ratios.png": png(figure, plt)}


def png(figure, plt) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


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
    plt = pyplot()
    batches = [str(b) for b in bench["settings"]["batches"]]
    figure, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 0.6 * len(cases) * len(BENCH_SERIES) + 1.6),
                                sharey=True, squeeze=False)
    for axis, batch in zip(axes[0], batches):
        bench_axis(axis, batch, cases)
    axes[0][0].invert_yaxis()
    figure.suptitle(f"make bench on {bench.get('host', {}).get('cpu') or 'this host'} (interleaved runs, one process)",
                    fontsize=10)
    return {"bench.png": png(figure, plt)}


BENCH_SERIES = (("int8 / fused fp32", "int8_vs_fp32_p50", "#1565c0"),
                ("plain quantize_dynamic / fused fp32", "plain_int8_vs_fp32_p50", "#9e9e9e"),
                ("int8 GEMM floor (this host)", "int8_vs_fp32_gemm_floor", "#2e7d32"))


def bench_axis(axis, batch: str, cases: list[dict[str, Any]]) -> None:
    """One batch's bars: each artifact's ratios (BENCH_SERIES) that the bench measured."""
    labels, values, colours = [], [], []
    for case in cases:
        for title, key, colour in BENCH_SERIES:
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

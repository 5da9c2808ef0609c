"""The release signoff: every artifact folder of a release judged, and written up for a person and for CI
(`quantgate signoff`, whose options are parsed in pipeline/commands/signoff.py).

The report is reports/<name>/signoff.md, signoff.html (self-contained: plots embedded, no network), signoff.json
(the same facts) and signoff.junit.xml (one testcase per artifact x CPU profile); the verdict is `ready` or
`blocked`.

A release is blocked by any of: a file whose bytes no longer match its manifest (never waivable:
rebuild), a verify.json made for other bytes (never waivable), an artifact never verified, a required
CPU profile that did not meet its requirement, the target's floor CPU not verified at all, a missing, empty or
malformed matrix.json or a combination asked for that is not in the release, a folder whose name, manifest and
stamp disagree (never waivable), a model left mostly fp32, int8 slower than fp32 beyond release.max_latency_ratio
and beyond the timings' noise, or a waiver that covers one of these but has expired. A valid waiver turns a
failure into `waived`. The checks of the evidence itself are in pipeline/release/evidence.py.

One concern per module:

    rows.py          a row (artifact x profile or check), the verdict words, SignoffError
    figures.py       a profile's figures in words, their margins, the native latency
    checks.py        one artifact folder's evidence, and the registered checks that turn it into rows
    facts.py         one artifact folder's facts for the report (`inspect_artifact`: facts and rows)
    findings.py      the registered findings on each artifact's facts: latency, size, build-time speed
    completeness.py  matrix.json against the release folder
    signatures.py    each folder's signature
    waivers.py       waivers read and applied
    verdict.py       all of it gathered and judged: `signoff()` returns the report
    plots.py         the report's PNGs
    rendering.py     the report written (Markdown, HTML, JUnit, JSON) and summed up
    baseline.py      a signoff.json read back (for `sign`, and as the next release's baseline)
"""
from pipeline.release.signoff.baseline import load_baseline, load_signoff
from pipeline.release.signoff.facts import inspect_artifact
from pipeline.release.signoff.figures import MARGINS, fidelity_words, latency_figures, margins
from pipeline.release.signoff.findings import (FINDINGS, MIN_MEASURABLE_MS, build_speed_rows, latency_rows,
                                               noise_margin, size_rows)
from pipeline.release.signoff.plots import bench_plot, fidelity_rows, plots
from pipeline.release.signoff.rendering import render, summary, write_report
from pipeline.release.signoff.rows import BLOCKED, JUNIT_FILE, READY, SignoffError, row
from pipeline.release.signoff.verdict import signoff
from pipeline.release.signoff.waivers import WAIVERS_DIR, Waiver, apply_waivers, load_waivers

__all__ = ["BLOCKED", "FINDINGS", "JUNIT_FILE", "MARGINS", "MIN_MEASURABLE_MS", "READY", "WAIVERS_DIR", "SignoffError",
           "Waiver", "apply_waivers", "bench_plot", "build_speed_rows", "fidelity_rows", "fidelity_words",
           "inspect_artifact", "latency_figures", "latency_rows", "load_baseline", "load_signoff", "load_waivers",
           "margins", "noise_margin", "plots", "render", "row", "signoff", "size_rows", "summary", "write_report"]

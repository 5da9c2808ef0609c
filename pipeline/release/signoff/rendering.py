"""The report on disk: signoff.md and signoff.html (one Jinja template each, pipeline/release/templates/; plots
embedded in the HTML), signoff.junit.xml, the PNGs, and signoff.json last (its presence means the set is
complete); and the verdict's summary for the terminal.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from pipeline.manifest import atomic_write_bytes, atomic_write_json
from pipeline.release.grid import junit_xml
from pipeline.release.signoff.plots import bench_plot, plots
from pipeline.release.signoff.rows import JUNIT_FILE, mb


def render(report: dict[str, Any], images: dict[str, bytes]) -> tuple[str, str]:
    """(markdown, html) from the same report dict."""
    import jinja2
    environment = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.release", "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "html.j2"]), trim_blocks=True,
                                     lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    environment.filters["mb"] = mb
    environment.filters["pct"] = lambda value: "-" if value is None else f"{100 * value:.2f}%"
    environment.filters["step"] = lambda step: ", ".join(f"{key.replace('_', ' ')} {value:.4f}" for key, value
                                                         in step.items() if isinstance(value, float))
    environment.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # Markdown tables
    environment.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    embedded = {name: base64.b64encode(data).decode() for name, data in images.items()}
    markdown = environment.get_template("signoff.md.j2").render(r=report, images=sorted(images))
    html = environment.get_template("signoff.html.j2").render(r=report, images=embedded)
    return markdown, html


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


def summary(report: dict[str, Any], out_dir: Path) -> str:
    """The verdict in a few lines: counts, each blocking and waived row, where the report is."""
    lines = [f"signoff {report['release']}: {report['verdict'].upper()} "
             f"({len(report['artifacts'])} artifacts; " + ", ".join(f"{n} {k}" for k, n in sorted(report['counts'].items())) + ")"]
    lines += [f"  blocking: {words}" for words in report["blocking"]]
    lines += [f"  waived:   {words}" for words in report["waived"]]
    lines.append(f"  report:   {out_dir}/signoff.html (.md, .json)")
    return "\n".join(lines)

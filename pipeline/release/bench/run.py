"""One `quantgate bench` run: find the release's artifact folders, name each one's subject (subjects.py), let each
subject measure its folders, and write the report (report.py)."""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.manifest import MANIFEST_FILE, Manifest, artifact_folders
from pipeline.release.bench.report import write_report
from pipeline.release.bench.settings import BenchSettings
from pipeline.release.bench.subjects import SUBJECTS, subject_of
from pipeline.timing import WARMUP


def no_artifacts_message(root: Path, release: str) -> str:
    """Why there is nothing to bench in `root`, and the command that gives it something: the release's matrix, or
    the artifact folders `make quantize` wrote beside it (artifacts/<model>-<mode>-<target>/, not in a release)."""
    built = artifact_folders(root.parent)
    fix = f"build the release first (`make matrix RELEASE={release}`)"
    if built:
        fix += f", or bench one artifact folder: `make bench ARTIFACTS={built[0]}`"
    return f"no artifact folders in {root}: {fix}"


def by_subject(folders: list[Path]) -> tuple[dict[str, list[Path]], list[dict[str, str]]]:
    """(subject -> its folders, in the registry's order; the folders no subject benches, with why)."""
    found: dict[str, list[Path]] = {name: [] for name in SUBJECTS}
    skipped = []
    for folder in folders:
        manifest = Manifest.load(folder)
        name = subject_of(manifest)
        if SUBJECTS[name].subject is None:
            skipped.append({"artifact": folder.name,
                            "reason": f"{manifest.model_file} {SUBJECTS[name].not_benched}"})
            print(f"bench: {folder.name}: skipped: {skipped[-1]['reason']}", flush=True)
        else:
            found[name].append(folder)
    return {name: members for name, members in found.items() if members}, skipped


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() says only "x86_64" there)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    named = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return named or platform.processor() or platform.machine()


def host() -> dict[str, Any]:
    import onnxruntime as ort
    return {"cpu": cpu_name(), "cores": os.cpu_count(),
            "onnxruntime": ort.__version__, "python": platform.python_version()}


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure every artifact folder under settings.root, write results.json and results.md, return the report."""
    root = settings.root
    folders = [root] if (root / MANIFEST_FILE).is_file() else artifact_folders(root)
    if not folders:
        raise InputError(no_artifacts_message(root, settings.release))
    subjects, skipped = by_subject(folders)
    if not subjects:
        raise InputError(f"no ONNX artifact in {root} to bench ({len(skipped)} export=aoti package(s)); bench "
                         f"compares ONNX artifacts with their fp32 graph: build with export=onnx (the default)")
    report: dict[str, Any] = {
        "schema": "quantgate.bench/3", "host": host(),
        "settings": settings.as_json() | {"graph_optimization_level": "ORT_ENABLE_ALL", "warmup": WARMUP},
        "subjects": {name: [folder.name for folder in members] for name, members in subjects.items()},
        "artifacts": [], "side_by_side": [], "decoders": [], "skipped": skipped,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantgate-bench-") as work:
        for name, members in subjects.items():
            for section, entries in SUBJECTS[name].subject.bench(members, settings, Path(work)).items():
                report[section] += entries
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, settings.out)
    return report

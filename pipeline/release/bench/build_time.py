"""`quantgate bench --build-time N`: how long building an artifact takes, with the fp32 reference exported anew and
from the reference cache (pipeline/builder/reference_cache.py), each rebuild its own `quantgate build` process."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, QuantgateError
from pipeline.manifest import Manifest

# Overrides a rebuild replaces: where it is written, how it is verified (off), and the reference cache (both ways).
REBUILD_DROPS = ("out=", "artifacts_dir=", "verify.", "reference_cache=", "hydra.")


def build_time(folder: Path, manifest: Manifest, work: Path, runs: int) -> dict[str, Any]:
    """Rebuild `folder`'s artifact `runs` times with its reference exported anew and `runs` times from the
    reference cache, in turn (after one build that fills the cache): seconds of each `quantgate build` process and
    the stage seconds of its manifest."""
    if manifest.build is None:
        raise InputError(f"{folder} records no build overrides (not built by `quantgate build`): --build-time cannot "
                         f"rebuild it")
    overrides = [o for o in manifest.build.config_overrides if not o.startswith(REBUILD_DROPS)]

    def once(label: str, *extra: str) -> tuple[float, Manifest]:
        out = work / f"{folder.name}-{label}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "pipeline.cli", "build", *overrides, "verify.enabled=false", f"out={out}",
                   f"hydra.run.dir={work / 'runs' / label}", *extra]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise QuantgateError(f"bench --build-time: rebuilding {folder.name} failed (exit {result.returncode}): "
                                 f"{last}")
        built = Manifest.load(out)
        shutil.rmtree(out)
        return seconds, built

    print(f"bench: {folder.name}: build time, {runs} x 2 rebuilds ...", flush=True)
    once("fill-cache")
    anew, cached = [], []
    for _ in range(runs):
        anew.append(once("anew", "reference_cache=false"))
        cached.append(once("cached"))
    median = {name: statistics.median(seconds for seconds, _ in results)
              for name, results in (("anew", anew), ("cached", cached))}
    return {"runs": runs, "command_seconds": {"anew": [round(s, 2) for s, _ in anew],
                                              "cached": [round(s, 2) for s, _ in cached]},
            "median_seconds": {name: round(value, 2) for name, value in median.items()},
            "cached_vs_anew": median["cached"] / median["anew"],
            "reference_cache": cached[-1][1].reference_cache,
            "stage_seconds": {"anew": anew[-1][1].build.stage_seconds, "cached": cached[-1][1].build.stage_seconds}}

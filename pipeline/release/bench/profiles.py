"""Where the time goes: the kernel time of each graph by operator type (onnxruntime's profiler, through
pipeline/timing.py op_type_profile), and the lines results.md shows of it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.timing import op_type_profile

PROFILE_TOP = 6  # operator types listed per graph in results.md


def profiles(models: dict[str, Path], feed: dict[str, np.ndarray], threads: int, work: Path,
             **context: Any) -> dict[str, Any]:
    """{**context, name: {profiled_runs, share_by_op_type}} for each graph in `models`, run on `feed`."""
    return {**context, **{name: op_type_profile(path, feed, threads, work) for name, path in models.items()}}


def top_op_types(profile: dict[str, Any], count: int = PROFILE_TOP) -> list[str]:
    """The operator types that took the most kernel time, most first."""
    return list(profile["share_by_op_type"])[:count]


def profile_line(label: str, profile: dict[str, Any]) -> str:
    """`- label: MatMulNBits 61%, GroupQueryAttention 20%, ...` (shares of the kernel time: the timed runs, not the
    profiled ones, give the milliseconds)"""
    top = list(profile["share_by_op_type"].items())[:PROFILE_TOP]
    return f"- {label}: " + ", ".join(
        f"{op} {share:.0%}" for op, share in top)

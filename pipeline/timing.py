"""Timing onnxruntime sessions against each other in one process: the session options every timed run uses, runs
interleaved so that load from other processes falls on all sessions alike, the spread of their paired ratios (the
noise a verdict "slower" must clear), and the time per operator type from onnxruntime's profiler.

Shared by the build's speed stage (pipeline/builder/speed.py) and `quantgate bench` (pipeline/release/bench/).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from calibration import layout

WARMUP = 3
MIN_REPEATS, MAX_REPEATS = 5, 200


def session_options(threads: int):
    """The timed runs' onnxruntime options: all graph optimizations, `threads` intra-op threads that do not spin when
    idle. The models' runs are interleaved, and a spinning pool takes the cores from the next model's run (MiniLM
    fp32 at batch 1 measured 65.6 ms p50 interleaved with spinning, 19.8 ms without, 20.5 ms alone); on a VNNI host
    spinning slowed int8 even alone (MiniLM dynamic, batch 1: 12.6 ms spinning, 9.1 ms not)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def session(model: Path | bytes, threads: int):
    """An onnxruntime session on a model file or serialized model, with the timed runs' options."""
    import onnxruntime as ort
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), session_options(threads),
                                providers=["CPUExecutionProvider"])


def batch_of(inputs: dict[str, np.ndarray], size: int, axes: dict | None = None) -> dict[str, np.ndarray]:
    """`size` held-out samples (repeated when there are fewer): real data, not zeros, so kernels see real ranges.
    `axes`: each input's batch axis when not axis 0 (manifest.batch_axes["inputs"]; None: given once)."""
    return layout.take(inputs, np.arange(size) % layout.count(inputs, axes), axes)


def interleaved_times(sessions: dict[str, Any], feed: dict[str, np.ndarray], seconds: float,
                      min_repeats: int = MIN_REPEATS, max_repeats: int = MAX_REPEATS) -> dict[str, list[float]]:
    """Seconds of each run of each session on `feed`, the runs interleaved (a, b, c, a, b, c, ...) after warm-up:
    at least `min_repeats` rounds, then more until about `seconds` per session or `max_repeats` rounds."""
    for sess in sessions.values():
        for _ in range(WARMUP):
            sess.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    first = next(iter(times))
    deadline = time.perf_counter() + seconds * len(sessions)
    while len(times[first]) < min_repeats or (len(times[first]) < max_repeats and time.perf_counter() < deadline):
        for name, sess in sessions.items():
            started = time.perf_counter()
            sess.run(None, feed)
            times[name].append(time.perf_counter() - started)
    return times


def figures(times: list[float], batch: int) -> dict[str, float]:
    """p50, p95 (ms), repeats and throughput of one session's run times."""
    p50, p95 = np.percentile(np.asarray(times) * 1000.0, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "repeats": len(times),
            "throughput_per_s": float(batch / (p50 / 1000.0))}


def time_interleaved(sessions: dict[str, Any], feed: dict[str, np.ndarray], seconds: float,
                     batch: int | None = None) -> dict[str, dict]:
    """Latency figures of each session on `feed`, their runs interleaved; about `seconds` per session. `batch`: the
    examples in `feed` when its first input's axis 0 is not the batch (a recurrent state)."""
    batch = batch or len(next(iter(feed.values())))
    return {name: figures(values, batch) for name, values in interleaved_times(sessions, feed, seconds).items()}


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """The median of the per-round ratios of two interleaved sessions' run times, with a 95% confidence interval
    (distribution-free, from order statistics of the rounds): the noise the load of a shared machine puts on it.
    A ratio whose interval lies wholly above 1 is slower beyond noise."""
    ratios = np.sort(np.asarray(numerator) / np.asarray(denominator))
    n = len(ratios)
    half_width = 0.98 * math.sqrt(n)  # 1.96 / 2 * sqrt(n): the binomial interval of the median's rank
    low, high = max(0, math.floor(n / 2 - half_width)), min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return {"ratio": float(np.median(ratios)), "low": float(ratios[low]), "high": float(ratios[high]), "rounds": n}


PROFILE_SECONDS = 0.2  # profiled runs after warm-up: at least MIN_REPEATS, then until about this long


def op_type_profile(path: Path, feed: dict[str, np.ndarray], threads: int, work: Path,
                    seconds: float = PROFILE_SECONDS) -> dict[str, Any]:
    """Where the time goes: kernel time per operator type (onnxruntime's profiler) as shares of the total, most first,
    over WARMUP runs not counted and then at least MIN_REPEATS runs and about `seconds`. Shares only: the profiler's
    own cost per node inflates a small model's kernel time (a tiny decoder's step: 0.09 ms of kernels profiled
    against 0.038 ms timed, with 3 or 300 profiled runs alike); the timed runs give the milliseconds."""
    import onnxruntime as ort
    options = session_options(threads)  # as the timed runs: a spinning pool slows int8 (session_options)
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"profile-{path.stem}")
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(WARMUP):
        sess.run(None, feed)
    runs, deadline = 0, time.perf_counter() + seconds
    while runs < MIN_REPEATS or (runs < MAX_REPEATS and time.perf_counter() < deadline):
        sess.run(None, feed)
        runs += 1
    profile_file = Path(sess.end_profiling())
    events = json.loads(profile_file.read_text())
    profile_file.unlink(missing_ok=True)
    run_ends = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    warm_up_end = run_ends[WARMUP - 1] if len(run_ends) >= WARMUP else 0  # allocating and tuning: not counted
    by_op: dict[str, float] = {}
    for event in events:
        if (event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
                and event.get("ts", 0) >= warm_up_end):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"]
    total = sum(by_op.values()) or 1.0
    shares = {op: round(micros / total, 4) for op, micros in sorted(by_op.items(), key=lambda item: -item[1])}
    return {"profiled_runs": runs, "share_by_op_type": shares}

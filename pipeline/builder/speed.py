"""Stage 3c, speed: what int8 bought on the build host. int8 and the fp32 reference are timed in one process, their
runs interleaved (pipeline/timing.py), at each of speed.batches on held-out samples; the size ratio of the files.
int8 slower than fp32 beyond the noise of the rounds, or larger, is a build warning in words with its cause (the
operator type where int8 spends its time, and what avoids it); a model that fp32 runs in well under a millisecond is
said to be too small to time rather than judged. Figures go to manifest.json (`speed`), never into the artifact.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.manifest import Manifest, SpeedRecord
from pipeline.progress import say
from pipeline.timing import batch_of, interleaved_times, op_type_profile, paired_ratio, session

# Where a slow int8 graph spends its time -> why, and what is faster. Looked up by the int8 graph's top op type.
SLOW_CAUSES = {
    "ConvInteger": "dynamic mode runs convolutions as ConvInteger, slower than fp32's convolutions; static mode "
                   "quantizes convolutions to QLinearConv (mode=static, or mode=auto)",
    "MatMulInteger": "dynamic mode quantizes each MatMul's activations at every run; static mode fixes their ranges "
                     "at build time (mode=static)",
    "DynamicQuantizeLinear": "dynamic mode quantizes activations at every run, and the work between its GEMMs "
                             "dominates; mode=static fixes the ranges at build time",
    "DynamicQuantizeMatMul": "this host's int8 GEMMs are no faster than its fp32 ones on these shapes (no VNNI?)",
    "QuantizeLinear": "Q/DQ pairs around operators onnxruntime runs in fp32: the conversions cost more than the int8 "
                      "kernels save; keep those nodes fp32 (mode.nodes_to_exclude) or use mode=dynamic",
    "DequantizeLinear": "weights or activations dequantized at run time around operators with no int8 kernel (Constant "
                        "weights, or op types without a QDQ rule): keep those nodes fp32 (mode.nodes_to_exclude)",
}
SLOW_CAUSES["QLinearConv"] = "this host's int8 convolutions are no faster than its fp32 ones on these shapes"


def judge(first: dict[str, float], fp32_ms: float, min_timeable_ms: float) -> str:
    """faster | within_noise | slower | too_small_to_time, from the first batch's paired ratio and fp32's p50."""
    if fp32_ms < min_timeable_ms:
        return "too_small_to_time"
    if first["low"] > 1.0:
        return "slower"
    return "faster" if first["high"] < 1.0 else "within_noise"


def slow_cause(shares: dict[str, float]) -> str:
    """Where int8 spends its time, in words: the op type with a known cause (SLOW_CAUSES) that takes the most of it,
    else the op type that does; its share, and what is faster."""
    if not shares:
        return "onnxruntime's profiler recorded no kernel time"
    known = [(op, share) for op, share in shares.items() if op in SLOW_CAUSES]
    op, share = max(known, key=lambda item: item[1]) if known else next(iter(shares.items()))
    return f"{op}: {share:.0%} of int8 time" + (f"; {SLOW_CAUSES[op]}" if op in SLOW_CAUSES else "")


def fp32_weight_bytes(path: Path) -> tuple[int, int]:
    """(bytes of fp32 initializers, bytes of all initializers) of an ONNX graph: what stayed fp32."""
    import onnx
    from onnx import TensorProto
    model = onnx.load(str(path))
    total = floats = 0
    for tensor in model.graph.initializer:
        size = onnx.numpy_helper.to_array(tensor).nbytes
        total += size
        floats += size if tensor.data_type == TensorProto.FLOAT else 0
    return floats, total


def words(record: SpeedRecord, batches: list[int], int8_file: Path) -> dict[str, str]:
    """What int8 costs, in words with its cause: slower beyond noise at the judged batch, larger than fp32."""
    said = {}
    first = record.latency[str(batches[0])]
    if record.verdict == "slower":
        said["slower"] = (f"int8 is {first['ratio']:.2f}x fp32's latency at batch {batches[0]} (95% interval "
                          f"{first['low']:.2f}-{first['high']:.2f}, {first['rounds']} interleaved rounds on this "
                          f"host): {slow_cause(record.int8_share_by_op_type)}")
    if record.size_ratio > 1.0:
        floats, total = fp32_weight_bytes(int8_file)
        said["larger"] = (f"int8 is {record.size_ratio:.2f}x the fp32 file's size: {floats / 1e6:.2f} of its "
                          f"{total / 1e6:.2f} MB of weights are still fp32 (weights quantized at run time, or nodes "
                          f"left fp32)")
    return said


def heldout_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    """The held-out samples' model inputs: what the timed runs feed."""
    with np.load(manifest.path(manifest.heldout_file)) as arrays:
        return {name: arrays[name] for name in manifest.input_names}


def time_pair(models: dict[str, Path], feed: dict[str, np.ndarray], speed_cfg, threads: int) -> dict[str, float]:
    """The paired ratio of two models' run times (first over second), interleaved in one loop on `feed`."""
    sessions = {name: session(path, threads) for name, path in models.items()}
    times = interleaved_times(sessions, feed, float(speed_cfg.seconds_per_batch), min_repeats=int(speed_cfg.min_rounds))
    first, second = times.values()
    return {**paired_ratio(first, second), **{f"{name}_p50_ms": float(np.median(t)) * 1000 for name, t in times.items()}}


def measure(manifest: Manifest, speed_cfg) -> SpeedRecord:
    """Time int8 against fp32 at each batch, interleaved in one process, and judge the first batch."""
    started = time.perf_counter()
    threads = os.cpu_count() or 1
    batches = [int(b) for b in speed_cfg.batches]
    heldout, axes = heldout_inputs(manifest), manifest.batch_axes.get("inputs")  # a state's examples on axis 1
    reference, int8 = manifest.path(manifest.reference_file), manifest.path(manifest.model_file)
    record = SpeedRecord(threads=threads, size_ratio=round(int8.stat().st_size / max(reference.stat().st_size, 1), 4))
    for batch in batches:
        ratio = time_pair({"int8": int8, "fp32": reference}, batch_of(heldout, batch, axes), speed_cfg, threads)
        record.latency[str(batch)] = {key: round(value, 4) if isinstance(value, float) else value
                                      for key, value in ratio.items()}
    first = record.latency[str(batches[0])]
    record.verdict = judge(first, first["fp32_p50_ms"], float(speed_cfg.min_timeable_ms))
    if record.verdict == "slower":
        with tempfile.TemporaryDirectory() as work:
            profile = op_type_profile(int8, batch_of(heldout, batches[0], axes), threads, Path(work))
        record.int8_share_by_op_type = profile["share_by_op_type"]
    record.warnings = words(record, batches, int8)
    record.seconds = round(time.perf_counter() - started, 2)
    return record


def summary_line(record: SpeedRecord) -> str:
    """The build summary's line: each batch's ratio with its interval, and the verdict."""
    parts = [f"b{batch} {figures['ratio']:.2f}x ({figures['low']:.2f}-{figures['high']:.2f}; fp32 "
             f"{figures['fp32_p50_ms']:.3g} ms)" for batch, figures in record.latency.items()]
    verdict = {"too_small_to_time": "too small to time here (fp32 well under a millisecond): not judged",
               "within_noise": "within noise of fp32", "faster": "faster", "slower": "SLOWER than fp32"}[record.verdict]
    return f"int8/fp32 latency on this host, {record.threads} threads: {', '.join(parts)}: {verdict}"


def run(cfg, manifest: Manifest) -> Manifest:
    if not cfg.speed.enabled or not manifest.model_file.endswith(".onnx"):
        return manifest
    manifest.speed = measure(manifest, cfg.speed)
    say(f"speed: {summary_line(manifest.speed)} ({manifest.speed.seconds:.1f} s)")
    for warning in manifest.speed.warnings.values():
        say(f"speed: WARNING: {warning}")
    return manifest

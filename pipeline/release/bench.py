"""What int8 buys on this host: latency, throughput, size and fidelity of each built artifact against its fp32
reference, and against a plain onnxruntime `quantize_dynamic` of the same reference with default settings.

    quantgate bench [--release candidate] [--artifacts-dir artifacts/<release>] [--out reports/<release>/bench]
                    [--batches 1 32] [--seconds 2]

Every figure of one artifact is measured in the same process, one session after another with the same
session options (all graph optimizations, intra-op threads pinned to the core count, sequential
execution), so the ratios compare like with like; on a shared machine trust the ratios, not the
milliseconds. Writes <out>/results.json and <out>/results.md and prints the table; by default <out> is the
release's own reports/<release>/bench/, so one release's run never overwrites another's.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ExitCode, InputError
from pipeline.manifest import MANIFEST_FILE, Manifest, atomic_write_bytes, atomic_write_json
from pipeline.verify.report import VERIFY_FILE, VerifyReport

WARMUP = 3
MIN_REPEATS, MAX_REPEATS = 5, 200


def session(path: Path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch_of(inputs: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """`size` held-out samples (repeated when there are fewer): real data, not zeros, so kernels see real ranges."""
    n = len(next(iter(inputs.values())))
    index = np.arange(size) % n
    return {name: array[index] for name, array in inputs.items()}


def time_runs(sess, feed: dict[str, np.ndarray], seconds: float) -> dict[str, float]:
    for _ in range(WARMUP):
        sess.run(None, feed)
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < MIN_REPEATS or (len(times) < MAX_REPEATS and time.perf_counter() < deadline):
        started = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - started)
    p50, p95 = np.percentile(np.asarray(times) * 1000.0, [50, 95])
    batch = len(next(iter(feed.values())))
    return {"p50_ms": float(p50), "p95_ms": float(p95), "repeats": len(times),
            "throughput_per_s": float(batch / (p50 / 1000.0))}


def fidelity(kind: str, output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a, b = output.reshape(len(output), -1).astype(np.float64), reference.reshape(len(reference), -1).astype(np.float64)
    if kind == "classifier":
        return {"top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"cosine_mean": float(cosine.mean()), "cosine_worst": float(cosine.min())}


def plain_dynamic(reference: Path, out: Path) -> Path:
    """What a user gets from onnxruntime with no policy: quantize_dynamic, default arguments."""
    import logging

    from onnxruntime.quantization import quantize_dynamic
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)  # its "consider pre-processing" advice, once per model
    try:
        quantize_dynamic(str(reference), str(out))
    finally:
        root.setLevel(level)
    return out


def bench_artifact(folder: Path, batches: list[int], seconds: float, threads: int, work: Path) -> dict[str, Any]:
    manifest = Manifest.load(folder)
    with np.load(manifest.path(manifest.heldout_file)) as arrays:
        inputs = {name: arrays[name] for name in manifest.input_names}
    started = time.perf_counter()
    plain = plain_dynamic(manifest.path(manifest.reference_file), work / f"{folder.name}-plain.onnx")
    plain_seconds = time.perf_counter() - started
    models = {"fp32": manifest.path(manifest.reference_file), "int8": manifest.path(manifest.model_file),
              "plain_int8": plain}
    sessions = {name: session(path, threads) for name, path in models.items()}
    output = manifest.output_names[0]
    all_samples = batch_of(inputs, len(next(iter(inputs.values()))))
    outputs = {name: sess.run([output], all_samples)[0] for name, sess in sessions.items()}
    result: dict[str, Any] = {
        "artifact": folder.name, "model": manifest.model, "mode": manifest.mode, "target": manifest.target,
        "size_bytes": {name: path.stat().st_size for name, path in models.items()},
        "fidelity": {name: fidelity(manifest.model_kind, outputs[name], outputs["fp32"]) for name in ("int8", "plain_int8")},
        "fidelity_samples": len(outputs["fp32"]),
        "latency": {}, "ratios": {},
        "build_seconds": manifest.build.seconds if manifest.build else None,
        # per-stage seconds, once the build records them in manifest.json (build.stage_seconds)
        "stage_seconds": (json.loads((folder / MANIFEST_FILE).read_text()).get("build") or {}).get("stage_seconds"),
        "plain_quantize_seconds": round(plain_seconds, 2),
    }
    verify_path = folder / VERIFY_FILE
    if verify_path.is_file():
        verify = VerifyReport.load(verify_path)
        result["verify_seconds"] = verify.wall_seconds
        result["verify_profile_seconds"] = {name: p.wall_seconds for name, p in verify.profiles.items()}
    for batch in batches:
        feed = batch_of(inputs, batch)
        figures = {name: time_runs(sess, feed, seconds) for name, sess in sessions.items()}
        result["latency"][str(batch)] = figures
        result["ratios"][str(batch)] = {
            "int8_vs_fp32_p50": figures["int8"]["p50_ms"] / figures["fp32"]["p50_ms"],
            "int8_vs_fp32_p95": figures["int8"]["p95_ms"] / figures["fp32"]["p95_ms"],
            "plain_int8_vs_fp32_p50": figures["plain_int8"]["p50_ms"] / figures["fp32"]["p50_ms"],
            "int8_vs_plain_int8_p50": figures["int8"]["p50_ms"] / figures["plain_int8"]["p50_ms"],
        }
    result["ratios"]["size_int8_vs_fp32"] = result["size_bytes"]["int8"] / result["size_bytes"]["fp32"]
    result["ratios"]["size_plain_int8_vs_fp32"] = result["size_bytes"]["plain_int8"] / result["size_bytes"]["fp32"]
    return result


def _fid(figures: dict[str, float]) -> str:
    return f"top-1 {figures['top1_agreement']:.3f}" if "top1_agreement" in figures else f"cos {figures['cosine_mean']:.4f}"


def markdown(report: dict[str, Any]) -> str:
    batches = report["settings"]["batches"]
    head = ["artifact", "size int8/fp32"]
    head += [f"b{b} p50 int8/fp32" for b in batches] + [f"b{b} p95 int8/fp32" for b in batches]
    head += [f"b{batches[-1]} throughput int8/fp32 (>1: int8 more)", f"plain ORT dyn b{batches[-1]} p50 /fp32",
             f"ours/plain b{batches[-1]} p50", "fidelity ours", "fidelity plain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in report["artifacts"]:
        r, big = case["ratios"], str(batches[-1])
        lat = case["latency"][big]
        cells = [case["artifact"], f"{r['size_int8_vs_fp32']:.2f}x"]
        cells += [f"{r[str(b)]['int8_vs_fp32_p50']:.2f}x" for b in batches]
        cells += [f"{r[str(b)]['int8_vs_fp32_p95']:.2f}x" for b in batches]
        cells += [f"{lat['int8']['throughput_per_s'] / lat['fp32']['throughput_per_s']:.2f}x",
                  f"{r[big]['plain_int8_vs_fp32_p50']:.2f}x", f"{r[big]['int8_vs_plain_int8_p50']:.2f}x",
                  _fid(case["fidelity"]["int8"]), _fid(case["fidelity"]["plain_int8"])]
        lines.append("| " + " | ".join(cells) + " |")
    s = report["settings"]
    notes = [f"Ratios int8/fp32 (below 1: int8 smaller or faster), measured in one run on {report['host']['cpu']} "
             f"({report['host']['cores']} cores), onnxruntime {report['host']['onnxruntime']}, "
             f"{s['intra_op_threads']} intra-op threads, all graph optimizations, about {s['seconds_per_case']} s per case. "
             f"Plain ORT dyn = `quantize_dynamic(reference.onnx)` with default arguments.",
             "", "Absolute p50 (ms):", ""]
    for case in report["artifacts"]:
        parts = [f"b{b}: fp32 {case['latency'][str(b)]['fp32']['p50_ms']:.3g}, int8 {case['latency'][str(b)]['int8']['p50_ms']:.3g},"
                 f" plain {case['latency'][str(b)]['plain_int8']['p50_ms']:.3g}" for b in batches]
        notes.append(f"- {case['artifact']}: " + "; ".join(parts))
    return "\n".join(["# quantgate benchmark", "", *lines, "", *notes]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`quantgate bench` (also `python -m pipeline.release.bench`)."""
    from pipeline.commandline import run_command
    return run_command("quantgate bench", _command, argv)


def _command(argv: list[str]) -> int:
    from pipeline.commandline import command_parser
    parser = command_parser("quantgate bench", __doc__)
    parser.add_argument("--release", default="candidate", help="the release (default folders below)")
    parser.add_argument("--artifacts-dir", type=Path, help="a folder of artifact folders (a release), or one artifact "
                        "folder; default artifacts/<release>")
    parser.add_argument("--out", type=Path, help="default reports/<release>/bench")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=1.5, help="time budget per model x batch (after warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: cores)")
    args = parser.parse_args(argv)
    root = args.artifacts_dir or Path("artifacts") / args.release
    args.out = args.out or Path("reports") / args.release / "bench"
    folders = [root] if (root / MANIFEST_FILE).is_file() else sorted(p.parent for p in root.glob(f"*/{MANIFEST_FILE}"))
    if not folders:
        raise InputError(f"no artifact folders in {root}; build some first (`make matrix` or `make quantize`)")
    import onnxruntime as ort
    report: dict[str, Any] = {
        "schema": "quantgate.bench/1",
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "onnxruntime": ort.__version__, "python": platform.python_version()},
        "settings": {"batches": args.batches, "seconds_per_case": args.seconds, "intra_op_threads": args.threads,
                     "graph_optimization_level": "ORT_ENABLE_ALL", "warmup": WARMUP},
        "artifacts": [],
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantgate-bench-") as work:
        for folder in folders:
            print(f"bench: {folder.name} ...", flush=True)
            report["artifacts"].append(bench_artifact(folder, args.batches, args.seconds, args.threads, Path(work)))
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    table = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", report)
    atomic_write_bytes(args.out / "results.md", table.encode())
    print(table)
    print(f"wrote {args.out}/results.json and results.md in {report['wall_seconds']} s")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())

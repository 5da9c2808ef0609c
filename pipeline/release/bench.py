"""What int8 buys on this host: latency, throughput, size and fidelity of each built artifact against its fp32
graph, and against a plain onnxruntime `quantize_dynamic` of the same fp32 graph with default settings.

The fp32 graph is the fused one (model.fuse: Attention, SkipLayerNormalization, ...; pipeline/builder/fuse.py),
all operators fused even where the artifact's own reference leaves some unfused for static QDQ; the unfused
export (debug/reference.unfused.onnx) is timed too when the folder has it. Per artifact, the time per operator
type of fp32 and int8 (onnxruntime's profiler, kernel time summed by op type) shows where the time goes.

    quantgate bench [--release candidate] [--artifacts-dir artifacts/<release>] [--out reports/<release>/bench]
                    [--batches 1 32] [--seconds 2] [--build-time N]

--build-time N rebuilds each artifact from its own overrides (verify off, into a scratch folder), N times with
the fp32 reference exported anew (reference_cache=false) and N times from the reference cache, in turn, each as
its own `quantgate build` process: the wall seconds of the whole command and each stage's, and their ratio.

Every figure of one artifact is measured in the same process, the sessions' runs interleaved (one run of each
in turn, repeated), with the same session options (all graph optimizations, intra-op threads pinned to the
core count, sequential execution), so the ratios compare like with like; on a shared machine trust the ratios, not the
milliseconds. Writes <out>/results.json and <out>/results.md and prints the table; by default <out> is the
release's own reports/<release>/bench/, so one release's run never overwrites another's.

The int8 artifacts of one model and target (several modes over the same fp32 graph) are also timed side by side,
in one interleaved loop with that fp32 graph: which mode is fastest, measured in one loop rather than read across
each artifact's own.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ExitCode, InputError, QuantgateError, UsageError
from pipeline.manifest import MANIFEST_FILE, Manifest, artifact_folders, atomic_write_bytes, atomic_write_json
from pipeline.release.floors import conv_floor, gemm_floor
from pipeline.timing import WARMUP, batch_of, op_type_profile, session, time_interleaved
from pipeline.verify.report import VERIFY_FILE, VerifyReport

PROFILE_TOP = 6  # operator types listed per model in results.md


def at_sequence_length(inputs: dict[str, np.ndarray], length: int | None) -> dict[str, np.ndarray]:
    """Token inputs (with an `attention_mask`) made `length` tokens long from the held-out samples' own tokens: each
    row is the real (unpadded) tokens of consecutive samples, joined until `length`. The held-out sentences are
    at most model.max_length long (64), while transformer speed is usually compared at 128. Other inputs, or
    `length` None, are returned as they are."""
    if length is None or "attention_mask" not in inputs or inputs["attention_mask"].ndim != 2:
        return inputs
    mask = inputs["attention_mask"].astype(bool)
    rows = len(mask)
    joined: dict[str, np.ndarray] = {}
    for name, array in inputs.items():
        stream = np.concatenate([array[row][mask[row]] for row in range(rows)])
        repeats = -(-rows * length // len(stream))  # enough of the stream for `rows` rows
        joined[name] = np.resize(np.tile(stream, repeats), (rows, length)).astype(array.dtype)
    joined["attention_mask"] = np.ones((rows, length), dtype=inputs["attention_mask"].dtype)
    return joined


def fully_fused_fp32(folder: Path, manifest: Manifest, work: Path) -> tuple[Path, Path | None]:
    """(the fp32 graph with every fusion, the unfused export or None): the artifact's reference when it is fused
    throughout, else a full fusion of its debug/reference.unfused.onnx (static builds made before every mode was
    fused left Attention unfused; roberta-like encoders keep their embedding LayerNormalization)."""
    from pipeline.builder.export import UNFUSED_REFERENCE_FILE
    reference = manifest.path(manifest.reference_file)
    unfused = folder / UNFUSED_REFERENCE_FILE
    if not unfused.is_file():
        return reference, None
    if manifest.fusion is None or not manifest.fusion.left_unfused:
        return reference, unfused
    import onnx

    from pipeline.builder.fuse import fuse_transformer
    fused, _ = fuse_transformer(onnx.load(str(unfused)), manifest.fusion.num_heads, manifest.fusion.hidden_size)
    path = work / f"{folder.name}-fp32-fused.onnx"
    atomic_write_bytes(path, fused.SerializeToString())
    return path, unfused


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


def bench_artifact(folder: Path, batches: list[int], seconds: float, threads: int, work: Path,
                   sequence_length: int | None = None, build_runs: int = 0) -> dict[str, Any]:
    from pipeline.builder.gate import metrics
    manifest = Manifest.load(folder)
    with np.load(manifest.path(manifest.heldout_file)) as arrays:
        heldout = {name: arrays[name] for name in manifest.input_names}
    inputs = at_sequence_length(heldout, sequence_length)  # timed; fidelity is judged on the held-out samples
    axes = manifest.batch_axes.get("inputs")  # a recurrent state's examples on axis 1, a scalar given once
    fp32, unfused = fully_fused_fp32(folder, manifest, work)
    started = time.perf_counter()
    plain = plain_dynamic(fp32, work / f"{folder.name}-plain.onnx")
    plain_seconds = time.perf_counter() - started
    models = {"fp32": fp32, "int8": manifest.path(manifest.model_file), "plain_int8": plain}
    if unfused is not None:
        models["fp32_unfused"] = unfused
    sessions = {name: session(path, threads) for name, path in models.items()}
    output = manifest.output_names[0]
    outputs = {name: sess.run([output], heldout)[0] for name, sess in sessions.items()}
    result: dict[str, Any] = {
        "artifact": folder.name, "model": manifest.model, "mode": manifest.mode, "target": manifest.target,
        "fp32_graph": "fused" if unfused is not None else "as exported",
        "fused_operators": manifest.fusion.operators if manifest.fusion else {},
        "size_bytes": {name: path.stat().st_size for name, path in models.items()},
        "fidelity": {name: metrics(manifest.model_kind, outputs[name], outputs["fp32"], None,
                                   heldout.get("attention_mask")) for name in ("int8", "plain_int8")},
        "fidelity_samples": len(outputs["fp32"]),
        "sequence_length": int(inputs["attention_mask"].shape[1]) if "attention_mask" in inputs else None,
        "latency": {}, "ratios": {},
        "build_seconds": manifest.build.seconds if manifest.build else None,
        "stage_seconds": manifest.build.stage_seconds if manifest.build else None,
        "reference_cache": manifest.reference_cache,
        "plain_quantize_seconds": round(plain_seconds, 2),
    }
    if build_runs:
        result["build_time"] = build_time(folder, manifest, work, build_runs)
    verify_path = folder / VERIFY_FILE
    if verify_path.is_file():
        verify = VerifyReport.load(verify_path)
        result["verify_seconds"] = verify.wall_seconds
        result["verify_profile_seconds"] = {name: p.wall_seconds for name, p in verify.profiles.items()}
    for batch in batches:
        feed = batch_of(inputs, batch, axes)
        figures = time_interleaved(sessions, feed, seconds, batch)
        result["latency"][str(batch)] = figures
        result["ratios"][str(batch)] = {
            "int8_vs_fp32_p50": figures["int8"]["p50_ms"] / figures["fp32"]["p50_ms"],
            "int8_vs_fp32_p95": figures["int8"]["p95_ms"] / figures["fp32"]["p95_ms"],
            "plain_int8_vs_fp32_p50": figures["plain_int8"]["p50_ms"] / figures["fp32"]["p50_ms"],
            "int8_vs_plain_int8_p50": figures["int8"]["p50_ms"] / figures["plain_int8"]["p50_ms"],
        }
        if "fp32_unfused" in figures:
            result["ratios"][str(batch)]["fp32_unfused_vs_fp32_p50"] = \
                figures["fp32_unfused"]["p50_ms"] / figures["fp32"]["p50_ms"]
    profile_feed = batch_of(inputs, batches[-1], axes)
    # per batch: at batch 1 the int8 GEMMs' fixed costs per call weigh more than at batch 32
    result["gemm_floor"] = {}
    for batch in batches:
        feed = batch_of(inputs, batch, axes)
        rows = int(np.prod(next(iter(feed.values())).shape[:2])) if manifest.model_kind == "embedding" else batch
        floor = result["gemm_floor"][str(batch)] = gemm_floor(fp32, rows, threads, seconds / 2)
        if floor["int8_vs_fp32"] is not None:
            result["ratios"][str(batch)]["int8_vs_fp32_gemm_floor"] = floor["int8_vs_fp32"]
        floor = result.setdefault("conv_floor", {})[str(batch)] = conv_floor(fp32, feed, threads, seconds / 2)
        if floor["int8_vs_fp32"] is not None:
            result["ratios"][str(batch)]["int8_vs_fp32_conv_floor"] = floor["int8_vs_fp32"]
    result["op_type_profile"] = {"batch": batches[-1], **{
        name: op_type_profile(models[name], profile_feed, threads, work) for name in ("fp32", "int8")}}
    result["ratios"]["size_int8_vs_fp32"] = result["size_bytes"]["int8"] / result["size_bytes"]["fp32"]
    result["ratios"]["size_plain_int8_vs_fp32"] = result["size_bytes"]["plain_int8"] / result["size_bytes"]["fp32"]
    return result


def modes_side_by_side(folders: list[Path], batches: list[int], seconds: float, threads: int, work: Path,
                       sequence_length: int | None) -> list[dict[str, Any]]:
    """Per model and target with two or more artifacts over the same fp32 graph (same reference.onnx bytes): their
    int8 graphs and that fp32 graph timed in one interleaved loop, as p50 ratios to the fp32 graph."""
    import hashlib

    groups: dict[tuple, list[tuple[Path, Manifest]]] = {}
    for folder in folders:
        manifest = Manifest.load(folder)
        reference = hashlib.sha256(manifest.path(manifest.reference_file).read_bytes()).hexdigest()
        groups.setdefault((manifest.model, manifest.target, reference), []).append((folder, manifest))
    results = []
    for (model, target, _), members in groups.items():
        if len(members) < 2:
            continue
        first, manifest = members[0]
        with np.load(manifest.path(manifest.heldout_file)) as arrays:
            inputs = at_sequence_length({name: arrays[name] for name in manifest.input_names}, sequence_length)
        fp32, _ = fully_fused_fp32(first, manifest, work)
        sessions = {"fp32": session(fp32, threads)}
        sessions |= {folder.name: session(m.path(m.model_file), threads) for folder, m in members}
        entry = {"model": model, "target": target, "artifacts": [folder.name for folder, _ in members],
                 "modes": {folder.name: m.mode for folder, m in members}, "int8_vs_fp32_p50": {}}
        for batch in batches:
            figures = time_interleaved(sessions, batch_of(inputs, batch, manifest.batch_axes.get("inputs")), seconds,
                                       batch)
            entry["int8_vs_fp32_p50"][str(batch)] = {
                name: figures[name]["p50_ms"] / figures["fp32"]["p50_ms"] for name in entry["artifacts"]}
        results.append(entry)
    return results


def no_artifacts_message(root: Path, release: str) -> str:
    """Why there is nothing to bench in `root`, and the command that gives it something: the release's matrix, or
    the artifact folders `make quantize` wrote beside it (artifacts/<model>-<mode>-<target>/, not in a release)."""
    built = artifact_folders(root.parent)
    fix = f"build the release first (`make matrix RELEASE={release}`)"
    if built:
        fix += f", or bench one artifact folder: `make bench ARTIFACTS={built[0]}`"
    return f"no artifact folders in {root}: {fix}"


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


# The one figure a results.md row shows per model, the first the model has: (key, label, format).
SHOWN_FIGURE = (("score_correlation", "score r", ".4f"), ("label_set_agreement", "label sets", ".3f"),
                ("decision_agreement", "decisions", ".3f"), ("top1_agreement", "top-1", ".3f"),
                ("cosine_mean", "cos", ".4f"), ("detection_recall", "detection recall", ".3f"),
                ("near_empty_error_worst", "near-empty error", ".3g"))


def _fid(figures: dict[str, float]) -> str:
    return next((f"{label} {figures[key]:{spec}}" for key, label, spec in SHOWN_FIGURE if key in figures),
                "no fidelity figure")


# The kernel floors bench measures (pipeline/release/floors.py): result key, the kernels in words, a batch's size.
FLOORS = (("gemm_floor", "GEMMs", lambda floor: f" ({floor['rows']} rows)"), ("conv_floor", "convolutions", lambda _: ""))


def floor_lines(case: dict[str, Any]) -> list[str]:
    """Per kernel kind the model has: int8/fp32 of this host's kernels alone on the model's own shapes (the floor if
    all time were those kernels), the artifact's ratio, and how far above the floor it is."""
    lines = []
    for key, kernels, size in FLOORS:
        floors = [(batch, floor) for batch, floor in (case.get(key) or {}).items() if floor["int8_vs_fp32"] is not None]
        if floors:
            lines.append(f"- {case['artifact']}: int8/fp32 of this host's {kernels} alone on the model's own shapes (the "
                         f"floor if all time were {kernels}), against the artifact: " + "; ".join(
                             f"batch {batch}{size(floor)} {floor['int8_vs_fp32']:.2f}x, the artifact "
                             f"{case['ratios'][batch]['int8_vs_fp32_p50']:.2f}x ("
                             f"{case['ratios'][batch]['int8_vs_fp32_p50'] / floor['int8_vs_fp32']:.2f}x the floor)"
                             for batch, floor in floors))
    return lines


def markdown(report: dict[str, Any]) -> str:
    batches = report["settings"]["batches"]
    head = ["artifact", "size int8/fp32"]
    head += [f"b{b} p50 int8/fp32" for b in batches] + [f"b{b} p95 int8/fp32" for b in batches]
    head += [f"b{batches[-1]} throughput int8/fp32 (>1: int8 more)", f"plain ORT dyn b{batches[-1]} p50 /fp32",
             f"ours/plain b{batches[-1]} p50", f"unfused fp32/fp32 b{batches[-1]} p50", "fidelity ours",
             "fidelity plain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in report["artifacts"]:
        r, big = case["ratios"], str(batches[-1])
        lat = case["latency"][big]
        cells = [case["artifact"], f"{r['size_int8_vs_fp32']:.2f}x"]
        cells += [f"{r[str(b)]['int8_vs_fp32_p50']:.2f}x" for b in batches]
        cells += [f"{r[str(b)]['int8_vs_fp32_p95']:.2f}x" for b in batches]
        cells += [f"{lat['int8']['throughput_per_s'] / lat['fp32']['throughput_per_s']:.2f}x",
                  f"{r[big]['plain_int8_vs_fp32_p50']:.2f}x", f"{r[big]['int8_vs_plain_int8_p50']:.2f}x",
                  f"{r[big]['fp32_unfused_vs_fp32_p50']:.2f}x" if "fp32_unfused_vs_fp32_p50" in r[big] else "-",
                  _fid(case["fidelity"]["int8"]), _fid(case["fidelity"]["plain_int8"])]
        lines.append("| " + " | ".join(cells) + " |")
    s = report["settings"]
    profile_lines = ["", "Where the time goes (kernel time by operator type, batch "
                     f"{batches[-1]}; share of the total; onnxruntime's profiler):", ""]
    for case in report["artifacts"]:
        profile = case.get("op_type_profile")
        if not profile:
            continue
        profile_lines += floor_lines(case)
        for name in ("fp32", "int8"):
            top = list(profile[name]["share_by_op_type"].items())[:PROFILE_TOP]
            profile_lines.append(f"- {case['artifact']} {name} ({profile[name]['kernel_ms_per_run']:.4g} ms/run): "
                                 + ", ".join(f"{op} {share:.0%}" for op, share in top))
    notes = [f"Ratios int8/fp32 (below 1: int8 smaller or faster), measured in one run on {report['host']['cpu']} "
             f"({report['host']['cores']} cores), onnxruntime {report['host']['onnxruntime']}, "
             f"{s['intra_op_threads']} intra-op threads, all graph optimizations, about {s['seconds_per_case']} s per case"
             + (f", token models timed at {s['sequence_length']} tokens per sample" if s.get("sequence_length") else "")
             + ". Plain ORT dyn = `quantize_dynamic` of the fp32 graph with default arguments.",
             "fp32 is the fused graph (model.fuse) where the artifact has one; `unfused fp32/fp32` is the export "
             "before fusion (debug/reference.unfused.onnx).", "", "Absolute p50 (ms):", ""]
    for case in report["artifacts"]:
        parts = [f"b{b}: fp32 {case['latency'][str(b)]['fp32']['p50_ms']:.3g}, int8 {case['latency'][str(b)]['int8']['p50_ms']:.3g},"
                 f" plain {case['latency'][str(b)]['plain_int8']['p50_ms']:.3g}" for b in batches]
        notes.append(f"- {case['artifact']}: " + "; ".join(parts))
    build_lines = []
    for case in report["artifacts"]:
        timed = case.get("build_time")
        if timed:
            stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in timed["stage_seconds"]["cached"].items())
            build_lines.append(f"- {case['artifact']}: `quantgate build` (verify off) {timed['median_seconds']['cached']:.1f} s "
                               f"with the reference from the cache, {timed['median_seconds']['anew']:.1f} s exporting it "
                               f"anew: {timed['cached_vs_anew']:.2f}x (medians of {timed['runs']}, in turn); stages "
                               f"from the cache (s): {stages}")
    if build_lines:
        build_lines = ["", "Build time (whole command, a process each; pipeline/builder/reference_cache.py):", "",
                       *build_lines]
    side_lines = []
    for entry in report.get("side_by_side", ()):
        parts = [f"b{batch}: " + ", ".join(f"{entry['modes'][name]} {ratio:.2f}x" for name, ratio in ratios.items())
                 for batch, ratios in entry["int8_vs_fp32_p50"].items()]
        side_lines.append(f"- {entry['model']} {entry['target']}: " + "; ".join(parts))
    if side_lines:
        side_lines = ["", "Modes side by side (one interleaved loop with the fp32 graph; p50 int8/fp32):", "",
                      *side_lines]
    skipped_lines = [f"- {entry['artifact']}: {entry['reason']}" for entry in report.get("skipped", ())]
    if skipped_lines:
        skipped_lines = ["", "Not benched:", "", *skipped_lines]
    return "\n".join(["# quantgate benchmark", "", *lines, "", *notes, *side_lines, *profile_lines, *build_lines,
                      *skipped_lines]) + "\n"


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
    parser.add_argument("--sequence-length", type=int, default=128,
                        help="tokens per timed sample for token models, from the held-out samples' own tokens "
                             "(default 128; 0: as held out); fidelity is judged on the held-out samples as they are")
    parser.add_argument("--build-time", type=int, default=0, metavar="N",
                        help="also rebuild each artifact N times exporting its reference anew and N times from the "
                             "reference cache, in turn, and report the build's seconds (default 0: off)")
    args = parser.parse_args(argv)
    if args.build_time < 0:
        raise UsageError(f"--build-time {args.build_time}: give a number of rebuilds, or 0 for none")
    if args.sequence_length < 0:
        raise UsageError(f"--sequence-length {args.sequence_length}: give a number of tokens, or 0 for the held-out "
                         f"samples as they are")
    root = args.artifacts_dir or Path("artifacts") / args.release
    args.out = args.out or Path("reports") / args.release / "bench"
    folders = [root] if (root / MANIFEST_FILE).is_file() else artifact_folders(root)
    if not folders:
        raise InputError(no_artifacts_message(root, args.release))
    # What bench compares is an ONNX artifact against its fp32 graph in onnxruntime; a package (export=aoti) has none.
    onnx_folders, skipped = [], []
    for folder in folders:
        model_file = Manifest.load(folder).model_file
        if model_file.endswith(".onnx"):
            onnx_folders.append(folder)
            continue
        skipped.append({"artifact": folder.name, "reason": f"{model_file} is not an ONNX model (export=aoti package); "
                                                           f"bench compares ONNX artifacts with their fp32 graph"})
        print(f"bench: {folder.name}: skipped: {skipped[-1]['reason']}", flush=True)
    folders = onnx_folders
    if not folders:
        raise InputError(f"no ONNX artifact in {root} to bench ({len(skipped)} export=aoti package(s)); bench compares "
                         f"ONNX artifacts with their fp32 graph: build with export=onnx (the default)")
    import onnxruntime as ort
    report: dict[str, Any] = {
        "schema": "quantgate.bench/1",
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "onnxruntime": ort.__version__, "python": platform.python_version()},
        "settings": {"sequence_length": args.sequence_length or None, "batches": args.batches, "seconds_per_case": args.seconds, "intra_op_threads": args.threads,
                     "build_time_runs": args.build_time,
                     "graph_optimization_level": "ORT_ENABLE_ALL", "warmup": WARMUP},
        "artifacts": [], "skipped": skipped,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantgate-bench-") as work:
        for folder in folders:
            print(f"bench: {folder.name} ...", flush=True)
            report["artifacts"].append(bench_artifact(folder, args.batches, args.seconds, args.threads, Path(work),
                                                      args.sequence_length or None, args.build_time))
        report["side_by_side"] = modes_side_by_side(folders, args.batches, args.seconds, args.threads, Path(work),
                                                    args.sequence_length or None)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    table = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    # results.json (what the signoff's plot reads) goes first and comes back last: a kill in between leaves no
    # results.json, never an old one beside a new results.md.
    (args.out / "results.json").unlink(missing_ok=True)
    atomic_write_bytes(args.out / "results.md", table.encode())
    atomic_write_json(args.out / "results.json", report)
    print(table)
    print(f"wrote {args.out}/results.json and results.md in {report['wall_seconds']} s")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())

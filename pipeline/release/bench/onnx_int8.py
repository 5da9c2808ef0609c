"""The int8 ONNX bench subjects (transformer encoder, CNN, detector, any other ONNX graph): latency of the int8
artifact against its fp32 graph at each batch, interleaved in one process with the paired ratio's noise, against a
plain onnxruntime `quantize_dynamic` of the same fp32 graph too; size and fidelity; the op-type profile; and the
distance to this host's int8 floor on the kernel kinds the subject has.

The fp32 graph is the fused one (model.fuse: Attention, SkipLayerNormalization, ...; pipeline/builder/fuse.py),
all operators fused even where the artifact's own reference leaves some unfused for static QDQ; the unfused
export (debug/reference.unfused.onnx) is timed too when the folder has it.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.builder.speed import judge
from pipeline.config.schema import SpeedConfig
from pipeline.manifest import Manifest, atomic_write_bytes
from pipeline.release.bench.build_time import build_time
from pipeline.release.bench.floor import FloorKind, measure_floors
from pipeline.release.bench.profiles import profiles
from pipeline.release.bench.settings import BenchSettings
from pipeline.timing import batch_of, figures, interleaved_times, paired_ratio, session, time_interleaved
from pipeline.verify.report import VERIFY_FILE, VerifyReport


@dataclass(frozen=True)
class OnnxInt8Subject:
    """An int8 ONNX artifact of one kind: its name in the report, and the kernel floors that apply to it."""

    kind: str  # transformer_encoder, cnn, detector, onnx_model
    words: str  # what it is, in results.md
    floors: tuple[FloorKind, ...]

    def bench(self, folders: list[Path], settings: BenchSettings, work: Path) -> dict[str, list]:
        cases = []
        for folder in folders:
            print(f"bench: {folder.name} ({self.words}) ...", flush=True)
            cases.append(bench_artifact(folder, self, settings, work))
        return {"artifacts": cases, "side_by_side": modes_side_by_side(folders, settings, work)}


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


def heldout_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    with np.load(manifest.path(manifest.heldout_file)) as arrays:
        return {name: arrays[name] for name in manifest.input_names}


def bench_artifact(folder: Path, subject: OnnxInt8Subject, settings: BenchSettings, work: Path) -> dict[str, Any]:
    """Every figure of one int8 artifact, its graphs' sessions in one process."""
    manifest = Manifest.load(folder)
    heldout = heldout_inputs(manifest)
    inputs = at_sequence_length(heldout, settings.sequence_length)  # timed; fidelity is judged on the held-out
    axes = manifest.batch_axes.get("inputs")  # a recurrent state's examples on axis 1, a scalar given once
    fp32, unfused = fully_fused_fp32(folder, manifest, work)
    started = time.perf_counter()
    plain = plain_dynamic(fp32, work / f"{folder.name}-plain.onnx")
    plain_seconds = time.perf_counter() - started
    models = {"fp32": fp32, "int8": manifest.path(manifest.model_file), "plain_int8": plain}
    if unfused is not None:
        models["fp32_unfused"] = unfused
    sessions = {name: session(path, settings.threads) for name, path in models.items()}
    case = describe(folder, manifest, subject, models, inputs) | {
        "fidelity": fidelity(manifest, sessions, heldout), "plain_quantize_seconds": round(plain_seconds, 2)}
    if settings.build_runs:
        case["build_time"] = build_time(folder, manifest, work, settings.build_runs)
    verify_path = folder / VERIFY_FILE
    if verify_path.is_file():
        verify = VerifyReport.load(verify_path)
        case["verify_seconds"] = verify.wall_seconds
        case["verify_profile_seconds"] = {name: p.wall_seconds for name, p in verify.profiles.items()}
    feeds = {str(batch): batch_of(inputs, batch, axes) for batch in settings.batches}
    for batch, feed in feeds.items():
        case["latency"][batch], case["ratios"][batch], case["noise"][batch] = latency(sessions, feed, settings, batch)
        case["verdict"][batch] = judge(case["noise"][batch], case["latency"][batch]["fp32"]["p50_ms"],
                                       SpeedConfig.min_timeable_ms)  # the build's rule (pipeline/builder/speed.py)
    rows = {batch: int(np.prod(next(iter(feed.values())).shape[:2])) if manifest.model_kind == "embedding"
            else int(batch) for batch, feed in feeds.items()}  # GEMM rows: batch x tokens for token models
    measure_floors(case, subject.floors, fp32, {b: (feed, rows[b]) for b, feed in feeds.items()}, settings.threads,
                   settings.seconds)
    big = str(settings.batches[-1])
    case["op_type_profile"] = profiles({name: models[name] for name in ("fp32", "int8")}, feeds[big],
                                       settings.threads, work, batch=settings.batches[-1])
    case["ratios"]["size_int8_vs_fp32"] = case["size_bytes"]["int8"] / case["size_bytes"]["fp32"]
    case["ratios"]["size_plain_int8_vs_fp32"] = case["size_bytes"]["plain_int8"] / case["size_bytes"]["fp32"]
    return case


def describe(folder: Path, manifest: Manifest, subject: OnnxInt8Subject, models: dict[str, Path],
             inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """What the artifact is, before anything is timed."""
    return {
        "artifact": folder.name, "subject": subject.kind, "model": manifest.model, "mode": manifest.mode,
        "target": manifest.target, "fp32_graph": "fused" if "fp32_unfused" in models else "as exported",
        "fused_operators": manifest.fusion.operators if manifest.fusion else {},
        "size_bytes": {name: path.stat().st_size for name, path in models.items()},
        "sequence_length": int(inputs["attention_mask"].shape[1]) if "attention_mask" in inputs else None,
        "latency": {}, "ratios": {}, "noise": {}, "verdict": {},
        "build_seconds": manifest.build.seconds if manifest.build else None,
        "stage_seconds": manifest.build.stage_seconds if manifest.build else None,
        "reference_cache": manifest.reference_cache,
    }


def fidelity(manifest: Manifest, sessions: dict[str, Any], heldout: dict[str, np.ndarray]) -> dict[str, Any]:
    """The build gate's figures of our int8 and of the plain one against fp32, on the held-out samples."""
    from pipeline.builder.gate import metrics
    output = manifest.output_names[0]
    outputs = {name: sessions[name].run([output], heldout)[0] for name in ("fp32", "int8", "plain_int8")}
    return {name: metrics(manifest.model_kind, outputs[name], outputs["fp32"], None, heldout.get("attention_mask"))
            for name in ("int8", "plain_int8")}


def latency(sessions: dict[str, Any], feed: dict[str, np.ndarray], settings: BenchSettings,
            batch: str) -> tuple[dict, dict, dict]:
    """(figures per graph, ratios, the noise of int8/fp32) at one batch: the graphs' runs interleaved; the noise is
    the 95% interval of the per-round int8/fp32 ratio (pipeline/timing.py paired_ratio)."""
    times = interleaved_times(sessions, feed, settings.seconds)
    found = {name: figures(values, int(batch)) for name, values in times.items()}
    ratios = {"int8_vs_fp32_p50": found["int8"]["p50_ms"] / found["fp32"]["p50_ms"],
              "int8_vs_fp32_p95": found["int8"]["p95_ms"] / found["fp32"]["p95_ms"],
              "plain_int8_vs_fp32_p50": found["plain_int8"]["p50_ms"] / found["fp32"]["p50_ms"],
              "int8_vs_plain_int8_p50": found["int8"]["p50_ms"] / found["plain_int8"]["p50_ms"]}
    if "fp32_unfused" in found:
        ratios["fp32_unfused_vs_fp32_p50"] = found["fp32_unfused"]["p50_ms"] / found["fp32"]["p50_ms"]
    return found, ratios, paired_ratio(times["int8"], times["fp32"])


def modes_side_by_side(folders: list[Path], settings: BenchSettings, work: Path) -> list[dict[str, Any]]:
    """Per model and target with two or more artifacts over the same fp32 graph (same reference.onnx bytes): their
    int8 graphs and that fp32 graph timed in one interleaved loop, as p50 ratios to the fp32 graph."""
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
        inputs = at_sequence_length(heldout_inputs(manifest), settings.sequence_length)
        fp32, _ = fully_fused_fp32(first, manifest, work)
        sessions = {"fp32": session(fp32, settings.threads)}
        sessions |= {folder.name: session(m.path(m.model_file), settings.threads) for folder, m in members}
        entry = {"model": model, "target": target, "artifacts": [folder.name for folder, _ in members],
                 "modes": {folder.name: m.mode for folder, m in members}, "int8_vs_fp32_p50": {}}
        for batch in settings.batches:
            found = time_interleaved(sessions, batch_of(inputs, batch, manifest.batch_axes.get("inputs")),
                                     settings.seconds, batch)
            entry["int8_vs_fp32_p50"][str(batch)] = {
                name: found[name]["p50_ms"] / found["fp32"]["p50_ms"] for name in entry["artifacts"]}
        results.append(entry)
    return results

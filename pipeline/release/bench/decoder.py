"""The weight-only decoder bench subject (mode=int4 / int8 folders built by pipeline/builder/decoder.py): prefill and
decode tokens/s at batch 1 through onnxruntime-genai's generator, the int4 and int8 folders of one checkpoint and its
fp32 export (the folders' reference/) in one interleaved loop in one process, with the paired ratios' noise; peak
memory (the peak RSS of a child process per folder, pipeline/release/bench/decoder_child.py, beside one that loads
no model); file size; where the time goes (the op-type profile of one prefill and one decode step); and the distance
to this host's MatMulNBits floor on the model's own weights (pipeline/release/bench/floor.py decoder_floors). A step
that fp32 runs faster than the build's `speed.min_timeable_ms` (the tiny test decoders) is said to be too small to
time rather than judged (pipeline/builder/speed.py judge).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.builder.decoder import REFERENCE_DIR, folder_model_bytes
from pipeline.builder.speed import judge
from pipeline.config.schema import SpeedConfig
from pipeline.errors import InputError
from pipeline.manifest import Manifest
from pipeline.release.bench.decoder_child import generate_once, load_model
from pipeline.release.bench.floor import decoder_floors
from pipeline.release.bench.profiles import profiles
from pipeline.release.bench.settings import BenchSettings
from pipeline.timing import paired_ratio

FP32 = "fp32"
STEPS = ("prefill", "decode")
MIN_ROUNDS, MAX_ROUNDS = 3, 50
NO_FLOOR = "no MatMulNBits in the artifact: no weight-only kernel to time"


@dataclass(frozen=True)
class DecoderSubject:
    """A weight-only decoder: MatMulNBits weights, a KV cache, generated token by token."""

    kind: str = "weight_only_decoder"
    words: str = "weight-only decoder"

    def bench(self, folders: list[Path], settings: BenchSettings, work: Path) -> dict[str, list]:
        results = []
        for members in checkpoints(folders).values():
            print(f"bench: {', '.join(folder.name for folder, _ in members)} ({self.words}) ...", flush=True)
            results.append(bench_checkpoint(members, settings, work))
        return {"decoders": results}


def checkpoints(folders: list[Path]) -> dict[tuple, list[tuple[Path, Manifest]]]:
    """The folders grouped by model, target and fp32 export (the sha256s of their reference/ files)."""
    groups: dict[tuple, list[tuple[Path, Manifest]]] = {}
    for folder in folders:
        manifest = Manifest.load(folder)
        reference = tuple(sorted(f.sha256 for f in manifest.files if f.path.startswith(f"{REFERENCE_DIR}/")))
        groups.setdefault((manifest.model, manifest.target, reference), []).append((folder, manifest))
    return groups


def context_length(folder: Path) -> int:
    return int(json.loads((folder / "genai_config.json").read_text())["model"]["context_length"])


def prompt_ids(manifest: Manifest, length: int) -> np.ndarray:
    """`length` tokens of the held-out text (its sequences' real tokens, joined and repeated as needed)."""
    with np.load(manifest.path(manifest.heldout_file)) as arrays:
        stream = np.concatenate([ids[:n] for ids, n in zip(arrays["input_ids"], arrays["lengths"])])
    return np.resize(stream, length).astype(np.int32)


def interleaved_generations(models: dict[str, Any], prompt: np.ndarray, new_tokens: int,
                            seconds: float) -> dict[str, dict[str, list[float]]]:
    """Each model's prefill and decode seconds, one generation of each in turn, after one warm-up generation each:
    at least MIN_ROUNDS rounds, then more until about `seconds` per model or MAX_ROUNDS."""
    for model in models.values():
        generate_once(model, prompt, new_tokens)
    times = {name: {"prefill": [], "decode": []} for name in models}
    deadline = time.perf_counter() + seconds * len(models)
    rounds = 0
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and time.perf_counter() < deadline):
        for name, model in models.items():
            prefill, decode = generate_once(model, prompt, new_tokens)
            times[name]["prefill"].append(prefill)
            times[name]["decode"].append(decode)
        rounds += 1
    return times


def peak_rss_mb(folder: Path | None, prompt_file: Path, new_tokens: int, threads: int) -> float:
    """The peak resident memory (MB) of a child process that loads the folder's model and generates once; with no
    folder, of one that only imports onnxruntime-genai (the baseline every figure includes)."""
    command = [sys.executable, "-m", "pipeline.release.bench.decoder_child"]
    if folder is not None:
        command += [str(folder), str(prompt_file), str(new_tokens), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"bench: the memory probe of {folder or 'the baseline'} failed (exit {done.returncode}): "
                         f"{last}")
    return int(done.stdout.split()[-1]) / 1024


def memory(folder: Path, prompt_file: Path, settings: BenchSettings, baseline: float) -> dict[str, float]:
    """The peak RSS of a child generating with the folder's model, and how much of it is above the baseline."""
    peak = peak_rss_mb(folder, prompt_file, settings.new_tokens, settings.threads)
    return {"peak_rss_mb": round(peak, 1), "model_rss_mb": round(max(peak - baseline, 0.1), 1)}


def step_feeds(folder: Path, prompt: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Plain onnxruntime feeds of one prefill (the prompt, empty KV cache) and one decode step (one token after
    the prompt's KV cache, zeros), from the names and sizes in genai_config.json."""
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    names = decoder["inputs"]
    feeds = {}
    for step, tokens, past in (("prefill", prompt, 0), ("decode", prompt[-1:], len(prompt))):
        feed = {names["input_ids"]: tokens[None, :].astype(np.int64),
                names["attention_mask"]: np.ones((1, past + len(tokens)), np.int64)}
        if "position_ids" in names:
            feed[names["position_ids"]] = np.arange(past, past + len(tokens), dtype=np.int64)[None, :]
        shape = (1, decoder["num_key_value_heads"], past, decoder["head_size"])
        for layer in range(decoder["num_hidden_layers"]):
            for key in ("past_key_names", "past_value_names"):
                feed[names[key] % layer] = np.zeros(shape, np.float32)
        feeds[step] = feed
    return feeds


def median_rate(tokens: int, seconds: list[float]) -> float:
    return tokens / statistics.median(seconds)


def model_figures(folder: Path, times: dict[str, list[float]], prompt: int, new_tokens: int) -> dict[str, Any]:
    return {"size_bytes": folder_model_bytes(folder), "rounds": len(times["prefill"]),
            "prefill_tokens_per_s": median_rate(prompt, times["prefill"]),
            "decode_tokens_per_s": median_rate(new_tokens, times["decode"])}


def bench_checkpoint(members: list[tuple[Path, Manifest]], settings: BenchSettings, work: Path) -> dict[str, Any]:
    """Every figure of one checkpoint's weight-only folders against its fp32 export, measured on this host."""
    first, manifest = members[0]
    folders = {FP32: first / REFERENCE_DIR, **{folder.name: folder for folder, _ in members}}
    if not (folders[FP32] / "genai_config.json").is_file():
        raise InputError(f"{first.name} has no fp32 export in {REFERENCE_DIR}/ (genai_config.json and model.onnx): the "
                         f"decoder bench compares with it; bench the folder `quantgate build` wrote")
    limit = context_length(first)
    if settings.new_tokens >= limit:
        raise InputError(f"--new-tokens {settings.new_tokens}: {first.name} holds {limit} tokens of context; give "
                         f"fewer new tokens")
    length = min(settings.prompt_tokens, limit - settings.new_tokens)
    prompt = prompt_ids(manifest, length)
    models = {name: load_model(folder, settings.threads) for name, folder in folders.items()}
    times = interleaved_generations(models, prompt, settings.new_tokens, settings.seconds)
    del models
    prompt_file = work / f"{first.name}-prompt.npy"
    np.save(prompt_file, prompt)
    baseline = peak_rss_mb(None, prompt_file, settings.new_tokens, settings.threads)
    found = {name: model_figures(folder, times[name], length, settings.new_tokens)
             | memory(folder, prompt_file, settings, baseline) for name, folder in folders.items()}
    feeds = step_feeds(first, prompt)
    graphs = {name: folder / "model.onnx" for name, folder in folders.items()}
    op_profile = {step: profiles(graphs, feed, settings.threads, work) for step, feed in feeds.items()}
    rows = {"prefill": length, "decode": 1}
    floors = {name: decoder_floors(graphs[name], graphs[FP32], rows, {s: op_profile[s][FP32] for s in STEPS},
                                   settings.threads, settings.seconds / 2) for name in folders if name != FP32}
    group = {"subject": DecoderSubject.kind, "model": manifest.model, "target": manifest.target,
             "artifacts": [folder.name for folder, _ in members], "modes": {f.name: m.mode for f, m in members},
             "prompt_tokens": length, "new_tokens": settings.new_tokens, "baseline_rss_mb": round(baseline, 1),
             "models": found, "ratios": {name: ratios(found, times, name, floors[name], settings.new_tokens)
                                         for name in floors},
             "op_type_profile": op_profile, "matmul_nbits_floor": {k: v for k, v in floors.items() if v}}
    if not all(floors.values()):
        group["floor_absent"] = NO_FLOOR
    return group


def step_ms(seconds: list[float], step: str, new_tokens: int) -> float:
    """Milliseconds of one run of the model in this step: the prefill, or one decode step."""
    return statistics.median(seconds) * 1000 / (new_tokens if step == "decode" else 1)


def ratios(found: dict[str, dict], times: dict[str, dict[str, list[float]]], name: str, floors: dict | None,
           new_tokens: int) -> dict[str, Any]:
    """One folder against fp32: tokens/s ratios (above 1: faster) with the paired per-round interval, size, memory;
    per step the verdict on its time (the build's rule: too small to time when fp32 runs a step faster than
    speed.min_timeable_ms) and, where a MatMulNBits floor was measured, its time as a multiple of the floor's."""
    figures = {f"{step}_tokens_per_s_vs_fp32": paired_ratio(times[FP32][step], times[name][step]) for step in STEPS}
    figures["verdict"] = {step: judge(paired_ratio(times[name][step], times[FP32][step]),
                                      step_ms(times[FP32][step], step, new_tokens), SpeedConfig.min_timeable_ms)
                          for step in STEPS}
    figures["fp32_step_ms"] = {step: round(step_ms(times[FP32][step], step, new_tokens), 4) for step in STEPS}
    for step, floor in (floors or {}).items():
        time_ratio = 1 / figures[f"{step}_tokens_per_s_vs_fp32"]["ratio"]
        figures[f"{step}_time_vs_floor"] = time_ratio / floor["kernel_vs_fp32"]
    return figures | {"size_vs_fp32": found[name]["size_bytes"] / found[FP32]["size_bytes"],
                      "peak_rss_vs_fp32": found[name]["peak_rss_mb"] / found[FP32]["peak_rss_mb"],
                      "model_rss_vs_fp32": found[name]["model_rss_mb"] / found[FP32]["model_rss_mb"]}

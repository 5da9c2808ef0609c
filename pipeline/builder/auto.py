"""Stage 3 for mode=auto: which int8 mode this model gets on this host. Both candidates, static and dynamic, are
quantized, held to the accuracy budget (pipeline/builder/gate.py) and timed against fp32 (pipeline/builder/speed.py);
the graph decides where it can tell (convolutions: static, since dynamic int8 runs them as ConvInteger, slower than
fp32), otherwise the faster on this host beyond noise is kept (within noise: the faster median). A candidate over budget is never kept; both
over budget fail the build with both candidates' figures. manifest.json's `mode` is the mode kept and `mode_choice`
says why, with each candidate's figures; the artifact folder keeps the name it was asked for (<model>-auto-<target>).
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipeline.errors import BuildFailed
from pipeline.manifest import Manifest, ModeChoiceRecord
from pipeline.progress import say

CANDIDATES = ("static", "dynamic")
CONVOLUTIONS = ("Conv", "ConvTranspose")


def graph_preference(reference: Path) -> tuple[str | None, str]:
    """(the mode the fp32 graph calls for, or None where it cannot tell; why)."""
    import onnx
    ops = Counter(node.op_type for node in onnx.load(str(reference), load_external_data=False).graph.node)
    convolutions = sum(ops[op] for op in CONVOLUTIONS)
    if convolutions:
        return "static", (f"{convolutions} convolution(s): static int8 runs them as QLinearConv, dynamic int8 as "
                          f"ConvInteger (slower than fp32)")
    return None, "no convolutions: which mode is faster depends on this host's int8 kernels"


def with_mode(cfg, mode: str):
    """A copy of the build's config with mode.name set to one candidate."""
    chosen = copy.deepcopy(cfg)
    chosen.mode.name = mode
    return chosen


def coverage_failed(manifest: Manifest) -> bool:
    """Whether the calibration sample is over its coverage bound (calibration.coverage_fail, which static int8's
    fixed ranges depend on); the report is informational for mode=auto, which was not yet static."""
    import json
    path = manifest.path(manifest.calibration_report_file)
    report = json.loads(path.read_text()) if path.is_file() else {}
    return report.get("worst_fraction_outside", 0.0) > report.get("fail_threshold", 1.0)


def build_candidate(cfg, manifest: Manifest, mode: str, stash: Path) -> tuple[Manifest, dict]:
    """Quantize, gate and time one candidate; its model file (and debug sidecar) moved to `stash`."""
    from pipeline.builder import gate, quantize, speed
    from pipeline.builder.reproducible import debug_file_for

    started = time.perf_counter()
    candidate, candidate_cfg = copy.deepcopy(manifest), with_mode(cfg, mode)
    candidate.mode = mode
    say(f"auto: building the {mode} candidate")
    candidate = quantize.run(candidate_cfg, candidate)
    outcome = ""
    try:
        candidate = gate.run(candidate_cfg, candidate)
    except gate.OverBudget as error:  # figures kept, never chosen
        outcome = f"over the accuracy budget: {error}"
    candidate.speed = speed.measure(candidate, cfg.speed)
    for relative in (candidate.model_file, debug_file_for(candidate.model_file)):
        if manifest.path(relative).is_file():
            (stash / mode / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(manifest.path(relative), stash / mode / relative)
    figures = {"within_budget": not outcome, "outcome": outcome,
               "budget": candidate.fallback.budget if candidate.fallback else "",
               "validation": dict(candidate.int8_metrics), "speed": dataclasses.asdict(candidate.speed),
               "seconds": round(time.perf_counter() - started, 2)}
    say(f"auto: {mode}: {'within budget' if not outcome else 'OVER BUDGET'}; {speed.summary_line(candidate.speed)}")
    return candidate, figures


def head_to_head(manifest: Manifest, stash: Path, speed_cfg) -> dict[str, float]:
    """static/dynamic: the two int8 graphs timed against each other in one interleaved loop at the judged batch (each
    candidate's own ratio to fp32 comes from its own loop, under whatever load that loop had)."""
    import os

    from pipeline.builder.speed import heldout_inputs, time_pair
    from pipeline.timing import batch_of
    batch = int(speed_cfg.batches[0])
    models = {mode: stash / mode / manifest.model_file for mode in CANDIDATES}
    feed = batch_of(heldout_inputs(manifest), batch, manifest.batch_axes.get("inputs"))
    return {"batch": batch, **time_pair(models, feed, speed_cfg,
                                        os.cpu_count() or 1)}


def choose(preferred: str | None, why: str, candidates: dict[str, dict],
           duel: dict[str, float] | None) -> tuple[str, str]:
    """(the mode kept, the reason in words) among candidates within budget: the graph's preference where it has one,
    else the faster of the two timed in one loop (`duel`, static/dynamic) beyond noise, else the faster median."""
    passing = [mode for mode, figures in candidates.items() if figures["within_budget"]]
    if len(passing) == 1:
        other = next(mode for mode in candidates if mode != passing[0])
        return passing[0], f"the only candidate within the accuracy budget ({other}: {candidates[other]['outcome']})"
    ratio = {mode: next(iter(candidates[mode]["speed"]["latency"].values()))["ratio"] for mode in passing}
    measured = "int8/fp32 " + ", ".join(f"{mode} {ratio[mode]:.2f}x" for mode in passing)
    if preferred:
        return preferred, f"both within budget ({measured} on this host); the graph decides: {why}"
    duel_words = (f"static/dynamic {duel['ratio']:.2f}x, 95% interval {duel['low']:.2f}-{duel['high']:.2f}, the two "
                  f"timed in one loop at batch {duel['batch']}; {measured}")
    if duel["high"] < 1 or duel["low"] > 1:
        kept = "static" if duel["high"] < 1 else "dynamic"
        return kept, f"both within budget; {kept} is faster on this host beyond noise ({duel_words}); {why}"
    kept = "static" if duel["ratio"] < 1 else "dynamic"
    return kept, f"both within budget and within noise of each other ({duel_words}); kept the faster median"


def run(cfg, manifest: Manifest) -> Manifest:
    preferred, why = graph_preference(manifest.path(manifest.reference_file))
    modes = list(CANDIDATES)
    skipped = {}
    if coverage_failed(manifest):
        modes.remove("static")
        skipped["static"] = {"within_budget": False, "outcome": "not built: the calibration sample failed its "
                             "coverage bound (calibration_report.json), which static int8's fixed ranges rely on"}
    built: dict[str, Manifest] = {}
    candidates: dict[str, dict] = dict(skipped)
    with tempfile.TemporaryDirectory() as scratch:
        for mode in modes:
            built[mode], candidates[mode] = build_candidate(cfg, manifest, mode, Path(scratch))
        passing = [mode for mode in candidates if candidates[mode]["within_budget"]]
        if not passing:
            raise BuildFailed("mode=auto: no candidate is within the accuracy budget: " + "; ".join(
                f"{mode}: {figures['outcome']}" for mode, figures in candidates.items()))
        duel = head_to_head(manifest, Path(scratch), cfg.speed) \
            if preferred is None and all(candidates[mode]["within_budget"] for mode in CANDIDATES) else None
        kept, reason = choose(preferred, why, candidates, duel)
        for mode, figures in candidates.items():
            figures["outcome"] = "kept" if mode == kept else figures["outcome"] or "slower, or not preferred"
        for path in (Path(scratch) / kept).rglob("*"):
            if path.is_file():
                shutil.move(path, manifest.path(path.relative_to(Path(scratch) / kept).as_posix()))
    chosen = built[kept]
    chosen.mode_choice = ModeChoiceRecord(requested="auto", chosen=kept, reason=reason, candidates=candidates,
                                          static_vs_dynamic=duel)
    say(f"auto: kept {kept}: {reason}")
    for warning in chosen.speed.warnings.values():
        say(f"speed: WARNING: {warning}")
    return chosen

"""Stage 3 for mode=auto: which int8 mode this model gets on this host. Both candidates, static and dynamic, are
quantized, held to the accuracy budget (pipeline/build/gate.py) and timed against fp32 (pipeline/build/speed.py);
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

from pipeline.errors import QuantgateError
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
    """Whether the calibration sample failed its coverage bound (which static int8 depends on)."""
    import json
    report = manifest.path(manifest.calibration_report_file)
    return report.is_file() and json.loads(report.read_text()).get("status") == "fail"


def build_candidate(cfg, manifest: Manifest, mode: str, stash: Path) -> tuple[Manifest, dict]:
    """Quantize, gate and time one candidate; its model file (and debug sidecar) moved to `stash`."""
    from pipeline.build import gate, quantize, speed
    from pipeline.build.reproducible import debug_file_for

    started = time.perf_counter()
    candidate, candidate_cfg = copy.deepcopy(manifest), with_mode(cfg, mode)
    candidate.mode = mode
    say(f"auto: building the {mode} candidate")
    candidate = quantize.run(candidate_cfg, candidate)
    outcome = ""
    try:
        candidate = gate.run(candidate_cfg, candidate)
    except QuantgateError as error:  # over its accuracy budget: figures kept, never chosen
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


def faster(a: dict, b: dict) -> bool | None:
    """Whether candidate `a` is faster than `b` at the judged batch, beyond the noise of both; None: cannot tell
    (their intervals overlap, or a model too small to time)."""
    if "too_small_to_time" in (a["speed"]["verdict"], b["speed"]["verdict"]):
        return None
    first_a, first_b = (next(iter(c["speed"]["latency"].values())) for c in (a, b))
    if first_a["high"] < first_b["low"]:
        return True
    return False if first_b["high"] < first_a["low"] else None


def choose(preferred: str | None, why: str, candidates: dict[str, dict]) -> tuple[str, str]:
    """(the mode kept, the reason in words) among candidates within budget: the graph's preference where it has one,
    else the faster beyond noise, else the faster median."""
    passing = [mode for mode, figures in candidates.items() if figures["within_budget"]]
    if len(passing) == 1:
        other = next(mode for mode in candidates if mode != passing[0])
        return passing[0], f"the only candidate within the accuracy budget ({other}: {candidates[other]['outcome']})"
    ratio = {mode: next(iter(candidates[mode]["speed"]["latency"].values()))["ratio"] for mode in passing}
    measured = "int8/fp32 " + ", ".join(f"{mode} {ratio[mode]:.2f}x" for mode in passing)
    if preferred:
        return preferred, f"both within budget ({measured} on this host); the graph decides: {why}"
    first, second = passing
    verdict = faster(candidates[first], candidates[second])
    if verdict is not None:
        kept = first if verdict else second
        return kept, f"both within budget; {kept} is faster on this host beyond noise ({measured}); {why}"
    too_small = any(candidates[mode]["speed"]["verdict"] == "too_small_to_time" for mode in passing)
    cannot_tell = "too small to time on this host" if too_small else "within noise of each other"
    return min(passing, key=ratio.get), f"both within budget, {cannot_tell} ({measured}); kept the faster median"


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
            raise QuantgateError("mode=auto: no candidate is within the accuracy budget: " + "; ".join(
                f"{mode}: {figures['outcome']}" for mode, figures in candidates.items()))
        kept, reason = choose(preferred, why, candidates)
        for mode, figures in candidates.items():
            figures["outcome"] = "kept" if mode == kept else figures["outcome"] or "slower, or not preferred"
        for path in (Path(scratch) / kept).rglob("*"):
            if path.is_file():
                shutil.move(path, manifest.path(path.relative_to(Path(scratch) / kept).as_posix()))
    chosen = built[kept]
    chosen.mode_choice = ModeChoiceRecord(requested="auto", chosen=kept, reason=reason, candidates=candidates)
    say(f"auto: kept {kept}: {reason}")
    for warning in chosen.speed.warnings.values():
        say(f"speed: WARNING: {warning}")
    return chosen

"""The bench's report: results.json as measured, and results.md, its ratios in words and tables, section by section
(int8 ONNX artifacts, modes side by side, where the time goes and the floor, decoders, build time, not benched)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.manifest import atomic_write_bytes, atomic_write_json
from pipeline.config.schema import SpeedConfig
from pipeline.release.bench.decoder import STEPS
from pipeline.release.bench.floor import decoder_floor_words, floor_lines
from pipeline.release.bench.profiles import profile_line

# The one figure a results.md row shows per model, the first the model has: (key, label, format).
SHOWN_FIGURE = (("score_correlation", "score r", ".4f"), ("label_set_agreement", "label sets", ".3f"),
                ("decision_agreement", "decisions", ".3f"), ("top1_agreement", "top-1", ".3f"),
                ("cosine_mean", "cos", ".4f"), ("detection_recall", "detection recall", ".3f"),
                ("near_empty_error_worst", "near-empty error", ".3g"))


VERDICT_WORDS = {"faster": "faster beyond noise", "slower": "SLOWER than fp32 beyond noise",
                 "within_noise": "within noise of fp32"}


def too_small(fp32_ms: float, run: str) -> str:
    """The words for a ratio not judged (pipeline/builder/speed.py judge: too_small_to_time)."""
    return (f"too small to time here (fp32 {fp32_ms:.3g} ms {run}, under speed.min_timeable_ms "
            f"{SpeedConfig.min_timeable_ms} ms: the runtime's fixed costs decide the ratio): not judged")


def _fid(figures: dict[str, float]) -> str:
    return next((f"{label} {figures[key]:{spec}}" for key, label, spec in SHOWN_FIGURE if key in figures),
                "no fidelity figure")


def int8_table(report: dict[str, Any]) -> list[str]:
    """One row per int8 ONNX artifact: its ratios to the fused fp32 graph and to a plain quantize_dynamic."""
    batches = report["settings"]["batches"]
    big = str(batches[-1])
    head = ["artifact", "subject", "size int8/fp32"]
    head += [f"b{b} p50 int8/fp32" for b in batches] + [f"b{b} p95 int8/fp32" for b in batches]
    head += [f"b{big} throughput int8/fp32 (>1: int8 more)", f"plain ORT dyn b{big} p50 /fp32",
             f"ours/plain b{big} p50", f"unfused fp32/fp32 b{big} p50", "fidelity ours", "fidelity plain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in report["artifacts"]:
        r, lat = case["ratios"], case["latency"][big]
        cells = [case["artifact"], case.get("subject", "-"), f"{r['size_int8_vs_fp32']:.2f}x"]
        cells += [f"{r[str(b)]['int8_vs_fp32_p50']:.2f}x" for b in batches]
        cells += [f"{r[str(b)]['int8_vs_fp32_p95']:.2f}x" for b in batches]
        cells += [f"{lat['int8']['throughput_per_s'] / lat['fp32']['throughput_per_s']:.2f}x",
                  f"{r[big]['plain_int8_vs_fp32_p50']:.2f}x", f"{r[big]['int8_vs_plain_int8_p50']:.2f}x",
                  f"{r[big]['fp32_unfused_vs_fp32_p50']:.2f}x" if "fp32_unfused_vs_fp32_p50" in r[big] else "-",
                  _fid(case["fidelity"]["int8"]), _fid(case["fidelity"]["plain_int8"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def int8_notes(report: dict[str, Any]) -> list[str]:
    """How the int8 artifacts were timed, the noise of each ratio, and the absolute p50s."""
    s, batches, machine = report["settings"], report["settings"]["batches"], report["host"]
    lines = [f"Ratios int8/fp32 (below 1: int8 smaller or faster), measured in one run on {machine['cpu']} "
             f"({machine['cores']} cores), onnxruntime {machine['onnxruntime']}, {s['intra_op_threads']} intra-op "
             f"threads, all graph optimizations, about {s['seconds_per_case']} s per case"
             + (f", token models timed at {s['sequence_length']} tokens per sample" if s.get("sequence_length") else "")
             + ". Plain ORT dyn = `quantize_dynamic` of the fp32 graph with default arguments.",
             "fp32 is the fused graph (model.fuse) where the artifact has one; `unfused fp32/fp32` is the export "
             "before fusion (debug/reference.unfused.onnx).", "",
             "Noise: the median per-round int8/fp32 ratio with its 95% interval (runs interleaved, one process):", ""]
    for case in report["artifacts"]:
        lines.append(f"- {case['artifact']}: " + "; ".join(
            f"b{batch} {noise['ratio']:.2f}x ({noise['low']:.2f}-{noise['high']:.2f}, {noise['rounds']} rounds)"
            + (f": {too_small(case['latency'][batch]['fp32']['p50_ms'], 'a run')}"
               if case.get("verdict", {}).get(batch) == "too_small_to_time" else "")
            for batch, noise in case.get("noise", {}).items()))
    lines += ["", "Absolute p50 (ms):", ""]
    for case in report["artifacts"]:
        lat = case["latency"]
        lines.append(f"- {case['artifact']}: " + "; ".join(
            f"b{b}: fp32 {lat[str(b)]['fp32']['p50_ms']:.3g}, int8 {lat[str(b)]['int8']['p50_ms']:.3g}, "
            f"plain {lat[str(b)]['plain_int8']['p50_ms']:.3g}" for b in batches))
    return lines


def side_by_side_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for entry in report.get("side_by_side", ()):
        parts = [f"b{batch}: " + ", ".join(f"{entry['modes'][name]} {ratio:.2f}x" for name, ratio in ratios.items())
                 for batch, ratios in entry["int8_vs_fp32_p50"].items()]
        lines.append(f"- {entry['model']} {entry['target']}: " + "; ".join(parts))
    return ["", "Modes side by side (one interleaved loop with the fp32 graph; p50 int8/fp32):", "", *lines] \
        if lines else []


def where_time_goes(report: dict[str, Any]) -> list[str]:
    """Per int8 artifact: the distance to this host's int8 floor, and each graph's time by operator type."""
    cases = [case for case in report["artifacts"] if case.get("op_type_profile")]
    if not cases:
        return []
    lines = ["", "Where the time goes (kernel time by operator type, batch "
             f"{report['settings']['batches'][-1]}; share of the total; onnxruntime's profiler):", ""]
    for case in cases:
        lines += floor_lines(case)
        lines += [profile_line(f"{case['artifact']} {name}", case["op_type_profile"][name])
                  for name in ("fp32", "int8")]
    return lines


def decoder_lines(report: dict[str, Any]) -> list[str]:
    """Per checkpoint: tokens/s, memory and size of each weight-only folder against its fp32 export."""
    if not report.get("decoders"):
        return []
    lines = ["", "Weight-only decoders (onnxruntime-genai's generator, batch 1, greedy; folders and the fp32 export "
             "in one interleaved loop; tokens/s ratios above 1: faster, with the per-round 95% interval; peak RSS of "
             "a child process per folder):", "",
             "| artifact | size /fp32 | prefill tok/s /fp32 | decode tok/s /fp32 | peak RSS /fp32 | "
             "model RSS /fp32 |", "|---|---|---|---|---|---|"]
    notes = []
    for group in report["decoders"]:
        for name, r in group["ratios"].items():
            prefill, decode = r["prefill_tokens_per_s_vs_fp32"], r["decode_tokens_per_s_vs_fp32"]
            lines.append(f"| {name} | {r['size_vs_fp32']:.2f}x | {prefill['ratio']:.2f}x ({prefill['low']:.2f}-"
                         f"{prefill['high']:.2f}) | {decode['ratio']:.2f}x ({decode['low']:.2f}-{decode['high']:.2f}) "
                         f"| {r['peak_rss_vs_fp32']:.2f}x | {r['model_rss_vs_fp32']:.2f}x |")
        notes.append(f"- {', '.join(group['artifacts'])}: {group['prompt_tokens']}-token prompt, "
                     f"{group['new_tokens']} new tokens, child baseline {group['baseline_rss_mb']:.0f} MB; "
                     + "; ".join(f"{name} prefill {m['prefill_tokens_per_s']:,.1f} tok/s, decode "
                                 f"{m['decode_tokens_per_s']:,.1f} tok/s, peak {m['peak_rss_mb']:.0f} MB, "
                                 f"{m['size_bytes'] / 1e6:.3g} MB on disk" for name, m in group["models"].items()))
        for step in ("prefill", "decode"):
            notes += [profile_line(f"{name} {step}", profile)
                      for name, profile in group["op_type_profile"][step].items() if isinstance(profile, dict)]
        notes += [step_words(group, name, step) for name in group["ratios"] for step in STEPS]
        if group.get("floor_absent"):
            notes.append(f"- MatMulNBits floor: {group['floor_absent']}")
    return [*lines, "", *notes]


def step_words(group: dict[str, Any], name: str, step: str) -> str:
    """`- <folder> decode: 4.20x fp32's tokens/s (faster beyond noise); the MatMulNBits floor ...: 1.19x the floor`,
    or that the step is too small to time here."""
    r = group["ratios"][name]
    tokens = r[f"{step}_tokens_per_s_vs_fp32"]["ratio"]
    said = f"- {name} {step}: {tokens:.2f}x fp32's tokens/s"
    if r["verdict"][step] == "too_small_to_time":
        return f"{said}: {too_small(r['fp32_step_ms'][step], 'a prefill' if step == 'prefill' else 'a decode step')}"
    floor = (group.get("matmul_nbits_floor", {}).get(name) or {}).get(step)
    return f"{said} ({VERDICT_WORDS[r['verdict'][step]]})" + (
        f"; {decoder_floor_words(floor, 1 / tokens)}" if floor else "")


def build_time_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for case in report["artifacts"]:
        timed = case.get("build_time")
        if timed:
            stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in timed["stage_seconds"]["cached"].items())
            lines.append(f"- {case['artifact']}: `quantgate build` (verify off) "
                         f"{timed['median_seconds']['cached']:.1f} s with the reference from the cache, "
                         f"{timed['median_seconds']['anew']:.1f} s exporting it anew: {timed['cached_vs_anew']:.2f}x (medians of {timed['runs']}, in turn); stages "
                         f"from the cache (s): {stages}")
    return ["", "Build time (whole command, a process each; pipeline/builder/reference_cache.py):", "", *lines] \
        if lines else []


def markdown(report: dict[str, Any]) -> str:
    int8 = [*int8_table(report), "", *int8_notes(report)] if report["artifacts"] else []
    skipped = [f"- {entry['artifact']}: {entry['reason']}" for entry in report.get("skipped", ())]
    return "\n".join(["# quantgate benchmark", "", *int8, *side_by_side_lines(report), *where_time_goes(report),
                      *decoder_lines(report), *build_time_lines(report),
                      *(["", "Not benched:", "", *skipped] if skipped else [])]) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """results.json (what the signoff's plot reads) goes first and comes back last: a kill in between leaves no
    results.json, never an old one beside a new results.md. Prints the table."""
    table = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    atomic_write_bytes(out / "results.md", table.encode())
    atomic_write_json(out / "results.json", report)
    print(table)
    print(f"wrote {out}/results.json and results.md in {report['wall_seconds']} s")

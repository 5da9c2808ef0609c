"""Padding invariance of an ONNX artifact: whether the check applies to it, and the judgement of each sequence
alone against the same sequence padded inside a batch (on a profile, for fp32's own run, for the native one).
The explanations of a move are pipeline.verify.padding's."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.verify.fidelity import Limits, judge, keep_decisions_within_noise, output_kind, output_scale
from pipeline.verify.onnx.evidence import Evidence
from pipeline.verify.padding import Baselines, error_alone, explain, movement, quantizes_at_run_time


def padding_plan(artifact: Path, input_names: list[str], cfg) -> dict:
    """Whether the padding check applies, and a failure that needs no run (no mask, or a mask no node reads)."""
    v = cfg.verify
    if not v.padding_check:
        return {"status": "skipped", "reason": "verify.padding_check=false"}
    if "input_ids" not in input_names:
        return {"status": "skipped", "reason": f"no input_ids input (inputs: {', '.join(input_names)}): not a "
                                               f"token-sequence model, padding does not apply"}
    if "attention_mask" not in input_names:
        return {"status": "fail", "reason": "the model takes input_ids but was exported without an attention_mask "
                "input: it cannot tell padding from tokens, so a sequence padded inside a batch gives a different "
                "result than alone; export it with attention_mask"}
    import onnx
    graph = onnx.load(str(artifact), load_external_data=False).graph
    if not any("attention_mask" in node.input for node in graph.node):
        return {"status": "fail", "reason": "attention_mask is a model input that no node reads: the mask is "
                                            "ignored, so padded batches give different results"}
    limits = Limits(v.padding_min_cosine_mean, v.padding_min_cosine_worst, v.padding_min_top1_agreement,
                    v.padding_max_abs_error, pooling=str(v.pooling))
    return {"status": "pending", "extra_tokens": v.padding_extra_tokens, "thresholds": limits.to_json(),
            "dynamic": quantizes_at_run_time(graph),
            "reason": "each held-out sequence alone vs in a batch padded past the longest, on every profile that runs"}


def padding_arrays(outputs: dict, names) -> tuple[np.ndarray | None, dict, dict]:
    """The child's padding runs (child_onnx.padding_runs): the mask, each output alone and padded in a batch."""
    alone = {name: outputs[f"padding_alone.{name}"] for name in names if f"padding_alone.{name}" in outputs}
    return outputs.get("padding_mask"), alone, {name: outputs[f"padding_batched.{name}"] for name in alone}


def judge_padding(outputs: dict, evidence: Evidence, padding: dict, fidelity: dict[str, dict], hint: str = "",
                  ids: list[int] | None = None) -> dict:
    """Each sequence alone vs inside a padded batch, over the positions that are tokens. A sample whose padded output
    lies within the artifact's own error to fp32 on this profile (`fidelity`'s max_abs_error per output) keeps its
    decisions (classes, labels): a move that small only flips a decision int8 decides either way, while an ignored
    mask moves outputs further and flips clear decisions too. Outputs that moved are explained by
    pipeline.verify.padding (fp32's own padded run, the native one, this profile's int8 error; `hint`: this CPU's
    numerics in words; `ids`: the held-out samples this run holds)."""
    limits = Limits(**padding["thresholds"])
    mask, alone, batched = padding_arrays(outputs, evidence.fp32)
    judged, within_noise = {}, 0
    for name, array in alone.items():
        kind = output_kind(array, evidence.model_kind, mask)
        judged[name], kept = keep_decisions_within_noise(kind, batched[name], array, mask,
                                                         fidelity.get(name, {}).get("max_abs_error", 0.0))
        within_noise += kept
    scales = {name: output_scale(array, mask) for name, array in alone.items()}
    measured = judge(batched, alone, model_kind=evidence.model_kind, mask=mask, labels=None, limits=limits,
                     scales=scales)  # the figures as padding left them
    judgement = judge(judged, alone, model_kind=evidence.model_kind, mask=mask, labels=None, limits=limits,
                      scales=scales) if within_noise else measured
    result = {"status": "fail" if judgement.problems else "pass", "figures": measured.summary,
              "figures_by_output": measured.by_output, "samples": len(next(iter(alone.values()))) if alone else 0,
              "decisions_kept_within_int8_noise": within_noise}
    if judgement.problems:
        baselines = evidence.padding or Baselines()
        errors = error_alone(alone, baselines.fp32_alone, ids,
                             {name: fidelity.get(name, {}).get("max_abs_error", 0.0) for name in alone})
        moved = movement(measured.by_output, errors)
        result |= moved.to_json() | explain("; ".join(judgement.problems), moved, baselines, padding["extra_tokens"], hint)
    return result


def fp32_padding(outputs: dict, evidence: Evidence, padding: dict) -> dict | None:
    """The fp32 reference's own padding run, judged like a profile's (no int8 noise): does the model apply its mask?"""
    mask, alone, batched = padding_arrays(outputs, evidence.fp32)
    if len(alone) != len(evidence.fp32):
        return None
    judgement = judge(batched, alone, model_kind=evidence.model_kind, mask=mask, labels=None,
                      limits=Limits(**padding["thresholds"]),
                      scales={name: output_scale(array, mask) for name, array in alone.items()})
    return {"status": "fail" if judgement.problems else "pass", "figures": judgement.summary,
            "reason": "; ".join(judgement.problems) or "fp32 keeps its outputs padded"}


def native_padding(outputs: dict, evidence: Evidence, padding: dict) -> dict | None:
    """The artifact's native measurement run, alone vs padded: `kept` when it moved at most within its own int8 error."""
    if not all(f"padding_alone.{name}" in outputs for name in evidence.fp32):
        return None
    fidelity = judge({name: outputs[name] for name in evidence.fp32}, evidence.fp32, model_kind=evidence.model_kind,
                     mask=evidence.mask, labels=None, limits=evidence.limits, scales=evidence.scales).by_output
    result = judge_padding(outputs, evidence, padding, fidelity, ids=list(range(len(next(iter(evidence.fp32.values()))))))
    return {"status": "kept" if result["status"] == "pass" else "moved"} | {
        key: result[key] for key in ("figures", "max_movement", "int8_noise_bound", "cause", "reason") if key in result}

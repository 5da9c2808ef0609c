"""Judging one profile's run of an ONNX artifact: its outputs against fp32 (every output, pipeline.verify.fidelity),
against the reference CPU's on the same samples (per-CPU numerics), a streamed model's state drift, padding
invariance, and whether the runtime's real load confirmed the guard's prediction."""
from __future__ import annotations

import numpy as np

from pipeline.isa.targets import CpuProfile
from pipeline.verify.cpu_kinds import kind_of
from pipeline.verify.fidelity import CpuComparison, compare_cpus, judge, state_drift
from pipeline.verify.onnx.evidence import Evidence
from pipeline.verify.onnx.padding_runs import judge_padding
from pipeline.verify.planning import numerics_hint


def judge_outputs(record: dict, cpu: CpuProfile, outputs: dict[str, np.ndarray], ids: list[int], evidence: Evidence,
                  host: frozenset[str], v, padding: dict | None) -> dict:
    """`record` (a run that ended well) with its figures and verdict: fidelity to fp32 on the samples `ids`, the
    carried state's drift, the comparison with the reference CPU and (given `padding`) padding invariance."""
    subset = len(ids) < len(next(iter(evidence.fp32.values())))  # the samples chosen for emulation
    limits = evidence.limits.per_sample_only() if subset else evidence.limits
    record["thresholds"] = limits.to_json() | {"max_cpu_excess_error": v.max_cpu_excess_error,
                                               "max_cpu_error_ratio": v.max_cpu_error_ratio}
    if subset:
        record["thresholds"]["note"] = ("the hardest samples, chosen on purpose: per-sample bounds only (means and "
                                        "agreement rates are judged on the native run of every sample)")
    fp32, mask, labels = evidence.rows(ids)
    judgement = judge(outputs, fp32, model_kind=evidence.model_kind, mask=mask, labels=labels, limits=limits,
                      scales=evidence.scales, groups=evidence.groups, detection=evidence.detection)
    record |= {"fidelity": judgement.summary, "fidelity_by_output": judgement.by_output}
    problems = list(judgement.problems)
    if evidence.batch_axes.get("state"):  # run streamed: how far the carried state drifts over the sequence
        record["state_drift"], drifted = state_drift(outputs, fp32, evidence.batch_axes["state"],
                                                     evidence.batch_axes["steps"], v.max_state_drift)
        problems += drifted
        if record["state_drift"]:  # the worst step of the worst state, beside the other figures and their bounds
            record["fidelity"]["state_drift"] = max(figures["worst"] for figures in record["state_drift"].values())
            record["thresholds"]["max_state_drift"] = v.max_state_drift
    failure = "fidelity" if problems else None
    comparison = compare_with_reference_cpu(cpu, outputs, ids, evidence, host, v)
    record["cpu_comparison"] = comparison.to_json()
    if comparison.status == "fail":
        problems.append(comparison.reason)
        failure = failure or "cpu_numerics"
    if problems:
        record |= {"status": "fail", "failure": failure, "reason": "out of bounds: " + "; ".join(problems)}
    else:
        record["reason"] = "ran; outputs within bounds of the fp32 reference" + (
            f" and of {evidence.reference_cpu}'s" if comparison.status == "pass" else "")
    if padding:
        add_padding(record, cpu, outputs, ids, evidence, host, padding, judgement.by_output, bool(problems))
    return record


def add_padding(record: dict, cpu: CpuProfile, outputs: dict, ids: list[int], evidence: Evidence,
                host: frozenset[str], padding: dict, by_output: dict, failed: bool) -> None:
    """The profile's padding judgement into `record`; a failure fails the profile (after any earlier problems)."""
    hint = numerics_hint(cpu.name, host) if cpu.family == "x86_64" and not kind_of(cpu).remote else ""
    record["padding"] = judge_padding(outputs, evidence, padding, by_output, hint if "saturation" in hint else "", ids)
    words = record["padding"].get("reason")
    if record["padding"]["status"] == "fail":
        record |= {"status": "fail", "failure": record.get("failure") or "padding",
                   "reason": words if not failed else f"{record['reason']}; {words}"}
    elif words:  # it moved, within int8's own error: the cause, in words
        record["reason"] += f"; padding: {words}"


def compare_with_reference_cpu(cpu, outputs: dict, ids: list[int], evidence: Evidence, host: frozenset[str],
                               v) -> CpuComparison:
    if evidence.reference_cpu_outputs is None:
        return CpuComparison("not_measured", evidence.reference_cpu_reason, evidence.reference_cpu)
    shared = [i for i in ids if i in evidence.reference_cpu_ids]
    if not shared:
        return CpuComparison("not_measured", "no sample ran on both this profile and the reference CPU",
                             evidence.reference_cpu)
    here = [ids.index(i) for i in shared]
    there = [evidence.reference_cpu_ids.index(i) for i in shared]
    fp32, mask, _ = evidence.rows(shared)
    return compare_cpus(cpu.name, {k: v[here] for k, v in outputs.items() if k in fp32},
                        {k: v[there] for k, v in evidence.reference_cpu_outputs.items() if k in fp32}, fp32,
                        reference_cpu=evidence.reference_cpu, mask=mask, sample_ids=shared, scales=evidence.scales,
                        max_excess_error=v.max_cpu_excess_error, max_error_ratio=v.max_cpu_error_ratio,
                        hint=numerics_hint(cpu.name, host), groups=evidence.groups)


def judge_prediction(record: dict, problems: list[str]) -> str | None:
    """Set record['runtime']['confirmed'] by what the real load did; a disagreement in words, or None."""
    if record.get("failure") == "load":
        loaded = False
    elif record["status"] == "pass" or record.get("failure") in ("fidelity", "padding", "cpu_numerics"):
        loaded = True
    else:  # refused by the guard, crashed, timed out: the load was never the question
        record["runtime"]["confirmed"] = None
        return None
    predicted = not problems
    record["runtime"]["confirmed"] = loaded == predicted
    if not loaded and not predicted:
        record["reason"] = f"{'; '.join(problems)} (predicted by the guard; confirmed by the load: {record['reason']})"
    if loaded == predicted:
        return None
    if loaded:
        return (f"the guard predicted onnxruntime would refuse it ({'; '.join(problems)}), but it loaded: "
                f"prediction and reality disagree")
    return f"the guard predicted it loads, but it did not ({record['reason']}): prediction and reality disagree"

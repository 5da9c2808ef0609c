"""Judging outputs against fp32 within `Limits`: every output (and its groups, and a detector's detections), the
problems in words, the profile's summary figures, decisions kept within int8's own noise, a streamed model's
state drift, and the reading of fp32's outputs (kinds, groups, scales) every judgement shares."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.verify.detection import DetectionSettings, detection_figures, detection_problems
from pipeline.verify.fidelity.figures import kind_figures, label_decisions
from pipeline.verify.fidelity.kinds import (AGREEMENT, LABEL_SETS, LOGITS, SCORE, TOKEN_STATES, output_kind,
                                            output_scale, token_mask, valid_values)
from pipeline.verify.fidelity.limits import Limits
from pipeline.verify.groups import detection_settings, find_groups, with_groups


@dataclass
class Judgement:
    """Figures per output, a flat summary (the worst of each figure over outputs), and what broke a bound."""

    by_output: dict[str, dict] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def judge_output(name: str, kind: str, output: np.ndarray, reference: np.ndarray, mask: np.ndarray | None,
                 labels: np.ndarray | None, limits: Limits, scale: float,
                 detection: DetectionSettings | None = None) -> tuple[dict, list[str]]:
    """One output against its fp32 reference on the same samples."""
    if output.shape != reference.shape:
        return {}, [f"{name}: shape {list(output.shape)} differs from the fp32 reference's {list(reference.shape)}"]
    a, b = output.astype(np.float64), reference.astype(np.float64)
    if not np.isfinite(a).all():  # NaN compares false with every threshold: catch it before it passes
        return {}, [f"{name}: {int((~np.isfinite(a)).sum())} output values are NaN or infinite"]
    difference = np.abs(valid_values(a, mask) - valid_values(b, mask))
    max_abs = float(difference.max()) if difference.size else 0.0
    figures = {"kind": kind, "max_abs_error": max_abs, "max_scaled_error": max_abs / scale, "scale": scale,
               "max_rel_error": max_abs / max(float(np.abs(valid_values(b, mask)).max(initial=0.0)), 1e-12)}
    figures |= kind_figures(kind, a, b, mask, labels, limits.pooling, scale, limits.near_empty_ratio,
                            limits.threshold)
    problems = direction_problems(name, kind, figures, limits, output)
    if detection is not None:
        figures |= detection_figures(a, b, detection)
        problems += detection_problems(name, figures, limits)
    if limits.max_abs_error is not None and max_abs > limits.max_abs_error:
        problems.append(f"{name}: max abs error {max_abs:.4g} > {limits.max_abs_error}")
    if limits.max_scaled_error is not None and figures["max_scaled_error"] > limits.max_scaled_error:
        problems.append(f"{name}: max error {figures['max_scaled_error']:.3g}x the output's scale > "
                        f"{limits.max_scaled_error}")
    return figures, problems


def direction_problems(name: str, kind: str, figures: dict, limits: Limits, output: np.ndarray) -> list[str]:
    """The kind's figures past their bounds, in words: agreements, accuracy drops, score correlations, cosines, and
    near-empty samples' errors."""
    problems = []
    if kind in AGREEMENT:
        key, what = AGREEMENT[kind]
        if limits.min_top1_agreement is not None and figures[key] < limits.min_top1_agreement:
            problems.append(f"{name}: {what} {figures[key]:.4f} < {limits.min_top1_agreement}")
        for what, key, limit in (("accuracy", "accuracy", limits.max_accuracy_drop),
                                 ("macro-F1", "macro_f1", limits.max_macro_f1_drop)):
            if limit is not None and key in figures and figures[f"reference_{key}"] - figures[key] > limit:
                problems.append(f"{name}: {what} {figures[key]:.4f} vs fp32 {figures[f'reference_{key}']:.4f} "
                                f"(drop {figures[f'reference_{key}'] - figures[key]:.4f} > {limit})")
    elif kind == SCORE:
        if limits.min_cosine_mean is not None and figures.get("score_correlation", 1.0) < limits.min_cosine_mean:
            over = "tokens" if output.size > len(output) else "samples"
            problems.append(f"{name}: score correlation with fp32 across the {over} {figures['score_correlation']:.4f}"
                            f" < {limits.min_cosine_mean}")
    else:
        what = "per-token cosine" if kind == TOKEN_STATES else "cosine"
        checks = [(what, figures["cosine_mean"], figures["cosine_worst"])] if "cosine_mean" in figures else []
        if "pooled_cosine_mean" in figures:
            checks.append((f"{limits.pooling}-pooled cosine", figures["pooled_cosine_mean"],
                           figures["pooled_cosine_worst"]))
        for label, mean, worst in checks:
            if limits.min_cosine_mean is not None and mean < limits.min_cosine_mean:
                problems.append(f"{name}: {label} mean {mean:.4f} < {limits.min_cosine_mean}")
            if worst < limits.min_cosine_worst:
                problems.append(f"{name}: {label} worst {worst:.4f} < {limits.min_cosine_worst}")
        bound, error = limits.max_near_empty_error, figures.get("near_empty_error_worst")
        if bound is not None and error is not None and error > bound:
            rows = "tokens" if kind == TOKEN_STATES else "samples"
            problems.append(f"{name}: {figures['near_empty_samples']} near-empty {rows} (fp32 under "
                            f"{limits.near_empty_ratio:g}x the output's scale {figures['scale']:.3g}, judged by "
                            f"magnitude): RMS error up to {error:.3g}x the scale > {bound:.3g}")
    return problems

SUMMARY_WORST = {"cosine_mean": min, "near_empty_error_worst": max, "detection_recall": min,
                 "detection_precision": min, "detection_mean_iou": min, "cosine_worst": min, "pooled_cosine_mean": min, "pooled_cosine_worst": min,
                 "score_correlation": min,
                 "top1_agreement": min, "label_set_agreement": min, "label_agreement": min, "decision_agreement": min,
                 "accuracy": min, "reference_accuracy": min,
                 "macro_f1": min, "reference_macro_f1": min, "max_abs_error": max,
                 "max_scaled_error": max, "max_rel_error": max}


def judge(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], *, model_kind: str,
          mask: np.ndarray | None, labels: np.ndarray | None, limits: Limits,
          scales: dict[str, float], groups=(), detection: DetectionSettings | None = None) -> Judgement:
    """Every output of `outputs` against `reference` (same samples, same order), then every group of an output
    (pipeline.verify.groups; `scales` has their names too), and the detections of `detection.output`."""
    judgement = Judgement()
    kinds = {group.name: group.kind for group in groups if group.kind}
    reference, outputs = with_groups(reference, groups), with_groups(outputs, groups)
    for name, ref in reference.items():
        if name not in outputs:
            if name not in {group.name for group in groups}:  # a group of a missing output: said once, above
                judgement.problems.append(f"{name}: the artifact has no such output (it has {sorted(outputs)})")
            continue
        kind = kinds.get(name) or output_kind(ref, model_kind, mask)
        figures, problems = judge_output(name, kind, outputs[name], ref, mask, labels, limits, scales[name],
                                         detection if detection is not None and name == detection.output else None)
        group = next((group for group in groups if group.name == name), None)
        judgement.by_output[name] = figures | ({"group": group.to_json()} if group else {})
        judgement.problems += problems
    judgement.summary = summarize(judgement.by_output)
    return judgement


def summarize(by_output: dict[str, dict]) -> dict:
    """The worst of each figure over outputs and groups, and `worst_of`: which output or group holds it."""
    summary, holders = {}, {}
    for key, pick in SUMMARY_WORST.items():
        held = {name: figures[key] for name, figures in by_output.items() if key in figures}
        if held:
            holders[key] = pick(held, key=held.get)
            summary[key] = float(held[holders[key]])
    return summary | ({"worst_of": holders} if holders else {})


def keep_decisions_within_noise(kind: str, moved: np.ndarray, alone: np.ndarray, mask: np.ndarray | None,
                                noise: float) -> tuple[np.ndarray, int]:
    """`moved` (the same samples after a change such as padding) with every sample that lies no further from `alone`
    than `noise` (the artifact's own largest error to fp32 on this output) taken as alone's, and how many of those
    had changed a decision. A move that small flips only a decision within int8 noise of its boundary, which int8
    decides either way. Decisions only: classes (argmax) and label sets; other kinds are returned as they are."""
    if kind not in (LOGITS, LABEL_SETS) or moved.shape != alone.shape or not len(alone):
        return moved, 0
    tokens = token_mask(mask, alone)
    counted = tokens if tokens is not None else np.ones(alone.shape[:1], bool)
    weights = counted.reshape(*counted.shape, *([1] * (alone.ndim - counted.ndim)))
    distance = (np.abs(moved.astype(np.float64) - alone) * weights).reshape(len(alone), -1).max(axis=1)
    if kind == LABEL_SETS:
        after, before = label_decisions(moved, alone)
        changed = (after != before).any(axis=-1)
    else:
        changed = moved.argmax(-1) != alone.argmax(-1)
    changed = (changed & counted.reshape(*counted.shape, *([1] * (changed.ndim - counted.ndim)))).reshape(
        len(alone), -1).any(axis=1)
    within = distance <= noise
    kept = np.where(within.reshape(-1, *([1] * (alone.ndim - 1))), alone, moved)
    return kept, int((within & changed).sum())


@dataclass
class Reading:
    """How a model's outputs are read beyond their kinds, found once on fp32's outputs of every sample."""

    groups: list  # pipeline.verify.groups.Group: parts of outputs judged on their own scales
    detection: DetectionSettings | None  # a detector's detections
    scales: dict[str, float]  # of every output and group: the RMS of fp32 over every sample, verify.near_zero at least
    near_empty_ratio: float = 0.0  # verify.near_empty_ratio


def output_reading(reference: dict[str, np.ndarray], model_kind: str, mask: np.ndarray | None,
                   verify_cfg) -> Reading:
    """The Reading of these fp32 outputs under `verify.*` (output_groups, group_scale_ratio, detection, near_zero)."""
    detection = detection_settings(verify_cfg, model_kind, reference)
    kinds = {name: output_kind(array, model_kind, mask) for name, array in reference.items()}
    tokens = {name: token_mask(mask, array) for name, array in reference.items()}
    groups = find_groups(reference, kinds, tokens, verify_cfg, detection)
    scales = {name: output_scale(array, mask, float(verify_cfg.near_zero))
              for name, array in with_groups(reference, groups).items()}
    return Reading(groups, detection, scales, float(verify_cfg.near_empty_ratio))


def state_drift(outputs: dict[str, np.ndarray], fp32: dict[str, np.ndarray], pairs: dict[str, str], steps: int,
                max_drift: float) -> tuple[dict, list[str]]:
    """How far each carried state (outputs paired with inputs) drifts from fp32's as the sequences run: per step,
    the RMS of its error over the RMS of fp32's state (both over every sequence); a step past `max_drift` is a
    problem that names the state, the step and the growth from the first step."""
    figures, problems = {}, []
    for name, fed in pairs.items():
        if name not in outputs or name not in fp32 or outputs[name].shape != fp32[name].shape:
            continue
        sequences = len(fp32[name]) // steps
        here = outputs[name][:sequences * steps].astype(np.float64).reshape(sequences, steps, -1)
        exact = fp32[name][:sequences * steps].astype(np.float64).reshape(sequences, steps, -1)
        scale = max(float(np.sqrt(np.mean(exact ** 2))), 1e-12)
        by_step = [float(np.sqrt(np.mean((here[:, t] - exact[:, t]) ** 2))) / scale for t in range(steps)]
        worst = int(np.argmax(by_step))
        figures[name] = {"feeds": fed, "steps": steps, "sequences": sequences, "by_step": by_step,
                         "first": by_step[0], "last": by_step[-1], "worst": by_step[worst], "worst_step": worst + 1,
                         "growth": by_step[-1] / max(by_step[0], 1e-12), "max_state_drift": max_drift}
        if by_step[worst] > max_drift:
            problems.append(f"{name} (the state fed back as {fed}) drifts from fp32's as the sequence runs: "
                            f"{by_step[0]:.3g} of its scale at step 1, {by_step[worst]:.3g} at step {worst + 1} of "
                            f"{steps} (> verify.max_state_drift {max_drift:g}); int8 error accumulates in the "
                            f"recurrent state")
    return figures, problems

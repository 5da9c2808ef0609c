"""A verified profile's figures in the signoff's words: fidelity against its thresholds (the `fidelity` column),
each metric's margin to its threshold (fidelity.png), and the batch-1 latency measured natively.

Every model kind's figures are named here: embeddings and classifiers (cosine, top-1, label sets, decisions, scores),
detectors (recall, precision, IoU), stateful models (drift), and weight-only decoders (mode=int4 | int8: KL
divergence, next-token (top-1) agreement, perplexity increase, pipeline/verify/language_model.py).
"""
from __future__ import annotations

from typing import Any

# (label, figure, threshold, True when the figure must be at most the threshold): the `fidelity` column, in order
FIDELITY_WORDS = (("cosine mean", "cosine_mean", "min_cosine_mean", False),
                  ("cosine worst", "cosine_worst", "min_cosine_worst", False),
                  ("near-empty samples' error (x scale)", "near_empty_error_worst", "max_near_empty_error", True),
                  ("top-1 agreement", "top1_agreement", "min_top1_agreement", False),
                  ("label-set agreement", "label_set_agreement", "min_top1_agreement", False),
                  ("decision agreement", "decision_agreement", "min_top1_agreement", False),
                  ("score correlation", "score_correlation", "min_cosine_mean", False),
                  ("detection recall", "detection_recall", "min_detection_recall", False),
                  ("detection precision", "detection_precision", "min_detection_precision", False),
                  ("detection mean IoU", "detection_mean_iou", "min_detection_mean_iou", False),
                  ("KL divergence (nats/token)", "kl_divergence", "max_kl_divergence", True),
                  ("next-token (top-1) agreement", "next_token_agreement", "min_next_token_agreement", False))

# (figure, threshold, +1 when the figure must be at least the threshold, -1 when at most): margin = how far inside
MARGINS = (("cosine_worst", "min_cosine_worst", 1), ("cosine_mean", "min_cosine_mean", 1),
           ("top1_agreement", "min_top1_agreement", 1), ("label_set_agreement", "min_top1_agreement", 1),
           ("decision_agreement", "min_top1_agreement", 1),
           ("score_correlation", "min_cosine_mean", 1), ("detection_recall", "min_detection_recall", 1),
           ("detection_precision", "min_detection_precision", 1), ("detection_mean_iou", "min_detection_mean_iou", 1),
           ("near_empty_error_worst", "max_near_empty_error", -1),
           ("max_abs_error", "max_abs_error", -1),
           ("max_scaled_error", "max_scaled_error", -1), ("state_drift", "max_state_drift", -1),
           ("kl_divergence", "max_kl_divergence", -1), ("next_token_agreement", "min_next_token_agreement", 1),
           ("perplexity_increase", "max_perplexity_increase", -1))


def fidelity_words(profile: dict[str, Any]) -> str:
    """The figures against their thresholds, e.g. `cosine mean 0.9913 >= 0.98, worst 0.9804 >= 0.95`. A figure of
    the whole held-out set (a mean, an agreement rate, a correlation) is not judged on an emulated profile's few
    samples, whose threshold is null: it is shown as such."""
    figures, limits = profile.get("fidelity") or {}, profile.get("thresholds") or {}
    holders = figures.get("worst_of") or {}
    # which output or group holds a worst figure, when there are several (a detector head's `output0[4:84] (scores)`)
    shown = {key: f" in {name}" for key, name in holders.items()} if len(profile.get("fidelity_by_output") or {}) > 1 \
        else {}
    parts = [f"{label} {figures[key]:.4f}{shown.get(key, '')}{judged(figures[key], limits, limit_key, at_most)}"
             for label, key, limit_key, at_most in FIDELITY_WORDS if key in figures]
    return ", ".join(parts + other_words(figures, limits) + group_words(profile.get("fidelity_by_output") or {}))


def judged(figure: float, limits: dict[str, Any], limit_key: str, at_most: bool) -> str:
    """` ≥ 0.98` (or ` < `, ` ≤ `, ` > `) against the threshold; a null threshold: not judged on these samples."""
    limit = limits.get(limit_key)
    if limit is None:
        return " (not judged on these samples)" if limit_key in limits else ""
    within = figure <= limit if at_most else figure >= limit
    return ((" ≤ " if within else " > ") if at_most else (" ≥ " if within else " < ")) + f"{limit:.3g}"


def other_words(figures: dict[str, Any], limits: dict[str, Any]) -> list[str]:
    """The figures that read best in their own words: a state's drift, accuracy and F1 beside fp32's, the absolute
    error, a decoder's perplexity against fp32's."""
    parts = []
    if "state_drift" in figures and limits.get("max_state_drift") is not None:  # a stateful model, run streamed
        sign = " ≤ " if figures["state_drift"] <= limits["max_state_drift"] else " > "
        parts.append(f"state drift {figures['state_drift']:.3g}{sign}{limits['max_state_drift']:g} (streamed)")
    if "accuracy" in figures:
        parts.append(f"accuracy {figures['accuracy']:.3f} (fp32 {figures.get('reference_accuracy', float('nan')):.3f})")
    if "macro_f1" in figures:
        parts.append(f"macro-F1 {figures['macro_f1']:.3f} (fp32 {figures.get('reference_macro_f1', float('nan')):.3f})")
    if limits.get("max_abs_error") is not None and "max_abs_error" in figures:
        parts.append(f"max abs error {figures['max_abs_error']:.3g} (limit {limits['max_abs_error']:g})")
    if "perplexity_increase" in figures:  # a weight-only decoder, teacher-forced against fp32
        limit = limits.get("max_perplexity_increase")
        sign = "" if limit is None else (" ≤ " if figures["perplexity_increase"] <= limit else " > ") + f"{limit:.0%}"
        parts.append(f"perplexity {figures.get('perplexity', float('nan')):.3f} vs fp32 "
                     f"{figures.get('perplexity_fp32', float('nan')):.3f} ({figures['perplexity_increase']:+.1%}{sign})")
    return parts


def group_words(by_output: dict[str, Any]) -> list[str]:
    """Each group of an output (pipeline/verify/groups.py) by its name and its direction figure, e.g.
    `output0[4:84] (scores): cosine worst 0.9994`."""
    words = []
    for name, figures in by_output.items():
        if "group" in figures:
            shown = [f"{label} {figures[key]:.4f}" for key, label in (
                ("cosine_worst", "cosine worst"), ("score_correlation", "score correlation"),
                ("top1_agreement", "top-1 agreement"), ("near_empty_error_worst", "near-empty error")) if key in figures]
            words.append(f"{name}: {', '.join(shown) or 'no figure'}")
    return words


def margins(profile: dict[str, Any]) -> dict[str, float]:
    """Per metric, the worst case's distance to its threshold (negative: past it), e.g. cosine_worst - min_cosine_worst."""
    figures, limits = profile.get("fidelity") or {}, profile.get("thresholds") or {}
    return {figure: sign * (figures[figure] - limits[limit]) for figure, limit, sign in MARGINS
            if isinstance(figures.get(figure), (int, float)) and isinstance(limits.get(limit), (int, float))}


def native_profile(profiles: dict[str, Any]) -> str | None:
    """The profile that ran on this host: `native`, or `native@<runtime>` (a prepared runtime, natively)."""
    names = [name for name in profiles if name.split("@")[0] == "native"]
    return "native" if "native" in names else (names[0] if names else None)


def latency_figures(verify: dict[str, Any] | None) -> dict[str, Any] | None:
    """Batch-1 latency measured natively: int8 from the native profile (any runtime), fp32 from the reference run."""
    profiles = (verify or {}).get("profiles") or {}
    native = native_profile(profiles)
    latency = dict((verify or {}).get("latency") or (profiles[native].get("latency") if native else None) or {})
    latency.setdefault("fp32", (((verify or {}).get("reference") or {}).get("run") or {}).get("latency"))
    if not latency.get("int8") or not latency.get("fp32"):
        return None
    figures = {"int8_p50_ms": latency["int8"]["p50_ms"], "int8_p95_ms": latency["int8"]["p95_ms"],
               "fp32_p50_ms": latency["fp32"]["p50_ms"], "fp32_p95_ms": latency["fp32"]["p95_ms"],
               "batch": latency.get("batch", 1), "repeats": latency.get("repeats"), "profile": native}
    figures["p50_ratio"] = figures["int8_p50_ms"] / max(figures["fp32_p50_ms"], 1e-12)
    return figures

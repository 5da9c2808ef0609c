"""The same artifact on two CPUs: a profile's outputs against the reference CPU's on the same samples (per-CPU
numerics), and which few samples the emulated CPUs run (the most stressed, chosen from the native run)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.verify.fidelity.kinds import token_mask
from pipeline.verify.groups import with_groups


@dataclass
class CpuComparison:
    """A profile's outputs against the reference CPU's, on the same samples."""

    status: str  # pass | fail | not_measured
    reason: str
    reference_cpu: str
    bounds: dict = field(default_factory=dict)  # max_excess_error (x scale), max_error_ratio
    divergence: float | None = None  # max |profile - reference CPU| / output scale, worst output
    excess_error: float | None = None  # (profile's max error to fp32 - the reference CPU's) / scale, worst output
    error_ratio: float | None = None  # profile's max error to fp32 / the reference CPU's, on that output
    by_output: dict[str, dict] = field(default_factory=dict)
    worst: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)

WORST_SHOWN = 5  # worst values listed per profile in verify.json and the signoff


def compare_cpus(profile_name: str, outputs: dict[str, np.ndarray], on_reference_cpu: dict[str, np.ndarray],
                 fp32: dict[str, np.ndarray], *, reference_cpu: str, mask: np.ndarray | None,
                 sample_ids: list[int], scales: dict[str, float], max_excess_error: float,
                 max_error_ratio: float, hint: str = "", groups=()) -> CpuComparison:
    """Two CPUs' outputs of one artifact, element-wise on each output's scale (and each group's, on its own):
    how far apart they are, and how much worse this profile's error to fp32 is than the reference CPU's."""
    outputs, on_reference_cpu, fp32 = (with_groups(arrays, groups) for arrays in (outputs, on_reference_cpu, fp32))
    comparison = CpuComparison("pass", "", reference_cpu, {"max_excess_error": max_excess_error,
                                                           "max_error_ratio": max_error_ratio})
    candidates = []
    for name, ref_cpu in on_reference_cpu.items():
        if name not in outputs or outputs[name].shape != ref_cpu.shape:
            continue
        here, there, exact = (x.astype(np.float64) for x in (outputs[name], ref_cpu, fp32[name]))
        tokens = token_mask(mask, here)
        valid = tokens if tokens is not None else np.ones(here.shape, bool)
        if tokens is not None:
            valid = valid.reshape(*tokens.shape, *([1] * (here.ndim - 2))) & np.ones(here.shape, bool)
        gap = np.where(valid, np.abs(here - there), 0.0)
        scale = scales[name]
        error_here = float(np.where(valid, np.abs(here - exact), 0.0).max(initial=0.0))
        error_there = float(np.where(valid, np.abs(there - exact), 0.0).max(initial=0.0))
        figures = {"divergence": float(gap.max(initial=0.0)) / scale, "max_abs_difference": float(gap.max(initial=0.0)),
                   "max_error_to_fp32": error_here, "reference_cpu_max_error_to_fp32": error_there,
                   "excess_error": (error_here - error_there) / scale,
                   "error_ratio": error_here / max(error_there, 1e-6 * scale)}
        comparison.by_output[name] = figures
        for flat in np.argsort(gap, axis=None)[::-1][:WORST_SHOWN]:
            index = np.unravel_index(int(flat), gap.shape)
            candidates.append({"output": name, "sample": sample_ids[index[0]], "position": [int(i) for i in index[1:]],
                               "value": float(here[index]), "reference_cpu_value": float(there[index]),
                               "fp32_value": float(exact[index]), "scaled_difference": float(gap[index]) / scale})
    if not comparison.by_output:
        comparison.status, comparison.reason = "not_measured", "no output shared with the reference CPU's run"
        return comparison
    worst_name = max(comparison.by_output, key=lambda n: comparison.by_output[n]["excess_error"])
    worst = comparison.by_output[worst_name]
    comparison.divergence = max(figures["divergence"] for figures in comparison.by_output.values())
    comparison.excess_error, comparison.error_ratio = worst["excess_error"], worst["error_ratio"]
    comparison.worst = sorted(candidates, key=lambda c: -c["scaled_difference"])[:WORST_SHOWN]
    if comparison.excess_error <= max_excess_error or comparison.error_ratio <= max_error_ratio:
        comparison.reason = (f"error to fp32 {comparison.error_ratio:.3g}x {reference_cpu}'s ({comparison.excess_error:+.3g}x "
                             f"the output scale; bounds {max_error_ratio:g}x and {max_excess_error:+g}); outputs differ "
                             f"from {reference_cpu}'s by up to {comparison.divergence:.3g}x the scale: kernel noise")
        return comparison
    top = next(c for c in comparison.worst if c["output"] == worst_name) if any(
        c["output"] == worst_name for c in comparison.worst) else comparison.worst[0]
    comparison.status = "fail"
    comparison.reason = (
        f"outputs on {profile_name} are materially worse than on {reference_cpu}: the largest error to fp32 of "
        f"{worst_name} is {comparison.error_ratio:.3g}x {reference_cpu}'s ({comparison.excess_error:+.3g}x the output's "
        f"scale; bounds {max_error_ratio:g}x and {max_excess_error:+g}); sample {top['sample']} position "
        f"{top['position']}: {top['value']:.5g} on {profile_name} vs {top['reference_cpu_value']:.5g} on "
        f"{reference_cpu}, fp32 {top['fp32_value']:.5g}" + (f"; {hint}" if hint else ""))
    return comparison


def choose_samples(native: dict[str, np.ndarray], fp32: dict[str, np.ndarray], mask: np.ndarray | None,
                   scales: dict[str, float], k: int) -> tuple[list[int], str]:
    """The k samples that stress the kernels most, judged from the native run: alternately the largest
    element-wise error to fp32 and the largest fp32 magnitude (the largest accumulations)."""
    n = len(next(iter(fp32.values())))
    if k >= n:
        return list(range(n)), f"all {n} held-out samples"
    error, magnitude = np.zeros(n), np.zeros(n)
    for name, exact in fp32.items():
        if name not in native or native[name].shape != exact.shape:
            continue
        tokens = token_mask(mask, exact)
        weight = 1.0 if tokens is None else tokens.reshape(*tokens.shape, *([1] * (exact.ndim - 2)))
        flat_error = (np.abs(native[name].astype(np.float64) - exact) * weight).reshape(n, -1).max(1)
        flat_size = (np.abs(exact.astype(np.float64)) * weight).reshape(n, -1).max(1)
        error = np.maximum(error, flat_error / scales[name])
        magnitude = np.maximum(magnitude, flat_size / scales[name])
    chosen: list[int] = []
    by_error, by_magnitude = list(np.argsort(-error, kind="stable")), list(np.argsort(-magnitude, kind="stable"))
    while len(chosen) < k:
        for ranking in (by_error, by_magnitude):
            pick = next(int(i) for i in ranking if int(i) not in chosen)
            if len(chosen) < k:
                chosen.append(pick)
    why = (f"{k} of {n} held-out samples chosen from the native run: alternately the largest element-wise error "
           f"to fp32 and the largest fp32 output magnitude (the largest accumulations), where kernels that "
           f"saturate or round differently show first")
    return chosen, why


def choose_sequences(native: dict[str, np.ndarray], fp32: dict[str, np.ndarray], scales: dict[str, float],
                     steps: int, k: int) -> tuple[list[int], str]:
    """The samples of the k sequences (of `steps` consecutive samples) that stress the kernels most, chosen as
    choose_samples chooses samples, each sequence taken whole: the state must be carried through it."""
    sequences = len(next(iter(fp32.values()))) // steps
    as_sequences = {name: array[:sequences * steps].reshape(sequences, -1) for name, array in fp32.items()}
    ran = {name: array[:sequences * steps].reshape(sequences, -1) for name, array in native.items() if name in fp32}
    picked, _ = choose_samples(ran, as_sequences, None, scales, max(1, k))
    samples = [s * steps + t for s in picked for t in range(steps)]
    return samples, (f"{len(picked)} of {sequences} held-out sequences of {steps} chunks, run streamed (the state "
                     f"carried), chosen from the native run: alternately the largest element-wise error to fp32 and "
                     f"the largest fp32 output magnitude")

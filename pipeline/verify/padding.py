"""Why a profile's outputs change when its sequences are padded inside a batch, and the padding verdict.

The padding check (pipeline.verify.onnx.judge_padding) runs each held-out sequence alone and inside a batch padded
past the longest. When a profile's outputs move, three runs tell the causes apart:

- the fp32 reference's own padded run: if fp32 moves too, the model ignores its attention_mask (or applies it only
  in part), before any quantization;
- this profile's own error to fp32 with no padding in play (e: each sequence alone, int8 on this profile against
  fp32's alone run): dynamic int8 quantizes each activation on the range of the whole batch, padded positions
  included, so a sequence alone and padded is quantized on other scales. Both runs are int8 approximations of the
  same fp32 values, so they differ by about 2e at most: a move within that is int8's own noise (on a CPU without
  VNNI, u8s8 saturation included), not a mask that is ignored;
- the artifact's native run (the measurement run, exact VNNI kernels where the host has them): a move beyond 2e there
  too means the int8 graph handles padding otherwise than fp32; only on this profile, this CPU's kernels.

Only the profiles that count decide the padding verdict (summarize); informational ones are reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Operators that quantize an activation on ranges computed at run time, from the batch they see.
DYNAMIC_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                         "DynamicQuantizeLSTM"})


def quantizes_at_run_time(graph) -> bool:
    """Whether an ONNX graph takes activation ranges from each batch (dynamic int8)."""
    return any(node.op_type in DYNAMIC_OPS for node in graph.node)


@dataclass
class Movement:
    """How far padding moved each output (max |padded - alone| over the positions that are tokens), against 2e."""

    moved: dict[str, float]
    bound: dict[str, float]  # twice the profile's largest error to fp32, per output

    @property
    def within(self) -> bool:
        return all(self.moved[name] <= self.bound.get(name, 0.0) for name in self.moved)

    def worst(self) -> str:
        """The output that moved most against its bound, in words."""
        name = max(self.moved, key=lambda n: self.moved[n] / max(self.bound.get(n, 0.0), 1e-30))
        return (f"{name} moved by up to {self.moved[name]:.3g}; twice this profile's largest error to fp32 on the "
                f"sequences alone is {self.bound.get(name, 0.0):.3g}")

    def to_json(self) -> dict:
        return {"max_movement": self.moved, "int8_noise_bound": self.bound, "within_int8_noise": self.within}


def error_alone(alone: dict[str, np.ndarray], fp32_alone: dict[str, np.ndarray] | None, ids: list[int] | None,
                fallback: dict[str, float]) -> dict[str, float]:
    """Per output, the largest |int8 - fp32| of each sequence run alone (no padding anywhere), on samples `ids` of
    fp32's alone run; `fallback` (the profile's error to fp32 on the held-out batches) where that cannot be had.
    Per-token outputs of a run alone are zero past each sequence's length, so two runs of other widths compare on
    the narrower."""
    errors = dict(fallback)
    if fp32_alone is None or ids is None:
        return errors
    for name, array in alone.items():
        reference = fp32_alone.get(name)
        if reference is None or max(ids, default=-1) >= len(reference):
            continue
        reference = reference[ids]
        if array.ndim >= 2 and reference.ndim == array.ndim and array.shape[2:] == reference.shape[2:]:
            width = min(array.shape[1], reference.shape[1])
            array, reference = array[:, :width], reference[:, :width]
        if array.shape == reference.shape and array.size:
            errors[name] = float(np.abs(array.astype(np.float64) - reference).max())
    return errors


def movement(figures_by_output: dict[str, dict], errors: dict[str, float]) -> Movement:
    """From a padding judgement's figures (alone as the reference) and the profile's error to fp32 per output."""
    return Movement({name: float(figures.get("max_abs_error", 0.0)) for name, figures in figures_by_output.items()},
                    {name: 2.0 * float(errors.get(name, 0.0)) for name in figures_by_output})


@dataclass
class Baselines:
    """What tells the causes apart: fp32's own padded run and the artifact's native one (None: did not run)."""

    fp32: dict | None = None  # {"status": pass|fail, "figures", "reason"}
    fp32_alone: dict[str, np.ndarray] | None = None  # fp32's outputs of each native sample run alone
    native: dict | None = None  # {"status": kept|moved, "max_movement", "int8_noise_bound", ...}
    dynamic: bool = False

    def to_json(self) -> dict:
        return {"fp32_reference": self.fp32, "native_int8": self.native, "dynamic_quantization": self.dynamic}


def explain(problems: str, moved: Movement, baselines: Baselines, extra_tokens: int, hint: str = "") -> dict:
    """The padding result of a profile whose outputs moved past the padding bounds: status, cause and words."""
    what = f"padding changes the output (alone vs padded {extra_tokens} tokens past the longest in a batch: {problems})"
    fp32, native = baselines.fp32, baselines.native
    native_kept = native is not None and native["status"] == "kept"
    if fp32 is None:
        return _result("fail", "unknown", f"{what}: the attention_mask is ignored or not fully applied (the fp32 "
                                          f"reference's own padded run is missing, so the cause is not told apart)")
    if fp32["status"] == "fail":
        return _result("fail", "mask_ignored", f"{what}, and so does the fp32 reference's ({fp32['reason']}): the "
                       f"attention_mask is ignored or not fully applied by the model itself, not by quantization; "
                       f"export it so that padded positions are masked")
    if moved.within:
        source = ("dynamic int8's per-batch activation ranges (each dynamically quantized input takes its range over "
                  "the whole batch, padded positions included)") if baselines.dynamic else \
            "int8 noise (kernels that round otherwise for another batch shape)"
        return _result("pass", "batch_ranges" if baselines.dynamic else "int8_noise",
                       f"{what}, but only within int8's own error ({moved.worst()}); the fp32 reference keeps its "
                       f"outputs padded" + (", and so does the native int8 run" if native_kept else "") +
                       f": the cause is {source}, not the attention mask" + (f"; {hint}" if hint else ""))
    if native_kept:
        return _result("fail", "cpu_kernels", f"{what}, beyond int8's own error ({moved.worst()}), while the fp32 "
                       f"reference and the native int8 run keep their outputs padded: this CPU's int8 kernels on the "
                       f"padded batch's activation ranges" + (f"; {hint}" if hint else ""))
    also = ", and the native int8 run moves too" if native is not None else ""
    return _result("fail", "int8_graph", f"{what}, beyond int8's own error ({moved.worst()}), while the fp32 "
                   f"reference keeps its outputs padded{also}: the int8 graph does not apply the attention_mask as "
                   f"fp32 does" + (" (or its dynamic activation ranges, taken over the padded batch, move it that far)"
                                   if baselines.dynamic else ""))


def _result(status: str, cause: str, reason: str) -> dict:
    return {"status": status, "cause": cause, "reason": reason}


def summarize(padding: dict, profiles: dict, baselines: Baselines | None) -> dict:
    """The report's padding verdict: a static failure as is; otherwise from the profiles that count (`required`)
    and ran the check. Informational profiles' results are reported beside it, never decisive."""
    if padding["status"] != "pending":
        return padding
    ran = {key: p["padding"] for key, p in profiles.items() if p.get("padding")}
    counted = [key for key in ran if profiles[key]["required"]]
    informational = [key for key in ran if key not in counted]
    failed = [key for key in counted if ran[key]["status"] == "fail"]
    status = "fail" if failed else "pass" if counted else "not_verified"
    if failed:
        reason = f"padding changes the output on {', '.join(failed)}: {ran[failed[0]]['reason']}"
    elif counted:
        explained = [key for key in counted if ran[key].get("cause")]
        reason = (f"each held-out sequence gives the same result alone and padded on {', '.join(counted)}" +
                  (f" (within int8's own error on {', '.join(explained)}: {ran[explained[0]]['reason']})"
                   if explained else ""))
    else:
        reason = "no profile that counts ran the model, so padding invariance was not measured"
    noted = [f"{key}: {ran[key]['status']}: {ran[key]['reason']}" for key in informational
             if ran[key]["status"] == "fail" or ran[key].get("cause")]
    if noted:
        reason += "; informational, not counted: " + "; ".join(noted)
    return padding | {"status": status, "reason": reason, "profiles": ran, "counted": counted,
                      "informational": informational} | (baselines.to_json() if baselines else {})

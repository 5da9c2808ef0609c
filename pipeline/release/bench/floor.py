"""The distance to this host's int8 floor: per kernel kind a subject has (GEMMs, convolutions), the int8/fp32 ratio
of this host's kernels alone on the model's own shapes (pipeline/release/floors.py measures them), the whole model's
floor where floors.py has one (`model_int8_vs_fp32`: the model's fp32 time with only those kernels sped up), the
artifact's ratio against it in words, and, where no floor could be measured, why not. Weight-only decoders have
their own floor, MatMulNBits against fp32 MatMul at a decode step's and a prefill's rows (decoder_floors)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.release.floors import (conv_floor, gemm_floor, matmul_nbits_floor, nbits_shapes, weight_shapes,
                                     whole_model_ratio)


@dataclass(frozen=True)
class FloorKind:
    """One kind of kernel floor: where its figures go in a case, its kernels in words, how it is measured."""

    key: str  # the case's key ("gemm_floor": {batch: floors.py's result})
    kernels: str  # in words, for results.md
    absent: str  # why a model has no such floor, when floors.py found none of its kernels
    measure: Callable[[Path, dict[str, np.ndarray], int, int, float], dict[str, Any]]  # (fp32, feed, rows, ...)
    size: Callable[[dict[str, Any]], str]  # what one batch's kernels were timed at, in words
    short: str  # its name in "the conv floor"

    @property
    def ratio_key(self) -> str:
        return f"int8_vs_fp32_{self.key}"

    @property
    def distance_key(self) -> str:
        return f"int8_vs_{self.key}"


def floor_ratio(floor: dict[str, Any]) -> float | None:
    """The floor an artifact is held to: the whole model's (`model_int8_vs_fp32`) where floors.py measured one, else
    its kernels' alone."""
    return floor.get("model_int8_vs_fp32") or floor["int8_vs_fp32"]


GEMM = FloorKind("gemm_floor", "GEMMs", "no MatMul or fused Attention with a 2-D weight in the fp32 graph",
                 lambda fp32, feed, rows, threads, seconds: gemm_floor(fp32, rows, threads, seconds),
                 lambda floor: f" ({floor['rows']} rows)", "GEMM")
CONV = FloorKind("conv_floor", "convolutions", "no 2-D convolution whose input shape onnx shape inference can tell",
                 lambda fp32, feed, rows, threads, seconds: conv_floor(fp32, feed, threads, seconds),
                 lambda floor: "", "conv")
FLOOR_KINDS = {"gemm": GEMM, "conv": CONV}


def measure_floors(case: dict[str, Any], kinds: tuple[FloorKind, ...], fp32: Path,
                   feeds: dict[str, tuple[dict[str, np.ndarray], int]], threads: int, seconds: float) -> None:
    """Into `case`: each kind's floor per batch (`feeds`: batch -> (feed, GEMM rows)), its ratio beside the
    artifact's in `case["ratios"][batch]`, and under `floor_absent` why a kind found none of its kernels."""
    absent = case.setdefault("floor_absent", {})
    for kind in kinds:
        measured = case[kind.key] = {}
        for batch, (feed, rows) in feeds.items():
            floor = measured[batch] = kind.measure(fp32, feed, rows, threads, seconds / 2)
            ratios = case["ratios"][batch]
            if floor["int8_vs_fp32"] is not None:
                ratios[kind.ratio_key] = floor["int8_vs_fp32"]
                ratios[kind.distance_key] = ratios["int8_vs_fp32_p50"] / floor_ratio(floor)
        if all(floor["int8_vs_fp32"] is None for floor in measured.values()):
            absent[kind.key] = kind.absent


def floor_lines(case: dict[str, Any]) -> list[str]:
    """Per kernel kind the model has, in words: the artifact's int8/fp32, the floor on the model's own shapes (the
    whole model's where measured, with its kernels' alone), and how far above the floor the artifact is; else why it
    has none."""
    lines = []
    for kind in FLOOR_KINDS.values():
        floors = [(batch, floor) for batch, floor in (case.get(kind.key) or {}).items()
                  if floor["int8_vs_fp32"] is not None]
        if floors:
            lines.append(f"- {case['artifact']}, distance to this host's int8 floor on its {kind.kernels}: "
                         + "; ".join(_against(case, batch, floor, kind) for batch, floor in floors))
    absent = case.get("floor_absent") or {}
    if absent and len(absent) == len([kind for kind in FLOOR_KINDS.values() if kind.key in case]):
        lines.append(f"- {case['artifact']}: no int8 floor: " + "; ".join(absent.values()))
    return lines


def _against(case: dict[str, Any], batch: str, floor: dict[str, Any], kind: FloorKind) -> str:
    """`batch 1: int8 0.64x fp32; the conv floor on this model's shapes 0.52x (...): 1.24x the floor`."""
    ratio = case["ratios"][batch]["int8_vs_fp32_p50"]
    if "model_int8_vs_fp32" in floor:
        how = (f"{kind.kernels} {floor['fp32_conv_share']:.0%} of fp32's kernel time, sped up to the best of int8 and "
               f"fp32 per shape, {floor['best_kernel_ratio']:.2f}x; the {kind.kernels} alone in int8 "
               f"{floor['int8_vs_fp32']:.2f}x")
    else:
        how = f"the {kind.kernels} alone, the floor if all time were {kind.kernels}"
    return (f"batch {batch}{kind.size(floor)}: int8 {ratio:.2f}x fp32; the {kind.short} floor on this model's shapes "
            f"{floor_ratio(floor):.2f}x ({how}): {ratio / floor_ratio(floor):.2f}x the floor")


def decoder_floors(artifact: Path, fp32: Path, rows: dict[str, int], fp32_profiles: dict[str, dict[str, Any]],
                   threads: int, seconds: float) -> dict[str, dict[str, Any]] | None:
    """Per step (prefill, decode; `rows`: its rows), floors.py's MatMulNBits floor of the artifact (`kernel_vs_fp32`,
    the floor a step is held to) and, where every fp32 MatMul with a weight became a MatMulNBits, `model_vs_fp32`:
    fp32's MatMul share of its kernel time at that step (`fp32_profiles`, the op-type profile) sped up to the kernels'
    ratio, the rest as fp32 runs it. That one is no floor at decode: shrinking the weights speeds up the rest too
    (the 100M Llama's int4 decode step ran at 0.28x fp32 in plain onnxruntime, its kernels at 0.27x, model_vs_fp32
    0.33x). None: the artifact has no MatMulNBits."""
    if not nbits_shapes(artifact):
        return None
    every_matmul = sum(nbits_shapes(artifact).values()) == sum(weight_shapes(fp32).values())
    floors = {}
    for step, count in rows.items():
        floor = floors[step] = matmul_nbits_floor(artifact, count, threads, seconds)
        share = fp32_profiles[step]["share_by_op_type"].get("MatMul", 0.0)
        if every_matmul and share:
            floor |= {"fp32_matmul_share": share, "model_vs_fp32": whole_model_ratio(share, floor["kernel_vs_fp32"])}
    return floors


def decoder_floor_words(floor: dict[str, Any], time_ratio: float) -> str:
    """`the MatMulNBits floor on this model's shapes (1 row) 0.27x fp32's time (...): 0.86x the floor`, in time
    ratios: the step's against its MatMulNBits kernels' alone."""
    rows = f"{floor['rows']} row{'s' if floor['rows'] > 1 else ''}"
    how = "MatMulNBits alone against fp32 MatMul"
    if "model_vs_fp32" in floor:
        how += (f"; with fp32's other {1 - floor['fp32_matmul_share']:.0%} of kernel time unchanged "
                f"{floor['model_vs_fp32']:.2f}x")
    level = floor["kernel_vs_fp32"]
    return (f"the MatMulNBits floor on this model's shapes ({rows}) {level:.2f}x fp32's time ({how}): "
            f"{time_ratio / level:.2f}x the floor")

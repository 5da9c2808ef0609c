"""The distance to this host's int8 floor: per kernel kind a subject has (GEMMs, convolutions), the int8/fp32 ratio
of this host's kernels alone on the model's own shapes (pipeline/release/floors.py measures them), the artifact's
ratio against it, and, where no floor could be measured, why not."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.release.floors import conv_floor, gemm_floor


@dataclass(frozen=True)
class FloorKind:
    """One kind of kernel floor: where its figures go in a case, its kernels in words, how it is measured."""

    key: str  # the case's key ("gemm_floor": {batch: floors.py's result})
    kernels: str  # in words, for results.md
    absent: str  # why a model has no such floor, when floors.py found none of its kernels
    measure: Callable[[Path, dict[str, np.ndarray], int, int, float], dict[str, Any]]  # (fp32, feed, rows, ...)
    size: Callable[[dict[str, Any]], str]  # what one batch's kernels were timed at, in words

    @property
    def ratio_key(self) -> str:
        return f"int8_vs_fp32_{self.key}"


GEMM = FloorKind("gemm_floor", "GEMMs", "no MatMul or fused Attention with a 2-D weight in the fp32 graph",
                 lambda fp32, feed, rows, threads, seconds: gemm_floor(fp32, rows, threads, seconds),
                 lambda floor: f" ({floor['rows']} rows)")
CONV = FloorKind("conv_floor", "convolutions", "no 2-D convolution whose input shape onnx shape inference can tell",
                 lambda fp32, feed, rows, threads, seconds: conv_floor(fp32, feed, threads, seconds),
                 lambda floor: "")
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
            if floor["int8_vs_fp32"] is not None:
                case["ratios"][batch][kind.ratio_key] = floor["int8_vs_fp32"]
        if all(floor["int8_vs_fp32"] is None for floor in measured.values()):
            absent[kind.key] = kind.absent


def floor_lines(case: dict[str, Any]) -> list[str]:
    """Per kernel kind the model has: int8/fp32 of this host's kernels alone on the model's own shapes (the floor if
    all time were those kernels), the artifact's ratio, and how far above the floor it is; else why it has none."""
    lines = []
    for kind in FLOOR_KINDS.values():
        floors = [(batch, floor) for batch, floor in (case.get(kind.key) or {}).items()
                  if floor["int8_vs_fp32"] is not None]
        if floors:
            lines.append(f"- {case['artifact']}: int8/fp32 of this host's {kind.kernels} alone on the model's own "
                         f"shapes (the floor if all time were {kind.kernels}), against the artifact: " + "; ".join(
                             _against(case, batch, floor, kind) for batch, floor in floors))
    absent = case.get("floor_absent") or {}
    if absent and len(absent) == len([kind for kind in FLOOR_KINDS.values() if kind.key in case]):
        lines.append(f"- {case['artifact']}: no int8 floor: " + "; ".join(absent.values()))
    return lines


def _against(case: dict[str, Any], batch: str, floor: dict[str, Any], kind: FloorKind) -> str:
    ratio = case["ratios"][batch]["int8_vs_fp32_p50"]
    return (f"batch {batch}{kind.size(floor)} {floor['int8_vs_fp32']:.2f}x, the artifact {ratio:.2f}x "
            f"({ratio / floor['int8_vs_fp32']:.2f}x the floor)")

"""Is the calibration sample representative? Held-out activations against calibration ranges.

Runs the fp32 model on the calibration batches and on a disjoint held-out sample, records the
range of every tensor that quantization will clip (the activation inputs of the quantized op
types), and reports per tensor the share of held-out values outside the calibration range:
values that the int8 model clips.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _element_types(model) -> dict[str, int]:
    graph = model.graph
    return {value.name: value.type.tensor_type.elem_type for value in [*graph.value_info, *graph.input, *graph.output]}


def activation_tensors(model, op_types: list[str]) -> list[str]:
    """Float activations feeding quantized ops (weights and integer inputs excluded)."""
    import onnx
    from onnx import TensorProto

    initializers = {init.name for init in model.graph.initializer}
    constants = {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    candidates = list(dict.fromkeys(name for node in model.graph.node if node.op_type in op_types
                                    for name in node.input
                                    if name and name not in initializers and name not in constants))
    element_type = _element_types(model)
    if any(not element_type.get(name) for name in candidates):
        # A graph without types for them (the fused graph and the dynamo export carry them): ONNX's shape
        # inference adds them (about 0.5 s on MiniLM, which is why a typed graph skips it).
        element_type = _element_types(onnx.shape_inference.infer_shapes(model))
    return [name for name in candidates if element_type.get(name) == TensorProto.FLOAT]


def _session(model, tensors: list[str]):
    """An onnxruntime session on `model` (onnx.ModelProto) that also outputs `tensors`."""
    import onnx
    import onnxruntime as ort

    graph_outputs = {output.name for output in model.graph.output}
    for name in tensors:
        if name not in graph_outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def coverage_report(reference_path: Path, op_types: list[str], calibration_batches: list[dict[str, np.ndarray]],
                    heldout_batches: list[dict[str, np.ndarray]], warn_threshold: float, fail_threshold: float,
                    enforced: bool, worst_count: int = 5) -> dict:
    import onnx

    model = onnx.load(str(reference_path))
    tensors = activation_tensors(model, op_types)
    # One session for both samples; ranges and counts kept as running figures, not every activation value.
    low = {name: np.inf for name in tensors}
    high = {name: -np.inf for name in tensors}
    heldout_low, heldout_high = dict(low), dict(high)
    outside = {name: 0 for name in tensors}
    total = {name: 0 for name in tensors}
    session = _session(model, tensors)
    for batch in calibration_batches:
        for name, array in zip(tensors, session.run(tensors, batch)):
            low[name], high[name] = min(low[name], float(array.min())), max(high[name], float(array.max()))
    for batch in heldout_batches:
        for name, array in zip(tensors, session.run(tensors, batch)):
            heldout_low[name] = min(heldout_low[name], float(array.min()))
            heldout_high[name] = max(heldout_high[name], float(array.max()))
            outside[name] += int(np.count_nonzero((array < low[name]) | (array > high[name])))
            total[name] += array.size
    rows = []
    for name in tensors:
        span = max(high[name] - low[name], 1e-12)
        overshoot = max(heldout_high[name] - high[name], low[name] - heldout_low[name], 0.0) / span
        rows.append({"tensor": name, "calibration_min": low[name], "calibration_max": high[name],
                     "heldout_min": heldout_low[name], "heldout_max": heldout_high[name],
                     "fraction_outside": outside[name] / max(total[name], 1), "overshoot_of_range": overshoot})
    rows.sort(key=lambda row: (-row["fraction_outside"], -row["overshoot_of_range"], row["tensor"]))
    worst = rows[0]["fraction_outside"] if rows else 0.0
    if not enforced:
        status = "informational"
    elif worst > fail_threshold:
        status = "fail"
    elif worst > warn_threshold:
        status = "warn"
    else:
        status = "ok"
    return {"status": status, "enforced": enforced, "worst_fraction_outside": worst,
            "warn_threshold": warn_threshold, "fail_threshold": fail_threshold,
            "n_tensors": len(rows), "worst_tensors": [row["tensor"] for row in rows[:worst_count]],
            "tensors": rows}


def describe(report: dict) -> str:
    worst = ", ".join(f"{row['tensor']} ({row['fraction_outside']:.1%})" for row in report["tensors"][:3])
    return (f"coverage {report['status']}: worst {report['worst_fraction_outside']:.2%} of held-out activation "
            f"values outside the calibration range (warn > {report['warn_threshold']:.0%}, fail > "
            f"{report['fail_threshold']:.0%}); worst tensors: {worst}")

"""Is the calibration sample representative? Held-out activations against calibration ranges.

Runs the fp32 model on the calibration batches and on a disjoint held-out sample, records the
range of every tensor that quantization will clip (the activation inputs of the quantized op
types), and reports per tensor the share of held-out values outside the calibration range:
values that the int8 model clips.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def activation_tensors(model, op_types: list[str]) -> list[str]:
    """Float activations feeding quantized ops (weights and integer inputs excluded)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    element_type = {value.name: value.type.tensor_type.elem_type
                    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    initializers = {init.name for init in model.graph.initializer}
    constants = {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    names = []
    for node in model.graph.node:
        if node.op_type in op_types:
            for name in node.input:
                if (name and name not in initializers and name not in constants and name not in names
                        and element_type.get(name) == TensorProto.FLOAT):
                    names.append(name)
    return names


def _collect(model_path: Path, tensors: list[str], batches: list[dict[str, np.ndarray]]) -> dict[str, list]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    graph_outputs = {output.name for output in model.graph.output}
    for name in tensors:
        if name not in graph_outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as scratch:
        augmented = Path(scratch) / "augmented.onnx"
        onnx.save(model, str(augmented))
        session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
        values: dict[str, list] = {name: [] for name in tensors}
        for batch in batches:
            outputs = session.run(tensors, batch)
            for name, array in zip(tensors, outputs):
                values[name].append(np.asarray(array, dtype=np.float32).ravel())
    return values


def coverage_report(reference_path: Path, op_types: list[str], calibration_batches: list[dict[str, np.ndarray]],
                    heldout_batches: list[dict[str, np.ndarray]], warn_threshold: float, fail_threshold: float,
                    enforced: bool, worst_count: int = 5) -> dict:
    import onnx

    tensors = activation_tensors(onnx.load(str(reference_path)), op_types)
    calibration_values = _collect(reference_path, tensors, calibration_batches)
    heldout_values = _collect(reference_path, tensors, heldout_batches)
    rows = []
    for name in tensors:
        calibrated = np.concatenate(calibration_values[name])
        heldout = np.concatenate(heldout_values[name])
        low, high = float(calibrated.min()), float(calibrated.max())
        outside = float(np.mean((heldout < low) | (heldout > high)))
        span = max(high - low, 1e-12)
        overshoot = max(float(heldout.max()) - high, low - float(heldout.min()), 0.0) / span
        rows.append({"tensor": name, "calibration_min": low, "calibration_max": high,
                     "heldout_min": float(heldout.min()), "heldout_max": float(heldout.max()),
                     "fraction_outside": outside, "overshoot_of_range": overshoot})
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

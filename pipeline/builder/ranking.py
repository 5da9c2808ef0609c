"""Which quantized nodes add the most quantization noise: the order the gate's fallback takes nodes out of int8.

A MatMul's or Gemm's noise is measured on its output, other nodes' on their quantized inputs, from the activations
onnxruntime's qdq_loss_debug collects on a QDQ model (the artifact, or a static QDQ twin of a dynamic one: `qdq_probe`).
Nodes the probe cannot measure (the fused transformer operators) come after every ranked one.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from calibration import layout
from calibration.readers import BatchReader
from pipeline.builder.calibrate import load_batches
from pipeline.builder.quantize import DYNAMIC_IN_STATIC, QuantizerKnobs, quantize_onnx
from pipeline.manifest import Manifest

RANKING_EXAMPLES = 8  # activations of every tensor are held in memory while ranking


def _noise(sqnr_db: float) -> float:
    """Noise-to-signal power from SQNR in dB; noise powers of a node's inputs add up."""
    return float(10 ** (-sqnr_db / 10)) if np.isfinite(sqnr_db) else 0.0


def _matmul_output_noise(node, activations: dict, weights: dict) -> float | None:
    """The noise-to-signal power a MatMul's (or Gemm's) quantized input and weight put on its output: (quantized x
    @ quantized W) against (x @ W), x before and after its QuantizeLinear/DequantizeLinear, W fp32 and dequantized.
    None unless the node takes an activation and a 2-D weight (the caller then measures the inputs).

    Judged on the inputs instead, one outlier channel hides the rest: it sets the activation's int8 scale, holds
    nearly all of its power, and leaves the other channels' destruction below the noise floor of a clean tensor,
    while the weights that follow (which learned to ignore the outlier) pass exactly that destruction on."""
    activation, weight = node.input[0], node.input[1]
    if activation not in activations or weight not in weights or weights[weight]["float"].ndim != 2:
        return None
    attributes = {attribute.name: attribute.i for attribute in node.attribute}
    if node.op_type == "Gemm" and attributes.get("transA", 0):
        return None
    transposed = node.op_type == "Gemm" and attributes.get("transB", 0)  # Gemm's bias adds no quantization noise
    pre, post = activations[activation]["pre_qdq"], activations[activation]["post_qdq"]
    exact_weight = np.asarray(weights[weight]["float"], np.float64)
    quantized_weight = np.asarray(weights[weight]["dequantized"], np.float64)
    if transposed:
        exact_weight, quantized_weight = exact_weight.T, quantized_weight.T
    width = exact_weight.shape[0]
    if not pre or not post or pre[0].size % width or post[0].size != pre[0].size:
        return None
    # collect_activations keeps each activation flat: its rows are the weight's input width
    x = np.asarray(pre[0], np.float64).reshape(-1, width)
    quantized_x = np.asarray(post[0], np.float64).reshape(-1, width)
    exact = x @ exact_weight
    power = float(np.sum(exact ** 2))
    noise = float(np.sum((quantized_x @ quantized_weight - exact) ** 2))
    return noise / power if power > 0 else 0.0


def rank_sensitive_nodes(reference: Path, qdq_model: Path, inputs: dict[str, np.ndarray], op_types: list[str],
                         excluded: list[str], input_axes: dict | None = None) -> list[tuple[str, float]]:
    """Quantized nodes, noisiest first: (node name, noise-to-signal power of its output for a MatMul or Gemm with a
    weight, of its quantized inputs otherwise)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         compute_weight_error, create_activation_matching,
                                                         create_weight_matching,
                                                         modify_model_output_intermediate_tensors)

    sample = layout.take(inputs, slice(0, RANKING_EXAMPLES), input_axes)
    with tempfile.TemporaryDirectory() as scratch:
        augmented_float, augmented_qdq = Path(scratch) / "float.onnx", Path(scratch) / "qdq.onnx"
        modify_model_output_intermediate_tensors(reference, augmented_float)
        modify_model_output_intermediate_tensors(qdq_model, augmented_qdq)
        float_activations = collect_activations(str(augmented_float), BatchReader([sample]))
        qdq_activations = collect_activations(str(augmented_qdq), BatchReader([sample]))
    activations = create_activation_matching(qdq_activations, float_activations)
    weights = create_weight_matching(str(reference), str(qdq_model))
    activation_error, weight_error = compute_activation_error(activations), compute_weight_error(weights)
    scores = []
    for node in onnx.load(str(reference), load_external_data=False).graph.node:
        if node.op_type not in op_types or node.name in excluded:
            continue
        activation_noise = sum(_noise(activation_error[name]["qdq_err"])
                               for name in node.input if name in activation_error)
        weight_noise = sum(_noise(weight_error[name]) for name in node.input if name in weight_error)
        output_noise = _matmul_output_noise(node, activations, weights) if node.op_type in ("MatMul", "Gemm") \
            else None
        noise = output_noise if output_noise is not None else activation_noise + weight_noise
        if noise > 0:
            # Weight-only nodes (embedding lookups) rank last: a LayerNorm follows them and absorbs
            # their noise, while their fp32 tables cost the most bytes.
            scores.append((node.name, noise, activation_noise > 0))
    scores.sort(key=lambda item: (not item[2], -item[1], item[0]))
    return [(name, noise) for name, noise, _ in scores]


def quantized_op_types(mode: str, op_types: list[str]) -> list[str]:
    """The op types among `op_types` the mode's quantizer quantizes and the QDQ probe can measure: a dynamic build
    leaves Gemm fp32 (onnxruntime's dynamic registry has no Gemm), so ranking it would spend fallback steps on
    nodes already fp32."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry
    return [op for op in op_types if op not in DYNAMIC_IN_STATIC
            and (mode != "dynamic" or op in IntegerOpsRegistry)]


def unmeasured_nodes(reference: Path, op_types: list[str], taken: list[str]) -> list[str]:
    """Quantized nodes the probe cannot rank (DYNAMIC_IN_STATIC: the fused transformer operators, which have no QDQ
    rule, so every build quantizes them dynamically), in graph order: taken out after every ranked
    node, so a build whose noise sits in them can still reach its budget."""
    import onnx
    return [node.name for node in onnx.load(str(reference), load_external_data=False).graph.node
            if node.op_type in DYNAMIC_IN_STATIC and node.op_type in op_types and node.name not in taken]


def qdq_probe(cfg, manifest: Manifest, excluded: list[str], scratch: Path) -> Path:
    """A QDQ model to rank nodes on: the artifact itself, or a static QDQ twin of a dynamic one."""
    if manifest.quantization.mode != "dynamic":
        return manifest.path(manifest.model_file)
    probe = scratch / "probe.onnx"
    record = replace(manifest.quantization, mode="static", quant_format="QDQ", calibration_method="minmax")
    quantize_onnx(record, manifest.path(manifest.reference_file), probe,
                  load_batches(manifest.path(manifest.calibration_file)),
                  QuantizerKnobs.from_config(cfg).with_fallback(excluded), quiet=True, qdq_only=True)
    return probe

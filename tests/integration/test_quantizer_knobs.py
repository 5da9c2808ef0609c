"""onnxruntime's own knobs (mode.nodes_to_exclude, nodes_to_quantize, op_types_to_quantize, extra_options) reach
its quantizer, and names it does not know are refused, naming close matches."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.builder.calibrate import load_batches
from pipeline.builder.quantize import QuantizerKnobs, policy, quantize_onnx
from pipeline.config import compose_config
from pipeline.paths import PROJECT_ROOT


def conv_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == "Conv"]


def quantized_inputs(model: onnx.ModelProto, node: onnx.NodeProto) -> list[str]:
    """Inputs of `node` that come out of a DequantizeLinear (QDQ: what the quantizer wrapped)."""
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [name for name in node.input if name in dequantized]


@pytest.fixture(scope="module")
def digits_build(digits_release):
    return digits_release / "digits_cnn-static-avx2"


def test_excluded_node_stays_fp32_and_extra_options_reach_onnxruntime(digits_build, tmp_path):
    reference = digits_build / "reference.onnx"
    fp32 = onnx.load(str(reference))
    first, second = conv_nodes(fp32)[:2]
    cfg = compose_config(["model=digits_cnn", "mode=static", f"mode.nodes_to_exclude=[{first.name}]",
                          "mode.extra_options.ActivationSymmetric=true"])
    knobs = QuantizerKnobs.from_config(cfg)
    knobs.check_node_names(reference)
    output = tmp_path / "model.onnx"
    quantize_onnx(policy(cfg), reference, output, load_batches(digits_build / "calibration.npz"), knobs, quiet=True)
    model = onnx.load(str(output))
    by_name = {node.name: node for node in model.graph.node}
    assert quantized_inputs(model, by_name[first.name]) == []  # kept fp32: no DequantizeLinear feeds it
    assert len(quantized_inputs(model, by_name[second.name])) >= 2  # its neighbour: activation, weight (and bias)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert weights[first.input[1]].dtype == np.float32
    # ActivationSymmetric: onnxruntime centres u8 activations on 128 (its default is asymmetric ranges)
    activation_zero_points = [weights[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points and all(z.dtype == np.uint8 and np.all(z == 128) for z in activation_zero_points)


def test_nodes_to_quantize_limits_quantization_to_those_nodes(digits_build, tmp_path):
    reference = digits_build / "reference.onnx"
    first = conv_nodes(onnx.load(str(reference)))[0]
    cfg = compose_config(["model=digits_cnn", "mode=dynamic", f"mode.nodes_to_quantize=[{first.name}]"])
    output = tmp_path / "model.onnx"
    quantize_onnx(policy(cfg), reference, output, [], QuantizerKnobs.from_config(cfg), quiet=True)
    integer_ops = [n for n in onnx.load(str(output)).graph.node if n.op_type in ("ConvInteger", "MatMulInteger")]
    assert [n.op_type for n in integer_ops] == ["ConvInteger"]  # the one named Conv; the Gemms stay fp32


def test_a_misspelt_node_is_refused_naming_close_matches(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "build", "model=digits_cnn", "mode=static", "model.train_steps=20",
         "verify.enabled=false", "mode.nodes_to_exclude=[node_Conv2d_0]", f"artifacts_dir={tmp_path / 'out'}",
         f"hydra.run.dir={tmp_path / 'run'}"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert "mode.nodes_to_exclude: no node 'node_Conv2d_0'" in result.stderr and "did you mean" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "out").glob("*/model.onnx"))  # no artifact

"""Initializers the exporter shares between nodes (one tensor per distinct value: the zero biases and unit LayerNorm
weights of a model not trained yet) are unshared in the fused graph, so a static build's two passes (QDQ, then
dynamic int8 for Attention and EmbedLayerNormalization) do not quantize one tensor twice into a cycle
(onnxruntime: "Graph is not a DAG", a traceback and exit 70 before)."""
import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.builder.fuse import unshare_small_initializers
from pipeline.builder.task import build
from pipeline.config import compose_config
from tests.fixtures import hf_checkpoints


def uses(model) -> collections.Counter:
    names = {tensor.name for tensor in model.graph.initializer}
    return collections.Counter(name for node in model.graph.node for name in node.input if name in names)


def test_each_use_of_a_shared_vector_gets_its_own_copy_and_matrices_stay_shared():
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "bias")
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "weight")
    nodes = [helper.make_node("MatMul", ["x", "weight"], ["a"]), helper.make_node("Add", ["a", "bias"], ["b"]),
             helper.make_node("MatMul", ["b", "weight"], ["c"]), helper.make_node("Add", ["c", "bias"], ["d"]),
             helper.make_node("Sum", ["d", "bias", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [bias, weight])
    model = helper.make_model(graph)
    unshare_small_initializers(model)
    assert uses(model) == {"weight": 2, "bias": 1, "bias_1": 1, "bias_2": 1, "bias_3": 1}
    onnx.checker.check_model(model)
    copies = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("bias")}
    assert all(np.array_equal(array, np.zeros(4, np.float32)) for array in copies.values())


@pytest.mark.slow
def test_a_static_build_of_a_classifier_not_trained_yet_completes(tmp_path):
    checkpoint, data = hf_checkpoints.text_classifier(tmp_path, steps=0)  # zero biases, unit LayerNorm weights
    manifest = build(compose_config([
        "model=hf", f"model.name_or_path={checkpoint}", "model.task=text-classification", "calibration=files",
        f"calibration.data_files=[{data}]", "calibration.text_column=sentence", "calibration.label_column=label",
        "mode=static", "target=avx2", "verify.enabled=false", "reference_cache=false", f"artifacts_dir={tmp_path}"]))
    reference = onnx.load(str(manifest.path("reference.onnx")))
    vectors = {t.name for t in reference.graph.initializer if len(t.dims) <= 1}
    assert all(count == 1 for name, count in uses(reference).items() if name in vectors)
    assert manifest.fusion.operators["EmbedLayerNormalization"] == 1
    kinds = {node.op_type for node in onnx.load(str(manifest.path("model.onnx"))).graph.node}
    assert {"QEmbedLayerNormalization", "QAttention", "DequantizeLinear"} <= kinds  # both passes ran

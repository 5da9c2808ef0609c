"""The int8 graph runs each SkipLayerNormalization (with a bias) of the fused graph as Add + LayerNormalization:
onnxruntime's CPU kernels for those are faster (the speed is `make bench`'s). The values are the same, the residual
sum keeps its name for the next layer, and onnxruntime does not fuse them back when a session loads the graph (it
would without a bias: those stay as they are)."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pipeline.builder.fuse import split_skip_layer_norms

HIDDEN = 8


def layer(opset: int = 18, with_stats: bool = False) -> onnx.ModelProto:
    """x -> SkipLayerNormalization(x, skip, bias) -> (y, sum); the sum feeds a second one with a bias."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), name)
               for name in ("gamma", "beta", "bias")]
    stats = ["mean", "inv_std"] if with_stats else ["", ""]
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y", *stats, "sum"],
                              name="/layer.0/SkipLayerNorm", domain="com.microsoft", epsilon=1e-12),
             helper.make_node("SkipLayerNormalization", ["y", "sum", "gamma", "beta", "bias"], ["out"],
                              name="/layer.1/SkipLayerNorm", domain="com.microsoft", epsilon=1e-12)]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3, HIDDEN]) for name in ("x", "skip", "out")]
    graph = helper.make_graph(nodes, "layer", io[:2], io[2:], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    return model


def run(model: onnx.ModelProto, feed: dict) -> tuple[np.ndarray, list[str]]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0], [node.op_type for node in model.graph.node]


def test_the_split_gives_the_same_values_and_stays_split_in_a_session(tmp_path):
    rng = np.random.default_rng(1)
    feed = {name: rng.normal(size=(2, 3, HIDDEN)).astype(np.float32) for name in ("x", "skip")}
    fused = layer()
    expected, _ = run(fused, feed)
    split = layer()
    assert split_skip_layer_norms(split) == 2
    got, ops = run(split, feed)
    assert ops == ["Add", "Add", "LayerNormalization"] * 2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(split.SerializeToString(), options, providers=["CPUExecutionProvider"])
    loaded = [node.op_type for node in onnx.load(str(tmp_path / "loaded.onnx")).graph.node]
    assert "SkipLayerNormalization" not in loaded and loaded.count("LayerNormalization") == 2


def test_nodes_without_a_bias_or_whose_statistics_are_read_and_graphs_before_opset_17_are_left_alone():
    with_stats = layer(with_stats=True)
    del with_stats.graph.node[1].input[4]  # no bias
    assert split_skip_layer_norms(with_stats) == 0
    assert [node.op_type for node in with_stats.graph.node] == ["SkipLayerNormalization"] * 2
    old = layer(opset=16)
    assert split_skip_layer_norms(old) == 0
    assert [node.op_type for node in old.graph.node] == ["SkipLayerNormalization"] * 2

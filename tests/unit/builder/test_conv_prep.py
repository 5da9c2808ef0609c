"""Static int8 of convolutional graphs (pipeline/builder/conv_prep.py, QuantizerKnobs.prepared): a Pad computed by a
constant subgraph (TF-style "same" padding) is fused into its convolution before quantizing, the convolutions keep
their names and the graph computes what it did; only a stem convolution with a small reduction stays fp32; a
classifier's Gemm head keeps its output fp32. Real onnx graphs, real onnxruntime."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pipeline.builder.conv_prep import prepare
from pipeline.builder.quantize import QuantizerKnobs
from pipeline.config import compose_config
from tests.fixtures.padded_convnet import padded_graph


def run(model: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})[0]


def test_a_computed_zero_pad_is_fused_into_the_convolution_that_keeps_its_name():
    model = padded_graph()
    prepared = prepare(model)
    assert prepared.pads_fused == 1 and prepared.words() == "1 Pad(s) fused into the convolution that reads it"
    ops = [node.op_type for node in prepared.model.graph.node]
    assert "Pad" not in ops and "ConstantOfShape" not in ops and "BatchNormalization" in ops
    assert [(node.name, list(node.output)) for node in prepared.model.graph.node if node.op_type == "Conv"] == [
        ("conv", ["conv"]), ("squeeze", ["squeezed"]), ("expand", ["expanded"])]  # the gate compares by these
    conv = next(node for node in prepared.model.graph.node if node.name == "conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 1, 1]
    image = np.random.default_rng(1).standard_normal((2, 8, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(run(prepared.model, image), run(model, image), rtol=1e-4, atol=1e-4)
    assert sum(node.op_type == "Pad" for node in model.graph.node) == 1  # the reference is left as it was


def test_a_graph_with_nothing_to_fuse_is_quantized_as_it_is(tmp_path):
    from tests.fixtures.convnet import write_conv_model
    path = write_conv_model(tmp_path / "convnet.onnx")
    knobs, prepared = knobs_for(path)
    assert prepared is None and knobs.fp32_convs == ("conv0",)  # the RGB stem, reduction 27
    assert knobs.float_output_ops == ("MatMul", "Gemm") and "MaxPool" in knobs.op_types


def test_only_a_stem_convolution_stays_fp32_and_dynamic_builds_are_left_alone(tmp_path):
    path = tmp_path / "padded.onnx"
    onnx.save(padded_graph(), str(path))
    knobs, prepared = knobs_for(path)
    assert prepared.pads_fused == 1
    # `expand` reads 4 channels (reduction 4) inside the graph: int8, or it would cost a layout change on each side;
    # the stem `conv` has a reduction of 72
    assert knobs.fp32_convs == ()
    tiny_stem = QuantizerKnobs.from_config(compose_config(["model=onnx", "model.path=x", "mode=static",
                                                           "mode.conv_min_reduction=100", "mode.conv_fp32_min_macs=0"]))
    assert tiny_stem.for_graph(path, "static").fp32_convs == ("conv",)
    dynamic = QuantizerKnobs.from_config(compose_config(["model=onnx", "model.path=x", "mode=dynamic"]))
    assert dynamic.prepared(path, "dynamic") == (dynamic, None) and dynamic.float_output_ops == ("MatMul",)


def knobs_for(path):
    cfg = compose_config(["model=onnx", "model.path=x", "mode=static"])
    return QuantizerKnobs.from_config(cfg).prepared(path, "static")


def test_a_static_graph_without_convolutions_is_quantized_as_before(tmp_path):
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    knobs = QuantizerKnobs.from_config(compose_config(["model=onnx", "model.path=x", "mode=static"]))
    assert knobs.prepared(path, "static") == (knobs, None) and knobs.float_output_ops == ("MatMul",)


def test_a_graph_whose_weights_are_in_external_files_is_left_as_it_is(tmp_path):
    path = tmp_path / "external.onnx"
    onnx.save(padded_graph(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.data", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    prepared = prepare(model)
    assert prepared.pads_fused == 0 and prepared.model is model

"""model=onnx's checks on the file itself (pipeline/builder/onnx_family.py), before any work."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.builder.onnx_family import read_model
from pipeline.errors import InputError


def _matmul_model(opset: int, weight_type=np.float32, op: str = "MatMul"):
    weight = numpy_helper.from_array(np.ones((4, 2), weight_type), "w")
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def test_a_file_older_than_opset_13_is_converted_up(tmp_path):
    onnx.save(_matmul_model(11), str(tmp_path / "old.onnx"))
    model = read_model(str(tmp_path / "old.onnx"))
    assert next(o.version for o in model.opset_import if o.domain == "") == 13


@pytest.mark.parametrize("weight_type, op, expected", [
    (np.int8, "MatMul", "is already quantized: initializer w holds int8"),
    (np.float64, "MatMul", "is not an fp32 model: initializer w is float64"),
])
def test_what_gives_a_file_away_is_named(tmp_path, weight_type, op, expected):
    model = _matmul_model(13, weight_type, op)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(InputError, match=expected):
        read_model(str(tmp_path / "m.onnx"))


# --- other exporters' conventions (pipeline/builder/conventions.py): Paddle2ONNX-style files ---------------------

def _family(tmp_path, model_path):
    from pipeline.builder.onnx_family import OnnxFamily
    from pipeline.config import compose_config
    from tests.fixtures.paddle_style import write_npz
    return OnnxFamily(compose_config(["model=onnx", f"model.path={model_path}", "calibration=npz",
                                      f"calibration.path={write_npz(tmp_path / 'x.npz', n=4)}"]))


@pytest.mark.parametrize("batch_dim", [-1, 0, None, "N"])
def test_negative_zero_and_unnamed_dimensions_are_dynamic(tmp_path, batch_dim):
    """Paddle2ONNX writes -1 for a dynamic axis: `[-1, 3, ?, ?]` was refused as "a fixed first axis (-1)"."""
    from tests.fixtures.paddle_style import write_model
    family = _family(tmp_path, write_model(tmp_path / "paddle.onnx", batch_dim=batch_dim))
    assert [spec.shape for spec in family.input_specs()] == [(None, 3, None, None)]
    # reference.onnx declares them dynamic too (no -1 left for shape inference or the quantizer)
    declared = [value.type.tensor_type.shape.dim for value in (*family.model.graph.input, *family.model.graph.output)]
    assert [[d.dim_value for d in dims] for dims in declared] == [[0, 3, 0, 0], [0, 10]]
    assert len(family.data().calibration_pool) == 4  # onnxruntime runs the file on the arrays


def test_a_positive_fixed_first_axis_beside_several_dynamic_ones_is_refused_naming_the_key(tmp_path):
    """[2, 3, ?, ?]: the examples could lie on either dynamic axis (pipeline/layout.py guesses none of them)."""
    from tests.fixtures.paddle_style import write_model
    with pytest.raises(InputError, match=r"has a fixed first axis \(2\) and several dynamic axes \[2, 3\].*"
                                         r"model\.batch_axes\.x=2"):
        _family(tmp_path, write_model(tmp_path / "paddle.onnx", batch_dim=2))


@pytest.mark.parametrize("opset", [10, 11, 12])
def test_constant_weights_identity_chains_and_shared_weights_become_initializers(tmp_path, opset):
    """Constant-node weights, two Identity nodes in front of one and a weight two convolutions share, at opsets
    10-12: lifted to initializers the nodes read directly, at opset 13, computing what the file computes."""
    import onnxruntime as ort
    from tests.fixtures.paddle_style import images, write_model
    path = write_model(tmp_path / "paddle.onnx", opset=opset)
    model = read_model(str(path))
    assert next(o.version for o in model.opset_import if o.domain == "") == 13
    assert not {"Constant", "Identity"} & {node.op_type for node in model.graph.node}
    initializers = {tensor.name for tensor in model.graph.initializer}
    weights = {node.name: node.input[1] for node in model.graph.node if node.op_type in ("Conv", "MatMul")}
    assert set(weights.values()) <= initializers
    assert weights["conv2d_0"] == "conv2d_0.w_0" and weights["conv2d_1"] == weights["conv2d_2"] == "conv2d_1.w_0"
    x = images(4)
    outputs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for m in (str(path), model.SerializeToString())]
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("bias", [True, False])
def test_a_weight_computed_from_stored_tensors_is_folded_into_an_initializer(tmp_path, bias):
    """Transpose(W) in front of a convolution: folded (onnxscript's folder, on weight-preparation operators only),
    so onnxruntime stores it as int8 (before: a traceback in dynamic int8 with a bias, run-time quantization
    without). `Exp` of a stored tensor is not a weight preparation: left as it is."""
    from tests.fixtures.paddle_style import computed_weight_model
    onnx.save(computed_weight_model(bias), str(tmp_path / "m.onnx"))
    model = read_model(str(tmp_path / "m.onnx"))
    assert [node.op_type for node in model.graph.node] == ["Conv"]
    assert model.graph.node[0].input[1] in {tensor.name for tensor in model.graph.initializer}
    exp = computed_weight_model(bias, op="Exp")
    onnx.save(exp, str(tmp_path / "exp.onnx"))
    assert [node.op_type for node in read_model(str(tmp_path / "exp.onnx")).graph.node] == ["Exp", "Conv"]

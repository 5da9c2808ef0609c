"""model=onnx's checks on the file itself (pipeline/build/onnx_family.py), before any work."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.build.onnx_family import read_model
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

"""Which tensors the coverage report watches (calibration/coverage.py): the float activations feeding the quantized
ops, from the graph's own types when it carries them, from ONNX's shape inference when it does not."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.coverage import activation_tensors


def graph(with_types: bool):
    """x (float) -> Relu -> h -> MatMul(h, W) -> y; ids (int64) -> Gather(table) -> e, Cast -> ids_float;
    MatMul(e, ids_float) -> z. With types: h, e and ids_float carry value_info; without: none does."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("MatMul", ["h", "W"], ["y"]),
             helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Cast", ["ids"], ["ids_float"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["e", "ids_float"], ["z"])]
    weights = [numpy_helper.from_array(np.ones((4, 4), np.float32), "W"),
               numpy_helper.from_array(np.ones((10, 4), np.float32), "table")]
    value_info = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                  for name, shape in (("h", [2, 4]), ("e", [4, 4]), ("ids_float", [4]))]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                     helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
        weights, value_info=value_info if with_types else None), opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def test_the_float_activations_of_quantized_ops_from_the_graphs_types_or_inferred_ones():
    for with_types in (True, False):
        assert activation_tensors(graph(with_types), ["MatMul"]) == ["h", "e", "ids_float"], with_types
        # Gather's inputs: the table is an initializer, the ids are integers
        assert activation_tensors(graph(with_types), ["Gather"]) == [], with_types
        assert activation_tensors(graph(with_types), ["Relu", "MatMul"]) == ["x", "h", "e", "ids_float"]

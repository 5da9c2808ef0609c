"""Other exporters' conventions, in the one form quantgate's tools read: what `model=onnx` files hold.

- **Dynamic dimensions.** An axis is fixed only by a positive `dim_value`; a negative one (Paddle2ONNX writes -1 for
  a dynamic axis), zero, a `dim_param` name or nothing at all is dynamic (`fixed_size`, the one rule).
  `declare_dynamic_dims` clears the -1 and 0 of the graph's inputs, outputs and value_info, so that onnx's shape
  inference, onnxruntime's quantizer and the verifier read them as dynamic too.
- **Weights as Constant nodes** (PaddlePaddle, some TensorFlow exports) and `Identity` chains in front of weights:
  onnxruntime's quantizer quantizes only a weight that is an initializer read directly by its node (a Constant-node
  weight stayed fp32 and was quantized per tensor at every run, or raised "Expected ... to be an initializer").
  `lift_constant_weights` turns every tensor Constant into an initializer and removes Identity nodes, with onnx_ir's
  own passes (LiftConstantsToInitializersPass, IdentityEliminationPass); a weight the graph computes from stored
  tensors (Transpose(W), weight normalization) is folded into one by onnxscript's constant folder, restricted to
  those operators (WEIGHT_PREPARATION). Measured against onnxruntime's `quant_pre_process` and onnxscript's
  optimizer on a Paddle-style file (docs/exporters.md): all three give int8 weights, but only onnx_ir's passes change
  nothing else (quant_pre_process fuses MatMul + Add into a Gemm named `linear_0/MatMulAddFusion`, so
  mode.nodes_to_exclude=[linear_0] would name nothing; onnxscript's optimizer turns Flatten into Reshape).
"""
from __future__ import annotations


def fixed_size(dim) -> int | None:
    """The size of an axis (a TensorShapeProto.Dimension) if the file fixes it, None if the axis is dynamic."""
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def declare_dynamic_dims(graph) -> int:
    """Clear every negative or zero `dim_value` of `graph`'s inputs, outputs and value_info (the axis is dynamic);
    returns how many."""
    cleared = 0
    for value in [*graph.input, *graph.output, *graph.value_info]:
        tensor = value.type.tensor_type
        for dim in tensor.shape.dim if value.type.HasField("tensor_type") else ():
            if dim.HasField("dim_value") and fixed_size(dim) is None:
                dim.Clear()
                cleared += 1
    return cleared


# Operators that compute a weight from stored tensors (a transposed or reshaped weight, weight normalization's
# g * v / ||v||): folded into an initializer when every input is stored, whatever the size; no other node is folded.
WEIGHT_PREPARATION = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast", "Mul", "Div", "Add", "Sub",
                      "Neg", "Sqrt", "Pow", "ReduceL2", "ReduceSum"}


def _changes(graph) -> bool:
    """Whether the lift changes `graph` (a Constant, an Identity, a weight computed from stored tensors), subgraphs
    included."""
    import onnx
    stored = {tensor.name for tensor in graph.initializer} | {node.output[0] for node in graph.node
                                                               if node.op_type == "Constant"}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in ("Constant", "Identity") or (
                node.op_type in WEIGHT_PREPARATION and all(name in stored for name in node.input if name)):
            return True
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            if any(_changes(sub) for sub in subgraphs):
                return True
    return False


def _weight_preparation(node) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in WEIGHT_PREPARATION


def lift_constant_weights(model):
    """`model` with its tensor Constants as initializers, the weights it computes from them folded (onnxscript's
    constant folder) and no Identity nodes: a new ModelProto, or `model` itself when it has none of these."""
    if not _changes(model.graph):
        return model
    import onnx_ir as ir
    from onnx_ir.passes.common import IdentityEliminationPass, LiftConstantsToInitializersPass
    from onnxscript.optimizer import fold_constants

    graph = ir.from_proto(model)
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0)(graph)
    fold_constants(graph, should_fold=_weight_preparation)
    IdentityEliminationPass()(graph)
    return ir.to_proto(graph)

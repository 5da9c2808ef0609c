"""Other exporters' conventions, in the one form quantgate's tools read: what `model=onnx` files hold.

- **Dynamic dimensions.** An axis is fixed only by a positive `dim_value`; a negative one (Paddle2ONNX writes -1 for
  a dynamic axis), zero, a `dim_param` name or nothing at all is dynamic (`fixed_size`, the one rule).
  `declare_dynamic_dims` clears the -1 and 0 of the graph's inputs, outputs and value_info, so that onnx's shape
  inference, onnxruntime's quantizer and the verifier read them as dynamic too.
- **Weights as Constant nodes** (PaddlePaddle, some TensorFlow exports) and `Identity` chains in front of weights:
  onnxruntime's quantizer quantizes only a weight that is an initializer read directly by its node (a Constant-node
  weight stayed fp32 and was quantized per tensor at every run, or raised "Expected ... to be an initializer").
  `lift_constant_weights` turns every tensor Constant into an initializer and removes Identity nodes, with onnx_ir's
  own passes (LiftConstantsToInitializersPass, IdentityEliminationPass). Measured against onnxruntime's
  `quant_pre_process` and onnxscript's optimizer on a Paddle-style file (docs/exporters.md): all three give int8
  weights, but only onnx_ir's passes change nothing else (quant_pre_process fuses MatMul + Add into a Gemm named
  `linear_0/MatMulAddFusion`, so mode.nodes_to_exclude=[linear_0] would name nothing; onnxscript's optimizer turns
  Flatten into Reshape), in 2-3 ms against 8-33 ms.
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


def _lifts(graph) -> bool:
    """Whether a graph holds a node the lift changes (a Constant or an Identity), subgraphs included."""
    import onnx
    for node in graph.node:
        if node.op_type in ("Constant", "Identity") and node.domain in ("", "ai.onnx"):
            return True
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            if any(_lifts(sub) for sub in subgraphs):
                return True
    return False


def lift_constant_weights(model):
    """`model` with its tensor Constants as initializers and no Identity nodes (a new ModelProto; `model` itself
    when it has neither)."""
    if not _lifts(model.graph):
        return model
    import onnx_ir as ir
    from onnx_ir.passes.common import IdentityEliminationPass, LiftConstantsToInitializersPass

    graph = ir.from_proto(model)
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0)(graph)
    IdentityEliminationPass()(graph)
    return ir.to_proto(graph)

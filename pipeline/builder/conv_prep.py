"""A convolutional graph made ready for static int8: a zero Pad that onnxruntime fuses into a fp32 convolution at load
time is fused before quantizing, so that the int8 graph does not keep it as a separate fp32 operator between Q/DQ pairs.

onnxruntime folds a zero `Pad` (and the constant subgraph that computes its pads) into the `Conv` that reads it when it
loads the fp32 graph, but not in a QDQ graph: there the Pad sits between a DequantizeLinear and a QuantizeLinear, runs
in fp32, and costs a layout change on each side of it. Exporters write such Pads: TF-style
"same" padding (transformers' MobileNetV2 and EfficientNet, tf2onnx and Paddle2ONNX files) computes each one from
constants (measured: transformers' MobileNetV2 at 96x96, 52 Pads, static int8 1.2-1.3x fp32 -> 0.6x at batch 1).

The passes are onnxscript's: the constant folder (with the small ConstantOfShape it preserves by default, which such
pad computations start from) and its Pad-into-Conv rewrite rule. Convolutions keep their names; the fp32 reference is
untouched. (onnxscript 0.7's BatchNormalization-into-Conv rule is left out: its Conv loses its name, which the accuracy
gate and nodes_to_exclude refer to; exporters fold BatchNormalization in eval mode.)
"""
from __future__ import annotations

from dataclasses import dataclass

# The ConstantOfShape outputs the folder may fold (elements): pad and shape vectors, not tensors of data.
SMALL_CONSTANT = 1024


@dataclass(frozen=True)
class Prepared:
    """The prepared graph (onnx.ModelProto) and how many Pads were fused."""

    model: object
    pads_fused: int

    def words(self) -> str:
        return f"{self.pads_fused} Pad(s) fused into the convolution that reads it"


def _small_constant_of_shape(node) -> bool | None:
    """The folder's rule for one node: fold a ConstantOfShape of a known small shape, defaults otherwise."""
    if node.op_type != "ConstantOfShape" or node.inputs[0] is None or node.inputs[0].const_value is None:
        return None
    shape = node.inputs[0].const_value.numpy()
    return True if int(abs(shape).prod()) <= SMALL_CONSTANT else None


def prepare(model) -> Prepared:
    """`model` (onnx.ModelProto, not modified) with its constant subgraphs folded and zero Pads fused into the Conv that
    reads them (onnxscript's rule; shapes from onnx's shape inference, which it needs). A graph with no Pad, or with
    weights in external data files (which a prepared copy saved elsewhere would not find), is returned as it is."""
    import onnx
    if not _pads(model.graph) or any(tensor.data_location == onnx.TensorProto.EXTERNAL
                                     for tensor in model.graph.initializer):
        return Prepared(model, 0)
    import onnx_ir as ir
    from onnxscript import rewriter
    from onnxscript.optimizer import fold_constants
    from onnxscript.rewriter.rules.common import fuse_pad_into_conv_rule, normalize_pad_format_conv_rule

    before = _pads(model.graph)
    graph = ir.from_proto(model)
    fold_constants(graph, should_fold=_small_constant_of_shape, onnx_shape_inference=True)
    rewriter.rewrite(graph, pattern_rewrite_rules=[normalize_pad_format_conv_rule, fuse_pad_into_conv_rule])
    prepared = ir.to_proto(graph)
    return Prepared(prepared, before - _pads(prepared.graph))


def _pads(graph) -> int:
    return sum(node.op_type == "Pad" for node in graph.node)

"""What an int8 graph really holds, counted after quantization: the stamp's `graph_counts`, and the check that every
claim of the stamp holds in the graph (the pair: add the metadata, check for it).

A *weight* is a constant tensor (an initializer or a Constant node), or a tensor the graph computes from constants
only, that a compute node reads as an operand, through layout operators (Transpose, Reshape, ...) and Q/DQ nodes.
Each distinct weight is one of:

- **int8**: stored as int8/uint8 and dequantized (QDQ) or read by an integer kernel (ConvInteger, QLinearConv, ...);
  per-channel when its scale (or, for MatMulInteger/ConvInteger, its zero point) holds one value per channel;
- **run time**: stored fp32 and quantized by a QuantizeLinear / DynamicQuantizeLinear at every run (what onnxruntime's
  quantizer does with a weight it does not see as an initializer: per tensor, fp32 bytes, slower);
- **fp32**: read by a compute node left fp32 (the accuracy gate's fallback, mode.nodes_to_exclude, op types).

A compute node (MatMul, Conv, Gemm, ConvTranspose, fused Attention, and onnxruntime's integer kernels) runs in int8
when it is an integer kernel, or in QDQ when both its operands come from DequantizeLinear (onnxruntime fuses only
those into an int8 kernel at load time).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from pipeline.errors import ExitCode, QuantgateError
from pipeline.layout import all_graphs

# onnxruntime's integer and QOperator kernels: the input holding the weight, and the input whose size tells per
# channel from per tensor (the weight's scale; MatMulInteger and ConvInteger take only its zero point).
INT8_KERNELS = {
    "MatMulInteger": (1, 3), "ConvInteger": (1, 3), "QLinearMatMul": (3, 4), "QLinearConv": (3, 4), "QGemm": (3, 4),
    "QAttention": (1, 4), "DynamicQuantizeMatMul": (1, 2), "MatMulIntegerToFloat": (1, 3),
    "QEmbedLayerNormalization": (2, 8),
}
# Weight-only kernels (decoders, pipeline/builder/decoder.py): weights stored in `bits` per value in blocks of
# `block_size` along K with a scale per block (and a zero point, input 3, when asymmetric); activations stay float
# (or int8 inside the kernel: accuracy_level). Counted as data (bits, block size, symmetric), not as int8.
WEIGHT_ONLY_KERNELS = {"MatMulNBits"}
QDQ_COMPUTE = {"MatMul", "Conv", "Gemm", "ConvTranspose"}  # int8 when both operands are dequantized
FP32_ONLY_COMPUTE = {"Attention", "EmbedLayerNormalization"}  # fused operators a build left fp32
LAYOUT_OPS = {"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}  # between a weight and its user
QUANTIZERS = {"QuantizeLinear", "DynamicQuantizeLinear"}
INTEGER_TYPES = {2, 3, 21, 22}  # TensorProto UINT8, INT8, UINT4, INT4


@dataclass(frozen=True)
class GraphCounts:
    int8_weights: int = 0  # distinct weights stored as int8/uint8
    per_channel_weights: int = 0  # of those, quantized per channel
    run_time_weights: int = 0  # fp32 weights quantized at every run
    fp32_weights: int = 0  # weights of compute nodes left fp32
    int8_nodes: int = 0  # compute nodes that run in int8
    fp32_nodes: int = 0  # compute nodes left fp32
    run_time_readers: tuple[str, ...] = field(default=(), compare=False)  # the fp32 graph's nodes reading them
    # Weight-only kernels by scheme: ((op, bits, block_size, symmetric, accuracy_level), weights); stamped only
    # when the graph has some.
    blockwise_weights: tuple[tuple[tuple, int], ...] = ()

    def as_stamp(self) -> dict:
        values = asdict(self)
        values.pop("run_time_readers")
        blockwise = values.pop("blockwise_weights")
        if blockwise:
            values["blockwise_weights"] = [
                {"op": op, "bits": bits, "block_size": block, "symmetric": symmetric, "accuracy_level": level,
                 "weights": count} for (op, bits, block, symmetric, level), count in blockwise]
        return values

    def describe(self) -> str:
        return (f"{self.int8_weights} int8 weight(s) ({self.per_channel_weights} per channel), {self.run_time_weights} "
                f"quantized at run time, {self.fp32_weights} fp32; {self.int8_nodes} int8 compute node(s), "
                f"{self.fp32_nodes} fp32" + "".join(
                    f"; {count} {op} weight(s) of {bits} bits in blocks of {block} "
                    f"({'symmetric' if symmetric else 'asymmetric'}, accuracy_level {level})"
                    for (op, bits, block, symmetric, level), count in self.blockwise_weights))


def weight_only_scheme(node) -> tuple:
    """(op, bits, block_size, symmetric, accuracy_level) of a weight-only kernel node, from its attributes."""
    import onnx
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    symmetric = not (len(node.input) > 3 and node.input[3])
    return (node.op_type, int(attributes.get("bits", 4)), int(attributes.get("block_size", 0)), symmetric,
            int(attributes.get("accuracy_level", 0)))


class _Graph:
    """Producers and constants of a model (subgraphs included), and the tracing of an operand to its source."""

    def __init__(self, model):
        import onnx
        self.producer, self.constants, self.nodes, self._constant_expressions = {}, {}, [], {}
        for graph in all_graphs(model.graph):
            self.constants.update({tensor.name: tensor for tensor in graph.initializer})
            for node in graph.node:
                self.nodes.append(node)
                self.producer.update({output: node for output in node.output})
                if node.op_type == "Constant":
                    self.constants.update({node.output[0]: a.t for a in node.attribute
                                           if a.type == onnx.AttributeProto.TENSOR})

    def source(self, name: str) -> tuple[str, object]:
        """(name, node) where `name` comes from, past layout operators: node None for a constant or a graph input."""
        node = self.producer.get(name)
        while node is not None and node.op_type in LAYOUT_OPS and name not in self.constants:
            name = node.input[0]
            node = self.producer.get(name)
        return name, (None if name in self.constants else node)

    def computed_from_constants(self, name: str) -> bool:
        """Whether `name` is a constant or computed from constants only (a weight the graph computes at every run)."""
        memo, stack = self._constant_expressions, [name]
        while stack:
            current = stack[-1]
            node = self.producer.get(current)
            if current in memo:
                stack.pop()
            elif current in self.constants or node is None or not node.input or node.op_type in QUANTIZERS:
                memo[current] = current in self.constants
                stack.pop()
            elif pending := [value for value in node.input if value and value not in memo]:
                stack.extend(pending)
            else:
                memo[current] = all(memo[value] for value in node.input if value)
                stack.pop()
        return memo[name]

    def size(self, name: str) -> int:
        tensor = self.constants.get(self.source(name)[0])
        return 1 if tensor is None else max(1, math.prod(tensor.dims))

    def operand(self, name: str, scale_input: str | None = None) -> tuple[str, str | None, bool]:
        """How an operand reaches its node: (kind, weight name, per channel); kind is `int8`, `run_time`, `fp32`
        (weights), `int8_activation` or `fp32_activation`."""
        name, node = self.source(name)
        if node is not None and node.op_type == "DequantizeLinear":
            scale_input = node.input[1]
            name, node = self.source(node.input[0])
        if node is not None and node.op_type in QUANTIZERS:
            weight = self.source(node.input[0])[0]
            if self.computed_from_constants(weight):
                return "run_time", weight, False
            return "int8_activation", None, False
        if node is None and name in self.constants and self.constants[name].data_type in INTEGER_TYPES:
            return "int8", name, scale_input is not None and self.size(scale_input) > 1
        if scale_input is None and self.computed_from_constants(name):
            return "fp32", name, False
        return ("int8_activation" if scale_input else "fp32_activation"), None, False


def count_graph(model) -> GraphCounts:
    """What `model` (an onnx.ModelProto) holds: its weights by kind and its compute nodes by precision."""
    graph = _Graph(model)
    weights = {"int8": set(), "run_time": set(), "fp32": set(), "per_channel": set()}  # a kind -> weight names
    int8_nodes = fp32_nodes = 0
    readers, blockwise = [], {}
    for node in graph.nodes:
        if node.op_type in WEIGHT_ONLY_KERNELS:
            scheme = weight_only_scheme(node)
            blockwise[scheme] = blockwise.get(scheme, 0) + 1
            continue
        if node.op_type in INT8_KERNELS:
            weight_index, scale_index = INT8_KERNELS[node.op_type]
            scale = node.input[scale_index] if len(node.input) > scale_index and node.input[scale_index] else None
            operands = [graph.operand(node.input[weight_index], scale)] if len(node.input) > weight_index else []
            int8_nodes += 1
        elif node.op_type in QDQ_COMPUTE | FP32_ONLY_COMPUTE:
            operands = [graph.operand(name) for name in node.input[:2] if name]
            quantized = node.op_type in QDQ_COMPUTE and all(kind.startswith(("int8", "run_time"))
                                                            for kind, _, _ in operands)
            int8_nodes, fp32_nodes = int8_nodes + quantized, fp32_nodes + (not quantized)
        else:
            continue
        for kind, weight, per_channel in operands:
            if weight is not None:  # one weight may be read in two ways (quantized by one node, fp32 by another)
                weights[kind].add(weight)
                if per_channel:
                    weights["per_channel"].add(weight)
                if kind == "run_time":  # named as in the fp32 graph (onnxruntime calls its kernels <name>_quant)
                    readers.append(node.name.removesuffix("_quant") if node.op_type in INT8_KERNELS else node.name)
    return GraphCounts(int8_weights=len(weights["int8"]), per_channel_weights=len(weights["per_channel"]),
                       run_time_weights=len(weights["run_time"]), fp32_weights=len(weights["fp32"]),
                       int8_nodes=int8_nodes, fp32_nodes=fp32_nodes, run_time_readers=tuple(dict.fromkeys(readers)),
                       blockwise_weights=tuple(sorted(blockwise.items())))


class StampCheckFailed(QuantgateError):
    """quantgate's own artifact fails its own check: its stamp claims what its graph does not hold."""

    exit_code = ExitCode.FAILED


def unheld_claims(stamp: dict[str, str], counts: GraphCounts) -> list[str]:
    """Each claim of `stamp` (the quantgate.* keys, prefix removed) that the graph counted in `counts` does not hold."""
    wrong = []
    stamped = json.loads(stamp.get("graph_counts", "null"))
    if stamped != counts.as_stamp():
        wrong.append(f"graph_counts says {stamped}, the graph holds {counts.as_stamp()}")
    if stamp.get("weight_type") in ("int8", "uint8"):
        if counts.run_time_weights:
            readers = ", ".join(counts.run_time_readers[:5])
            wrong.append(f"weight_type={stamp['weight_type']}, but {counts.run_time_weights} weight(s) are stored fp32 "
                         f"and quantized at every run (read by {readers}); keep those nodes fp32 with "
                         f"mode.nodes_to_exclude=[{readers}]")
        elif not counts.int8_weights and counts.fp32_weights:
            wrong.append(f"weight_type={stamp['weight_type']}, but every weight is fp32")
    per_channel = stamp.get("per_channel") == "true"
    if per_channel and counts.int8_weights and not counts.per_channel_weights:
        wrong.append("per_channel=true, but every int8 weight has one scale (per tensor)")
    if not per_channel and counts.per_channel_weights:
        wrong.append(f"per_channel={stamp.get('per_channel')}, but {counts.per_channel_weights} weight(s) are per "
                     f"channel")
    return wrong


def check_claims(stamp: dict[str, str], model, where: str) -> GraphCounts:
    """Count `model` and refuse it (StampCheckFailed) if its stamp claims anything the graph does not hold."""
    counts = count_graph(model)
    wrong = unheld_claims(stamp, counts)
    if wrong:
        raise StampCheckFailed(f"the stamp check failed: {where}'s stamp claims what its graph does not hold: "
                               f"{'; '.join(wrong)}. Nothing was published (a bug in quantgate, or a graph form its "
                               f"quantizer does not handle: please report it with the model's exporter)")
    return counts

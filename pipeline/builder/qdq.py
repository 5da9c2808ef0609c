"""A static QDQ graph's activations: int8 where an int8 operator reads them, fp32 everywhere else.

onnxruntime's static quantizer puts one QuantizeLinear/DequantizeLinear pair on an activation that an int8 operator
reads, and hands the pair's dequantized copy to every consumer of that activation. So an fp32 consumer reads the
activation rounded to 8 bits for nothing: in a transformer, the residual Add of every layer reads the layer norm's
output through the pair that feeds the next MatMul, which rounds the residual stream itself (MiniLM static int8,
avx512_vnni: cosine to fp32 0.9933 -> 0.9945 without it, and 6 DequantizeLinear nodes fewer per run).
"""
from __future__ import annotations


# Operators whose job is to quantize an fp32 input at run time (a dynamic MatMul the accuracy gate took out of static).
QUANTIZE_AT_RUN_TIME = ("DynamicQuantizeLinear",)


def is_int8_node(node, producers: dict) -> bool:
    """A node of the QDQ graph that runs in int8: every input it has comes from a DequantizeLinear (a MatMul or Conv
    with its weight and activation quantized). A node with an fp32 input (a weight left fp32, a LayerNormalization's
    scale, a residual) runs in fp32, as does one that quantizes its input itself."""
    inputs = [name for name in node.input if name]
    return bool(inputs) and node.op_type not in QUANTIZE_AT_RUN_TIME and all(
        name in producers and producers[name].op_type == "DequantizeLinear" for name in inputs)


def fp32_consumers_read_fp32(model) -> int:
    """Rewire fp32 consumers of a dequantized activation to the activation itself (onnx.ModelProto, in place);
    returns how many inputs. Left alone: activations an int8 node writes (reading its fp32 output would stop
    onnxruntime from fusing that node into a QLinear operator), and pairs no int8 node reads."""
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewired = 0
    for dequantize in model.graph.node:
        quantize = producers.get(dequantize.input[0]) if dequantize.op_type == "DequantizeLinear" else None
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue  # a weight's pair: its quantized values are an initializer
        activation = quantize.input[0]
        if activation in producers and is_int8_node(producers[activation], producers):
            continue
        readers = consumers.get(dequantize.output[0], [])
        if not any(is_int8_node(reader, producers) for reader in readers):
            continue
        for reader in readers:
            if not is_int8_node(reader, producers):
                for index, name in enumerate(reader.input):
                    if name == dequantize.output[0]:
                        reader.input[index] = activation
                        rewired += 1
    return rewired

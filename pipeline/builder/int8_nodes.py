"""Which compute nodes run int8, in the main graph and inside control flow (`If`, `Loop`, `Scan` bodies).

int8 compute nodes as pipeline/builder/graph_counts.py defines them (which counts the whole model); here they are
counted per subgraph, so the build can say which body stays fp32. The stamp stage refuses an artifact with none.

Measured with onnxruntime 1.32 on a GRU detector whose network sits in both branches of an `If` on the sample rate
(tests/fixtures/streaming.py): `quantize_dynamic` quantizes inside subgraphs only with
`extra_options={"EnableSubgraph": True}` (MatMulInteger in each branch); without it the branches stay fp32.
`quantize_static` leaves them fp32 in QDQ whatever the option, and in QOperator with the option it fails (a
TypeError inside onnxruntime). So a dynamic build turns the option on when the graph has subgraphs, and every build
records, per subgraph, its compute nodes and how many run int8 (`QuantizationRecord.subgraphs`, stamped as
`quantgate.subgraphs`), naming the ones that stay fp32 and why.
"""
from __future__ import annotations

from pipeline.builder.graph_counts import INT8_KERNELS, LAYOUT_OPS, QDQ_COMPUTE

STATIC_REASON = ("onnxruntime's static quantizer does not enter If/Loop/Scan subgraphs (QDQ keeps them fp32; "
                 "QOperator with EnableSubgraph fails): build with mode=dynamic to quantize them")


def subgraphs(graph, where: str = ""):
    """(path, subgraph) of every If/Loop/Scan body below `graph`: path `node/attribute`, nested with `/`."""
    import onnx
    for node in graph.node:
        for attribute in node.attribute:
            bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for body in bodies:
                path = f"{where}{node.name or node.op_type}/{attribute.name}"
                yield path, body
                yield from subgraphs(body, path + "/")


def has_subgraphs(model) -> bool:
    return next(subgraphs(model.graph), None) is not None


def quantizer_options(model, mode: str) -> dict:
    """extra_options the mode's quantizer needs for this graph: EnableSubgraph for a dynamic build with subgraphs."""
    return {"EnableSubgraph": True} if mode == "dynamic" and has_subgraphs(model) else {}


def subgraph_counts(reference, quantized, mode: str) -> dict[str, dict]:
    """Per subgraph holding compute nodes: how many it has (fp32 reference) and how many run int8 (artifact), with
    the reason when none does. Subgraphs are matched by path (the quantizer keeps node names)."""
    int8 = {path: int8_compute_nodes_of(body) for path, body in subgraphs(quantized.graph)}
    counts = {}
    for path, body in subgraphs(reference.graph):
        compute = sum(node.op_type in QDQ_COMPUTE for node in body.node)
        if not compute:
            continue
        counts[path] = {"compute_nodes": compute, "int8_nodes": int8.get(path, 0)}
        if not counts[path]["int8_nodes"]:
            counts[path]["fp32_reason"] = STATIC_REASON if mode != "dynamic" else \
                "onnxruntime's dynamic quantizer quantized none of its nodes (op types, or nodes excluded)"
    return counts


def int8_compute_nodes_of(graph) -> int:
    """How many compute nodes of one graph (not its subgraphs) run in int8."""
    producer = {output: node for node in graph.node for output in node.output}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in LAYOUT_OPS:
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return sum(node.op_type in INT8_KERNELS or (node.op_type in QDQ_COMPUTE and any(map(dequantized, node.input[:2])))
               for node in graph.node)


def fp32_words(counts: dict[str, dict]) -> str:
    """The subgraphs that stay fp32, in words ("" when none)."""
    fp32 = {path: entry for path, entry in counts.items() if not entry["int8_nodes"]}
    if not fp32:
        return ""
    reason = next(iter(fp32.values()))["fp32_reason"]
    listed = ", ".join(f"{path} ({entry['compute_nodes']} compute nodes)" for path, entry in fp32.items())
    return f"subgraph(s) {listed} stay fp32: {reason}"

"""The fused fp32 graph of a transformer encoder: onnxruntime's transformer optimizer.

onnxruntime runs a transformer fastest as its own fused operators (com.microsoft domain): Attention,
EmbedLayerNormalization, SkipLayerNormalization, BiasGelu/FastGelu. Its optimizer
(`onnxruntime.transformers.optimizer.optimize_model`, model_type "bert") recognises them in a
TorchScript export of a model loaded with eager attention (pipeline/builder/export.py); on the dynamo
exporter's "sdpa" graph it fuses no Attention (docs: ../shared/FACTS.md). The quantizers then map
the fused operators onto int8 kernels: `quantize_dynamic` turns Attention into QAttention and
EmbedLayerNormalization into QEmbedLayerNormalization (int8 word embeddings).

`quantize_static` (QDQ) has no rule for Attention or EmbedLayerNormalization, so a static build quantizes
those two dynamically, and everything else static (pipeline/builder/quantize.py): every mode gets the same
fused graph. The fused graph carries value_info from onnxruntime's symbolic shape inference:
without it, the quantizers cannot type the outputs of com.microsoft operators and leave the MatMuls
after every SkipLayerNormalization with fp32 activations (weight-only int8, slower than fp32).
"""
from __future__ import annotations

import collections
import logging

from pipeline.errors import InputError
from pipeline.manifest import FusionRecord

# The operators the optimizer writes, as counted in the manifest and checked by the tests.
FUSED_OPERATORS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
                   "BiasGelu", "FastGelu", "Gelu", "LayerNormalization")
CONTRIB_DOMAIN = "com.microsoft"  # onnxruntime's own operators
TOOL = "onnxruntime.transformers.optimizer.optimize_model (model_type bert, opt_level 0)"
# Fusions the optimizer may not find in an encoder's graph (relative positions, a roberta's padding-derived position
# ids): tried but absent, they are recorded as left unfused; the build goes on with what did fuse.
EXPECTED = {"Attention": ("Attention", "MultiHeadAttention"), "EmbedLayerNormalization": ("EmbedLayerNormalization",)}


def operator_counts(model) -> dict[str, int]:
    """How many of each fused operator `model` (onnx.ModelProto) holds."""
    counts = collections.Counter(node.op_type for node in model.graph.node if node.op_type in FUSED_OPERATORS)
    return dict(sorted(counts.items()))


def unshare_small_initializers(model) -> None:
    """Give every use of a 1-D initializer that several inputs share (in `model`, an onnx.ModelProto) its own copy.

    The exporter keeps one initializer per distinct value, so equal biases and LayerNorm weights (zeros and ones, in
    a model not trained yet) become one tensor used by a Gemm, the SkipLayerNormalizations and the
    EmbedLayerNormalization alike. A static build then quantizes it twice over: QDQ turns it into a
    DequantizeLinear output of the same name for the Gemm, and the dynamic pass quantizes that output again for
    QEmbedLayerNormalization, which makes a cycle (onnxruntime: "Graph is not a DAG"). Biases and norm weights are
    small; copies cost nothing. Larger shared tensors (tied embeddings) stay shared."""
    import onnx

    initializers = {tensor.name: tensor for tensor in model.graph.initializer if len(tensor.dims) <= 1}
    taken = {name for node in model.graph.node for name in (*node.input, *node.output)} | set(initializers)
    seen = set()
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name not in seen:
                seen.add(name)
                continue
            copy_name = next(f"{name}_{n}" for n in range(1, len(taken) + 2) if f"{name}_{n}" not in taken)
            taken.add(copy_name)
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[name])
            copy.name = copy_name
            model.graph.initializer.append(copy)
            node.input[slot] = copy_name


def fuse_transformer(model, num_heads: int, hidden_size: int):
    """(fused onnx.ModelProto, FusionRecord) of a BERT-like encoder's fp32 ONNX graph (onnx.ModelProto).

    Only graph rewrites (opt_level 0): the result holds no onnxruntime-session optimizations, so it stays
    a portable model for any onnxruntime that has the contrib operators (1.16 and later)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    record = FusionRecord(tool=TOOL, num_heads=num_heads, hidden_size=hidden_size)
    optimizer_log = logging.getLogger("onnxruntime.transformers")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.ERROR)  # one INFO/WARNING line per fusion tried
    try:
        optimized = optimize_model(model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options, opt_level=0, use_gpu=False)
    finally:
        optimizer_log.setLevel(level)
    if not any(opset.domain == CONTRIB_DOMAIN for opset in optimized.model.opset_import):
        # the optimizer adds the import only when it saves to a file (OnnxModel.save)
        optimized.model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    try:
        fused = SymbolicShapeInference.infer_shapes(optimized.model, auto_merge=True)
    except Exception as error:  # noqa: BLE001 - it fails on operators it cannot type with whatever error they raise
        raise InputError(f"onnxruntime's symbolic shape inference cannot type the fused graph of this model "
                         f"({type(error).__name__}: {error}); build it unfused with model.fuse=false") from None
    unshare_small_initializers(fused)
    record.operators = operator_counts(fused)
    for operator, written in EXPECTED.items():
        if not any(op in record.operators for op in written):
            record.left_unfused.append(f"{operator} (the optimizer found no subgraph it fuses into one)")
    return fused, record


# The int8 graph's layer norms: onnxruntime 1.32's CPU kernel for SkipLayerNormalization is slower than its
# LayerNormalization beside two Adds (MiniLM int8 at 128 tokens, EPYC Zen 4 with VNNI, interleaved: batch 32 0.49x
# -> 0.40x of the fused fp32 graph, batch 1 0.50x -> 0.45x). The Adds come in the order (input + skip) + bias,
# which onnxruntime's session-time SkipLayerNormFusion does not match, so they stay apart when the session loads.


def split_skip_layer_norms(model) -> int:
    """Rewrite every SkipLayerNormalization of `model` (onnx.ModelProto, in place) that has a bias and no mean or
    inverse-std output into Add, Add (its bias), LayerNormalization: the same values (float
    rounding aside), the sum output (the next layer's residual) kept by name. Returns how many were rewritten; none
    below opset 17 (no LayerNormalization there). Without a bias, the session would fuse Add + LayerNormalization
    back: those stay as they are."""
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        return 0
    nodes, split = [], 0
    for node in model.graph.node:
        outputs = list(node.output) + [""] * (4 - len(node.output))
        data, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
        if node.op_type != "SkipLayerNormalization" or node.domain != CONTRIB_DOMAIN or outputs[1] or outputs[2] \
                or not bias:
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = outputs[3] or f"{node.name}/sum"
        with_skip = f"{node.name}/input_skip"
        nodes.append(helper.make_node("Add", [data, skip], [with_skip], name=f"{node.name}/add_skip"))
        nodes.append(helper.make_node("Add", [with_skip, bias], [total], name=f"{node.name}/add_bias"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + [beta] * bool(beta), [outputs[0]],
                                      name=node.name, axis=-1, epsilon=epsilon))
        split += 1
    if split:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return split

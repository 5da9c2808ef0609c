"""The fused fp32 graph (model.fuse, pipeline/builder/fuse.py) and the int8 weights of the modes that quantize it.

Real MiniLM, real onnxruntime, real sentences (Python's own documentation). Fast: one TorchScript export and
two fusions of MiniLM, one static quantization; QAT's weights on a tiny random BERT with MiniLM's vocabulary
(its word table dominates the size, as MiniLM's does). Speed belongs in `quantgate bench`, never here.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.builder.export import export_torchscript
from pipeline.builder.fuse import fuse_transformer
from pipeline.builder.models import model_family
from pipeline.config import compose_config

MINILM_FUSED = {"Attention": 6, "BiasGelu": 6, "EmbedLayerNormalization": 1, "SkipLayerNormalization": 12}
MAX_INT8_SIZE_RATIO = 0.27  # issue 15: every int8 artifact at most 0.27x its fp32 reference


def sentences(n: int) -> list[str]:
    from pydoc_data.topics import topics
    return [text for text in topics.values() if len(text) > 400][:n]


def session(model_bytes: bytes):
    import onnxruntime as ort
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def float_weights(model, min_elements: int = 4096) -> list[str]:
    """Initializers of at least `min_elements` values stored as float, other than quantization scales (one per
    row or column of a weight): weights quantization left in fp32."""
    from onnx import TensorProto
    scales = {node.input[1] for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    return [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT
            and int(np.prod(t.dims)) >= min_elements and t.name not in scales]


@pytest.fixture(scope="module")
def minilm():
    """(family, unfused TorchScript export bytes) of the embedded all-MiniLM-L6-v2."""
    cfg = compose_config(["model=minilm", "mode=dynamic", "target=avx2"])
    family = model_family(cfg)
    unfused = export_torchscript(family.load_torch(attention="eager"), family.example_inputs(),
                                 family.dynamic_shapes(), family.input_names, family.output_names,
                                 int(cfg.model.opset))
    return family, unfused


def test_fused_minilm_has_the_fused_operators_and_matches_the_unfused_export(minilm):
    import onnx

    family, unfused = minilm
    fused, record = fuse_transformer(onnx.load_from_string(unfused), *family.attention_shape())
    assert record.operators == MINILM_FUSED
    assert record.left_unfused == []
    inputs = family.encode(sentences(16))
    expected = session(unfused).run(None, inputs)[0]
    actual = session(fused.SerializeToString()).run(None, inputs)[0]
    assert np.max(np.abs(actual - expected)) < 1e-4  # fp32 noise: the embeddings are unit vectors
    assert np.min(np.sum(actual * expected, axis=1)) > 0.99999


def test_static_int8_of_the_fused_graph_is_static_qdq_with_dynamic_attention_and_int8_weights(minilm, tmp_path):
    import onnx

    from pipeline.builder.quantize import QuantizerKnobs, policy, quantize_onnx

    family, unfused = minilm
    fused, _ = fuse_transformer(onnx.load_from_string(unfused), *family.attention_shape())
    reference, int8 = tmp_path / "reference.onnx", tmp_path / "model.onnx"
    reference.write_bytes(fused.SerializeToString())
    cfg = compose_config(["model=minilm", "mode=static", "target=avx2"])
    batches = [family.encode(sentences(8)[start:start + 4]) for start in (0, 4)]
    dynamic_nodes = quantize_onnx(policy(cfg), reference, int8, batches, QuantizerKnobs.from_config(cfg), quiet=True)
    model = onnx.load(str(int8))
    ops = [node.op_type for node in model.graph.node]
    # QDQ has no rule for the fused attention and embedding: they run dynamic int8, everything else static.
    assert ops.count("QAttention") == 6 and ops.count("QEmbedLayerNormalization") == 1
    assert sorted(node.op_type for node in fused.graph.node if node.name in dynamic_nodes) == \
        ["Attention"] * 6 + ["EmbedLayerNormalization"]
    assert float_weights(model) == []
    # Every MatMul's activation is quantized with a calibrated (constant) scale, not only its weight; its output
    # stays fp32 (MatMulIntegerToFloat at load time): no QuantizeLinear after a MatMul.
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers = {name: node for node in model.graph.node for name in node.input}
    matmuls = [node for node in model.graph.node if node.op_type == "MatMul"]
    assert len(matmuls) == 18
    assert all(producers[node.input[0]].op_type == "DequantizeLinear" for node in matmuls)
    assert all(consumers[node.output[0]].op_type != "QuantizeLinear" for node in matmuls)
    assert int8.stat().st_size <= MAX_INT8_SIZE_RATIO * reference.stat().st_size
    inputs = family.encode(sentences(16))
    expected = session(reference.read_bytes()).run(None, inputs)[0]
    actual = session(int8.read_bytes()).run(None, inputs)[0]
    assert np.mean(np.sum(actual * expected, axis=1)) > 0.97  # before the gate; measured 0.99


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from tests.fixtures.hf_checkpoints import tiny_sentence_encoder
    return tiny_sentence_encoder(tmp_path_factory.mktemp("tiny-bert"))


def test_a_users_encoder_fuses_too(tiny_encoder):
    import onnx

    cfg = compose_config(["model=minilm", f"model.name_or_path={tiny_encoder}"])
    family = model_family(cfg)
    unfused = export_torchscript(family.load_torch(attention="eager"), family.example_inputs(),
                                 family.dynamic_shapes(), family.input_names, family.output_names, 18)
    _, record = fuse_transformer(onnx.load_from_string(unfused), *family.attention_shape())
    assert record.operators == {"Attention": 2, "BiasGelu": 2, "EmbedLayerNormalization": 1,
                                "SkipLayerNormalization": 4}


def test_qat_int8_holds_int8_weights_including_the_word_embeddings(tiny_encoder, tmp_path):
    import onnx

    from pipeline.builder import qat
    from pipeline.builder.quantize import policy

    cfg = compose_config(["model=minilm", f"model.name_or_path={tiny_encoder}", "mode=qat", "mode.qat_steps=1",
                          "mode.qat_batch_size=4", "target=avx2"])
    family = model_family(cfg)
    output = tmp_path / "model.onnx"
    qat.train_and_export(cfg, policy(cfg), [family.encode(sentences(4))], output)
    model = onnx.load(str(output))
    assert float_weights(model) == []
    fp32_bytes = sum(f.stat().st_size for f in tiny_encoder.glob("*.safetensors"))
    # int8 tables plus per-row scales and (int64) zero points; MiniLM's wider layers come closer to 0.25.
    assert output.stat().st_size <= 0.35 * fp32_bytes


def test_qat_of_a_fused_encoder_is_the_fused_graph_with_its_fine_tuned_weights_and_learned_ranges(tiny_encoder,
                                                                                                   tmp_path):
    """mode=qat on a fused encoder: the fine-tuned weights exported through the fused graph, each MatMul's input
    range the one QAT learned, quantized as a static build is."""
    import onnx

    from pipeline.builder import qat
    from pipeline.builder.export import fused_torchscript_export
    from pipeline.builder.quantize import learned_ranges_by_tensor, policy, quantize_fine_tuned_fused

    cfg = compose_config(["model=minilm", f"model.name_or_path={tiny_encoder}", "mode=qat", "mode.qat_steps=2",
                          "mode.qat_batch_size=4", "target=avx2"])
    family = model_family(cfg)
    batches = [family.encode(sentences(4))]
    result = qat.train(cfg, policy(cfg), batches)
    # every linear's learned input range, named after its weight: 2 layers x (q, k, v, attention out, FFN in, out)
    assert len(result.input_ranges) == 12 and all(low < high for low, high in result.input_ranges.values())
    module = family.load_torch(attention="eager")
    module.load_state_dict(result.weights, strict=False)
    fp32 = tmp_path / "fine-tuned.onnx"
    fp32.write_bytes(fused_torchscript_export(family, module, 18))
    # the MatMuls outside Attention (2 layers x 3) get QAT's ranges
    assert len(learned_ranges_by_tensor(fp32, result.input_ranges)) == 6
    output = tmp_path / "model.onnx"
    dynamic_nodes = quantize_fine_tuned_fused(cfg, policy(cfg), result, batches, output)
    model = onnx.load(str(output))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QAttention") == 2 and ops.count("QEmbedLayerNormalization") == 1 and len(dynamic_nodes) == 3
    assert float_weights(model) == []
    assert not (tmp_path / "qat-fine-tuned.fp32.onnx").exists()  # the scratch fp32 graph is gone
    fp32_bytes = sum(f.stat().st_size for f in tiny_encoder.glob("*.safetensors"))
    assert output.stat().st_size <= 0.35 * fp32_bytes

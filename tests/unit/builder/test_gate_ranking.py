"""The gate takes the noisiest quantized nodes out of int8 first. It ranked them by the noise of their quantized
inputs; one outlier channel (1000 where the others are about 1) holds nearly all of an activation's power, so the
int8 scale it sets wipes out every other channel while the tensor's SQNR still reads 45 dB. The MatMul after it,
whose weights ignore the outlier, passes that destruction on, yet it ranked last, and the gate took the harmless node
out first. MatMuls are now ranked by the noise on their output."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from calibration.readers import BatchReader
from pipeline.builder.ranking import rank_sensitive_nodes

WIDTH = 16


def chain(folder):
    """x -> MatMul A (its weights ignore x's channel 0) -> MatMul B -> z; x's channel 0 is an outlier."""
    rng = np.random.default_rng(0)
    wa = (rng.standard_normal((WIDTH, WIDTH)) * 0.3).astype(np.float32)
    wa[0] = 0.001
    wb = (rng.standard_normal((WIDTH, WIDTH)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wa"], ["y"], name="after_the_outlier"),
         helper.make_node("MatMul", ["y", "wb"], ["z"], name="plain")], "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", WIDTH])],
        [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wb, "wb")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "fp32.onnx"))
    x = rng.standard_normal((64, WIDTH)).astype(np.float32)
    x[:, 0] = 1000.0
    return folder / "fp32.onnx", {"x": x}


def quantized(fp32, folder, inputs, exclude=()):
    path = folder / f"int8-{'-'.join(exclude) or 'all'}.onnx"
    quantize_static(str(fp32), str(path), BatchReader([inputs]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    nodes_to_exclude=list(exclude))
    return path


def cosine_mean(path, reference, inputs):
    out = ort.InferenceSession(str(path)).run(None, inputs)[0].astype(np.float64)
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.mean((out * reference).sum(1) / np.maximum(norms, 1e-30)))


def test_the_matmul_an_outlier_channel_ruins_ranks_first(tmp_path):
    fp32, inputs = chain(tmp_path)
    ranked = rank_sensitive_nodes(fp32, quantized(fp32, tmp_path, inputs), inputs, ["MatMul"], [])
    assert [name for name, _ in ranked] == ["after_the_outlier", "plain"]
    assert ranked[0][1] > 0.1 > 1e-3 > ranked[1][1]  # its output is mostly noise; the other's is clean
    # and it is the right one to take out: without it int8 holds, without the other it does not
    reference = ort.InferenceSession(str(fp32)).run(None, inputs)[0].astype(np.float64)
    assert cosine_mean(quantized(fp32, tmp_path, inputs, ["after_the_outlier"]), reference, inputs) > 0.99
    assert cosine_mean(quantized(fp32, tmp_path, inputs, ["plain"]), reference, inputs) < 0.9
    assert rank_sensitive_nodes(fp32, quantized(fp32, tmp_path, inputs), inputs, ["MatMul"],
                                ["after_the_outlier"])[0][0] == "plain"


def test_dynamic_builds_rank_only_what_dynamic_int8_quantizes_and_the_fused_operators_come_last(tmp_path):
    """onnxruntime's dynamic quantizer leaves Gemm fp32: ranking it spent fallback steps on nodes already fp32. The
    fused Attention and EmbedLayerNormalization are quantized dynamically in every build and the QDQ probe cannot
    measure them: they are taken out after every ranked node, instead of the gate saying nothing is left."""
    from pipeline.builder.ranking import quantized_op_types, unmeasured_nodes

    op_types = ["MatMul", "Gemm", "Conv", "Gather", "Attention", "EmbedLayerNormalization"]
    assert quantized_op_types("dynamic", op_types) == ["MatMul", "Conv", "Gather"]
    assert quantized_op_types("static", op_types) == ["MatMul", "Gemm", "Conv", "Gather"]
    nodes = [helper.make_node("EmbedLayerNormalization", ["ids"], ["e"], name="embed", domain="com.microsoft"),
             helper.make_node("Attention", ["e"], ["a0"], name="attention_0", domain="com.microsoft"),
             helper.make_node("MatMul", ["a0", "w"], ["m"], name="dense"),
             helper.make_node("Attention", ["m"], ["a1"], name="attention_1", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("a1", TensorProto.FLOAT, ["n"])])
    onnx.save(helper.make_model(graph), str(tmp_path / "fused.onnx"))
    assert unmeasured_nodes(tmp_path / "fused.onnx", op_types, ["attention_0"]) == ["embed", "attention_1"]
    assert unmeasured_nodes(tmp_path / "fused.onnx", ["MatMul", "Attention"], []) == ["attention_0", "attention_1"]

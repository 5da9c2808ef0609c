"""Static QDQ rounds an activation to int8 for the int8 operator that reads it; the fp32 operators that read the same
activation (a transformer's residual Add) read it unrounded (pipeline/builder/qdq.py). Real onnxruntime quantization
and sessions on small graphs."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from calibration.readers import BatchReader
from pipeline.builder.qdq import fp32_consumers_read_fp32
from pipeline.builder.quantize import QuantizerKnobs, quantize_onnx, rewrite_int8_graph
from pipeline.manifest import QuantizationRecord

HIDDEN = 16


def residual_layer(path, second_dense=False):
    """x -> LayerNormalization -> y; out = MatMul(y, W) + y: y feeds an int8 MatMul and the fp32 residual Add (and a
    second MatMul, with `second_dense`: out = MatMul(y, W) + MatMul(y, V) + y)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32) / 64, name)
               for name in ("W", "V")] + [numpy_helper.from_array(np.ones(HIDDEN, np.float32), "gamma"),
                                          numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "beta")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="norm", axis=-1),
             helper.make_node("MatMul", ["y", "W"], ["z"], name="dense"),
             helper.make_node("Add", ["z", "y"], ["out" if not second_dense else "zy"], name="residual")]
    if second_dense:
        nodes += [helper.make_node("MatMul", ["y", "V"], ["v"], name="dense_b"),
                  helper.make_node("Add", ["zy", "v"], ["out"], name="sum")]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 8, HIDDEN]) for name in ("x", "out")]
    model = helper.make_model(helper.make_graph(nodes, "layer", io[:1], io[1:], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def conv_relu(path):
    """x -> Conv -> Relu -> Conv: the Conv's output is written by an int8 operator."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), name) for name in "AB"]
    nodes = [helper.make_node("Conv", ["x", "A"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "B"], ["out"], name="conv1", pads=[1, 1, 1, 1])]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 6, 6]) for name in ("x", "out")]
    model = helper.make_model(helper.make_graph(nodes, "cnn", io[:1], io[1:], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def quantized(fp32, path, samples, op_types):
    quantize_static(str(fp32), str(path), BatchReader([{"x": sample} for sample in samples]),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True,  # 7-bit weights: no u8s8 saturation on AVX2 hosts, so the error is the rounding
                    op_types_to_quantize=op_types, extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]})
    return onnx.load(str(path))


def run(model, feed, optimized=None):
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, feed)[0]


def test_the_residual_reads_the_layer_norm_output_and_the_matmul_stays_int8(tmp_path):
    residual_layer(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(1)
    samples = [rng.normal(size=(4, 8, HIDDEN)).astype(np.float32) for _ in range(4)]
    model = quantized(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", samples, ["MatMul"])
    add = next(node for node in model.graph.node if node.op_type == "Add")
    assert add.input[1] != "y"  # onnxruntime hands the residual the dequantized copy
    feed = {"x": rng.normal(size=(16, 8, HIDDEN)).astype(np.float32)}
    fp32 = run(onnx.load(str(tmp_path / "fp32.onnx")), feed)
    rounded = run(model, feed)

    assert fp32_consumers_read_fp32(model) == 1
    assert list(add.input) == ["z", "y"]
    unrounded = run(model, feed, optimized=tmp_path / "loaded.onnx")
    # the residual's rounding is gone; the MatMul's own int8 error stays
    assert np.abs(unrounded - fp32).mean() < 0.5 * np.abs(rounded - fp32).mean()
    assert np.abs(unrounded - fp32).mean() > 0
    loaded = [node.op_type for node in onnx.load(str(tmp_path / "loaded.onnx")).graph.node]
    assert "MatMulIntegerToFloat" in loaded and "MatMul" not in loaded


def test_outputs_of_int8_operators_are_left_alone(tmp_path):
    conv_relu(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(2)
    model = quantized(tmp_path / "fp32.onnx", tmp_path / "int8.onnx",
                      [rng.normal(size=(1, 4, 6, 6)).astype(np.float32) for _ in range(4)], ["Conv"])
    before = model.SerializeToString()
    assert fp32_consumers_read_fp32(model) == 0  # Relu reads conv0's output: rewiring it would keep conv0 fp32
    assert model.SerializeToString() == before


def test_a_matmul_the_gate_moved_to_dynamic_int8_quantizes_the_fp32_activation_not_the_rounded_copy(tmp_path):
    # a static build whose gate took dense_b out of static int8: its dynamic pass quantizes what dense_b reads
    residual_layer(tmp_path / "fp32.onnx", second_dense=True)
    rng = np.random.default_rng(3)
    record = QuantizationRecord(mode="static", quant_format="QDQ", weight_type="int8", activation_type="uint8",
                                per_channel=False, reduce_range=False, calibration_method="minmax")
    knobs = QuantizerKnobs(op_types=("MatMul",), fallback_nodes=("dense_b",))
    batches = [{"x": rng.normal(size=(4, 8, HIDDEN)).astype(np.float32)} for _ in range(4)]
    assert quantize_onnx(record, tmp_path / "fp32.onnx", tmp_path / "int8.onnx", batches, knobs, quiet=True) == [
        "dense_b"]
    assert rewrite_int8_graph(tmp_path / "int8.onnx") == {"layer_norms_split": 0, "fp32_inputs_unrounded": 2}
    model = onnx.load(str(tmp_path / "int8.onnx"))
    readers = {node.op_type: list(node.input) for node in model.graph.node if "y" in node.input}
    assert set(readers) == {"QuantizeLinear", "DynamicQuantizeLinear", "Add"}  # dense's pair, dense_b's, the residual

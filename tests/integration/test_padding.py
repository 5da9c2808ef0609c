"""Padding invariance on tiny hand-made token models (fast): a mask that is read but ignored is caught
by measurement; a model without token inputs skips the check with a note."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper, save
from tests.fixtures.tiny_artifact import make_standalone

from pipeline.config import compose_config
from pipeline.verify import onnx as verify

VOCAB, WIDTH = 20, 8


def token_model(path, use_mask: bool):
    """Mean of token embeddings: over the masked tokens (correct), or over every position while the mask
    only feeds a term multiplied by zero (read, but ignored)."""
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((VOCAB, WIDTH)).astype(np.float32), "E")
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "minus1"], ["m3"])]
    if use_mask:
        nodes += [helper.make_node("Mul", ["emb", "m3"], ["masked"]),
                  helper.make_node("ReduceSum", ["masked", "axis"], ["total"], keepdims=0),
                  helper.make_node("ReduceSum", ["m", "axis"], ["count"], keepdims=1),
                  helper.make_node("Div", ["total", "count"], ["embedding"])]
    else:
        nodes += [helper.make_node("ReduceMean", ["emb", "axis"], ["mean"], keepdims=0),
                  helper.make_node("ReduceSum", ["m", "axis"], ["count"], keepdims=1),
                  helper.make_node("Mul", ["count", "zero"], ["nothing"]),
                  helper.make_node("Add", ["mean", "nothing"], ["embedding"])]
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["b", "s"]) for name in ("input_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "tokens", inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", WIDTH])],
                              [table, zero, axis, minus1])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def run(tmp_path, use_mask):
    model, inputs = tmp_path / "model.onnx", tmp_path / "inputs.npz"
    token_model(model, use_mask)
    ids = np.array([[3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 11], [12, 13, 0, 0, 0, 0]], np.int64)
    np.savez(inputs, input_ids=ids, attention_mask=(ids != 0).astype(np.int64))
    cfg = compose_config(["target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"])
    return verify.verify_files(model, model, inputs, cfg, tmp_path / "verify.json", model_kind="embedding")


def test_mask_applied_is_padding_invariant(tmp_path):
    report = run(tmp_path, use_mask=True)
    assert report["status"] == "pass" and report["padding"]["status"] == "pass"
    assert report["profiles"]["native"]["padding"]["figures"]["cosine_worst"] > 0.9999


def test_mask_read_but_ignored_fails_in_words(tmp_path):
    report = run(tmp_path, use_mask=False)
    native = report["profiles"]["native"]
    assert report["status"] == "fail" and native["failure"] == "padding"
    assert "padding changes the output" in native["reason"] and "attention_mask is ignored" in native["reason"]
    assert report["padding"]["status"] == "fail"


def test_models_without_token_inputs_skip_padding_with_a_note(tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path)
    report = verify.verify_files(artifact, reference, inputs, compose_config(["target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"]),
                                 tmp_path / "verify.json")
    assert report["padding"]["status"] == "skipped" and "no input_ids input" in report["padding"]["reason"]


def test_a_mask_the_model_itself_ignores_is_named_from_fp32s_own_padded_run(tmp_path):
    report = run(tmp_path, use_mask=False)  # the reference is the same model: fp32 moves too
    native = report["profiles"]["native"]["padding"]
    assert native["cause"] == "mask_ignored" and "by the model itself, not by quantization" in native["reason"]
    assert report["padding"]["fp32_reference"]["status"] == "fail"


def test_an_artifact_that_ignores_the_mask_its_reference_applies_is_the_int8_graphs_fault(tmp_path):
    """fp32 keeps its outputs padded; the artifact run alone equals fp32 alone (no padding: nothing to mask), so its
    own error leaves no room, and the native run moves as this profile does: the graph, not the ranges."""
    artifact, reference, inputs = tmp_path / "artifact.onnx", tmp_path / "reference.onnx", tmp_path / "inputs.npz"
    token_model(artifact, use_mask=False)
    token_model(reference, use_mask=True)
    ids = np.array([[3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 11], [12, 13, 0, 0, 0, 0]], np.int64)
    np.savez(inputs, input_ids=ids, attention_mask=(ids != 0).astype(np.int64))
    cfg = compose_config(["target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"])
    report = verify.verify_files(artifact, reference, inputs, cfg, tmp_path / "verify.json", model_kind="embedding")
    padding = report["profiles"]["native"]["padding"]
    assert padding["status"] == "fail" and padding["cause"] == "int8_graph", padding
    assert "fp32 reference keeps its outputs padded" in padding["reason"] and "native int8 run moves too" in padding["reason"]
    assert padding["int8_noise_bound"]["embedding"] == 0.0 and not padding["within_int8_noise"]
    assert report["padding"]["fp32_reference"]["status"] == "pass" and report["padding"]["native_int8"]["status"] == "moved"
    assert report["status"] == "fail"

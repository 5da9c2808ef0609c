"""A user's ONNX file whose nodes have no names and which outputs class ids (ArgMax, int64).

- The accuracy gate takes nodes out of int8 by name: on unnamed nodes it took "" out ("taking ,  out of static
  int8"), which changed nothing, and the build ended over budget; nor could a user name them in
  mode.nodes_to_exclude. Every node now has a name when the file is read, and the names are in reference.onnx.
- An integer output was judged as a score (the correlation of class ids: 0.79 for one flip in 32); it is judged by
  the share of its values equal to fp32's, held to the top-1 agreement bound.
"""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.builder.gate import metrics
from pipeline.builder.onnx_family import name_every_node
from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.manifest import Manifest
from pipeline.verify.fidelity import IDS, Limits, judge, output_kind


def unnamed_classifier(path):
    """x [batch, 8] -> MatMul -> Relu -> MatMul -> logits [batch, 4], ArgMax -> label int64; no node names."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"]),
             helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "unnamed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    np.savez(path.with_suffix(".npz"), x=rng.standard_normal((200, 8)).astype(np.float32))
    return path


def test_every_node_gets_a_unique_name_and_named_ones_keep_theirs():
    nodes = [helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Relu", ["b"], ["c"], name="Relu_0"),
             helper.make_node("Relu", ["c"], ["d"], name="x"), helper.make_node("Relu", ["d"], ["e"], name="x"),
             helper.make_node("Relu", ["e"], ["f"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("f", TensorProto.FLOAT, [1])])
    named = name_every_node(helper.make_model(graph))
    assert [node.name for node in named.graph.node] == ["Relu_0_2", "Relu_0", "x", "x_2", "Relu_4"]


def test_an_integer_output_is_judged_by_the_share_of_values_equal_to_fp32s():
    fp32 = np.arange(32, dtype=np.int64) % 4
    flipped = fp32.copy()
    flipped[5] = (flipped[5] + 1) % 4
    assert output_kind(fp32, "classifier", None) == IDS
    assert output_kind(fp32, "generic", None) == IDS
    limits = Limits(min_cosine_mean=0.98, min_cosine_worst=0.95, min_top1_agreement=0.97)
    judged = judge({"label": flipped}, {"label": fp32}, model_kind="classifier", mask=None, labels=None,
                   limits=limits, scales={"label": 2.0})
    assert judged.by_output["label"]["top1_agreement"] == 31 / 32 and "score_correlation" not in judged.summary
    assert judged.problems == ["label: share of values equal to fp32's 0.9688 < 0.97"]
    assert metrics("classifier", flipped, fp32, None) == {"top1_agreement": 31 / 32}
    tags, mask = np.zeros((2, 4), np.int64), np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    padded = tags.copy()
    padded[mask == 0] = 3  # padding positions do not count
    assert metrics("generic", padded, tags, None, mask) == {"top1_agreement": 1.0}


@pytest.mark.slow
def test_unnamed_nodes_get_names_a_user_and_the_gate_can_use(tmp_path):
    model = unnamed_classifier(tmp_path / "unnamed.onnx")
    args = ["model=onnx", f"model.path={model}", "model.kind=classifier", "calibration=npz",
            f"calibration.path={model.with_suffix('.npz')}", "mode=dynamic", "target=avx2",
            # a random model: its near ties may flip on another CPU's kernels; names and kinds are the point here
            "mode.nodes_to_exclude=[MatMul_2]", "verify.min_top1_agreement=0.75",
            "verify.profiles=[native]", "verify.reference_cpu=native", f"artifacts_dir={tmp_path / 'artifacts'}"]
    assert quantize_task(compose_config(args), args) == 0
    manifest = Manifest.load(tmp_path / "artifacts" / "unnamed-dynamic-avx2")
    reference = [node.name for node in onnx.load(str(manifest.path("reference.onnx"))).graph.node]
    assert reference == ["MatMul_0", "Relu_1", "MatMul_2", "ArgMax_3"]
    int8 = {node.name: node.op_type for node in onnx.load(str(manifest.path("model.onnx"))).graph.node}
    assert int8["MatMul_2"] == "MatMul" and "MatMul_0" not in int8  # kept fp32 by name; the other is int8
    assert any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in int8.values())
    native = json.loads(manifest.path("verify.json").read_text())["profiles"]["native"]
    label = native["fidelity_by_output"]["label"]
    assert label["kind"] == "ids" and label["top1_agreement"] >= 0.75 and "score_correlation" not in label

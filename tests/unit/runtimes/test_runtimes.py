"""Runtime specs and fitting an export to what a runtime loads (limits as pipeline.guard.probe reports them)."""
import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.runtimes import venvs
from pipeline.config import QuantgateError, compose_config
from pipeline.guard import ModelVersions, predict_load

ORT116 = {"versions": {"onnxruntime": "1.16.3"}, "max_ir_version": 9, "max_opsets": {"": 19, "ai.onnx.ml": 3}}


def layer_norm_model(opset=18, ir_version=10):
    """x -> LayerNormalization (ai.onnx since opset 17) -> MatMul."""
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("LayerNormalization", ["x", "scale"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], [scale, weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def test_fit_lowers_ir_version_and_keeps_a_loadable_opset():
    model, changes = venvs.fit_model(layer_norm_model(), ORT116, "tiny")
    assert changes == ["IR version 10 -> 9"]
    assert predict_load(ModelVersions(model.ir_version, {"": 18}), ORT116) == []


def test_fit_converts_the_opset_down_with_onnx_version_converter():
    limits = ORT116 | {"max_opsets": {"": 17}}
    model, changes = venvs.fit_model(layer_norm_model(), limits, "tiny")
    assert changes == ["ai.onnx opset 18 -> 17", "IR version 10 -> 9"]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]


def test_no_loadable_export_names_the_operator_that_blocks_it():
    limits = ORT116 | {"max_opsets": {"": 15}}
    with pytest.raises(QuantgateError, match="no export of tiny loads in onnxruntime 1.16.3: it loads ai.onnx "
                                             "opset <= 15, but LayerNormalization exists only from opset 17"):
        venvs.fit_model(layer_norm_model(), limits, "tiny")


def test_runtime_specs_resolve_to_shipped_profiles_and_hash_by_content():
    ort116 = venvs.resolve(compose_config(["runtime=ort116"]).runtime)
    assert ort116.requirements == ("onnxruntime==1.16.3", "numpy<2")
    custom = compose_config(["runtime=custom", 'runtime.requirements=["onnxruntime==1.16.3"]']).runtime
    assert venvs.resolve(custom) == ort116  # the shipped profile carries the numpy it needs
    assert venvs.resolve(None).pinned and venvs.resolve(compose_config(["runtime=pinned"]).runtime).pinned
    assert venvs.parse("ort116") == ort116 == venvs.parse("onnxruntime==1.16.3")
    other = venvs.parse("onnxruntime==1.17.3,numpy<2")
    assert other.name == "custom" and other.key != ort116.key
    with pytest.raises(QuantgateError, match="unknown runtime 'ort999'"):
        venvs.parse("ort999")
    assert compose_config([]).runtime is None  # default: this venv to build, the stamped runtime to verify


def test_verify_profiles_name_their_runtime():
    from pipeline.verify.planning import plan_profiles
    cfg = compose_config(["target=avx2", "verify.profiles=[haswell@ort116,native]"])
    plans = plan_profiles(cfg, ["avx2"], True, frozenset({"avx2"}), venvs.parse("ort116"))
    assert [(p.key, p.runtime.name) for p in plans] == [("haswell@ort116", "ort116"), ("native@ort116", "ort116")]
    plans = plan_profiles(cfg, ["avx2"], True, frozenset({"avx2"}))
    assert [p.key for p in plans] == ["haswell@ort116", "native"]


def test_probe_asks_the_installed_runtime_itself():
    from pipeline.guard.probe import probe
    limits = probe()
    assert limits["max_ir_version"] >= 10 and limits["max_opsets"][""] >= 18
    assert json.loads(json.dumps(limits)) == limits


def test_a_build_for_another_runtime_gets_its_own_folder():
    from pipeline.builder.task import artifact_name
    assert artifact_name(compose_config(["target=avx2"])) == "minilm-dynamic-avx2"
    assert artifact_name(compose_config(["target=avx2", "runtime=ort116"])) == "minilm-dynamic-avx2-ort116"
    # pip lines that a shipped profile covers are that profile; others are named by their content
    assert artifact_name(compose_config(["runtime=custom", 'runtime.requirements=["onnxruntime==1.16.3"]'])) == \
        "minilm-dynamic-avx2-ort116"
    one = artifact_name(compose_config(["runtime=custom", 'runtime.requirements=["onnxruntime==1.17.3","numpy<2"]']))
    same = artifact_name(compose_config(["runtime=custom", 'runtime.requirements=["numpy<2","onnxruntime==1.17.3"]']))
    other = artifact_name(compose_config(["runtime=custom", 'runtime.requirements=["onnxruntime==1.18.0"]']))
    assert one == same != other and one.startswith("minilm-dynamic-avx2-custom-")
    assert artifact_name(compose_config(["runtime=pinned"])) == "minilm-dynamic-avx2"

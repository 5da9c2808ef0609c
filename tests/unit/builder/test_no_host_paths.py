"""No build-machine paths inside artifacts (issue 19): stripping, the debug file, the scan, inspect --node."""
import json
import os
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.builder import reproducible
from tests.conftest import REPO

SITE_PACKAGES = next(root for root, label in reproducible.host_roots() if label == "site-packages/")


def test_host_roots_name_the_checkout_the_venv_and_temp_but_not_system_prefixes():
    roots = dict(reproducible.host_roots())
    assert roots[str(REPO)] == ""
    assert roots[os.path.abspath(sys.prefix)] == "<venv>/"
    assert "site-packages/" in roots.values() and "<tmp>/" in roots.values()
    assert not set(roots) & set(reproducible.SYSTEM_PREFIXES)
    # Longest first: a venv inside the checkout is site-packages/..., not a path in the checkout.
    assert [len(r) for r in roots] == sorted((len(r) for r in roots), reverse=True)


def test_portable_paths_keep_the_part_that_names_the_source():
    text = (f'File "{SITE_PACKAGES}/transformers/models/bert/modeling_bert.py", line 3, in forward\n'
            f'File "{REPO}/pipeline/models.py", line 9, in forward\n{REPO}x/not-the-checkout.py')
    first, second, beside = reproducible.portable(text).split("\n")
    assert (first, second) == ('File "site-packages/transformers/models/bert/modeling_bert.py", line 3, in forward',
                               'File "pipeline/models.py", line 9, in forward')
    # A sibling of the checkout is not in it; it keeps its name, portable only as far as a root holding it
    # (a checkout inside the system temp folder: `<tmp>/...x/not-the-checkout.py`).
    assert beside.endswith(f"{REPO.name}x/not-the-checkout.py") and not beside.startswith(("x/", ".x/"))
    outer = [root for root, _ in reproducible.host_roots() if root != str(REPO) and str(REPO).startswith(root + "/")]
    if not outer:
        assert beside == f"{REPO}x/not-the-checkout.py"


def test_user_paths_become_basename_and_sha256(tmp_path):
    data = tmp_path / "traffic.jsonl"
    data.write_text('{"text": "hello"}\n')
    named = reproducible.portable_path_value(str(data))
    assert named.startswith("traffic.jsonl sha256:") and str(tmp_path) not in named
    assert reproducible.portable_path_value(str(tmp_path)) == tmp_path.name  # a checkpoint folder
    for unchanged in ("glue", "onnxruntime==1.16.3", "numpy<2", "https://example.org/a/b.whl"):
        assert reproducible.portable_path_value(unchanged) == unchanged
    assert reproducible.portable_path_value(f"ort @ file://{data}") == f"ort @ {named}"


def _model_with_exporter_metadata():
    """A graph annotated the way torch 2.13's dynamo exporter annotates nodes (stack traces, module path)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="node_linear"),
             helper.make_node("Relu", ["h"], ["y"], name="node_relu", doc_string=f"made in {REPO}/pipeline/models.py")]
    trace = (f'File "{REPO}/pipeline/models.py", line 120, in forward\n    x = self.encoder(x)\n'
             f'  File "{SITE_PACKAGES}/torch/nn/modules/linear.py", line 134, in forward\n    return F.linear(x)')
    for key, value in (("namespace", ": Model/encoder: torch.nn.modules.linear.Linear"),
                       ("pkg.torch.onnx.stack_trace", trace), ("pkg.torch.onnx.fx_node", "%linear : call_function")):
        nodes[0].metadata_props.add(key=key, value=value)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.5] * 16)],
                              doc_string=f"graph from {REPO}")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10,
                              doc_string=f"exported in {sys.prefix}")
    model.metadata_props.add(key="quantgate.schema", value="1")
    return model


def test_strip_removes_node_metadata_and_doc_strings_and_keeps_them_portable():
    model = _model_with_exporter_metadata()
    assert reproducible.host_paths_in(model.SerializeToString())
    stripped = reproducible.strip_onnx(model)
    data = model.SerializeToString()
    assert reproducible.host_paths_in(data) == []
    assert not any(node.metadata_props or node.doc_string for node in model.graph.node)
    assert not model.doc_string and not model.graph.doc_string
    assert [(e.key, e.value) for e in model.metadata_props] == [("quantgate.schema", "1")]  # the stamp stays
    assert [n.name for n in model.graph.node] == ["node_linear", "node_relu"]  # names stay
    record = reproducible.nodes_record("reference.onnx", model, stripped)
    linear = record["nodes"]["node_linear"]
    assert linear["source_files"] == ["pipeline/models.py", "site-packages/torch/nn/modules/linear.py"]
    assert linear["origin"] == "pipeline/models.py:120"  # the innermost frame outside torch
    assert record["nodes"]["node_relu"]["metadata"] == {"doc_string": "made in pipeline/models.py"}
    assert reproducible.host_paths_in(json.dumps(record).encode()) == []


def test_quantizer_nodes_point_at_the_reference_node_they_replace(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _model_with_exporter_metadata()
    onnx.save(model, str(tmp_path / "exported.onnx"))
    data, stripped, stripped_model = reproducible.strip_bytes((tmp_path / "exported.onnx").read_bytes())
    (tmp_path / "reference.onnx").write_bytes(data)
    reproducible.write_sidecar(tmp_path, "reference.onnx", stripped_model, stripped)
    # The quantizer reads an unstripped model here, to show the second strip catches what it copies.
    quantize_dynamic(str(tmp_path / "exported.onnx"), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8)
    reproducible.strip_file(tmp_path, "model.onnx", "reference.onnx", source=tmp_path / "int8.onnx")
    assert reproducible.host_paths_in((tmp_path / "model.onnx").read_bytes()) == []
    nodes = reproducible.load_sidecar(tmp_path / "model.onnx")["nodes"]
    quantized = [name for name, entry in nodes.items() if entry.get("derived_from") == "node_linear"]
    assert quantized, nodes
    assert all("pipeline/models.py" in nodes[name]["source_files"] for name in quantized)


def test_scan_finds_this_machines_paths_in_any_published_file(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x00\x01" + f"{REPO}/pipeline/models.py".encode() + b"\x02")
    (tmp_path / "calibration_report.json").write_text('{"tensors": ["a"]}')
    (tmp_path / "manifest.json").write_text(json.dumps({"artifact_dir": str(tmp_path)}))  # may say where
    (tmp_path / "debug").mkdir()
    (tmp_path / "debug" / "model.nodes.json").write_text(json.dumps({"f": f"{Path.home()}/x.py"}))
    found = reproducible.host_paths_in_folder(tmp_path)
    assert set(found) == {"model.onnx", "debug/model.nodes.json"}
    assert str(REPO) in found["model.onnx"]


def test_the_build_refuses_to_publish_a_file_naming_the_checkout(tmp_path):
    from pipeline.builder.task import _check_no_host_paths
    staging, folder = tmp_path / ".x.staging-1", tmp_path / "x"
    staging.mkdir()
    (staging / "reference.onnx").write_bytes(b"ok")
    _check_no_host_paths(staging, folder)
    (staging / "audit.json").write_text(json.dumps({"artifact": str(staging / "model.pt2")}))
    with pytest.raises(RuntimeError, match="audit.json"):
        _check_no_host_paths(staging, folder)


def test_manifest_lists_debug_files_apart_from_the_artifact(tmp_path):
    from pipeline.manifest import Manifest
    from tests.fixtures.tiny_artifact import make_artifact_folder
    folder = make_artifact_folder(tmp_path / "a")
    (folder / "debug").mkdir()
    (folder / "debug" / "model.nodes.json").write_text("{}")
    manifest = Manifest.load(folder)
    manifest.record_files()
    manifest.save()
    again = Manifest.load(folder)
    assert [r.path for r in again.debug_files] == ["debug/model.nodes.json"]
    assert "debug/model.nodes.json" not in {r.path for r in again.files}
    (folder / "debug" / "model.nodes.json").unlink()  # a release without debug files is not tampered
    assert again.tampered_files() == []


def test_export_of_a_module_defined_here_is_stripped_and_sourced(tmp_path, capsys):
    """A real dynamo export (torch 2.13): its nodes name this test file by absolute path; what the
    export stage publishes does not, and `inspect --node` shows where each node came from."""
    import torch

    from pipeline.inspect import inspect_nodes
    from pipeline.builder.export import export_onnx

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.relu(self.linear(x))

    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = export_onnx(Tiny().eval(), (torch.ones(2, 4),), ({0: batch},), ["x"], ["y"], 18)
    assert str(REPO) in reproducible.host_paths_in(exported)  # the problem, as torch writes it
    data, stripped, model = reproducible.strip_bytes(exported)
    (tmp_path / "reference.onnx").write_bytes(data)
    reproducible.write_sidecar(tmp_path, "reference.onnx", model, stripped)
    assert reproducible.host_paths_in_folder(tmp_path) == {}
    nodes = reproducible.load_sidecar(tmp_path / "reference.onnx")["nodes"]
    linear = next(name for name, entry in nodes.items() if entry["op_type"] == "Gemm")
    assert "tests/unit/builder/test_no_host_paths.py" in nodes[linear]["source_files"]
    assert inspect_nodes(str(tmp_path / "reference.onnx"), linear) == 0
    shown = capsys.readouterr().out
    assert "tests/unit/builder/test_no_host_paths.py" in shown and "in forward" in shown and str(REPO) not in shown
    assert inspect_nodes(str(tmp_path / "reference.onnx"), "no_such_node") == 2
    assert inspect_nodes(str(tmp_path / "reference.onnx")) == 0
    assert linear in capsys.readouterr().out

"""End-to-end builds of the real all-MiniLM-L6-v2, offline, with a small calibration sample."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pipeline.builder.task import build
from pipeline.guard import REQUIRED_STAMP_KEYS, read_stamp
from pipeline.manifest import Manifest, sha256_file
from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=4", "verify.enabled=false",
         "verify.build_gate=false"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def dynamic_build(artifacts):
    from pipeline.config import compose_config
    return build(compose_config(["target=avx2", "mode=dynamic", f"artifacts_dir={artifacts}", *SMALL]))


@pytest.fixture(scope="module")
def static_build(artifacts):
    from pipeline.config import compose_config
    return build(compose_config(["target=avx512_vnni", "mode=static", f"artifacts_dir={artifacts}", *SMALL]))


def cosine_to_reference(manifest: Manifest) -> np.ndarray:
    inputs = dict(np.load(manifest.path(manifest.heldout_file)))
    reference = ort.InferenceSession(str(manifest.path(manifest.reference_file))).run(None, inputs)[0]
    quantized = ort.InferenceSession(str(manifest.path(manifest.model_file))).run(None, inputs)[0]
    return (reference * quantized).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(quantized, axis=1)


def test_dynamic_build_writes_the_contracted_folder(dynamic_build, artifacts):
    folder = artifacts / "minilm-dynamic-avx2"
    assert dynamic_build.folder == folder
    # and what Optimum and transformers load beside the model (pipeline/builder/hub_files.py)
    hub_files = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                 "ort_config.json"}
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "reference.onnx", "manifest.json", "heldout.npz",
                                                  "validation.npz", "calibration.npz", "calibration_report.json",
                                                  "debug", *hub_files}
    manifest = Manifest.load(folder)
    assert manifest.heldout_file == "heldout.npz" and manifest.calibration.n == 16
    assert not manifest.tampered_files()
    assert {r.path for r in manifest.files} == {"model.onnx", "reference.onnx", "heldout.npz", "validation.npz",
                                                "calibration.npz", "calibration_report.json", *hub_files}
    # The exporter's per-node debug metadata and the export before fusion, outside the artifact
    # (pipeline/builder/reproducible.py, pipeline/builder/fuse.py).
    assert {r.path for r in manifest.debug_files} == {"debug/reference.nodes.json", "debug/model.nodes.json",
                                                      "debug/reference.unfused.onnx"}
    assert manifest.fusion.operators["Attention"] == 6 and manifest.build.stage_seconds["export"] > 0
    assert manifest.build.host_cpu_features and manifest.build.time_utc
    assert manifest.model_size_bytes < 0.4 * manifest.reference_size_bytes
    assert not list(artifacts.glob(".minilm-dynamic-avx2.staging-*"))


def test_exported_graph_takes_attention_mask_with_dynamic_axes(dynamic_build):
    session = ort.InferenceSession(str(dynamic_build.path("reference.onnx")))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(isinstance(dim, str) for shape in inputs.values() for dim in shape)
    # Padding must not change a sentence's embedding: the mask is honoured.
    heldout = dict(np.load(dynamic_build.path("heldout.npz")))
    shortest = int(heldout["attention_mask"].sum(1).argmin())
    length = int(heldout["attention_mask"][shortest].sum())
    unpadded = {k: v[shortest:shortest + 1, :length] for k, v in heldout.items()}
    padded = {k: v[shortest:shortest + 1] for k, v in heldout.items()}
    np.testing.assert_allclose(session.run(None, unpadded)[0], session.run(None, padded)[0], atol=1e-5)


def test_dynamic_int8_is_close_to_fp32(dynamic_build):
    cosine = cosine_to_reference(dynamic_build)
    assert cosine.mean() > 0.98 and cosine.min() > 0.95, cosine


def test_every_stamp_key_is_present_and_correct(dynamic_build):
    stamp = read_stamp(dynamic_build.path("model.onnx"))
    assert set(REQUIRED_STAMP_KEYS) <= set(stamp)
    assert stamp["target_isa"] == "avx2" and stamp["mode"] == "dynamic"
    assert {"avx2", "fma"} <= set(json.loads(stamp["required_cpu_features"]))
    assert "avx512f" not in json.loads(stamp["required_cpu_features"])
    assert stamp["reduce_range"] == "true" and stamp["per_channel"] == "true"
    assert stamp["weight_type"] == "int8" and stamp["activation_type"] == "uint8"
    calibration = json.loads(stamp["calibration"])
    assert calibration["n"] == 16 and calibration["sha256"] == dynamic_build.calibration.sha256
    versions = json.loads(stamp["versions"])
    assert versions["torch"].startswith("2.13.0") and versions["onnxruntime"] == ort.__version__
    assert set(versions) >= {"python", "torch", "onnx", "onnxruntime", "transformers", "datasets", "numpy",
                             "quantgate"}
    assert json.loads(stamp["source_model"])["weights_sha256"] == dynamic_build.source_weights_sha256
    assert stamp["opset"] == "18" and len(stamp["config_sha256"]) == 64
    # The stamp is readable by onnx itself too.
    props = {p.key: p.value for p in onnx.load(str(dynamic_build.path("model.onnx"))).metadata_props}
    assert props["quantgate.target_isa"] == "avx2"


def test_rebuild_is_byte_identical(dynamic_build, tmp_path):
    from pipeline.config import compose_config
    again = build(compose_config(["target=avx2", "mode=dynamic", f"artifacts_dir={tmp_path}", *SMALL]))
    assert sha256_file(again.path("model.onnx")) == sha256_file(dynamic_build.path("model.onnx"))
    assert sha256_file(again.path("reference.onnx")) == sha256_file(dynamic_build.path("reference.onnx"))


def test_no_file_names_this_machines_folders(dynamic_build, static_build):
    """reference.onnx held 1,566 absolute paths of the checkout and venv (node stack traces) before issue 19."""
    from pipeline.builder.reproducible import host_paths_in_folder
    for manifest in (dynamic_build, static_build):
        assert host_paths_in_folder(manifest.folder, (str(manifest.folder.parent),)) == {}
        for name in ("reference.onnx", "model.onnx"):
            model = onnx.load(str(manifest.path(name)))
            assert not any(node.metadata_props or node.doc_string for node in model.graph.node)


def test_static_build_follows_the_vnni_policy(static_build):
    stamp = read_stamp(static_build.path("model.onnx"))
    assert stamp["mode"] == "static" and stamp["quant_format"] == "QDQ"
    assert stamp["reduce_range"] == "false" and "avx512_vnni" in json.loads(stamp["required_cpu_features"])
    assert json.loads(stamp["calibration"])["method"] == "minmax"
    ops = {node.op_type for node in onnx.load(str(static_build.path("model.onnx"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert cosine_to_reference(static_build).mean() > 0.85


def test_cli_build_then_inspect(tmp_path):
    result = run_cli("-m", "pipeline", "target=avx2", f"artifacts_dir={tmp_path}", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "minilm-dynamic-avx2/model.onnx" in result.stdout and "sha256" in result.stdout
    inspected = run_cli("-m", "pipeline.cli", "inspect", str(tmp_path / "minilm-dynamic-avx2" / "model.onnx"))
    assert inspected.returncode == 0, inspected.stderr
    assert "quantgate.target_isa" in inspected.stdout and "CAN run it" in inspected.stdout
    assert "debug/model.nodes.json" in inspected.stdout  # where `inspect --node NAME` reads node sources


OPTIMUM_LOADS = """
import json, sys
from optimum.onnxruntime import ORTConfig, ORTModelForCustomTasks
from transformers import AutoConfig, AutoTokenizer
folder = sys.argv[1]
model = ORTModelForCustomTasks.from_pretrained(folder, file_name="model.onnx")
tokenizer = AutoTokenizer.from_pretrained(folder)
outputs = model(**tokenizer(["Quantized models must run on the CPUs they are meant for."], return_tensors="pt"))
quantization = ORTConfig.from_pretrained(folder).quantization
print(json.dumps({"outputs": {k: v.tolist() for k, v in outputs.items()}, "model_type": AutoConfig.from_pretrained(folder).model_type,
                  "per_channel": quantization.per_channel, "reduce_range": quantization.reduce_range,
                  "is_static": quantization.is_static}))
"""


def test_the_folder_holds_what_optimum_and_transformers_load(dynamic_build):
    folder = dynamic_build.folder
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and "_name_or_path" not in config  # no trace of where it was loaded from
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "ort_config.json"):
        assert (folder / name).is_file() and name in {f.path for f in dynamic_build.files}
    quantization = json.loads((folder / "ort_config.json").read_text())["quantization"]
    assert quantization["is_static"] is False and quantization["reduce_range"] is True  # the avx2 policy


def test_optimum_loads_the_artifact_folder_in_its_own_venv(dynamic_build, tmp_path):
    from transformers import AutoTokenizer

    from tests.fixtures.optimum_venv import run_in_optimum
    folder = dynamic_build.folder
    loaded = run_in_optimum(OPTIMUM_LOADS, str(folder))
    assert loaded["model_type"] == "bert" and loaded["per_channel"] is True and loaded["reduce_range"] is True
    # the same embedding as onnxruntime here, on the same sentence
    tokens = AutoTokenizer.from_pretrained(str(folder))(["Quantized models must run on the CPUs they are meant for."],
                                                       return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    ours = session.run(None, {i.name: tokens[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    assert np.allclose(np.asarray(loaded["outputs"]["sentence_embedding"]), ours, atol=1e-5)

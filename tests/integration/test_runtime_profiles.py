"""Deployment profiles with a runtime stack, against a real onnxruntime 1.16.3 venv built from the
registry (once per suite, `ort116_env`): the cache, IR drift predicted and proven, a build for that
runtime that loads and passes there, and padding invariance."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
from tests.fixtures.tiny_artifact import make_artifact_folder, make_standalone

from pipeline.runtimes import venvs
from pipeline.builder.task import build
from pipeline.config import compose_config
from pipeline.guard import ArtifactRefused, ensure_can_run, read_stamp
from pipeline.manifest import Manifest
from pipeline.verify import onnx as verify
from pipeline.verify import stage as verify_stage
from pipeline.isa.targets import microarchitecture_features

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=4", "verify.build_gate=false"]


def test_runtime_env_is_built_once_recorded_and_reused(ort116_env):
    record = json.loads((venvs.Path(ort116_env.folder) / "install.json").read_text())
    assert "onnxruntime==1.16.3" in record["installed"] and record["seconds"] > 0
    assert any("Successfully installed" in m for m in ort116_env.build_messages)  # progress was shown
    assert ort116_env.limits["versions"]["onnxruntime"] == "1.16.3"
    assert ort116_env.limits["versions"]["numpy"].startswith("1.")
    assert (ort116_env.limits["max_ir_version"], ort116_env.limits["max_opsets"][""]) == (9, 19)

    again = venvs.prepare(venvs.parse("onnxruntime==1.16.3"), progress=print)
    assert again.install["status"] == "reused" and again.folder == ort116_env.folder


def test_corrupted_cache_is_detected_and_rebuilt(ort116_env):
    venv = venvs.Path(ort116_env.folder) / "venv"
    (init,) = venv.glob("lib/python*/site-packages/onnxruntime/__init__.py")
    init.write_text("raise ImportError('corrupted by the test')\n")
    messages = []
    rebuilt = venvs.prepare(ort116_env.runtime, progress=messages.append)
    assert rebuilt.install["status"] == "built" and rebuilt.folder == ort116_env.folder
    assert "is broken (ImportError: corrupted by the test); rebuilding it" in messages[0]
    assert rebuilt.limits["max_ir_version"] == 9


def test_ir_drift_is_predicted_in_words_and_confirmed_by_the_real_load(ort116_env, tmp_path):
    folder = make_artifact_folder(tmp_path / "tiny")  # onnx.helper model at IR 10, as the issue saw
    cfg = compose_config(["target=avx2", "runtime=ort116", "verify.profiles=[native,native@pinned]"])
    report = verify_stage.verify_folder(cfg, Manifest.load(folder))
    old, pinned = report["profiles"]["native@ort116"], report["profiles"]["native"]
    assert report["status"] == "fail" and pinned["status"] == "pass"
    prediction = old["runtime"]["prediction"]
    assert prediction["problems"] == ["artifact has IR version 10; onnxruntime 1.16.3 loads at most 9; rebuild "
                                      "with RUNTIME=onnxruntime==1.16.3 or upgrade the runtime"]
    assert (old["status"], old["failure"], old["runtime"]["confirmed"]) == ("fail", "load", True)
    assert "Unsupported model IR version: 10, max supported IR version: 9" in old["reason"]
    assert old["runtime"]["versions"]["onnxruntime"] == "1.16.3" and not report["notes"]
    with pytest.raises(ArtifactRefused, match="loads at most 9"):
        ensure_can_run(folder / "model.onnx", microarchitecture_features("haswell"), runtime=ort116_env.limits)


def test_a_disagreement_between_prediction_and_load_is_reported(ort116_env, tmp_path, monkeypatch):
    artifact, reference, inputs = make_standalone(tmp_path, target="avx2")
    model = onnx.load(str(artifact))
    model.ir_version = 9  # loads in 1.16.3 ...
    onnx.save(model, str(artifact))
    # ... while the guard is told the runtime stops at IR 8: its prediction must be shown wrong.
    wrong = dataclasses.replace(ort116_env, limits=ort116_env.limits | {"max_ir_version": 8})
    monkeypatch.setattr(venvs, "prepare", lambda runtime, progress=None: wrong)
    cfg = compose_config(["target=avx2", "runtime=ort116", "verify.profiles=[native]", "verify.reference_cpu=native"])
    report = verify.verify_files(artifact, reference, inputs, cfg, tmp_path / "verify.json")
    record = report["profiles"]["native@ort116"]
    assert record["status"] == "pass" and record["runtime"]["confirmed"] is False
    assert "native@ort116: the guard predicted onnxruntime would refuse it" in report["notes"][0]
    assert "prediction and reality disagree" in record["runtime"]["disagreement"]


@pytest.fixture(scope="module")
def ort116_build(ort116_env, tmp_path_factory):
    """MiniLM built for onnxruntime 1.16.3 and verified there: on the emulated floor CPU and natively."""
    out = tmp_path_factory.mktemp("artifacts")
    cfg = compose_config(["target=avx2", "mode=dynamic", "runtime=ort116", f"artifacts_dir={out}", *SMALL,
                          "verify.profiles=[haswell,native]", "verify.emulated_max_samples=2"])
    manifest = build(cfg)
    return manifest, verify_stage.verify_folder(cfg, manifest)


def test_build_for_an_older_runtime_loads_and_passes_there(ort116_build):
    manifest, report = ort116_build
    for name in ("model.onnx", "reference.onnx"):
        assert onnx.load(str(manifest.path(name)), load_external_data=False).ir_version <= 9  # what 1.16.3 loads
    stamp = read_stamp(manifest.path("model.onnx"))
    assert json.loads(stamp["runtime"]) == {"name": "ort116", "onnxruntime": "1.16.3",
                                            "requirements": ["onnxruntime==1.16.3", "numpy<2"]}
    assert report["status"] == "pass", verify.format_table(report)
    assert set(report["profiles"]) == {"haswell@ort116", "native@ort116"}
    for record in report["profiles"].values():
        assert record["versions"]["onnxruntime"] == "1.16.3" and record["runtime"]["confirmed"] is True


def test_padding_invariance_passes_for_minilm(ort116_build):
    _, report = ort116_build
    assert report["padding"]["status"] == "pass"
    for name in ("haswell@ort116", "native@ort116"):
        figures = report["profiles"][name]["padding"]["figures"]
        assert figures["cosine_worst"] >= 0.95 and figures["cosine_mean"] >= 0.98


def test_padding_check_fails_for_minilm_exported_without_attention_mask(tmp_path):
    import torch

    from pipeline.builder.models import model_family
    from pipeline.builder.export import export_onnx

    family = model_family(compose_config([]))

    class IdsOnly(torch.nn.Module):  # what a careless export looks like: no mask, pooling over padding too
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids):
            return self.encoder(input_ids=input_ids).last_hidden_state.mean(dim=1)

    batch, sequence = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=2, max=512)
    model = IdsOnly(family.load_torch().encoder)
    path = tmp_path / "nomask.onnx"
    path.write_bytes(export_onnx(model, (torch.ones(2, 8, dtype=torch.long),), ({0: batch, 1: sequence},),
                                 ["input_ids"], ["sentence_embedding"], 18))
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **family.encode(["a short one", "a somewhat longer sentence about padding tokens"]))
    cfg = compose_config(["target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"])
    report = verify.verify_files(path, path, inputs, cfg, tmp_path / "verify.json", model_kind="embedding")
    assert report["status"] == "fail" and report["padding"]["status"] == "fail"
    assert "exported without an attention_mask input" in report["padding"]["reason"]

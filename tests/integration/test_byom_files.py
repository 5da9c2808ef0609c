"""Models users bring, end to end: an fp32 ONNX file (model=onnx) and a torch module from a package of theirs
(model=torch), calibrated on .npz arrays (calibration=npz), built, stamped and verified on `haswell` (QEMU)
and `native` like the built-in models. Tiny models and samples: a few seconds of building each."""
import json

import numpy as np
import onnx
import pytest

from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.guard import read_stamp
from pipeline.manifest import Manifest
from tests.fixtures.byom import npz_arrays, write_npz, write_onnx_model
from tests.fixtures.byom_pkg import models as byom_models

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8",
         "calibration.coverage_fail=0.5"]  # 16 random examples: coverage is not what these tests are about
# The target's floor CPU under QEMU and this host; compared with this host (no extra emulated reference run).
PROFILES = ["target=avx2", "verify.profiles=[haswell,native]", "verify.reference_cpu=native"]
FACTORY = "model.factory=tests.fixtures.byom_pkg.models:build"


def verified_profiles(folder) -> dict[str, str]:
    report = json.loads((folder / "verify.json").read_text())
    return {name: row["status"] for name, row in report["profiles"].items()}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """detector.onnx with its weights in detector.onnx.data, and its calibration data as a folder of two .npz."""
    root = tmp_path_factory.mktemp("user")
    (root / "models").mkdir()
    model = write_onnx_model(root / "models" / "detector.onnx")
    arrays = npz_arrays(n=48)
    (root / "calib").mkdir()
    write_npz(root / "calib" / "part1.npz", {name: array[:30] for name, array in arrays.items()})
    write_npz(root / "calib" / "part2.npz", {name: array[30:] for name, array in arrays.items()})
    return {"model": model, "calib": root / "calib", "torch_npz": byom_models.write_npz(root / "torch.npz")}


def test_onnx_file_builds_static_and_verifies_on_haswell_and_native(user_files, tmp_path):
    overrides = ["model=onnx", f"model.path={user_files['model']}", "calibration=npz",
                 f"calibration.path={user_files['calib']}", "mode=static", f"artifacts_dir={tmp_path}", *SMALL,
                 *PROFILES]
    assert quantize_task(compose_config(overrides), overrides) == 0
    folder = tmp_path / f"{user_files['model'].stem}-static-avx2"  # named after the model file
    assert verified_profiles(folder) == {"haswell": "pass", "native": "pass"}
    manifest = Manifest.load(folder)
    assert manifest.model_kind == "generic"
    assert manifest.input_names == ["tokens", "extra"] and manifest.output_names == ["logits", "states"]
    # The reference is the user's file, external data folded in, with its dynamic axes.
    reference = onnx.load(str(folder / "reference.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in reference.graph.initializer)
    assert [d.dim_param for d in reference.graph.output[1].type.tensor_type.shape.dim[:2]] == ["batch", "sequence"]
    stamp = read_stamp(str(folder / "model.onnx"))
    assert json.loads(stamp["source_model"])["name"].startswith("detector.onnx sha256:")
    assert json.loads(stamp["calibration"])["dataset"].startswith("calib/ (2 .npz files) sha256:")
    # Both outputs are judged, each on its own scale.
    report = json.loads((folder / "verify.json").read_text())
    for profile in ("haswell", "native"):
        assert set(report["profiles"][profile]["fidelity_by_output"]) == {"logits", "states"}
    heldout = np.load(folder / "heldout.npz")
    assert set(heldout.files) == {"tokens", "extra"} and heldout["tokens"].dtype == np.float32


def test_torch_factory_builds_dynamic_and_verifies_on_haswell_and_native(user_files, tmp_path):
    overrides = ["model=torch", FACTORY, "model.kind=classifier", f"calibration.path={user_files['torch_npz']}",
                 "mode=dynamic", f"artifacts_dir={tmp_path}", *SMALL, *PROFILES]
    assert quantize_task(compose_config(overrides), overrides) == 0
    folder = tmp_path / "build-dynamic-avx2"  # named after the factory function
    assert verified_profiles(folder) == {"haswell": "pass", "native": "pass"}
    manifest = Manifest.load(folder)
    # Inputs in the forward's order (the factory gave a dict in another order); labels give a real accuracy.
    assert manifest.input_names == ["ids", "features"] and manifest.model_kind == "classifier"
    assert manifest.fp32_metrics["validation_accuracy"] == 1.0 and "validation_accuracy" in manifest.int8_metrics
    assert manifest.source_model.startswith("tests.fixtures.byom_pkg.models:build")
    reference = onnx.load(str(folder / "reference.onnx"))
    assert all(not dim.HasField("dim_value") for dim in reference.graph.input[0].type.tensor_type.shape.dim)


def test_torch_factory_builds_with_qat_by_self_distillation(user_files, tmp_path):
    overrides = ["model=torch", FACTORY, "model.kind=classifier", f"calibration.path={user_files['torch_npz']}",
                 "mode=qat", "mode.qat_steps=10", f"artifacts_dir={tmp_path}", *SMALL, "target=avx2",
                 "verify.profiles=[native]", "verify.reference_cpu=native"]
    assert quantize_task(compose_config(overrides), overrides) == 0
    manifest = Manifest.load(tmp_path / "build-qat-avx2")
    assert "self-distillation" in manifest.qat["objective"] and manifest.qat["steps"] == 10
    assert verified_profiles(tmp_path / "build-qat-avx2") == {"native": "pass"}


def test_the_config_hash_names_the_files_by_content_not_by_folder(tmp_path):
    from pipeline.builder.stamp import config_sha256

    def digest(folder, seed=0):
        folder.mkdir()
        # One file: with external data the weights' sha256 is the stamp's source_model.weights_sha256.
        model = write_onnx_model(folder / "detector.onnx", seed=seed, external_data=False)
        calib = write_npz(folder / "calib.npz")
        return config_sha256(compose_config(["model=onnx", f"model.path={model}", f"calibration.path={calib}"]))

    assert digest(tmp_path / "one") == digest(tmp_path / "two") != digest(tmp_path / "three", seed=1)

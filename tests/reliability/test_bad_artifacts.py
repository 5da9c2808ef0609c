"""Bad ONNX files, input archives and stamps given to verification: refused in words."""
import json

import numpy as np
import onnx
import pytest

from pipeline.manifest import Manifest
from tests.fixtures.tiny_artifact import make_artifact_folder, make_standalone
from tests.reliability.helpers import assert_user_error, quantgate


@pytest.fixture
def standalone(tmp_path):
    return make_standalone(tmp_path / "standalone", target="avx2")


def verify_files(artifact, reference, inputs, out, *overrides):
    return quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                     "--target", "avx2", "--out", str(out), "verify.profiles=[native]", "verify.reference_cpu=native", *overrides)


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "empty"])
def test_damaged_onnx_is_refused(standalone, tmp_path, damage):
    artifact, reference, inputs = standalone
    data = artifact.read_bytes()
    artifact.write_bytes({"truncated": data[: len(data) // 2], "random_bytes": np.random.default_rng(0).bytes(4096),
                          "empty": b""}[damage])
    result = verify_files(artifact, reference, inputs, tmp_path / "v.json")
    assert_user_error(result, artifact.name)
    assert "not" in result.stderr.lower()


def test_wrong_input_name_is_refused(standalone, tmp_path):
    artifact, reference, inputs = standalone
    arrays = dict(np.load(inputs))
    np.savez(inputs, wrong_name=next(iter(arrays.values())))
    result = verify_files(artifact, reference, inputs, tmp_path / "v.json")
    assert_user_error(result, "x")


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd"])
def test_external_data_outside_the_folder_is_refused_before_opening(standalone, tmp_path, location):
    artifact, reference, inputs = standalone
    model = onnx.load(str(reference))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    onnx.save(model, str(reference))
    result = verify_files(artifact, reference, inputs, tmp_path / "v.json")
    assert_user_error(result, "outside its folder")


@pytest.mark.parametrize("problem", ["missing_input", "extra_array", "object_array"])
def test_bad_inputs_npz(standalone, tmp_path, problem):
    artifact, reference, inputs = standalone
    arrays = dict(np.load(inputs))
    if problem == "missing_input":
        np.savez(inputs, other=np.zeros(3))
    elif problem == "extra_array":
        np.savez(inputs, **arrays, surprise=np.zeros(3))
    else:
        np.savez(inputs, x=np.array([{"a": 1}, None], dtype=object))
    result = verify_files(artifact, reference, inputs, tmp_path / "v.json")
    if problem == "extra_array":  # named after no input: ignored, and said so
        assert "surprise" in result.stderr + result.stdout
    else:
        assert_user_error(result, {"missing_input": "x", "object_array": "object"}[problem])


def _restamp(path, **changes):
    model = onnx.load(str(path))
    for entry in list(model.metadata_props):
        key = entry.key.removeprefix("quantgate.")
        if key in changes:
            if changes[key] is None:
                model.metadata_props.remove(entry)
            else:
                entry.value = changes[key]
    onnx.save(model, str(path))


@pytest.mark.parametrize("change, expected", [
    ({"schema": "99"}, "schema"),
    ({"required_cpu_features": None}, "required_cpu_features"),
])
def test_bad_stamp_is_refused(tmp_path, change, expected):
    folder = make_artifact_folder(tmp_path / "built", target="avx2")
    _restamp(folder / "model.onnx", **change)
    manifest = Manifest.load(folder)
    manifest.record_files()  # a consistent manifest: the stamp itself is what is wrong
    manifest.save()
    result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native]", "verify.reference_cpu=native")
    assert_user_error(result, expected)


def test_tampered_artifact_is_refused_by_verify(tmp_path):
    folder = make_artifact_folder(tmp_path / "built", target="avx2")
    with open(folder / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native]", "verify.reference_cpu=native")
    assert_user_error(result, "model.onnx")
    assert "sha256" in result.stderr or "changed" in result.stderr
    assert not json.loads((folder / "manifest.json").read_text())["files"] == []

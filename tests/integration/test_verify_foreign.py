"""Verifying what other tools built: a transformers encoder exported by `torch.onnx.export` (three integer
inputs, a rank-3 and a rank-2 output, dynamic axes) and quantized by onnxruntime's own `quantize_dynamic`.
Every output is judged, per token over non-padding positions; input files that do not fit are refused
before any profile runs."""
import json
import subprocess
import sys

import numpy as np
import pytest
from tests.fixtures import tiny_encoder

from pipeline.paths import PROJECT_ROOT
from pipeline.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    per_channel = tiny_encoder.build(folder, per_channel=True, outliers=True)
    per_tensor = tiny_encoder.build(folder, per_channel=False, outliers=True)
    return per_channel, per_tensor


def run_verify(artifact, reference, inputs, out, *overrides):
    return subprocess.run([sys.executable, "-m", "pipeline.commands.verify", "--artifact", str(artifact), "--reference",
                           str(reference), "--inputs", str(inputs), "--target", "avx2", "--out", str(out),
                           *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)


def test_onnxruntime_quantized_encoder_passes_on_haswell_and_native(encoder, tmp_path):
    (artifact, reference, inputs), _ = encoder
    out = tmp_path / "verify.json"
    result = run_verify(artifact, reference, inputs, out, "verify.profiles=[haswell,native]", "verify.pooling=mean")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = json.loads(out.read_text())
    assert report["output_names"] == ["last_hidden_state", "pooler_output"]
    assert not report["artifact"]["stamped"] and any("no quantgate stamp" in note for note in report["notes"])
    for name in ("haswell", "native"):
        profile = report["profiles"][name]
        assert profile["status"] == "pass", profile["reason"]
        hidden = profile["fidelity_by_output"]["last_hidden_state"]
        assert hidden["kind"] == "token_states" and hidden["cosine_worst"] > 0.99
        assert hidden["pooling"] == "mean" and hidden["pooled_cosine_worst"] > 0.99
        assert profile["fidelity_by_output"]["pooler_output"]["kind"] == "vector"
        assert profile["cpu_comparison"]["status"] == "pass"
    assert report["profiles"]["haswell"]["sample_ids"] == report["sample_selection"]["emulated"]
    assert report["padding"]["status"] == "pass"  # sequences of different lengths: per-token outputs padded back


def test_per_tensor_artifact_below_the_bound_fails_naming_the_cosine(encoder, tmp_path):
    _, (artifact, reference, inputs) = encoder
    out = tmp_path / "verify.json"
    result = run_verify(artifact, reference, inputs, out, "verify.profiles=[native]", "verify.reference_cpu=native")
    assert result.returncode == ExitCode.FAILED, result.stderr[-3000:]
    native = json.loads(out.read_text())["profiles"]["native"]
    assert (native["status"], native["failure"]) == ("fail", "fidelity")
    assert "last_hidden_state: per-token cosine mean" in native["reason"]
    assert native["fidelity_by_output"]["last_hidden_state"]["cosine_mean"] < 0.98


@pytest.mark.parametrize("problem, words", [
    ("missing_input", "no array for model input(s) ['token_type_ids']"),
    ("wrong_rank", "has 1 axes"),
    ("float_ids", "takes integers"),
    ("sample_counts", "same number of samples"),
    ("labels_count", "labels has shape"),
])
def test_inputs_that_do_not_fit_the_model_are_refused_before_any_profile_runs(encoder, tmp_path, problem, words):
    (artifact, reference, inputs), _ = encoder
    with np.load(inputs) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if problem == "missing_input":
        del arrays["token_type_ids"]
    elif problem == "wrong_rank":
        arrays["input_ids"] = arrays["input_ids"][:, 0]
    elif problem == "float_ids":
        arrays["input_ids"] = arrays["input_ids"].astype(np.float32)
    elif problem == "sample_counts":
        arrays["attention_mask"] = arrays["attention_mask"][:3]
    else:
        arrays["labels"] = np.zeros(3, dtype=np.int64)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    result = run_verify(artifact, reference, bad, tmp_path / "verify.json")
    assert result.returncode == 2, result.stderr[-2000:]
    assert words in result.stderr and "Traceback" not in result.stderr
    assert "fp32 reference, native" not in result.stderr  # nothing ran
    assert not (tmp_path / "verify.json").exists()

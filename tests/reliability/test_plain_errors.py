"""Plain user errors in words, exit 2, no traceback (issue 35): a negative seed and other numbers out of range, a
required config group set to null, an empty profile list, an .npz whose headers declare more than it holds (a zip
bomb), an override split at a space, a deleted working folder, a password for a key that has none, a message
echoing a 99 KB value; and the signoff's latency finding judged with the timings' noise."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from pipeline.release.keys import generate_keys
from tests.fixtures.tiny_artifact import make_artifact_folder, make_standalone
from tests.reliability.helpers import DIGITS, REPO, assert_user_error, published, quantgate


def assert_one_line_exit_2(result, *words):
    assert_user_error(result, *words)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-3000:]


@pytest.mark.parametrize("override, words", [
    ("calibration.seed=-1", ["calibration.seed=-1 is out of range: it must be at least 0"]),
    ("model.seed=-3", ["model.seed=-3 is out of range"]),
    ("calibration.batch_size=0", ["calibration.batch_size=0 is out of range: it must be more than 0"]),
    ("model.max_length=-1", ["model.max_length=-1 is out of range"]),
    ("calibration.coverage_fail=1.5", ["calibration.coverage_fail=1.5 is out of range: it is a share, at most 1"]),
    ("calibration.min_chars=-2", ["calibration.min_chars=-2 is out of range"]),
    ("target=null", ["target=null: the build needs a target", "avx2", "x86_64_v2"]),
    ("mode=null", ["mode=null: the build needs a mode", "dynamic", "static", "qat"]),
    ("model=", ["model=: the build needs a model", "minilm"]),
    ("calibration=null", ["calibration=null: the build needs a calibration", "the model's own"]),
    ("verify.profiles=[]", ["verify.profiles=[] names no CPU profile", "verify.enabled=false"]),
])
def test_a_value_out_of_range_or_an_empty_choice_is_refused_in_words(tmp_path, override, words):
    result = quantgate(override, f"artifacts_dir={tmp_path}")
    assert_one_line_exit_2(result, *words)
    assert published(tmp_path) == []


def test_out_of_range_numbers_refuse_verify_too(tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path / "s", target="avx2")
    result = quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                       "--target", "avx2", "--out", str(tmp_path / "v.json"), "verify.profiles=[]")
    assert_one_line_exit_2(result, "verify.profiles=[] names no CPU profile")


# --- an .npz that declares more than it holds: checked from its headers before anything is unpacked --------------
def crafted_npz(path, name: str, shape: tuple, payload: bytes = b"\0" * 64):
    import io
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.npy", header.getvalue() + payload)
    return path


def declared_bomb(path, names=("x", "labels"), gib: int = 3):
    """A zip bomb as a zip's directory tells it: each member declares `gib` GiB unpacked (its central directory
    record's uncompressed size), while the file holds a few bytes each."""
    import struct
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(f"{name}.npy", b"\0" * 64)
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:  # each central directory record
        struct.pack_into("<I", data, start + 24, gib << 30)  # its uncompressed size
        start += 4
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("bomb, words", [
    ("declared", ["x.npy declares a float32 array of shape [100000, 100000] (40,000,000,000 bytes) but holds 64"]),
    ("directory", ["unpacks to more than 4 GiB", "(6 GiB;", "alone declares 3 GiB", "a zip bomb"]),
])
def test_a_zip_bomb_npz_is_refused_before_loading(tmp_path, bomb, words):
    artifact, reference, _ = make_standalone(tmp_path / "s", target="avx2")
    inputs = crafted_npz(tmp_path / "bomb.npz", "x", (100000, 100000)) if bomb == "declared" else \
        declared_bomb(tmp_path / "bomb.npz")
    result = quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                       "--target", "avx2", "--out", str(tmp_path / "v.json"), "verify.profiles=[native]")
    assert_one_line_exit_2(result, str(inputs), *words)
    assert not (tmp_path / "v.json").exists()


def test_a_zip_bomb_as_calibration_arrays_is_refused(tmp_path):
    from onnx import TensorProto, helper, save
    model = tmp_path / "model.onnx"
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.5] * 16)])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(model))
    arrays = crafted_npz(tmp_path / "calibration.npz", "x", (10**9, 4))
    result = quantgate("model=onnx", f"model.path={model}", "calibration=npz", f"calibration.path={arrays}",
                       f"artifacts_dir={tmp_path / 'a'}", "verify.enabled=false")
    assert_one_line_exit_2(result, "calibration.npz", "x.npy declares a float32 array of shape [1000000000, 4]")
    assert published(tmp_path / "a") == []


# --- the shell and the machine ------------------------------------------------------------------------------------
def test_an_out_path_split_at_a_space_says_how_to_quote_it(tmp_path):
    result = quantgate(*DIGITS, f"out={tmp_path}/my", "models/digits")
    assert_one_line_exit_2(result, "'models/digits' is not an override", f"'out={tmp_path}/my models/digits'",
                           "Quote a value with spaces")
    assert not (tmp_path / "my").exists()


def test_a_deleted_working_folder_is_named(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.path.insert(0, {str(REPO)!r}); "
              "from pipeline.cli import main; sys.exit(main(['target=avx2']))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert_one_line_exit_2(result, "the current folder was deleted", "`cd` to an existing folder")


def test_a_password_for_a_key_that_has_none_names_the_variable(tmp_path):
    key = generate_keys(tmp_path / "keys")[0]
    make_artifact_folder(tmp_path / "rc" / "tiny-dynamic-avx2")
    result = quantgate("sign", "--release", "rc", "--artifacts-dir", str(tmp_path / "rc"), "--report",
                       str(tmp_path / "reports"), "--key", str(key), env={"QUANTGATE_KEY_PASSWORD": "secret"})
    assert_one_line_exit_2(result, "QUANTGATE_KEY_PASSWORD is set", f"{key} is not encrypted",
                           "unset QUANTGATE_KEY_PASSWORD")


def test_a_99_kb_message_is_cut_to_one_readable_line(tmp_path):
    path = f"{tmp_path}/{'x' * 99_000}"
    result = quantgate(f"model.name_or_path={path}", f"artifacts_dir={tmp_path / 'a'}")
    assert_one_line_exit_2(result, "characters cut", "quantgate: error: cannot use")
    assert len(result.stderr) < 2100, len(result.stderr)


# --- the latency finding, judged with the timings' noise --------------------------------------------------------
def latency(int8_ms, fp32_ms, repeats=20, spread=0.02):
    return {"name": "a", "latency": {"int8_p50_ms": int8_ms, "int8_p95_ms": int8_ms * (1 + spread),
                                     "fp32_p50_ms": fp32_ms, "fp32_p95_ms": fp32_ms * (1 + spread), "batch": 1,
                                     "repeats": repeats, "profile": "native",
                                     "p50_ratio": int8_ms / fp32_ms}}


@pytest.mark.parametrize("figures, status, outcome", [
    (latency(1.01, 1.0, repeats=1), "within_noise", "info"),  # 1.01x on one sample: noise, never a block
    (latency(1.04, 1.0, repeats=20, spread=0.01), "within_noise", "info"),  # inside the 5% least noise
    (latency(1.5, 1.0, repeats=20), "too_slow", "failed"),
    (latency(1.2, 1.0, repeats=20, spread=0.4), "within_noise", "info"),  # p95 40% above p50: a noisy host
    (latency(0.06, 0.02), "not_measurable", "info"),  # under 0.1 ms: the timer's noise
    (latency(0.5, 1.0), "within_limit", "ok"),
])
def test_latency_blocks_only_beyond_the_noise_and_never_on_a_model_too_fast_to_time(figures, status, outcome):
    from datetime import date

    from pipeline.config.schema import ReleaseConfig
    from pipeline.release.signoff import apply_waivers, latency_rows
    (row,) = latency_rows([figures], ReleaseConfig())
    apply_waivers([row], [], date.today())
    assert (row["status"], row["outcome"]) == (status, outcome), row["reason"]
    if status == "within_noise":
        assert "within the timings' noise" in row["reason"] and "repeats" in row["reason"]


def test_fidelity_png_shows_every_profile_that_measured_fidelity_judged_or_not():
    """An emulated profile whose figures are not judged on its few samples (no margin) is in the plot all the same."""
    from pipeline.release.signoff import fidelity_rows, plots
    from pipeline.release.signoff import row as _row
    native = _row("a", "native", "pass", True, "", cpu=True, figures={"cosine_worst": 0.99},
                  margins={"cosine_worst": 0.04})
    haswell = _row("a", "haswell", "pass", True, "", cpu=True, figures={"cosine_mean": 0.99})
    refused = _row("a", "nehalem", "refused_by_guard", True, "", cpu=True)
    check = _row("a", "latency", "within_limit", True, "")
    for row in (native, haswell, refused, check):
        row["outcome"] = "ok"
    assert fidelity_rows([native, haswell, refused, check]) == [native, haswell]
    images = plots({"rows": [native, haswell, refused, check], "artifacts": []})
    assert images["fidelity.png"].startswith(b"\x89PNG")

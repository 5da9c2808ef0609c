"""Bad data given to quantgate: calibration files, checkpoints, verification inputs. Each is refused in one
line that names the input and the fix, with exit 2, no traceback and nothing published; none gives a
silently wrong result (a float32 overflow, an accuracy of 0 against text labels)."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.fixtures.tiny_artifact import make_standalone
from tests.reliability.helpers import DIGITS, digits_rows, published, quantgate, write_csv

CONFIG = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
          "intermediate_size": 8, "vocab_size": 10}


def assert_refused(result, *expected: str) -> None:
    """Exit 2 (refused: bad input), one error line naming the problem, no traceback."""
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("quantgate"), result.stderr[-3000:]
    for text in expected:
        assert text in errors[0], f"{text!r} not in: {errors[0]}"


def build(tmp_path, *overrides):
    result = quantgate(*overrides, f"artifacts_dir={tmp_path / 'a'}", "verify.enabled=false")
    assert published(tmp_path / "a") == []
    return result


# --- 1. data files and checkpoints that cannot be read --------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_calibration_text_file_not_utf8(tmp_path, suffix):
    data = tmp_path / f"traffic{suffix}"
    line = {".csv": "caf\u00e9 {i}", ".jsonl": '{{"text": "caf\u00e9 {i}"}}', ".txt": "caf\u00e9 {i}"}[suffix]
    header = "text\n" if suffix == ".csv" else ""
    data.write_bytes((header + "".join(line.format(i=i) + "\n" for i in range(100))).encode("latin-1"))
    result = build(tmp_path, "calibration=files", f"calibration.data_files=[{data}]")
    assert_refused(result, str(data), "not UTF-8", "0xe9", "iconv")


def _write_jsonl(path, rows):
    names = [f"p{i}" for i in range(64)] + ["label"]
    path.write_text("".join(json.dumps(dict(zip(names, row))) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("problem, expected", [
    ("text_label", ["column label, row 4", "'cat'", "integer class ids"]),
    ("missing_label", ["column label, row 2", "None", "integer class ids"]),
    ("text_pixel", ["row 3, column p5", "'bright'", "non-numeric"]),
    ("text_pixel_jsonl", ["row 21, column p3", "'x", "non-numeric"]),
])
def test_text_in_a_numeric_column(tmp_path, problem, expected):
    rows = digits_rows()
    if problem == "text_label":
        rows[3][-1] = "cat"
    elif problem == "missing_label":
        rows[1][-1] = ""
    elif problem == "text_pixel":
        rows[2][5] = "bright"
    else:  # the column turns to text from row 21 on
        for row in rows[20:]:
            row[3] = f"x{row[3]}"
    data = (_write_jsonl(tmp_path / "digits.jsonl", rows) if problem.endswith("jsonl")
            else write_csv(tmp_path / "digits.csv", rows))
    result = build(tmp_path, *DIGITS, "calibration.source=files", f"calibration.data_files=[{data}]")
    assert_refused(result, f"calibration.data_files=['{data}']", *expected)


@pytest.mark.parametrize("damage", ["truncated_jsonl", "random_parquet"])
def test_calibration_file_datasets_cannot_read(tmp_path, damage):
    if damage == "truncated_jsonl":
        data = _write_jsonl(tmp_path / "digits.jsonl", digits_rows())
        data.write_text(data.read_text()[:-40])
    else:
        data = tmp_path / "digits.parquet"
        data.write_bytes(np.random.default_rng(0).bytes(5000))
    result = build(tmp_path, *DIGITS, "calibration.source=files", f"calibration.data_files=[{data}]")
    assert_refused(result, str(data), "could not be parsed", "ArrowInvalid")


def _checkpoint(folder, damage):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    if damage == "truncated_config":
        (folder / "config.json").write_text(json.dumps(CONFIG)[:30])
    if damage in ("truncated_safetensors", "truncated_config"):
        from safetensors.numpy import save_file
        weights = folder / "model.safetensors"
        save_file({"embeddings.weight": np.zeros((64, 64), np.float32)}, str(weights))
        if damage == "truncated_safetensors":
            weights.write_bytes(weights.read_bytes()[:3000])
        return weights if damage == "truncated_safetensors" else folder / "config.json"
    import torch
    weights = folder / "pytorch_model.bin"
    torch.save({"embeddings.weight": torch.zeros(64, 64)}, weights, _use_new_zipfile_serialization=damage != "legacy_pickle")
    data = weights.read_bytes()
    weights.write_bytes(np.random.default_rng(0).bytes(4096) if damage == "random_bin" else data[: len(data) // 2])
    return weights


@pytest.mark.parametrize("damage, expected", [
    ("truncated_safetensors", "damaged or truncated"),
    ("truncated_bin", "was refused"),
    ("legacy_pickle", "was refused"),
    ("random_bin", "was refused"),
    ("truncated_config", "not valid JSON"),
])
def test_damaged_checkpoint(tmp_path, damage, expected):
    damaged = _checkpoint(tmp_path / "model", damage)
    result = build(tmp_path, f"model.name_or_path={tmp_path / 'model'}")
    assert_refused(result, str(damaged), expected)


# --- 2. numbers float32 cannot hold ---------------------------------------------------------------------
@pytest.mark.parametrize("value, suffix", [(1e39, ".csv"), (-3.5e38, ".jsonl")])
def test_calibration_value_beyond_float32(tmp_path, value, suffix):
    rows = digits_rows()
    rows[5][7] = value
    data = (write_csv if suffix == ".csv" else _write_jsonl)(tmp_path / f"digits{suffix}", rows)
    result = build(tmp_path, *DIGITS, "calibration.source=files", f"calibration.data_files=[{data}]")
    assert_refused(result, str(data), "row 6, column p7", "float32", "3.403e+38")


# --- 3. labels that are not class ids -------------------------------------------------------------------
@pytest.mark.parametrize("labels, expected", [
    (["cat", "dog"], ["row 1", "'cat'"]),
    ([2.5, 3], ["row 1", "2.5"]),
    ([3, 12], ["row 2", "12", "0..9"]),
])
def test_calibration_labels_not_class_ids(tmp_path, labels, expected):
    rows = digits_rows()
    for index, row in enumerate(rows):
        row[-1] = labels[index % 2]
    data = write_csv(tmp_path / "digits.csv", rows)
    result = build(tmp_path, *DIGITS, "calibration.source=files", f"calibration.data_files=[{data}]")
    assert_refused(result, "column label", "integer class ids", "map names to ids", *expected)


# --- verification inputs (.npz) -------------------------------------------------------------------------
def _two_input_model(path):
    """An fp32 model taking x [batch, 4] and y [batch, 4]: for inputs that disagree on the sample count."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["sum"])], "two_inputs",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4]) for name in "xy"],
                              [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    return path


def verify(tmp_path, arrays: dict, two_inputs: bool = False):
    if two_inputs:
        artifact = reference = _two_input_model(tmp_path / "two.onnx")
    else:
        artifact, reference, _ = make_standalone(tmp_path / "standalone", target="avx2")
    inputs = tmp_path / "in.npz"
    np.savez(inputs, **arrays)
    result = quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                       "--target", "avx2", "--out", str(tmp_path / "v.json"), "verify.profiles=[native]",
                       "verify.reference_cpu=native")
    assert not (tmp_path / "v.json").exists()
    return result, inputs


def _x(n=8, dtype=np.float32):
    return np.random.default_rng(1).standard_normal((n, 16)).astype(dtype)


@pytest.mark.parametrize("labels, expected", [
    (np.array(["cat", "dog"] * 4), "<U3"),
    (np.arange(8) + 0.5, "float64"),
    (np.ones(8, dtype=bool), "bool"),
])
def test_verify_labels_not_class_ids(tmp_path, labels, expected):
    result, inputs = verify(tmp_path, {"x": _x(), "labels": labels})
    assert_refused(result, str(inputs), f"labels holds {expected}", "integer class ids", "np.unique")


@pytest.mark.parametrize("value", [1e39, -np.inf, np.nan])
def test_verify_input_beyond_float32(tmp_path, value):
    x = _x(dtype=np.float64)
    x[3, 2] = value
    result, inputs = verify(tmp_path, {"x": x})
    assert_refused(result, str(inputs), "array x", "[3, 2]", "finite float32")


@pytest.mark.parametrize("arrays, expected", [
    ({"x": np.float32(1.0)}, "same number of samples"),
    ({"x": _x(), "labels": np.int64(3)}, "labels has shape []"),
    ({"x": _x(), "labels": np.arange(5)}, "labels has shape [5], but the inputs hold 8 samples"),
    ({"x": _x(0)}, "at least one"),
    ({"x": _x(), "labels": np.array([1, None] * 4, dtype=object)}, "object array (pickles are not loaded)"),
])
def test_verify_inputs_malformed(tmp_path, arrays, expected):
    result, inputs = verify(tmp_path, arrays)
    assert_refused(result, str(inputs), expected)


def test_verify_inputs_disagree_on_sample_count(tmp_path):
    result, inputs = verify(tmp_path, {"x": np.zeros((8, 4), np.float32), "y": np.zeros((6, 4), np.float32)},
                            two_inputs=True)
    assert_refused(result, str(inputs), "same number of samples", "'x': [8, 4]", "'y': [6, 4]")

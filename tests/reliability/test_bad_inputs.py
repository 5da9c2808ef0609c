"""Bad configuration, models and calibration data: clear error, exit != 0, nothing on disk."""
import pickle

import pytest

from tests.reliability.helpers import DIGITS, assert_user_error, digits_rows, published, quantgate, write_csv


@pytest.mark.parametrize("override, expected", [
    ("target=avx3", ["target/avx3", "avx2", "x86_64_v2"]),
    ("mode=int3", ["mode/int3", "dynamic", "qat"]),
    ("model=gpt5", ["model/gpt5", "minilm", "digits_cnn"]),
    ("verify.profiles=[pentium]", ["unknown profile", "haswell"]),
    ("calibration.method=magic", ["minmax, entropy, percentile"]),
    ("calibration.n_samples=0", ["must both be positive"]),
    ("calibration.n_samples=-5", ["must both be positive"]),
    ("calibration.n_heldout=0", ["must both be positive"]),
])
def test_bad_config_value(tmp_path, override, expected):
    result = quantgate(override, f"artifacts_dir={tmp_path}")
    assert_user_error(result, *expected)
    assert published(tmp_path) == []


def test_conflicting_overrides(tmp_path):
    result = quantgate("mode=dynamic", "calibration.method=entropy", f"artifacts_dir={tmp_path}")
    assert_user_error(result, "only applies to mode=static")
    assert published(tmp_path) == []


@pytest.mark.parametrize("problem, expected", [
    ("missing", "does not exist"), ("empty", "no config.json"), ("no_weights", "no weights"),
    ("file", "is a file")])
def test_bad_model_path(tmp_path, problem, expected):
    model = tmp_path / "model"
    if problem == "file":
        model.write_text("not a folder")
    elif problem != "missing":
        model.mkdir()
    if problem == "no_weights":
        (model / "config.json").write_text('{"model_type": "bert"}')
    result = quantgate(f"model.name_or_path={model}", f"artifacts_dir={tmp_path / 'a'}")
    assert_user_error(result, expected)
    assert published(tmp_path / "a") == []


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, '
                                       '"num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 10}')
    marker = tmp_path / "code-ran"
    with open(model / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weight": _RunsCode(str(marker))}, handle)
    result = quantgate(f"model.name_or_path={model}", f"artifacts_dir={tmp_path / 'a'}")
    assert_user_error(result, "was refused", "weights_only=True")
    assert not marker.exists(), "the pickle's code ran"
    assert published(tmp_path / "a") == []


@pytest.mark.parametrize("problem, expected", [
    ("empty_file", "empty"),
    ("header_only", "empty"),
    ("nan", "NaN or inf"),
    ("inf", "NaN or inf"),
    ("wrong_shape", "64 pixel columns"),
    ("text_for_numbers", "non-numeric"),
    ("unparseable", "could not be parsed"),
    ("missing_file", "not found"),
])
def test_bad_calibration_data(tmp_path, problem, expected):
    data = tmp_path / ("data.json" if problem == "unparseable" else "data.csv")
    rows = digits_rows()
    if problem == "empty_file":
        data.write_text("")
    elif problem == "header_only":
        write_csv(data, [])
    elif problem in ("nan", "inf"):
        rows[5][7] = float(problem)
        write_csv(data, rows)
    elif problem == "wrong_shape":
        write_csv(data, [row[:10] + [row[-1]] for row in rows], [f"p{i}" for i in range(10)] + ["label"])
    elif problem == "text_for_numbers":
        rows[2][3] = "bright"
        write_csv(data, rows)
    elif problem == "unparseable":
        data.write_text('{"p0": 0.1, "p1": [unclosed')
    result = quantgate(*DIGITS, "calibration.source=files", f"calibration.data_files=[{data}]",
                       f"artifacts_dir={tmp_path / 'a'}")
    assert_user_error(result, expected)
    assert published(tmp_path / "a") == []


def test_text_calibration_column_holding_numbers(tmp_path):
    data = tmp_path / "traffic.jsonl"
    data.write_text("".join(f'{{"text": {i}}}\n' for i in range(100)))
    result = quantgate("calibration=files", f"calibration.data_files=[{data}]", f"artifacts_dir={tmp_path / 'a'}",
                       "verify.enabled=false")
    assert_user_error(result, "not text")
    assert published(tmp_path / "a") == []


def test_text_column_that_does_not_exist(tmp_path):
    data = tmp_path / "traffic.jsonl"
    data.write_text("".join(f'{{"body": "sentence number {i} of the traffic sample"}}\n' for i in range(100)))
    result = quantgate("calibration=files", f"calibration.data_files=[{data}]", "calibration.text_column=text",
                       f"artifacts_dir={tmp_path / 'a'}", "verify.enabled=false")
    assert_user_error(result, "calibration.text_column='text' is not a column", "body")
    assert published(tmp_path / "a") == []

"""User errors: one clear message naming the fix, non-zero exit, no traceback, no folder left."""
import pytest

from tests.conftest import run_cli


def assert_clean_failure(result, artifacts, *expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for text in expected:
        assert text in result.stderr, result.stderr[-2000:]
    leftovers = [p.name for p in artifacts.iterdir() if not p.name.endswith(".lock")] if artifacts.exists() else []
    assert leftovers == []


def test_bad_target_lists_choices(tmp_path):
    result = run_cli("-m", "pipeline", "target=avx3", f"artifacts_dir={tmp_path}")
    assert_clean_failure(result, tmp_path, "target/avx3", "avx2", "avx512_vnni", "x86_64_v2", "arm64")


def test_bad_mode_lists_choices(tmp_path):
    result = run_cli("-m", "pipeline", "mode=int3", f"artifacts_dir={tmp_path}")
    assert_clean_failure(result, tmp_path, "mode/int3", "dynamic", "static")


@pytest.mark.parametrize("problem", ["missing", "empty", "config_without_weights"])
def test_bad_model_path(tmp_path, problem):
    model = tmp_path / "model"
    if problem != "missing":
        model.mkdir()
    if problem == "config_without_weights":
        (model / "config.json").write_text("{}")
    artifacts = tmp_path / "artifacts"
    result = run_cli("-m", "pipeline", f"model.name_or_path={model}", f"artifacts_dir={artifacts}")
    expected = {"missing": "does not exist", "empty": "no config.json", "config_without_weights": "no weights"}
    assert_clean_failure(result, artifacts, "quantgate: error:", expected[problem])
    assert result.returncode == 2


def test_static_only_method_with_dynamic_mode_is_refused(tmp_path):
    result = run_cli("-m", "pipeline", "mode=dynamic", "calibration.method=entropy", f"artifacts_dir={tmp_path}")
    assert_clean_failure(result, tmp_path, "only applies to mode=static")


def test_nonpositive_sample_count_is_refused(tmp_path):
    result = run_cli("-m", "pipeline", "calibration.n_samples=0", f"artifacts_dir={tmp_path}")
    assert_clean_failure(result, tmp_path, "must both be positive")

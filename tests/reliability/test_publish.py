"""Nothing lost: a build replaces only folders quantgate built itself, and never a verified artifact with one
that failed verification unless asked."""
import json
import subprocess
import sys

import pytest

from tests.reliability.helpers import REPO, assert_user_error, published

pytestmark = pytest.mark.slow
DIGITS = ["model=digits_cnn", "mode=static", "target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"]


def build(*overrides):
    return subprocess.run([sys.executable, "-m", "pipeline", *DIGITS, *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.parametrize("kind", ["user_folder", "user_file", "symlink"])
def test_out_naming_something_of_the_users_is_refused_and_left_untouched(tmp_path, kind):
    target = tmp_path / "mine"
    if kind == "user_folder":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    elif kind == "user_file":
        target.write_text("years of work")
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = build(f"out={target}", "verify.enabled=false")
    assert_user_error(result, str(target), "quantgate")
    assert result.returncode == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if kind == "user_folder":
        assert (target / "thesis.tex").read_text() == "years of work"
    elif kind == "user_file":
        assert target.read_text() == "years of work"


def test_rebuild_that_fails_verification_keeps_the_verified_artifact(tmp_path):
    artifacts = tmp_path / "artifacts"
    first = build(f"artifacts_dir={artifacts}")
    assert first.returncode == 0, first.stderr[-2000:]
    folder = artifacts / "digits_cnn-static-avx2"
    verified_model = (folder / "model.onnx").read_bytes()
    verified_report = json.loads((folder / "verify.json").read_text())
    assert verified_report["status"] == "pass"

    again = build(f"artifacts_dir={artifacts}", "verify.max_abs_error=0", "calibration.seed=3")
    assert again.returncode == 1, again.stderr[-2000:]
    assert "still holds the previously verified build" in again.stderr and "replace_verified=true" in again.stderr
    assert (folder / "model.onnx").read_bytes() == verified_model
    assert json.loads((folder / "verify.json").read_text()) == verified_report
    assert published(artifacts) == ["digits_cnn-static-avx2"]  # the rejected build is hidden, not published

    forced = build(f"artifacts_dir={artifacts}", "verify.max_abs_error=0", "replace_verified=true")
    assert forced.returncode == 1
    assert json.loads((folder / "verify.json").read_text())["status"] == "fail"

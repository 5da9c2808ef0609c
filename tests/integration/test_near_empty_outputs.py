"""An output near zero on some inputs (tests/fixtures/near_empty.py: a text detector's probability map, ~1e-7 on
blank pages) verified as a foreign file. fp32 against itself passes on every profile (the per-sample cosine of two
such maps is rounding noise: it failed fp32 on sandybridge before issue 34); int8, which rounds blank pages to
exactly 0, passes by magnitude, and fails by cosine when near-empty samples are not told apart; a map whose blank
pages glow fails by magnitude."""
import json
import subprocess
import sys

import pytest
from tests.fixtures import near_empty
from tests.helpers.cpu import requires_emulated_python

from pipeline.errors import ExitCode
from pipeline.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_map(tmp_path_factory):
    return near_empty.build(tmp_path_factory.mktemp("near_empty"))


def verify(paths, artifact, out, *overrides):
    # every page on every profile (emulated too), so the blank ones run under QEMU as well
    result = subprocess.run([sys.executable, "-m", "pipeline.commands.verify", "--artifact", str(paths[artifact]),
                             "--reference", str(paths["fp32"]), "--inputs", str(paths["inputs"]), "--target",
                             "x86_64_v2", "--out", str(out), "verify.emulated_max_samples=8", *overrides],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result, json.loads(out.read_text())


@requires_emulated_python("SandyBridge")
def test_fp32_against_itself_passes_on_every_profile(text_map, tmp_path):
    result, report = verify(text_map, "fp32", tmp_path / "verify.json", "verify.profiles=[native,haswell,sandybridge]")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("native", "haswell", "sandybridge"):
        profile = report["profiles"][name]
        assert profile["status"] == "pass" and profile["samples"] == 8, profile["reason"]
        figures = profile["fidelity_by_output"]["probability"]
        assert figures["near_empty_samples"] == 4 and figures["near_empty_error_worst"] < 0.01
        assert list(profile["fidelity_by_output"]) == ["probability"]  # image rows are positions, not groups


def test_int8_is_judged_by_magnitude_on_blank_pages(text_map, tmp_path):
    result, report = verify(text_map, "int8", tmp_path / "verify.json", "verify.profiles=[native,haswell]")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("native", "haswell"):
        figures = report["profiles"][name]["fidelity_by_output"]["probability"]
        assert figures["near_empty_samples"] == 4 and figures["cosine_worst"] > 0.99
    result, report = verify(text_map, "int8", tmp_path / "by_cosine.json", "verify.profiles=[native]",
                            "verify.near_empty_ratio=0")
    assert result.returncode == ExitCode.FAILED  # zeros against 1e-7: cosine 0
    assert "probability: cosine worst 0.0000 < 0.95" in report["profiles"]["native"]["reason"]


def test_blank_pages_that_glow_fail_by_magnitude(text_map, tmp_path):
    result, report = verify(text_map, "lit", tmp_path / "verify.json", "verify.profiles=[native]")
    assert result.returncode == ExitCode.FAILED
    assert "probability: 4 near-empty samples (fp32 under 0.1x the output's scale" in \
        report["profiles"]["native"]["reason"]

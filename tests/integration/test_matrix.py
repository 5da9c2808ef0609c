"""A tiny release matrix through Hydra's joblib launcher: a table at the end, one failing combination tolerated."""
import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_release_multirun_survives_a_failing_combination_and_ends_with_a_table(tmp_path):
    release = tmp_path / "artifacts" / "tiny"
    # The release experiment with its sweep narrowed on the command line to 2 digits_cnn combinations,
    # one of which is refused by the build's validation (no calibration samples).
    result = run_cli("-m", "pipeline", "--multirun", "experiment=release", "hydra/launcher=joblib",
                     "model=digits_cnn", "mode=static", "target=avx2", "calibration.n_samples=48,0",
                     "verify.enabled=false", f"artifacts_dir={release}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("matrix: 2 combination(s)"):]
    assert "1 build_failed, 1 built" in table.splitlines()[0]
    assert "calibration.n_samples=0" in table and "must both be positive" in table
    matrix = json.loads((release / "matrix.json").read_text())
    assert [c["outcome"] for c in sorted(matrix["combinations"], key=lambda c: c["job"])] == ["built", "build_failed"]
    assert matrix["launcher"] == "JoblibLauncher"
    assert (release / "digits_cnn-static-avx2" / "manifest.json").is_file()
    # The signoff sees both the unverified artifact and the combination that did not build.
    from pipeline.commands.signoff import main as signoff_main
    assert signoff_main(["--release", "tiny", "--artifacts-dir", str(release), "--out", str(tmp_path / "r")]) == 1
    report = json.loads((tmp_path / "r" / "signoff.json").read_text())
    assert {(r["profile"], r["status"]) for r in report["rows"] if r["outcome"] == "failed"} == {
        ("verify", "not_verified"), ("build", "build_failed")}


def test_combinations_that_would_share_a_folder_do_not_overwrite_each_other(tmp_path):
    """calibration.seed=0,1 is not in the folder's name: the second combination is refused, the first kept."""
    release = tmp_path / "artifacts" / "seeds"
    result = run_cli("-m", "pipeline", "--multirun", "model=digits_cnn", "mode=dynamic", "target=avx2",
                     "calibration.seed=0,1", "verify.enabled=false", f"artifacts_dir={release}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    matrix = json.loads((release / "matrix.json").read_text())
    outcomes = sorted(matrix["combinations"], key=lambda c: c["job"])
    assert [c["outcome"] for c in outcomes] == ["built", "build_failed"]
    assert "differ only in calibration.seed" in outcomes[1]["reason"] and "artifacts_dir" in outcomes[1]["reason"]
    manifest = json.loads((release / "digits_cnn-dynamic-avx2" / "manifest.json").read_text())
    assert "calibration.seed=0" in manifest["build"]["config_overrides"]  # the first one's build, untouched

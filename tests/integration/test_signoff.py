"""The release signoff on small real builds: verdicts, waivers, tampering, exit codes, the HTML."""
import json
import shutil
from datetime import date, timedelta
from html.parser import HTMLParser

import pytest

from pipeline.commands.signoff import main as signoff_main
from tests.fixtures.matrix import combination, floor_waivers, write_matrix

pytestmark = pytest.mark.slow
GOOD, BAD = "digits_cnn-static-avx2", "digits_cnn-dynamic-avx2"
NO_LATENCY_LIMIT = "release.max_latency_ratio=1000"  # digits_cnn is not faster in int8: not what these tests are about


def release_with(tmp_path, digits_release, *names):
    folder = tmp_path / "artifacts" / "rc"
    for name in names:
        shutil.copytree(digits_release / name, folder / name)
    write_matrix(folder, *(combination(folder, name, ["model=digits_cnn", f"mode={name.split('-')[1]}"]) for name in names))
    return folder


def run(folder, tmp_path, *extra):
    out = tmp_path / "reports"
    if "--waivers" not in extra:  # natively verified: the floor CPU (haswell) is waived by name
        extra = (*extra, "--waivers", str(floor_waivers(tmp_path / "floor.yaml")))
    code = signoff_main(["--release", "rc", "--artifacts-dir", str(folder), "--out", str(out), *extra, NO_LATENCY_LIMIT])
    report = json.loads((out / "signoff.json").read_text()) if (out / "signoff.json").is_file() else None
    return code, report, out


def waivers(tmp_path, expires, profile="native"):
    return floor_waivers(tmp_path / "waivers.yaml", f"  - artifact: {BAD}\n    profile: {profile}\n    reason: top-1 bar "
                         f"raised on purpose\n    who: Release Manager\n    expires: {expires.isoformat()}\n")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_ready_release_writes_the_three_reports(digits_release, tmp_path):
    code, report, out = run(release_with(tmp_path, digits_release, GOOD), tmp_path)
    assert code == 0 and report["verdict"] == "ready" and not report["blocking"]
    artifact = report["artifacts"][0]
    assert artifact["name"] == GOOD and artifact["verdict"] == "ready (waived)"  # its floor CPU, by name
    assert artifact["versions"]["build"]["onnxruntime"] and artifact["versions"]["verify: native"]["onnxruntime"]
    assert {f["path"] for f in artifact["files"]} >= {"model.onnx", "reference.onnx", "heldout.npz", "verify.json"}
    assert artifact["reproduce"]["command"].endswith(f"artifacts_dir={digits_release}")
    assert artifact["latency"]["int8_p50_ms"] > 0 and artifact["coverage"]["status"]
    markdown = (out / "signoff.md").read_text()
    assert markdown.startswith("# Release rc: READY") and GOOD in markdown
    html = (out / "signoff.html").read_text()
    parser = _Tags()
    parser.feed(html)
    assert {"table", "img"} <= set(parser.tags) and "Verdict: READY" in html and GOOD in html
    # Self-contained: plots inline, nothing fetched.
    assert parser.images and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert "http://" not in html and "https://" not in html


def test_a_failing_profile_blocks_and_is_named(digits_release, tmp_path):
    code, report, out = run(release_with(tmp_path, digits_release, GOOD, BAD), tmp_path)
    assert code == 1 and report["verdict"] == "blocked"
    assert len(report["blocking"]) == 1
    assert report["blocking"][0].startswith(f"{BAD} / native: fail") and "max abs error" in report["blocking"][0]
    html = (out / "signoff.html").read_text()
    assert "Verdict: BLOCKED" in html and GOOD in html and BAD in html


def test_a_waiver_turns_the_failure_into_waived(digits_release, tmp_path):
    path = waivers(tmp_path, date.today() + timedelta(days=30))
    code, report, out = run(release_with(tmp_path, digits_release, GOOD, BAD), tmp_path, "--waivers", str(path))
    assert code == 0 and report["verdict"] == "ready"
    row = next(r for r in report["rows"] if r["artifact"] == BAD and r["profile"] == "native")
    assert row["outcome"] == "waived" and row["waiver"]["who"] == "Release Manager"
    assert report["waivers"][0]["used_by"] == [f"{BAD}/native"]
    assert "waived" in (out / "signoff.md").read_text()


def test_an_expired_waiver_blocks(digits_release, tmp_path):
    path = waivers(tmp_path, date.today() - timedelta(days=1))
    code, report, _ = run(release_with(tmp_path, digits_release, GOOD, BAD), tmp_path, "--waivers", str(path))
    assert code == 1 and report["verdict"] == "blocked"
    assert "expired" in report["blocking"][0]


def test_a_byte_changed_after_verification_blocks_and_cannot_be_waived(digits_release, tmp_path):
    folder = release_with(tmp_path, digits_release, GOOD)
    model = folder / GOOD / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - {artifact: '*', profile: '*', reason: all, who: me, expires: 2999-01-01}\n")
    code, report, _ = run(folder, tmp_path, "--waivers", str(path))
    assert code == 1 and report["verdict"] == "blocked"
    assert report["artifacts"][0]["tampered"] == ["model.onnx"]
    assert any("model.onnx changed after the build" in words for words in report["blocking"])


def test_a_combination_that_did_not_build_blocks(digits_release, tmp_path):
    folder = release_with(tmp_path, digits_release, GOOD)
    (folder / "matrix.json").write_text(json.dumps({"schema": "quantgate.matrix/1", "finished_utc": "2999-01-01T00:00:00+00:00", "combinations": [
        {"job": 1, "overrides": ["model=digits_cnn", "mode=qat"], "artifact": "digits_cnn-qat-avx2",
         "artifact_dir": str(folder / "digits_cnn-qat-avx2"), "outcome": "build_failed", "exit_code": 2,
         "reason": "something was refused", "seconds": 0.1, "finished_utc": "2999-01-01T00:00:00+00:00"}]}))
    code, report, out = run(folder, tmp_path)
    assert code == 1 and "digits_cnn-qat-avx2 / build: build_failed" in report["blocking"][0]
    assert "digits_cnn-qat-avx2" in (out / "signoff.html").read_text()


def test_usage_errors_exit_2(tmp_path, digits_release):
    assert signoff_main(["--release", "nope", "--artifacts-dir", str(tmp_path / "missing"),
                         "--out", str(tmp_path / "r")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("waivers:\n  - {artifact: x, profile: native}\n")
    assert signoff_main(["--release", "rc", "--artifacts-dir", str(digits_release), "--out", str(tmp_path / "r"),
                         "--waivers", str(bad)]) == 2


def test_verify_json_edited_to_say_pass_is_caught_from_its_own_figures(digits_release, tmp_path):
    """The verdict is recomputed from the recorded figures and limits, not read from the status field."""
    folder = release_with(tmp_path, digits_release, BAD)
    path = folder / BAD / "verify.json"
    edited = json.loads(path.read_text())
    edited["status"], edited["passed"] = "pass", True
    for profile in edited["profiles"].values():
        profile |= {"status": "pass", "requirement_met": True, "failure": None, "reason": "ran"}
    path.write_text(json.dumps(edited))
    code, report, _ = run(folder, tmp_path)
    assert code == 1 and report["verdict"] == "blocked"
    row = next(r for r in report["rows"] if r["status"] == "inconsistent")
    assert "max_abs_error" in row["reason"] and "was it edited" in row["reason"] and not row["waivable"]


def test_verify_json_of_another_build_is_stale(digits_release, tmp_path):
    folder = release_with(tmp_path, digits_release, GOOD)
    edited = json.loads((folder / GOOD / "verify.json").read_text())
    edited["manifest_sha256"] = "0" * 64
    (folder / GOOD / "verify.json").write_text(json.dumps(edited))
    code, report, _ = run(folder, tmp_path)
    assert code == 1 and any(r["status"] == "stale" and "another build" in r["reason"] for r in report["rows"])


def test_malformed_verify_json_blocks_in_words(digits_release, tmp_path):
    folder = release_with(tmp_path, digits_release, GOOD)
    (folder / GOOD / "verify.json").write_text('{"schema": "quantgate.verify/2", "status": "pass", "profiles": []}')
    code, report, _ = run(folder, tmp_path)
    row = next(r for r in report["rows"] if r["profile"] == "verify")
    assert code == 1 and row["status"] == "unreadable" and "verify again" in row["reason"]

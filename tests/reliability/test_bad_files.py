"""Damaged files a user or another tool hands to quantgate, through the real commands: manifest.json (verify),
verify.json (signoff), signoff.json (sign), and the artifact's stamp (the guard, inspect). Each is refused in
one line naming the file, the key and the fix, with the exit code of its kind; never a traceback or a pass."""
import json
import shutil
import subprocess
import sys
import zipfile

import onnx
import pytest

from pipeline.release.keys import generate_keys
from tests.fixtures.tiny_artifact import make_artifact_folder
from tests.reliability.helpers import REPO, assert_user_error, quantgate

NAME = "tiny-dynamic-x86_64_v2"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A stamped artifact folder for x86-64-v2 (any x86-64 host of the last 15 years runs it), verified natively."""
    folder = make_artifact_folder(tmp_path_factory.mktemp("built") / NAME, target="x86_64_v2")
    result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native]",
                       "verify.reference_cpu=native")
    assert (folder / "verify.json").is_file(), result.stderr[-2000:]
    return folder


@pytest.fixture
def folder(built, tmp_path):
    return shutil.copytree(built, tmp_path / "rc" / NAME)


def damage(path, case: str, key: str, value=None) -> None:
    """Write `path` back malformed: `case` is json (cut short), type (key gets `value`), missing or extra."""
    if case == "json":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
        return
    payload = json.loads(path.read_text())
    if case == "type":
        payload[key] = value
    elif case == "missing":
        del payload[key]
    else:
        payload[key] = "from a newer quantgate"
    path.write_text(json.dumps(payload))


def assert_one_line(result, code: int, *words: str) -> None:
    assert_user_error(result, *words)
    assert result.returncode == code, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]


# --- manifest.json: `quantgate verify --artifact-dir` --------------------------------------------------------
@pytest.mark.parametrize("case, key, value, words", [
    ("json", None, None, ["manifest.json", "not valid JSON", "rebuild the artifact"]),
    ("type", "files", "model.onnx", ["manifest.json", "'files'", "must be a list", "rebuild the artifact"]),
    ("type", "opset", "18", ["'opset'", "must be an integer"]),
    ("missing", "target", None, ["manifest.json", "'target'", "rebuild the artifact"]),
    ("extra", "shipped_by", None, ["manifest.json", "unknown key(s) 'shipped_by'", "rebuild the artifact"]),
])
def test_bad_manifest_json_is_refused_by_verify(folder, case, key, value, words):
    damage(folder / "manifest.json", case, key, value)
    result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native]",
                       "verify.reference_cpu=native")
    assert_one_line(result, 2, *words)


def test_a_nested_record_of_the_wrong_shape_names_its_key(folder):
    payload = json.loads((folder / "manifest.json").read_text())
    payload["files"][0]["size_bytes"] = "big"
    (folder / "manifest.json").write_text(json.dumps(payload))
    result = quantgate("verify", "--artifact-dir", str(folder))
    assert_one_line(result, 2, "'files/0/size_bytes'", "must be an integer")


# --- verify.json: `quantgate signoff` (a release is judged whole: an unreadable verify.json blocks it) ------------
@pytest.mark.parametrize("case, key, value, words", [
    ("json", None, None, ["verify.json", "not valid JSON", "verify again"]),
    ("type", "profiles", [], ["verify.json", "'profiles'", "must be an object", "verify again"]),
    ("type", "status", "passed", ["verify.json", "'status'", "'pass'", "verify again"]),
    ("missing", "status", None, ["verify.json", "'status'", "verify again"]),
    ("extra", "verdict_v3", None, ["verify.json", "unknown key(s) 'verdict_v3'", "verify again"]),
])
def test_bad_verify_json_blocks_the_signoff_in_words(folder, tmp_path, case, key, value, words):
    damage(folder / "verify.json", case, key, value)
    result = quantgate("signoff", "--release", "rc", "--artifacts-dir", str(folder.parent), "--out",
                       str(tmp_path / "reports"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    # (the release also blocks for having no matrix.json: not this test's concern)
    blocking = [line for line in result.stdout.splitlines() if line.strip().startswith(f"blocking: {NAME} /")]
    assert len(blocking) == 1 and f"{NAME} / verify: unreadable" in blocking[0], result.stdout
    for word in words:
        assert word in blocking[0], blocking[0]
    report = json.loads((tmp_path / "reports" / "signoff.json").read_text())
    assert report["verdict"] == "blocked"


# --- signoff.json: `quantgate sign` reads the release's signoff before signing anything -----------------------
@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys"))[0]


SIGNOFF = {"schema": "quantgate.signoff/1", "release": "rc", "verdict": "ready", "generated_utc": "2026-01-01T00:00:00",
           "blocking": [], "waived": [], "artifacts": [], "rows": []}


@pytest.mark.parametrize("case, key, value, words", [
    ("json", None, None, ["signoff.json", "not valid JSON", "make signoff RELEASE=rc"]),
    ("type", "blocking", "none", ["signoff.json", "'blocking'", "must be a list", "make signoff RELEASE=rc"]),
    ("type", "verdict", "READY", ["signoff.json", "'verdict'", "'ready'", "make signoff RELEASE=rc"]),
    ("missing", "verdict", None, ["signoff.json", "'verdict'", "make signoff RELEASE=rc"]),
    ("extra", "approved_by", None, ["signoff.json", "unknown key(s) 'approved_by'", "make signoff RELEASE=rc"]),
])
def test_bad_signoff_json_is_refused_by_sign(folder, tmp_path, signing_key, case, key, value, words):
    report = tmp_path / "reports"
    report.mkdir()
    (report / "signoff.json").write_text(json.dumps(SIGNOFF, indent=1))
    damage(report / "signoff.json", case, key, value)
    result = quantgate("sign", "--release", "rc", "--artifacts-dir", str(folder.parent), "--report", str(report),
                       "--key", str(signing_key))
    assert_one_line(result, 2, *words)
    assert not (folder / "model.sig").exists() and not (folder / "signoff.json").exists()


# --- the stamp: `python -m pipeline.guard FILE` (exit 3: must not be loaded) and `quantgate inspect` (exit 2) -----
def restamp(path, key: str, value: str | None) -> None:
    model = onnx.load(str(path))
    entries = [e for e in model.metadata_props if e.key != f"quantgate.{key}"]
    del model.metadata_props[:]
    model.metadata_props.extend(entries)
    if value is not None:
        model.metadata_props.add(key=f"quantgate.{key}", value=value)
    onnx.save(model, str(path))


def guard(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.guard", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("key, value, words", [
    ("required_cpu_features", '"avx512f"', ["model.onnx", "required_cpu_features must be a JSON list of CPU feature "
                                            "names", "rebuild the artifact"]),
    ("required_cpu_features", "[sse2", ["model.onnx", "required_cpu_features is not JSON", "rebuild the artifact"]),
    ("required_cpu_features", "[1, 2]", ["model.onnx", "required_cpu_features must be a JSON list"]),
    ("versions", '["1.32"]', ["model.onnx", "versions must be a JSON object", "rebuild the artifact"]),
    ("required_cpu_features", None, ["model.onnx", "lacks keys ['required_cpu_features']", "rebuild"]),
    ("schema", "2", ["model.onnx", "stamp schema is '2'"]),
])
def test_bad_stamp_is_refused_by_the_guard_and_inspect(folder, key, value, words):
    restamp(folder / "model.onnx", key, value)
    assert_one_line(guard(folder / "model.onnx", "--cpu-only"), 3, "refused", *words)
    assert "a, v, x" not in guard(folder / "model.onnx").stderr
    assert_one_line(quantgate("inspect", str(folder / "model.onnx")), 2, *words)


def test_features_no_cpu_has_are_refused_as_unknown(folder):
    restamp(folder / "model.onnx", "required_cpu_features", '["sse", "sse2", "avx1024"]')
    result = guard(folder / "model.onnx", "--cpu-only")
    assert_one_line(result, 3, "refused", "no CPU has", "avx1024", "rebuild the artifact with quantgate")
    assert "deploy on a CPU" not in result.stderr and "sse2" not in result.stderr
    assert quantgate("inspect", str(folder / "model.onnx")).returncode == 3


def test_a_stamp_key_of_a_newer_quantgate_is_kept_not_refused(folder):
    """The guard judges only what it reads; a stamp whose meaning changes gets a new `schema`."""
    restamp(folder / "model.onnx", "deployment_notes", "from a newer quantgate")
    result = guard(folder / "model.onnx", "--cpu-only")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert "from a newer quantgate" in quantgate("inspect", str(folder / "model.onnx")).stdout


def test_bad_stamp_in_a_pt2_package_is_refused(tmp_path):
    stamp = {f"quantgate.{key}": "text" for key in ("mode", "quant_format", "weight_type", "activation_type",
                                                    "per_channel", "reduce_range", "calibration", "source_model",
                                                    "opset", "config_sha256", "target_isa")}
    stamp |= {"quantgate.schema": "1", "quantgate.artifact_kind": "aoti", "quantgate.versions": '{"torch": "2.13.0"}',
              "quantgate.required_cpu_features": '["sse2"]', "quantgate.audited_cpu_features": '"avx2"'}
    package = tmp_path / "model.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("model/extra/quantgate_stamp.json", json.dumps(stamp))
    assert_one_line(guard(package, "--cpu-only"), 3, "model.pt2", "audited_cpu_features must be a JSON list")

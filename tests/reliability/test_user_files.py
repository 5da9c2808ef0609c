"""Nothing of the user's is shipped or destroyed: a file copied from a user's folder must lie inside it (no symlink
out of it: its target would be signed and published), and quantgate replaces or deletes only what it can prove it
made (a marker it wrote, never a name pattern). docs/reliability.md, "Files of the user's"."""
import contextlib
import io
import json
import os
import shutil
import subprocess

import pytest

from pipeline.cli import main
from tests.fixtures import hf_checkpoints
from tests.reliability.helpers import assert_user_error, published, quantgate


def run_here(*command: str) -> subprocess.CompletedProcess:
    """`quantgate build ...` in this process (a child would spend most of its time importing torch)."""
    errors, output = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(output):
        code = main(list(command))
    return subprocess.CompletedProcess(command, code, output.getvalue(), errors.getvalue())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-secret")
    text, data = hf_checkpoints.text_classifier(folder, steps=0)
    return text, data


@pytest.mark.parametrize("name", ["merges.txt", "vocab.txt", "config.json", "model.safetensors"])
def test_a_checkpoint_file_linking_outside_its_folder_is_refused_naming_it(tmp_path, checkpoint, name):
    source, data = checkpoint
    folder = tmp_path / "checkpoint"
    shutil.copytree(source, folder)
    secret = tmp_path / "id_rsa"
    secret.write_bytes((folder / name).read_bytes() if (folder / name).exists() else b"-----BEGIN KEY-----\n")
    (folder / name).unlink(missing_ok=True)
    os.symlink(secret, folder / name)
    result = run_here("build", "model=hf", f"model.name_or_path={folder}", "model.task=text-classification",
                      f"calibration.data_files=[{data}]", "calibration=files", f"artifacts_dir={tmp_path / 'out'}",
                      "verify.enabled=false")
    assert result.returncode == 2, result.stderr[-3000:]
    assert_user_error(result, f"{folder / name} is a symlink to {secret}, outside {folder}", "replace the link")
    assert published(tmp_path / "out") == []


def test_a_link_inside_the_folder_and_a_hub_cache_snapshot_are_accepted(tmp_path, checkpoint):
    from pipeline.builder.user_files import check_contained
    source, _ = checkpoint
    folder = tmp_path / "checkpoint"
    shutil.copytree(source, folder)
    (folder / "tokenizer.json").rename(folder / "tokenizer-real.json")
    os.symlink("tokenizer-real.json", folder / "tokenizer.json")
    assert check_contained(folder, ["tokenizer.json", "merges.txt"]) == [folder / "tokenizer.json"]
    # the hub cache's layout: snapshots/REV/file -> ../../blobs/HASH
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "blobs" / "1234").write_text("{}")
    os.symlink("../../blobs/1234", repo / "snapshots" / "abc" / "config.json")
    assert check_contained(repo / "snapshots" / "abc", ["config.json"]) == [repo / "snapshots" / "abc" / "config.json"]
    os.symlink(folder / "tokenizer-real.json", repo / "snapshots" / "abc" / "vocab.txt")
    with pytest.raises(Exception, match="outside"):
        check_contained(repo / "snapshots" / "abc", ["vocab.txt"])


# --- replacing and deleting: only what quantgate can prove it made ------------------------------------------
SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8",
         "calibration.coverage_fail=0.5", "target=avx2", "verify.enabled=false"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two different ONNX files of one name (`a/detector.onnx`, `b/detector.onnx`) and a third of another."""
    from tests.fixtures.byom import write_npz, write_onnx_model
    root = tmp_path_factory.mktemp("two")
    models = {}
    for key, name, seed in (("a", "detector.onnx", 0), ("b", "detector.onnx", 1), ("c", "counter.onnx", 2)):
        (root / key).mkdir()
        models[key] = write_onnx_model(root / key / name, seed=seed, external_data=False)
    return models, write_npz(root / "calib.npz")


def build_onnx(model, calib, *extra):
    return run_here("build", "model=onnx", "mode=dynamic", f"model.path={model}", "calibration=npz",
                    f"calibration.path={calib}",
                    *SMALL, *extra)


def test_a_build_deletes_no_folder_that_only_looks_like_its_leftovers(tmp_path, two_models):
    """`out=D/model` beside the user's own `D/.model.old-2025/`: a build removes only the leftovers it announced by
    a marker (a killed build's staging folder), never a folder by its name."""
    from pipeline.builder.leftovers import leftover_path
    home = tmp_path / "D"
    look_alikes = [home / ".model.old-2025", home / ".model.staging-mine", home / ".model.rejected-1"]
    for folder in look_alikes:
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("the user's")
    killed = leftover_path(home / "model", "staging")  # what a build killed after creating its staging folder leaves
    killed.mkdir()
    (killed / "model.onnx").write_bytes(b"half")
    models, calib = two_models
    result = build_onnx(models["a"], calib, f"out={home / 'model'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((folder / "notes.txt").read_text() == "the user's" for folder in look_alikes)
    assert not killed.exists() and not list(home.glob("*.quantgate")), sorted(p.name for p in home.iterdir())
    assert (home / "model" / "manifest.json").is_file()


def test_user_models_get_folders_named_after_them_and_another_model_is_not_replaced(tmp_path, two_models):
    models, calib = two_models
    artifacts = tmp_path / "artifacts"

    def build(model, *extra):
        return build_onnx(model, calib, f"artifacts_dir={artifacts}", *extra)

    assert build(models["a"]).returncode == 0
    assert build(models["c"]).returncode == 0
    assert published(artifacts) == ["counter-dynamic-avx2", "detector-dynamic-avx2"]
    first = (artifacts / "detector-dynamic-avx2" / "manifest.json").read_bytes()
    other = build(models["b"])  # the same file name, other weights
    assert other.returncode == 2, other.stderr[-3000:]
    assert_user_error(other, f"{artifacts / 'detector-dynamic-avx2'} holds an artifact built from another model",
                      "out=PATH", "replace=true")
    assert (artifacts / "detector-dynamic-avx2" / "manifest.json").read_bytes() == first
    assert build(models["a"]).returncode == 0  # the same model again: a rebuild replaces its own artifact
    replaced = build(models["b"], "replace=true")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert json.loads((artifacts / "detector-dynamic-avx2" / "manifest.json").read_text())["source_weights_sha256"] \
        != json.loads(first)["source_weights_sha256"]


@pytest.fixture(scope="module")
def verified(tmp_path_factory, two_models):
    """An artifact folder verified on this host (no emulator)."""
    models, calib = two_models
    artifacts = tmp_path_factory.mktemp("verified")
    result = build_onnx(models["c"], calib, f"artifacts_dir={artifacts}", "verify.enabled=true",
                        "verify.profiles=[native]", "verify.reference_cpu=native")
    assert result.returncode == 0, result.stderr[-3000:]
    return artifacts / "counter-dynamic-avx2"


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_without_verification_never_replaces_a_verified_artifact(verified, two_models):
    models, calib = two_models
    before = snapshot(verified)
    result = build_onnx(models["c"], calib, f"artifacts_dir={verified.parent}", "calibration.seed=5")
    assert result.returncode == 2, result.stderr[-3000:]
    assert_user_error(result, f"{verified} holds a verified artifact", "verify.enabled=false", "replace_verified=true")
    assert snapshot(verified) == before and published(verified.parent) == [verified.name]


@pytest.mark.parametrize("out", ["notes.txt", "model.onnx", "new.json", "symlink"])
def test_verify_out_never_overwrites_a_file_quantgate_did_not_write(verified, tmp_path, out):
    notes = tmp_path / "notes.txt"
    notes.write_text("years of work")
    target = {"notes.txt": notes, "model.onnx": verified / "model.onnx", "new.json": verified / "new.json",
              "symlink": tmp_path / "verify.json"}[out]
    if out == "symlink":
        os.symlink(notes, target)
    before = snapshot(verified)
    result = quantgate("verify", "--artifact-dir", str(verified), "--out", str(target), "verify.profiles=[native]")
    assert result.returncode == 2, result.stderr[-3000:]
    assert_user_error(result, f"cannot use {target}")
    assert notes.read_text() == "years of work" and snapshot(verified) == before


def test_verify_of_a_signed_folder_names_a_fix_that_works(verified, tmp_path):
    """Rewriting a signed folder's verify.json would break its signature (and the release would circle between
    `make signoff` and `make sign`): refused, naming --out; the fix, run, verifies and leaves the folder as it is."""
    (verified / "model.sig").write_text("{}")  # what `make sign` writes last
    try:
        before = snapshot(verified)
        refused = quantgate("verify", "--artifact-dir", str(verified), "verify.profiles=[native]",
                            "verify.reference_cpu=native")
        assert refused.returncode == 2
        assert_user_error(refused, f"{verified} is signed", "--out FILE", f"OUT=FILE")
        elsewhere = tmp_path / "verify.json"
        fixed = quantgate("verify", "--artifact-dir", str(verified), "--out", str(elsewhere), "verify.profiles=[native]",
                          "verify.reference_cpu=native")
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert json.loads(elsewhere.read_text())["status"] == "pass" and snapshot(verified) == before
    finally:
        (verified / "model.sig").unlink()


def test_audit_json_never_overwrites_a_file_quantgate_did_not_write(verified, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("years of work")
    before = snapshot(verified)
    for target in (notes, verified / "model.onnx"):
        result = quantgate("audit", str(verified), "--json", str(target))
        assert result.returncode == 2, result.stderr[-3000:]
        assert_user_error(result, f"cannot use {target}")
    assert notes.read_text() == "years of work" and snapshot(verified) == before
    report = tmp_path / "audit.json"
    first = quantgate("audit", str(verified), "--json", str(report))
    assert first.returncode in (0, 4) and report.is_file(), first.stderr[-3000:]
    assert quantgate("audit", str(verified), "--json", str(report)).returncode == first.returncode  # its own report


def test_onnx_external_data_linking_outside_its_folder_and_a_users_lock_named_file_are_refused(tmp_path, two_models):
    from tests.fixtures.byom import write_onnx_model
    _, calib = two_models
    (tmp_path / "m").mkdir()
    model = write_onnx_model(tmp_path / "m" / "detector.onnx")
    data = next(p for p in (tmp_path / "m").iterdir() if p != model)
    secret = tmp_path / "secret.bin"
    data.rename(secret)
    os.symlink(secret, data)
    linked = build_onnx(model, calib, f"artifacts_dir={tmp_path / 'a'}")
    assert linked.returncode == 2 and "symbolic link" in linked.stderr, linked.stderr[-3000:]
    assert published(tmp_path / "a") == []
    home = tmp_path / "D"
    home.mkdir()
    (home / ".model.lock").write_text("my notes")  # only named like quantgate's lock
    locked = build_onnx(two_models[0]["a"], calib, f"out={home / 'model'}")
    assert locked.returncode == 2
    assert_user_error(locked, f"{home / '.model.lock'} exists and is not quantgate's lock file")
    assert (home / ".model.lock").read_text() == "my notes"


def test_a_damaged_verify_json_in_an_artifact_folder_is_replaced_by_verify_again(verified):
    """The signoff's advice for an unreadable verify.json, "verify again", works: the folder's own report file is
    quantgate's by its place, whatever it holds now."""
    (verified / "verify.json").write_text("{cut short")
    result = quantgate("verify", "--artifact-dir", str(verified), "verify.profiles=[native]",
                       "verify.reference_cpu=native")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((verified / "verify.json").read_text())["status"] == "pass"

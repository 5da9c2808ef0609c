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
from tests.reliability.helpers import DIGITS, assert_user_error, published, quantgate


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
    from pipeline.build.user_files import check_contained
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

"""Same config, two checkouts in different folders, same bytes (issue 19).

The repository's code and config are copied into tmp_path (another absolute path than this
checkout) and the same build runs there and here, each as `python -m pipeline` from its own folder
(cwd first on sys.path, so each imports its own copy of the code; checked), with its own artifacts
folder. verify.enabled=false and small samples keep it cheap.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.builder import reproducible
from tests.conftest import REPO

pytestmark = pytest.mark.slow
CODE = ("pipeline/", "calibration/", "conf/", "pyproject.toml")  # what a build imports and composes
BUILDS = {
    "digits_cnn-static-avx2": ["model=digits_cnn", "mode=static", "target=avx2", "model.train_steps=100"],
    "minilm-dynamic-avx2": ["model=minilm", "mode=dynamic", "target=avx2", "calibration.n_samples=16",
                            "calibration.n_validation=8", "calibration.n_heldout=4"],
}
COMMON = ["verify.enabled=false", "verify.build_gate=false"]


def _tracked_code(repo: Path) -> list[str]:
    """The repository's code and config files (tracked, or new and not ignored): not its data or tests."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if name.startswith(CODE) and (repo / name).is_file()]


def _env() -> dict:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("PYTHONPATH", None)  # each checkout imports its own code: cwd first on sys.path
    return env


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_checkouts(tmp_path_factory):
    """{checkout: {artifact name: folder}} for this checkout and a copy elsewhere, all builds run at once."""
    copy = tmp_path_factory.mktemp("elsewhere") / "quantgate-copy"
    for name in _tracked_code(REPO):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    which = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=copy,
                           env=_env(), capture_output=True, text=True, check=True).stdout.strip()
    assert Path(which).resolve() == (copy / "pipeline" / "__init__.py").resolve(), which
    jobs, folders = [], {}
    for checkout in (REPO, copy):
        artifacts = tmp_path_factory.mktemp("artifacts")
        for name, overrides in BUILDS.items():
            command = [sys.executable, "-m", "pipeline", *overrides, *COMMON, f"artifacts_dir={artifacts}"]
            jobs.append((name, subprocess.Popen(command, cwd=checkout, env=_env(), stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True)))
            folders.setdefault(checkout, {})[name] = artifacts / name
    for name, job in jobs:
        output, _ = job.communicate(timeout=1800)
        assert job.returncode == 0, f"{name}: {output[-3000:]}"
    return folders[REPO], folders[copy], copy


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_same_config_in_another_folder_gives_the_same_bytes(two_checkouts, name):
    here, there, _ = two_checkouts
    for artifact in ("model.onnx", "reference.onnx"):
        assert _sha256(here[name] / artifact) == _sha256(there[name] / artifact), f"{name}/{artifact} differs"
    # Everything else the folder publishes too (the debug files included); manifest.json says where.
    published = {p.relative_to(here[name]).as_posix() for p in reproducible.published_files(here[name])}
    assert published == {p.relative_to(there[name]).as_posix() for p in reproducible.published_files(there[name])}
    assert {"debug/reference.nodes.json", "debug/model.nodes.json"} <= published
    differing = [f for f in sorted(published) if _sha256(here[name] / f) != _sha256(there[name] / f)]
    assert differing == [], differing


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_no_published_file_names_either_checkout(two_checkouts, name):
    here, there, copy = two_checkouts
    roots = (str(REPO), str(copy), str(here[name].parent), str(there[name].parent))
    assert reproducible.host_paths_in_folder(here[name], roots) == {}
    assert reproducible.host_paths_in_folder(there[name], roots) == {}


def test_inspect_shows_which_source_files_a_node_came_from(two_checkouts):
    from tests.conftest import run_cli
    here, _, _ = two_checkouts
    # The dynamo exporter records each node's source (the fused transformer export, TorchScript, does not).
    model = here["digits_cnn-static-avx2"] / "model.onnx"
    nodes = reproducible.load_sidecar(model)["nodes"]
    # A node the quantizer made: derived from the exported Conv, sourced in torch's conv module.
    name = next(n for n, e in nodes.items() if e["op_type"] == "QuantizeLinear"
                and e["derived_from"].startswith("node_conv2d"))
    assert "site-packages/torch/nn/modules/conv.py" in nodes[name]["source_files"], nodes[name]
    shown = run_cli("-m", "pipeline.cli", "inspect", str(model), "--node", name)
    assert shown.returncode == 0, shown.stderr
    assert "site-packages/torch/nn/modules/conv.py" in shown.stdout
    assert f"derived from   {nodes[name]['derived_from']}" in shown.stdout and str(REPO) not in shown.stdout

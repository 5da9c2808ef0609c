"""quantgate installed from its wheel (`make wheel`), run outside the checkout with the checkout nowhere on sys.path:
the `quantgate` command and `python -m pipeline` compose the same config as the checkout, build the same artifact
bytes with the same config sha256, verify it (its children, one under QEMU, import the installed package),
inspect it, and write provenance that names the package version, not a commit.

The venv under test is fresh (`python -m venv --without-pip`) and gets the wheel with `pip install --no-deps`; its
dependencies come from the venv running the tests through a .pth that lists their folder (a plain path line: the
.pth files in that folder, among them the one that points at the checkout, are not read)."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fixtures.byom import write_npz, write_onnx_model

pytestmark = pytest.mark.slow

BUILD = ["model=onnx", "mode=static", "target=x86_64_v2", "model.path=byom/detector.onnx", "calibration=npz",
         "calibration.path=byom/calib.npz", "verify.enabled=false"]
ARTIFACT = Path("artifacts/detector-static-x86_64_v2")  # named after the model file
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def run(*command, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, env without the checkout, a working folder outside it with byom/ in it)."""
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    built = run("make", "--no-print-directory", "wheel", f"DIST={dist}", f"PYTHON={sys.executable}", cwd=REPO)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob(f"quantgate-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data = {f"pipeline/_conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    data |= {f"pipeline/_schemas/{p.name}" for p in (REPO / "docs" / "schemas").glob("*.schema.json")}
    assert data <= names, sorted(data - names)

    venv = root / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root).returncode == 0
    site = Path(run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=root).stdout.strip())
    (site / "quantgate-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
                    "--no-index", wheel, cwd=root)
    assert installed.returncode == 0, installed.stderr

    work = root / "work"
    (work / "byom").mkdir(parents=True)
    write_onnx_model(work / "byom" / "detector.onnx")
    write_npz(work / "byom" / "calib.npz")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env["XDG_CACHE_HOME"] = str(root / "cache")  # code_root()'s folder of symlinks
    return venv / "bin", env, work


def test_the_installed_package_runs_without_the_checkout(installed):
    bin_dir, env, work = installed
    where = run(bin_dir / "python", "-c", "import json, sys, pipeline, pipeline.paths as p; print(json.dumps("
                "[pipeline.__file__, sys.path, p.CHECKOUT, str(p.CONF_DIR), str(p.SCHEMAS_DIR), str(p.code_root())]))",
                cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    module, path, checkout, conf, schemas, code = json.loads(where.stdout)
    site = Path(module).parent.parent
    assert site.is_relative_to(bin_dir.parent) and checkout is None
    assert str(REPO) not in {str(Path(p).resolve()) for p in path if p}  # '' is `work`
    assert (Path(conf) / "config.yaml").is_file() and Path(conf).is_relative_to(site)
    assert (Path(schemas) / "manifest.schema.json").is_file()
    # children of another interpreter (runtime venvs, the Arm guest) see quantgate's packages, not site-packages
    assert sorted(p.name for p in Path(code).iterdir()) == ["calibration", "pipeline"]
    assert (Path(code) / "pipeline").resolve() == site / "pipeline"

    helped = run(bin_dir / "quantgate", "--help", cwd=work, env=env)
    assert helped.returncode == 0 and "usage: quantgate COMMAND" in helped.stdout, helped.stderr
    # The composed config is the checkout's: nothing in it points at where the code lies.
    in_checkout = run(sys.executable, "-m", "pipeline.cli", "build", "--cfg", "job", cwd=REPO)
    assert in_checkout.returncode == 0, in_checkout.stderr
    for command in ([bin_dir / "quantgate", "build"], [bin_dir / "python", "-m", "pipeline"]):
        composed = run(*command, "--cfg", "job", cwd=work, env=env)
        assert composed.returncode == 0, composed.stderr
        assert composed.stdout == in_checkout.stdout


@pytest.fixture(scope="module")
def built(installed):
    """The installed quantgate's build of byom/detector.onnx: work/ARTIFACT."""
    bin_dir, env, work = installed
    result = run(bin_dir / "quantgate", "build", *BUILD, cwd=work, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / ARTIFACT


def test_an_installed_build_is_the_checkouts_and_its_provenance_names_the_version(installed, built, tmp_path):
    bin_dir, env, work = installed
    # The same build from the checkout (its venv, PYTHONPATH): the same bytes and config sha256.
    shutil.copytree(work / "byom", tmp_path / "byom")
    reference = run(sys.executable, "-m", "pipeline.cli", "build", *BUILD, cwd=tmp_path,
                    env={**os.environ, "PYTHONPATH": str(REPO)})
    assert reference.returncode == 0, reference.stdout + reference.stderr
    ours, theirs = (json.loads((base / ARTIFACT / "manifest.json").read_text()) for base in (work, tmp_path))
    assert ours["config_sha256"] == theirs["config_sha256"]
    assert (work / ARTIFACT / "model.onnx").read_bytes() == (tmp_path / ARTIFACT / "model.onnx").read_bytes()

    shown = run(bin_dir / "quantgate", "inspect", ARTIFACT / "model.onnx", cwd=work, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "quantgate.target_isa             x86_64_v2" in shown.stdout and "this host: CAN run it" in shown.stdout

    keys = run(bin_dir / "quantgate", "keys", "--out", "keys", cwd=work, env=env)
    assert keys.returncode == 0, keys.stderr
    signed = run(bin_dir / "python", "-c", "from pathlib import Path\n"
                 "from pipeline.release.keys import load_signing_key\n"
                 "from pipeline.release.provenance import write_provenance\n"
                 f"write_provenance(Path('{ARTIFACT}'), load_signing_key(Path('keys/quantgate.key'), "
                 "Path('keys/quantgate.crt')))", cwd=work, env=env)
    assert signed.returncode == 0, signed.stderr
    checked = run(bin_dir / "quantgate", "provenance", ARTIFACT, "--public-key", "keys/quantgate.pub", cwd=work,
                  env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"from      quantgate: pkg:pypi/quantgate@{VERSION}" in checked.stdout
    assert "matches the build's config_sha256" in checked.stdout
    statement = run(bin_dir / "quantgate", "provenance", ARTIFACT, "--json", cwd=work, env=env)
    payload, _ = json.JSONDecoder().raw_decode(statement.stdout)
    [quantgate] = [d for d in payload["predicate"]["buildDefinition"]["resolvedDependencies"]
                   if d["name"] == "quantgate"]
    assert quantgate["uri"] == f"pkg:pypi/quantgate@{VERSION}" and "digest" not in quantgate
    assert quantgate["annotations"]["note"] == "not a git checkout (an installed quantgate)"


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-x86_64 (apt-get install qemu-user)")
def test_an_installed_quantgate_verifies_under_qemu_and_natively(installed, built, tmp_path):
    """Its children (Nehalem under QEMU, native) import the installed quantgate, from paths.code_root()."""
    bin_dir, env, _ = installed
    folder = shutil.copytree(built, tmp_path / built.name)
    verified = run(bin_dir / "quantgate", "verify", "--artifact-dir", folder, "verify.emulated_max_samples=2",
                   "verify.latency_repeats=1", cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"})
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads((folder / "verify.json").read_text())
    assert {name: profile["status"] for name, profile in report["profiles"].items()} == \
        {"nehalem": "pass", "native": "pass"}

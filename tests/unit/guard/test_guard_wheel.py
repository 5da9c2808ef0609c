"""`make guard-wheel` builds the guard alone; installed into a fresh venv that holds no numpy, onnx, onnxruntime
or torch (nor this repository), it refuses and accepts exactly as the in-tree guard does."""
import os
import subprocess
import sys
import zipfile

from tests.conftest import REPO
from tests.fixtures.tiny_artifact import make_standalone
from tests.unit.guard.test_guard_package import ARM, stamped_package

# The venv's interpreter must not find this checkout (no PYTHONPATH, run outside it).
CLEAN_ENV = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}

API_CHECK = """
import sys
import quantgate_guard as guard
refused_onnx, ok_onnx, refused_pt2, ok_pt2 = sys.argv[1:]
assert guard.ensure_can_run(ok_onnx, check_runtime=False).can_run
assert guard.ensure_can_run(ok_pt2, check_runtime=False).can_run
for path in (refused_onnx, refused_pt2):
    try:
        guard.ensure_can_run(path, check_runtime=False)
        raise SystemExit(f"{path} was not refused")
    except guard.ArtifactRefused as error:
        assert "this CPU lacks: asimd" in str(error), error
for open_it in (lambda: guard.open_session(ok_onnx), lambda: guard.load_package(ok_pt2)):
    try:  # the runtime itself is missing here: refused in words, nothing imported
        open_it()
        raise SystemExit("opened without a runtime")
    except guard.ArtifactRefused as error:
        assert "is not installed" in str(error), error
try:
    guard.ensure_can_run(ok_onnx, public_key="quantgate.pub")
    raise SystemExit("a signature check without model-signing")
except guard.SignatureCheckUnavailable as error:
    assert "pip install 'quantgate-guard[signing]'" in str(error), error
print("api ok")
"""


def run(*command, **kwargs):
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=300, **kwargs)


def test_the_guard_wheel_installs_alone_and_judges_like_the_in_tree_guard(tmp_path):
    dist = tmp_path / "dist"
    built = run("make", "--no-print-directory", "guard-wheel", f"DIST={dist}", cwd=REPO)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob("quantgate_guard-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        modules = sorted(name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info"))
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert modules == sorted(f"quantgate_guard/{p.name}" for p in (REPO / "pipeline" / "guard").glob("*.py"))
    assert "quantgate-guard = quantgate_guard.cli:main" in entry_points
    assert not (REPO / "pipeline" / "guard" / "build").exists()  # built from a copy: nothing left in the tree

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    assert installed.returncode == 0, installed.stderr
    absent = run(python, "-c", "import importlib.util as u; print([m for m in ('numpy', 'onnx', 'onnxruntime', "
                 "'torch', 'hydra', 'model_signing', 'pipeline') if u.find_spec(m)])", cwd=tmp_path, env=CLEAN_ENV)
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr

    refused, accepted = tmp_path / "refused", tmp_path / "accepted"
    make_standalone(refused, target="arm64")  # asimd, fp, ...: no x86-64 CPU has them
    make_standalone(accepted, target="x86_64")  # sse, sse2: every x86-64 CPU has them
    refused_pt2 = stamped_package(refused, target_isa="arm64", required_cpu_features=ARM)
    ok_pt2 = stamped_package(accepted, target_isa="x86_64", required_cpu_features='["sse", "sse2"]',
                             audited_cpu_features="[]")
    # --cpu-only: the same question for both (the in-tree guard has onnxruntime and torch, this venv has neither).
    for path, code in [(refused / "model.onnx", 3), (refused_pt2, 3), (refused, 3), (accepted / "model.onnx", 0),
                       (ok_pt2, 0), (tmp_path / "missing.onnx", 2), (accepted / "heldout.npz", 2)]:
        alone = run(python, "-m", "quantgate_guard", path, "--cpu-only", cwd=tmp_path, env=CLEAN_ENV)
        in_tree = run(sys.executable, "-m", "pipeline.guard", path, "--cpu-only", cwd=REPO)
        for result in (alone, in_tree):
            assert result.returncode == code, (path, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr and len((result.stdout + result.stderr).splitlines()) == 1
        assert (alone.stdout, alone.stderr) == (in_tree.stdout, in_tree.stderr)
    # Without --cpu-only the runtime counts too, and this venv has none: refused, where the in-tree guard
    # (onnxruntime installed) accepts.
    for path in (refused / "model.onnx", refused_pt2):
        assert run(python, "-m", "quantgate_guard", path, cwd=tmp_path, env=CLEAN_ENV).returncode == 3
    no_runtime = run(venv / "bin" / "quantgate-guard", accepted / "model.onnx", cwd=tmp_path, env=CLEAN_ENV)
    assert no_runtime.returncode == 3 and "onnxruntime is not installed" in no_runtime.stderr, no_runtime.stderr
    assert run(sys.executable, "-m", "pipeline.guard", accepted / "model.onnx", cwd=REPO).returncode == 0
    api = run(python, "-c", API_CHECK, refused / "model.onnx", accepted / "model.onnx", refused_pt2, ok_pt2,
              cwd=tmp_path, env=CLEAN_ENV)
    assert api.returncode == 0 and api.stdout.strip() == "api ok", api.stdout + api.stderr

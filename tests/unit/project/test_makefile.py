"""The Makefile's conventions: `make help`, variables the environment decides, no apt-get where no emulator
is needed, and `make verify` finding a build's folder and target. Dry runs (`make -n`): nothing is built."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from pipeline.paths import PROJECT_ROOT


def make(*args: str, **env: str) -> str:
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_lists_every_target_and_the_variables():
    text = make("help")
    targets = re.findall(r"^([a-z][a-z-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    assert len(targets) > 15
    missing = [t for t in targets if not re.search(rf"\bmake {re.escape(t)}\b|\b{re.escape(t)}\b", text)]
    assert not missing, f"make help does not mention {missing}"
    for variable in ("TARGET", "MODE", "MODEL", "RUNTIME", "ARGS", "ARTIFACT_DIR", "RELEASE", "HF_HUB_OFFLINE"):
        assert re.search(rf"^  {variable} +", text, re.M), variable
    assert "help" in make()  # the default goal


def test_the_environment_decides_hub_access():
    assert re.search(r"^  HF_HUB_OFFLINE +0$", make("help", HF_HUB_OFFLINE="0"), re.M)
    assert re.search(r"^  HF_HUB_OFFLINE +1$", make("help", HF_HUB_OFFLINE="1"), re.M)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env=env, timeout=120)
    assert re.search(r"^  HF_HUB_OFFLINE +1$", result.stdout, re.M)  # offline unless told otherwise


@pytest.mark.parametrize("target", ["inspect", "signoff", "bench", "audit", "keys", "provenance"])
def test_targets_without_an_emulator_run_no_apt_get(target):
    assert "apt-get" not in make("-n", target)


@pytest.mark.parametrize("target", ["quantize", "verify", "matrix", "test"])
def test_targets_that_emulate_install_their_tools(target):
    # -n prints the recipe of system-tools: it checks each tool and installs only what is missing.
    assert "command -v qemu-x86_64" in make("-n", target)


def test_verify_takes_the_target_from_a_given_folder_and_names_runtime_folders():
    given = make("-n", "verify", "ARTIFACT_DIR=artifacts/some-build")
    assert "--artifact-dir artifacts/some-build" in given and "--target" not in given
    assert "--artifact-dir artifacts/minilm-dynamic-avx512-ort116 --target avx512" in \
        make("-n", "verify", "TARGET=avx512", "RUNTIME=ort116")
    # pip lines: the folder quantgate itself names (pipeline/builder/task.py), never the default build's.
    custom = make("-n", "verify", "RUNTIME=onnxruntime==1.17.3 numpy<2")
    assert re.search(r"--artifact-dir artifacts/minilm-dynamic-avx2-custom-[0-9a-f]{8} ", custom)


def test_models_users_bring_default_to_mode_auto_and_an_explicit_mode_wins():
    # conf/model/{onnx,torch,hf}.yaml default to mode=auto; the artifact folder carries the mode asked for
    assert "mode=auto" in make("-n", "quantize", "MODEL=onnx")
    assert re.search(r"^  ARTIFACT_DIR +artifacts/torch-auto-avx2$", make("help", "MODEL=torch"), re.M)
    assert "mode=static" in make("-n", "quantize", "MODEL=hf", "MODE=static")
    assert "mode=dynamic" in make("-n", "quantize")  # the built-in models as before


def test_verify_of_a_users_model_finds_the_folder_quantgate_names_after_it():
    """MODEL=onnx, hf, torch: the folder is named after the model (pipeline/builder/task.py: artifact_name), so the
    Makefile asks quantgate for it, as `quantgate build --artifact-folder` prints it."""
    onnx = make("-n", "verify", "MODEL=onnx", "MODE=static", "ARGS=model.path=models/detector.onnx")
    assert "--artifact-dir artifacts/detector-static-avx2 " in onnx
    torch = make("-n", "verify", "MODEL=torch", "ARGS=model.factory=my_models:make_net")
    assert "--artifact-dir artifacts/make_net-auto-avx2 " in torch

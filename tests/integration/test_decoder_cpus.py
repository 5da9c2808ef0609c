"""A decoder verified on CPUs beyond x86 emulation, and refused below its floor: int4 Qwen2 (the second family of
tests/fixtures/tiny_decoder.py) under qemu-aarch64 (the arm64 sysroot and aarch64 wheels of
pipeline/runtimes/arm.py), on an SSH lab host (a real sshd on 127.0.0.1, as tests/integration/test_ssh_hosts.py),
each compared with the same file on the reference CPU under verify.max_cpu_kl_divergence; and under
`qemu-x86_64 -cpu SandyBridge`, which lacks the AVX2 its stamp requires, refused by the guard (exit 3)."""
import glob
import json
import shutil

import pytest
from tests.conftest import run_cli
from tests.helpers.cpu import requires_host_features
from tests.integration.test_ssh_hosts import REMOTE_TMP, server, write_profile  # noqa: F401 (a fixture)

from pipeline.errors import ExitCode
from pipeline.guard import EXIT_REFUSED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    from tests.fixtures.tiny_decoder import build
    return build(tmp_path_factory.mktemp("tiny-qwen2") / "tiny-qwen2", family="qwen2")


def build_int4(checkpoint, artifacts, target: str, *overrides: str):
    done = run_cli("-m", "pipeline.cli", "build", "model=hf", "model.task=text-generation", "mode=int4",
                   f"target={target}", f"model.name_or_path={checkpoint}", f"artifacts_dir={artifacts}",
                   "calibration.n_heldout=4", "verify.emulated_max_samples=1", "verify.reference_cpu=native",
                   *overrides)
    return done, artifacts / f"tiny-qwen2-int4-{target}"


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-aarch64 (apt-get install qemu-user)")
def test_an_arm64_decoder_is_verified_under_qemu_aarch64_against_the_reference_cpu(qwen2, tmp_path):
    done, folder = build_int4(qwen2, tmp_path, "arm64", "verify.profiles=[cortex-a72]")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    report = json.loads((folder / "verify.json").read_text())
    a72 = report["profiles"]["cortex-a72"]
    assert report["status"] == "pass" and a72["status"] == "pass" and a72["requirement_met"], a72["reason"]
    assert "qemu-aarch64 -cpu cortex-a72 -L" in a72["command"] and a72["samples"] == 1
    assert a72["fidelity"]["kl_divergence"] <= report["settings"]["max_kl_divergence"]
    comparison = a72["cpu_comparison"]  # the same file on this host (x86, its own kernels) as the reference CPU
    assert comparison["reference_cpu"] == report["reference_cpu"]["cpu"] == "native"
    assert 0 < comparison["max_abs_logit_difference"] < 1  # Arm's NEON kernels are not x86's: close, not equal
    assert comparison["kl_divergence"] <= report["settings"]["max_cpu_kl_divergence"]


def test_per_cpu_numerics_over_budget_fail_in_words_and_a_cpu_below_the_floor_is_refused(qwen2, tmp_path):
    done, folder = build_int4(qwen2, tmp_path, "avx2", "verify.enabled=false")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    # The reference CPU SandyBridge (no AVX2): MatMulNBits falls back to fp32 activations there, so the Haswell run
    # (int8 activations) differs from it on every host (both emulated): measured KL 2.3e-5, over this budget.
    done = run_cli("-m", "pipeline.cli", "verify", "--artifact-dir", str(folder), "verify.reference_cpu=sandybridge",
                   "verify.profiles=[haswell,sandybridge]", "verify.emulated_max_samples=1",
                   "verify.max_cpu_kl_divergence=1e-6")
    assert done.returncode == ExitCode.FAILED, done.stdout + done.stderr
    report = json.loads((folder / "verify.json").read_text())
    haswell, sandybridge = report["profiles"]["haswell"], report["profiles"]["sandybridge"]
    assert haswell["status"] == "fail" and haswell["failure"] == "cpu_numerics"
    figure = f"{haswell['cpu_comparison']['kl_divergence']:.2g}"
    assert f"reference CPU sandybridge by KL {figure}" in haswell["reason"]
    assert "verify.max_cpu_kl_divergence" in haswell["reason"]
    # Stamped for avx2 (MatMulNBits' int8-activation kernels: AVX2 + FMA): SandyBridge has neither, and the guard
    # in the child refuses before onnxruntime is imported.
    assert sandybridge["status"] == "refused_by_guard" and sandybridge["exit_code"] == EXIT_REFUSED
    assert sandybridge["requirement_met"] and "avx2" in sandybridge["reason"]


@requires_host_features("avx2", "fma", why="the lab host is this machine, and the decoder is stamped for avx2")
def test_a_decoder_is_verified_on_an_ssh_lab_host(qwen2, tmp_path, server):  # noqa: F811
    done, folder = build_int4(qwen2, tmp_path, "avx2", "verify.enabled=false")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    profiles = write_profile(tmp_path / "profiles", server)
    before = set(glob.glob(REMOTE_TMP))
    done = run_cli("-m", "pipeline.cli", "verify", "--artifact-dir", str(folder), "verify.reference_cpu=native",
                   "verify.profiles=[native]", "verify.extra_profiles=[lab]", "verify.native_max_samples=1",
                   f"verify.cpu_profile_dirs=['{profiles}']")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    lab = json.loads((folder / "verify.json").read_text())["profiles"]["lab"]
    assert lab["status"] == "pass" and lab["requirement_met"], lab["reason"]
    assert "ssh " in lab["command"] and "pipeline.verify.child_decoder" in lab["command"]
    assert lab["host"]["machine"] == "x86_64" and "avx2" in lab["host"]["cpu_features"]
    assert lab["samples"] == 1 and lab["fidelity"]["next_token_agreement"] >= 0.8
    assert lab["cpu_comparison"]["reference_cpu"] == "native" and lab["cpu_comparison"]["kl_divergence"] < 1e-3
    assert set(glob.glob(REMOTE_TMP)) <= before  # the run's folder there is gone (others may run in parallel)

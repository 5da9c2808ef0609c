"""64-bit Arm from this x86 machine: a real arm64 sysroot and aarch64 wheels (pipeline.runtimes.arm), run by
qemu-aarch64 under Arm CPU models. The sysroot is built once per cache (about 25 s) and reused from
~/.cache/quantgate/arm64 by later sessions; each emulated child then costs about 4 s."""
import json
import os
import shutil
import stat

import pytest
from tests.fixtures.tiny_artifact import make_standalone

from pipeline.runtimes import arm
from pipeline.config import QuantgateError, compose_config
from pipeline.guard.cpuid import arm_features
from pipeline.guard import check_stamp
from pipeline.runtimes.venvs import PINNED, Runtime
from pipeline.verify import onnx as verify
from pipeline.verify import sandbox
from pipeline.verify.cpu_kinds import ChildJob, kind_of
from pipeline.isa.targets import profile, required_cpu_features

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-aarch64 (apt-get install qemu-user)")


@pytest.fixture(scope="session")
def arm_env():
    """The pinned runtime (this venv's onnxruntime and numpy, aarch64 wheels) on the arm64 sysroot."""
    if shutil.which("debootstrap") is None and not any(arm.cache_root().glob("sysroot-*/COMPLETE")):
        pytest.fail("debootstrap is missing and no arm64 sysroot is cached: `make setup` installs it")
    return arm.prepare(Runtime(PINNED))


def run_on(cpu_name, command, env, timeout=120):
    cpu = profile(cpu_name)
    run = kind_of(cpu).run(command, cpu, ChildJob(timeout, 4096, tuple(env.emulator_args)))
    return run, sandbox.classify(run)


@pytest.mark.slow
def test_arm64_artifact_passes_on_emulated_cortex_a72(arm_env, tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path, target="arm64")
    report = verify.verify_files(artifact, reference, inputs, compose_config(["target=arm64"]), tmp_path / "v.json")
    assert report["status"] == "pass", verify.format_table(report)
    a72 = json.loads((tmp_path / "v.json").read_text())["profiles"]["cortex-a72"]
    assert a72["status"] == "pass" and a72["emulated"] and a72["qemu_cpu"] == "cortex-a72"
    assert "qemu-aarch64 -cpu cortex-a72 -L" in a72["command"]
    # Numerics compared with the fp32 reference run natively on x86; the Arm child read HWCAP, not CPUID.
    assert a72["fidelity"]["cosine_worst"] > 0.99
    assert "asimd" in a72["cpu_features_seen"] and "asimddp" not in a72["cpu_features_seen"]
    assert a72["runtime"]["family"] == "aarch64" and a72["versions"]["onnxruntime"] == arm_env.limits["versions"]["onnxruntime"]


@pytest.mark.slow
def test_hwcap_differs_per_arm_cpu_model(arm_env):
    seen = {}
    for cpu in ("cortex-a72", "neoverse-n1", "a64fx", "max"):
        run, outcome = run_on(cpu, [arm_env.python, "-m", "pipeline.guard.cpuid"], arm_env)
        assert outcome.status == "pass", run.stderr_tail
        seen[cpu] = set(run.stderr_tail[-1].split())
        # What the profile promises the planner (archspec) is what the emulated CPU reports.
        assert profile(cpu).features() - {"evtstrm"} <= seen[cpu], cpu
    assert "asimddp" not in seen["cortex-a72"] and "asimddp" in seen["neoverse-n1"]
    assert "sve" in seen["a64fx"] and "sve" not in seen["neoverse-n1"]
    assert {"sve2", "i8mm"} <= seen["max"] and "sve2" not in seen["a64fx"]


@pytest.mark.slow
def test_guard_refuses_dot_product_artifact_on_cortex_a72(arm_env, tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path, target="neoverse_n1")  # stamped: needs asimddp
    cfg = compose_config(["target=arm64", "verify.profiles=[cortex-a72,neoverse-n1]"])
    report = verify.verify_files(artifact, reference, inputs, cfg, tmp_path / "v.json")
    a72, n1 = report["profiles"]["cortex-a72"], report["profiles"]["neoverse-n1"]
    assert (a72["expected"], a72["status"], a72["requirement_met"]) == ("refused_by_guard", "refused_by_guard", True)
    assert "this CPU lacks: " in a72["reason"] and "asimddp" in a72["reason"]
    assert n1["status"] == "pass" and report["status"] == "pass"


def test_missing_debootstrap_names_the_install_command(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    os.symlink(shutil.which("qemu-aarch64"), tmp_path / "bin" / "qemu-aarch64")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("QUANTGATE_ARM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(QuantgateError, match=r"apt-get install -y debootstrap"):
        arm.sysroot()
    artifact, reference, inputs = make_standalone(tmp_path / "a", target="arm64")
    report = verify.verify_files(artifact, reference, inputs, compose_config(["target=arm64"]), tmp_path / "v.json")
    a72 = report["profiles"]["cortex-a72"]
    assert a72["status"] == "not_verified" and "apt-get install -y debootstrap" in a72["reason"]
    assert report["status"] == "not_verified"


def test_failed_sysroot_build_is_named_and_leaves_nothing_complete(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "debootstrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'I: Retrieving InRelease'\necho 'E: Failed getting release file' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("QUANTGATE_ARM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(QuantgateError, match=r"debootstrap failed \(exit 1\).*Failed getting release file"):
        arm.sysroot(mirror="http://mirror.invalid/debian")
    assert not list((tmp_path / "cache").glob("*/COMPLETE")) and not list((tmp_path / "cache").glob(".*building"))


def test_mirror_comes_from_apt_sources(tmp_path):
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://ftp.example.org/debian/ bookworm main\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://deb.example.org/debian\nSuites: bookworm\nComponents: main\n")
    assert arm.apt_mirror([tmp_path / "d"]) == "http://deb.example.org/debian"
    assert arm.apt_mirror([tmp_path / "sources.list"]) == "http://ftp.example.org/debian"
    with pytest.raises(QuantgateError, match="no Debian mirror"):
        arm.apt_mirror([tmp_path / "nothing"])


def test_hwcap_bits_map_to_archspec_names_and_drive_the_guard():
    hwcap_a72 = 0b1111_1011 | 1 << 11  # fp asimd aes pmull sha1 sha2 crc32 cpuid (no evtstrm: QEMU sets none)
    features = arm_features(hwcap_a72, 0)
    assert features == set(required_cpu_features("cortex_a72"))
    assert "sve" in arm_features(1 << 22, 0) and "i8mm" in arm_features(0, 1 << 13)
    stamp = {key: "{}" for key in ("calibration", "source_model", "versions")} | {
        "schema": "1", "target_isa": "neoverse_n1", "mode": "dynamic", "quant_format": "QOperator",
        "weight_type": "int8", "activation_type": "int8", "per_channel": "true", "reduce_range": "false",
        "opset": "18", "config_sha256": "x", "required_cpu_features": json.dumps(required_cpu_features("neoverse_n1"))}
    verdict = check_stamp(stamp, features)
    assert not verdict.can_run and "asimddp" in verdict.missing_cpu_features and "evtstrm" not in verdict.missing_cpu_features

"""Injected faults: killed builds, concurrent builds, full disks, dying verification children."""
import json
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.manifest import Manifest
from tests.helpers.cpu import isa_custom_op_library, requires_host_features
from tests.reliability.helpers import DIGITS, REPO, assert_user_error, published, quantgate

pytestmark = pytest.mark.slow


def build_command(artifacts):
    return [sys.executable, "-m", "pipeline", *DIGITS, f"artifacts_dir={artifacts}"]


def assert_only_complete_folders(artifacts):
    for name in published(artifacts):
        manifest = Manifest.load(artifacts / name)  # raises if manifest.json is missing
        assert manifest.tampered_files() == [], f"{name} holds files that do not match its manifest"


@pytest.mark.parametrize("kill_after_seconds", [1.5, 4.0, 7.0])
def test_build_killed_at_random_points_leaves_nothing_that_looks_complete(tmp_path, kill_after_seconds):
    artifacts = tmp_path / "artifacts"
    process = subprocess.Popen(build_command(artifacts), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(kill_after_seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert_only_complete_folders(artifacts)
    again = subprocess.run(build_command(artifacts), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert published(artifacts) == ["digits_cnn-static-avx2"]
    assert_only_complete_folders(artifacts)
    assert not list(artifacts.glob(".*staging*")), "the next build cleans up the killed one's staging folder"


def test_two_builds_into_one_folder_one_fails_clearly(tmp_path):
    artifacts = tmp_path / "artifacts"
    first = subprocess.Popen(build_command(artifacts), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    time.sleep(0.5)
    second = subprocess.Popen(build_command(artifacts), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    results = [(p.wait(timeout=600), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [r[2][-1500:] for r in results]
    loser = next(stderr for code, _, stderr in results if code == 2)
    assert "another build" in loser and "Traceback" not in loser
    assert published(artifacts) == ["digits_cnn-static-avx2"]
    assert_only_complete_folders(artifacts)


def test_disk_full_while_writing_is_a_clear_error_with_nothing_published(tmp_path):
    artifacts = tmp_path / "artifacts"

    def small_disk():  # every file this process writes is capped at 100 kB, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(build_command(artifacts), cwd=REPO, capture_output=True, text=True, timeout=600,
                            preexec_fn=small_disk)
    assert_user_error(result, "disk full or file size limit", "Nothing was published")
    assert published(artifacts) == []
    assert not list(artifacts.glob(".*staging*"))


@pytest.fixture(scope="module")
def digits_build(tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("verified")
    result = subprocess.run(build_command(artifacts), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return artifacts / "digits_cnn-static-avx2"


def verify_json(folder, *overrides, env=None):
    result = quantgate("verify", "--artifact-dir", str(folder), *overrides, env=env)
    report = json.loads((folder / "verify.json").read_text())
    return result, report


def test_qemu_missing_means_not_verified_with_the_install_command(digits_build, tmp_path):
    bin_without_qemu = tmp_path / "bin"
    bin_without_qemu.mkdir()
    for tool in ("gcc", "cc"):
        if shutil.which(tool):
            (bin_without_qemu / tool).symlink_to(shutil.which(tool))
    result, report = verify_json(digits_build, env={"PATH": str(bin_without_qemu)})
    profiles = report["profiles"]
    assert profiles["haswell"]["status"] == "not_verified"
    assert "apt-get install" in profiles["haswell"]["reason"] and "qemu-user" in profiles["haswell"]["reason"]
    assert profiles["native"]["status"] == "pass"  # native verification still runs
    assert result.returncode != 0


def test_child_over_memory_limit_is_reported_and_verify_json_is_complete(digits_build):
    result, report = verify_json(digits_build, "verify.memory_limit_mb=60", "verify.profiles=[native,haswell]")
    for name in ("native", "haswell"):
        entry = report["profiles"][name]
        assert entry["status"] in ("crashed", "fail") and "memory" in entry["reason"].lower(), entry
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_child_past_its_timeout_is_reported_and_the_next_profile_runs(digits_build):
    result, report = verify_json(digits_build, "verify.timeout_seconds=0.05", "verify.profiles=[haswell,native]")
    assert all("time" in report["profiles"][name]["reason"].lower() for name in ("haswell", "native"))
    assert set(report["profiles"]) >= {"haswell", "native"}
    assert result.returncode != 0


@requires_host_features("avx2", why="the artifact's custom-op library is built with -mavx2 and runs natively too")
def test_unstamped_artifact_crashing_on_one_profile_does_not_stop_the_others(tmp_path):
    from tests.fixtures.tiny_artifact import make_standalone
    artifact, reference, inputs = make_standalone(tmp_path / "standalone")
    library = isa_custom_op_library(tmp_path, "avx2")  # native code built for AVX2: SIGILL on Nehalem
    out = tmp_path / "verify.json"
    result = quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                       "--target", "avx2", "--out", str(out), "verify.profiles=[nehalem,haswell,native]",
                       "verify.reference_cpu=native", f"verify.custom_op_libraries=[{library}]")
    report = json.loads(out.read_text())
    nehalem = report["profiles"]["nehalem"]
    assert nehalem["status"] == "crashed" and "SIGILL" in json.dumps(nehalem)
    assert "instruction" in nehalem["reason"] and "nehalem" in nehalem["reason"]
    assert report["profiles"]["haswell"]["status"] == "pass"
    assert report["profiles"]["native"]["status"] == "pass"
    assert "Traceback" not in result.stderr


def _processes_naming(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if text in line and "ps -eww" not in line]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_verifier_takes_its_emulator_with_it(tmp_path, how):
    from tests.fixtures.tiny_artifact import make_standalone
    artifact, reference, inputs = make_standalone(tmp_path / "standalone")
    process = subprocess.Popen([sys.executable, "-m", "pipeline.commands.verify", "--artifact", str(artifact),
                                "--reference", str(reference), "--inputs", str(inputs), "--target", "avx2",
                                "verify.profiles=[haswell]", "verify.reference_cpu=native"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(str(tmp_path) in line for line in _processes_naming("qemu-x86_64")):
        assert process.poll() is None and time.monotonic() < deadline, "the emulated run never started"
        time.sleep(0.05)
    process.send_signal(how)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(str(tmp_path) in line for line in _processes_naming("qemu-x86_64")):
        assert time.monotonic() < deadline, f"orphaned emulator: {_processes_naming('qemu-x86_64')}"
        time.sleep(0.1)


def test_build_killed_while_quantizing_leaves_no_temporary_files_behind(tmp_path):
    artifacts, temp = tmp_path / "artifacts", tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(build_command(artifacts), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**__import__("os").environ, "TMPDIR": str(temp)})
    for line in process.stderr:  # the quantizer has started writing its temporary models
        if "quantize: static" in line:
            time.sleep(0.3)
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not left_behind(temp), f"left in the system temp folder: {left_behind(temp)}"
    again = subprocess.run(build_command(artifacts), cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**__import__("os").environ, "TMPDIR": str(temp)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(artifacts.glob(".*staging*")) and not left_behind(temp)


def left_behind(temp):
    """Folders and files of any size in `temp`: the quantizer's models are tens of MB. (A third-party library
    writes a 51-byte session marker, `.ses`, there on import: not ours, and not data.)"""
    return [p for p in temp.iterdir() if p.is_dir() or p.stat().st_size > 1024]

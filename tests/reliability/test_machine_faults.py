"""Faults of the machine and the user's environment: a broken emulator on PATH, a memory limit too small
for anything, out-of-range limits, unreadable and unwritable places, a broken config file, Ctrl-C, a
model checker's rejection. Each is a clear error of its kind or a profile reported in words, never a
traceback or a verdict that blames the artifact."""
import json
import os
import signal
import subprocess
import sys

import onnx
import pytest

from tests.fixtures.tiny_artifact import make_standalone
from tests.reliability.helpers import DIGITS, REPO, assert_user_error, published, quantgate


@pytest.fixture
def standalone(tmp_path):
    return make_standalone(tmp_path / "standalone", target="avx2")


def verify_files(standalone, out, *overrides, env=None):
    artifact, reference, inputs = standalone
    return quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                     "--target", "avx2", "--out", str(out), "verify.reference_cpu=native", *overrides, env=env)


def profiles_of(out):
    return json.loads(out.read_text())["profiles"]


# --- the emulator and the memory limit are named, not the artifact -----------------------------------------
@pytest.mark.parametrize("broken", ["exits_1", "killed_by_signal"])
def test_a_broken_emulator_on_path_is_named_not_blamed_on_the_artifact(standalone, tmp_path, broken):
    fake = tmp_path / "bin" / "qemu-x86_64"
    fake.parent.mkdir()
    body = {"exits_1": 'echo "qemu: could not open the CPU model table" >&2; exit 1',
            "killed_by_signal": "kill -SEGV $$"}[broken]
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    out = tmp_path / "v.json"
    result = verify_files(standalone, out, "verify.profiles=[native,haswell,nehalem]",
                          env={"PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert "Traceback" not in result.stderr and result.returncode == 4, result.stderr[-2000:]  # not verified
    profiles = profiles_of(out)
    assert profiles["native"]["status"] == "pass"
    for name in ("haswell", "nehalem"):  # nehalem is expected to refuse: a broken emulator must not read as "the guard failed"
        assert profiles[name]["status"] == "not_verified", profiles[name]
        assert str(fake) in profiles[name]["reason"] and "reinstall" in profiles[name]["reason"]


def test_a_hanging_emulator_is_not_verified_naming_it_within_a_timeout_sized_to_the_work(standalone, tmp_path):
    """A wedged emulator: `not_verified` (exit 4) naming it, on the floor CPU and on the CPU the guard must refuse on
    (never "the guard should have refused it", exit 1); its timeout is sized by the native run's time (here scaled
    down: 2 s + 1 x the native run), not a fixed 15 minutes per profile."""
    fake = tmp_path / "bin" / "qemu-x86_64"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    out = tmp_path / "v.json"
    result = verify_files(standalone, out, "verify.profiles=[native,haswell,nehalem]",
                          "verify.startup_timeout_seconds=2", "verify.emulation_slowdown=1",
                          env={"PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert "Traceback" not in result.stderr and result.returncode == 4, result.stderr[-2000:]
    profiles = profiles_of(out)
    assert profiles["native"]["status"] == "pass"
    for name in ("haswell", "nehalem"):
        entry = profiles[name]
        assert (entry["status"], entry["failure"]) == ("not_verified", "timeout"), entry
        assert "the emulator qemu-x86_64" in entry["reason"] and "did not finish" in entry["reason"], entry
        assert "guard" not in entry["reason"] and entry["wall_seconds"] < 60


def test_the_default_timeout_is_sized_to_the_work():
    from pipeline.config import compose_config
    from pipeline.isa.targets import profile
    from pipeline.verify.planning import child_timeout
    v = compose_config(["target=avx2"]).verify
    assert v.timeout_seconds is None
    first, native, emulated = (child_timeout(v, profile("native"), None), child_timeout(v, profile("native"), 2.0),
                               child_timeout(v, profile("haswell"), 2.0))
    assert first == v.first_run_timeout_seconds and native < emulated < 900  # not 15 minutes per profile
    assert child_timeout(v, profile("haswell"), 20.0) > emulated  # more work, more time
    assert child_timeout(compose_config(["verify.timeout_seconds=30"]).verify, profile("haswell"), 2.0) == 30


@pytest.mark.slow
@pytest.mark.parametrize("profiles", ["[native]", "[native,nehalem]"])
def test_a_memory_limit_too_small_for_the_interpreter_is_named(standalone, tmp_path, profiles):
    out = tmp_path / "v.json"
    result = verify_files(standalone, out, f"verify.profiles={profiles}", "verify.memory_limit_mb=1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    for name, entry in profiles_of(out).items():
        assert entry["failure"] == "out_of_memory", entry
        assert "verify.memory_limit_mb=1 is too small" in entry["reason"], entry
        assert "runtime bug" not in entry["reason"]


@pytest.mark.parametrize("override, words", [
    ("verify.memory_limit_mb=-5", "verify.memory_limit_mb=-5 is out of range"),
    ("verify.timeout_seconds=0", "verify.timeout_seconds=0.0 is out of range"),
    ("verify.emulated_max_samples=-1", "verify.emulated_max_samples=-1 is out of range"),
    ("verify.min_cosine_worst=1.5", "at most 1"),
])
def test_out_of_range_limits_are_refused_before_any_run(standalone, tmp_path, override, words):
    result = verify_files(standalone, tmp_path / "v.json", "verify.profiles=[native]", override)
    assert_user_error(result, words)
    assert result.returncode == 2 and not (tmp_path / "v.json").exists()


def test_an_out_of_range_limit_refuses_the_build_too(tmp_path):
    result = quantgate("build", *DIGITS, "verify.memory_limit_mb=-1", f"artifacts_dir={tmp_path / 'a'}")
    assert_user_error(result, "verify.memory_limit_mb=-1 is out of range")
    assert result.returncode == 2 and published(tmp_path / "a") == []


# --- files: what the model checker rejects, places that cannot be written ---------------------------------
@pytest.mark.parametrize("damage", ["unused_terabyte_initializer", "initializer_too_short"])
def test_a_model_onnx_checker_rejects_is_refused(standalone, tmp_path, damage):
    artifact = standalone[0]
    model = onnx.load(str(artifact))
    tensor = onnx.TensorProto(name="huge", data_type=onnx.TensorProto.FLOAT, raw_data=b"\0" * 16)
    if damage == "unused_terabyte_initializer":  # onnxruntime drops it with a warning and runs
        tensor.dims.extend([1_000_000, 1_000_000])
        model.graph.initializer.append(tensor)
    else:
        used = model.graph.initializer[0]
        used.raw_data = used.raw_data[: len(used.raw_data) // 2]
    onnx.save(model, str(artifact))
    result = verify_files(standalone, tmp_path / "v.json", "verify.profiles=[native]")
    assert_user_error(result, artifact.name, "not a valid ONNX model", "onnx.checker")
    assert result.returncode == 2


@pytest.mark.parametrize("out", ["existing_folder", "under_a_file"])
def test_verify_json_that_cannot_be_written_is_a_clear_error_and_leaves_no_temporary_file(standalone, tmp_path, out):
    place = tmp_path / "place"
    if out == "existing_folder":
        place.mkdir()
        (place / "mine.txt").write_text("the user's")
        target = place
    else:
        place.write_text("the user's file")
        target = place / "verify.json"
    result = verify_files(standalone, target, "verify.profiles=[native]")
    assert_user_error(result, str(place), "cannot use")
    assert result.returncode == 2
    if out == "existing_folder":
        assert sorted(p.name for p in place.iterdir()) == ["mine.txt"]
    else:
        assert place.read_text() == "the user's file"


def mount_tmpfs(folder, options: str):
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}): needs root with CAP_SYS_ADMIN")
    return folder


@pytest.fixture
def mounts():
    mounted = []
    yield mounted
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("filesystem", ["read_only", "full"])
def test_a_build_into_a_read_only_or_full_filesystem_fails_clearly_with_nothing_published(tmp_path, mounts, filesystem):
    options = {"read_only": "ro,size=1m", "full": "size=256k"}[filesystem]
    artifacts = mount_tmpfs(tmp_path / "fs", options)
    mounts.append(artifacts)
    result = quantgate("build", *DIGITS, f"artifacts_dir={artifacts}", timeout=600)
    assert_user_error(result, {"read_only": "read-only", "full": "disk full"}[filesystem])
    assert result.returncode == 2
    assert published(artifacts) == [] and not list(artifacts.glob(".*staging*"))


# --- config files and Ctrl-C ------------------------------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    ("defaults:\n  - override /target: avx2\nmode: [unclosed\n", "is not valid YAML"),
    ("# @package _global_\nverify:\n  no_such_key: 1\n", "no_such_key"),
])
def test_a_broken_experiment_file_is_a_usage_error_naming_it(tmp_path, content, words):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(content)
    result = quantgate("build", "--config-dir", str(tmp_path / "conf"), "experiment=mine",
                       f"artifacts_dir={tmp_path / 'a'}")
    assert_user_error(result, words)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    if "YAML" in words:
        assert "mine.yaml" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train digits_cnn", "[quantgate] calibrate:"])
def test_ctrl_c_ends_a_build_with_one_line_exit_130_and_nothing_published(tmp_path, stage):
    """Ctrl-C as the build reaches a stage (training inside export; calibration, with quantize and gate to come):
    at a stage, not after some seconds, which a fast host spends finishing the whole build."""
    artifacts = tmp_path / "a"
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "build", *DIGITS, f"artifacts_dir={artifacts}"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    seen = []
    for line in process.stderr:  # tqdm's \r updates are lines here too
        seen.append(line)
        if stage in line:
            break
    assert process.poll() is None, f"the build ended before {stage!r}: " + "".join(seen)[-2000:]
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == "quantgate: interrupted"
    assert published(artifacts) == [] and not list(artifacts.glob(".*staging*"))


def test_int8_compute_is_counted_on_real_graphs(standalone):
    """The build refuses an "int8" artifact in which every compute node stayed fp32 (stamp.check_quantized)."""
    from pipeline.builder.stamp import int8_compute_nodes
    artifact, reference, _ = standalone
    assert int8_compute_nodes(onnx.load(str(reference))) == 0
    assert int8_compute_nodes(onnx.load(str(artifact))) > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_an_int8_build_in_which_nothing_was_quantized_fails(tmp_path, mode):
    """An op-type list that matches nothing in the model would otherwise publish an fp32 model stamped int8."""
    artifacts = tmp_path / "a"
    result = quantgate("build", "model=digits_cnn", f"mode={mode}", "verify.enabled=false",
                       "mode.op_types_to_quantize=[Softmax]", f"artifacts_dir={artifacts}", timeout=600)
    assert_user_error(result, "no int8 compute node", "Nothing was published")
    assert result.returncode == 2 and published(artifacts) == []


def test_a_full_disk_while_writing_verify_json_keeps_the_previous_one_and_leaves_nothing_half_written(tmp_path, mounts):
    from tests.fixtures.tiny_artifact import make_artifact_folder
    disk = mount_tmpfs(tmp_path / "disk", "size=2m")
    mounts.append(disk)
    folder = make_artifact_folder(disk / "tiny-dynamic-avx2", "avx2")
    previous = b'{"written": "by an earlier verification"}\n'
    (folder / "verify.json").write_bytes(previous)
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the filesystem to the last block
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)
    result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native]", "verify.reference_cpu=native")
    assert_user_error(result, "No space left on device", "free space", str(folder / "verify.json"))  # names the file
    assert result.returncode == 2
    assert (folder / "verify.json").read_bytes() == previous
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_a_folder_rebuilt_while_it_is_verified_gets_no_verify_json(tmp_path):
    """The rebuild happens, deterministically, when the first emulated profile starts: an emulator wrapper
    first on PATH rebuilds the folder for another target, then runs the real QEMU."""
    import shutil
    from tests.fixtures.tiny_artifact import make_artifact_folder
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (make setup installs qemu-user)")
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", "avx2")
    wrapper = tmp_path / "bin" / "qemu-x86_64"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nif [ ! -e {tmp_path}/rebuilt ]; then touch {tmp_path}/rebuilt; "
                       f"cd {REPO} && {sys.executable} -m tests.fixtures.tiny_artifact {folder} --stamp x86_64_v2; fi\n"
                       f"exec {qemu} \"$@\"\n")
    wrapper.chmod(0o755)
    result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native,haswell]",
                       "verify.reference_cpu=native", env={"PATH": f"{wrapper.parent}:{os.environ['PATH']}"})
    assert (tmp_path / "rebuilt").exists()
    assert_user_error(result, "was replaced by another build while it was being verified")
    assert result.returncode == 2 and not (folder / "verify.json").exists()

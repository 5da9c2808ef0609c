"""The verifier on real QEMU: SIGILL found on the CPU that lacks the instruction, clean guard refusals,
standalone artifacts, timeouts, signals and AVX-512 targets that cannot be verified here.

Emulated work is kept tiny (a 16-32-8 MLP, three samples): each QEMU run costs about two seconds,
most of it importing numpy and onnxruntime under emulation.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.fixtures.tiny_artifact import make_artifact_folder, make_standalone, stamp, write_fp32_mlp

from pipeline.config import compose_config
from pipeline.manifest import Manifest
from pipeline.verify import onnx as verify
from pipeline.verify import sandbox
from pipeline.verify.cpu_kinds import ChildJob, kind_of
from pipeline.verify import stage as verify_stage
from pipeline.commands import verify as verify_command
from pipeline.paths import PROJECT_ROOT
from pipeline.errors import ExitCode
from pipeline.isa.targets import profile, required_cpu_features
from pipeline.verify.fidelity import Limits, judge_output
from tests.helpers.cpu import isa_custom_op_library, isa_program, requires_host_features

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = PROJECT_ROOT

def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline.commands.verify", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def outcome_of(command, profile_name, timeout_seconds=60, memory_limit_mb=4096):
    cpu = profile(profile_name)
    run = kind_of(cpu).run(command, cpu, ChildJob(timeout_seconds, memory_limit_mb))
    return run, sandbox.classify(run)


@pytest.mark.slow
def test_avx2_program_dies_with_sigill_on_nehalem_and_runs_on_haswell(tmp_path):
    binary = isa_program(tmp_path, "avx2")

    run, outcome = outcome_of([binary], "nehalem")
    assert (outcome.status, outcome.failure, run.signal_name) == ("crashed", "sigill", "SIGILL")
    assert "executes an instruction that nehalem lacks" in outcome.reason

    run, outcome = outcome_of([binary], "haswell")
    assert (run.returncode, outcome.status) == (0, "pass")


@pytest.mark.slow
def test_guard_refuses_avx2_artifact_on_nehalem_instead_of_crashing(tmp_path):
    artifact, _, inputs = make_standalone(tmp_path, target="avx2")
    command = verify.child_command(artifact, inputs, tmp_path / "out", samples=1, threads=1)
    run, outcome = outcome_of(command, "nehalem")
    assert outcome.status == "refused_by_guard", run.stderr_tail
    assert run.returncode == 3 and run.signal_name is None
    assert "avx2" in outcome.reason and "lacks" in outcome.reason
    assert not any("TCG doesn't support" in line for line in run.stderr_tail)


@pytest.mark.slow
@requires_host_features("avx2", why="the artifact's custom-op library is built with -mavx2 and runs natively too")
def test_standalone_cli_on_artifact_built_outside_the_pipeline(tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path)  # no quantgate stamp
    # Its native code (a custom-op library built with -mavx2, as a vendor's would be) dies on Nehalem.
    library = isa_custom_op_library(tmp_path, "avx2")
    out = tmp_path / "report" / "verify.json"
    result = run_cli("--artifact", artifact, "--reference", reference, "--inputs", inputs, "--target", "avx2",
                     "--out", out, "verify.emulated_max_samples=2", "verify.reference_cpu=native",
                     f"verify.custom_op_libraries=[{library}]")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "haswell" in result.stderr and "Traceback" not in result.stderr  # progress, no crash
    report = json.loads(out.read_text())
    profiles = report["profiles"]
    assert report["passed"] and not report["artifact"]["stamped"]
    assert any("no quantgate stamp" in note for note in report["notes"])
    for name, samples in (("haswell", 2), ("native", 8)):
        assert profiles[name]["status"] == "pass" and profiles[name]["samples"] == samples
        assert profiles[name]["fidelity"]["cosine_worst"] > 0.99
        assert profiles[name]["versions"]["onnxruntime"]
        assert "pipeline.verify.child_onnx" in profiles[name]["command"]
    assert "qemu-x86_64 -cpu Haswell" in profiles["haswell"]["command"]
    assert profiles["native"]["latency"]["int8"]["p95_ms"] > 0
    assert report["latency"]["fp32"]["p50_ms"] > 0 and report["latency"]["repeats"] == 20
    # Without a stamp nothing can refuse it: its AVX2 library dies on Nehalem. Reported, not required.
    assert profiles["nehalem"]["status"] == "crashed" and profiles["nehalem"]["failure"] == "sigill"
    assert profiles["nehalem"]["required"] is False


@pytest.mark.slow
def test_run_stage_on_a_build_folder(tmp_path):
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    cfg = compose_config(["target=avx2", "verify.emulated_max_samples=1", "verify.latency_repeats=5"])
    manifest = verify_stage.run(cfg, Manifest.load(folder))
    report = json.loads((folder / "verify.json").read_text())
    assert manifest.verify_status == "pass" == report["status"], report
    statuses = {name: p["status"] for name, p in report["profiles"].items()}
    assert statuses == {"haswell": "pass", "native": "pass", "sandybridge": "refused_by_guard",
                        "nehalem": "refused_by_guard"}
    assert all(p["requirement_met"] and p["required"] for p in report["profiles"].values())


@pytest.mark.slow
def test_not_verified_for_avx512_vnni_when_host_lacks_it(tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path)
    stamp(artifact, "avx512_vnni")
    host = required_cpu_features("x86_64_v4")  # AVX-512 but no VNNI
    cfg = compose_config(["target=avx512_vnni", f"verify.assume_host_features=[{','.join(host)}]"])
    report = verify.verify_files(artifact, reference, inputs, cfg, tmp_path / "verify.json")
    native = report["profiles"]["native"]
    assert native["status"] == "not_verified" and native["required"]
    assert "avx512_vnni" in native["reason"] and "QEMU" in native["reason"]
    assert report["profiles"]["haswell"]["status"] == "refused_by_guard"
    assert report["status"] == "not_verified" and not report["passed"]
    assert verify_stage.exit_code(report["status"]) != 0


def test_timeout_kills_the_process_group_and_the_parent_continues():
    # The grandchild holds the output pipe: only killing the whole group lets the parent go on.
    run, outcome = outcome_of(["bash", "-c", "sleep 60 & wait"], "native", timeout_seconds=1)
    assert run.timed_out and run.wall_seconds < 15
    assert (outcome.status, outcome.failure) == ("not_verified", "timeout")
    assert "within 1 s" in outcome.reason and "the runtime (bash)" in outcome.reason


@pytest.mark.parametrize("code, signal_name, words", [
    ("import ctypes; ctypes.string_at(0)", "SIGSEGV", "segmentation fault"),
    ("import os; os.abort()", "SIGABRT", "aborted"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL", "out-of-memory killer"),
])
def test_each_fatal_signal_gets_its_own_words(code, signal_name, words):
    run, outcome = outcome_of([sys.executable, "-c", code], "native")
    assert (outcome.status, run.signal_name, outcome.failure) == ("crashed", signal_name, signal_name.lower())
    assert words in outcome.reason


def test_running_out_of_memory_is_named():
    run, outcome = outcome_of([sys.executable, "-c", "bytearray(3 * 1024**3)"], "native", memory_limit_mb=1024)
    assert (outcome.status, outcome.failure) == ("crashed", "out_of_memory")
    assert "1024 MB" in outcome.reason and "MemoryError" in run.stderr_tail[-1]


def test_missing_qemu_is_not_verified_with_the_fix(tmp_path, monkeypatch):
    artifact, reference, inputs = make_standalone(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # the children use absolute paths; only qemu is looked up
    cfg = compose_config(["target=avx2", "verify.profiles=[haswell]"])
    report = verify.verify_files(artifact, reference, inputs, cfg, tmp_path / "verify.json")
    assert report["profiles"]["haswell"]["status"] == "not_verified"
    assert "apt-get install qemu-user" in report["profiles"]["haswell"]["reason"]
    assert report["status"] == "not_verified"


def test_wrong_outputs_fail_on_fidelity(tmp_path):
    artifact, reference, inputs = make_standalone(tmp_path)
    write_fp32_mlp(reference, seed=7)  # a reference from other weights: the artifact no longer matches it
    result = run_cli("--artifact", artifact, "--reference", reference, "--inputs", inputs, "--target", "avx2",
                     "verify.profiles=[native]", "verify.reference_cpu=native")
    assert result.returncode == ExitCode.FAILED, result.stderr
    native = json.loads((tmp_path / "verify.json").read_text())["profiles"]["native"]
    assert (native["status"], native["failure"]) == ("fail", "fidelity")
    assert "cosine mean" in native["reason"] and native["thresholds"]["min_cosine_mean"] == 0.98


def test_classifier_fidelity_counts_agreement_and_accuracy():
    reference = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    output = np.array([[0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.6, 0.4]])
    limits = Limits(0.98, 0.95, 0.97)
    figures, problems = judge_output("logits", "logits", output, reference, None, np.array([1, 0, 1, 1]), limits, 1.0)
    assert figures["top1_agreement"] == 0.75 and figures["accuracy"] == 0.5 and figures["reference_accuracy"] == 0.75
    assert problems == ["logits: top-1 agreement 0.7500 < 0.97"]


@pytest.mark.parametrize("problem", ["missing_file", "unknown_target", "npz_lacks_input", "unknown_profile"])
def test_user_errors_are_one_line_and_exit_2(tmp_path, problem):
    artifact, reference, inputs = make_standalone(tmp_path)
    target, extra = "avx2", []
    if problem == "missing_file":
        reference = tmp_path / "nope.onnx"
    elif problem == "unknown_target":
        target = "pentium"
    elif problem == "npz_lacks_input":
        np.savez(inputs, y=np.zeros((2, 16), dtype=np.float32))
    else:
        extra = ["verify.profiles=[pentium]"]
    result = run_cli("--artifact", artifact, "--reference", reference, "--inputs", inputs, "--target", target, *extra)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert {"missing_file": "does not exist", "unknown_target": "valid targets", "npz_lacks_input": "'x'",
            "unknown_profile": "valid profiles"}[problem] in result.stderr


def test_nan_outputs_fail_instead_of_slipping_past_thresholds():
    reference = np.ones((2, 4))
    output = np.array([[1.0, np.nan, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    limits = Limits(0.98, 0.95, 0.97)
    assert judge_output("e", "vector", output, reference, None, None, limits, 1.0)[1] == \
        ["e: 1 output values are NaN or infinite"]


def test_folder_edited_after_the_build_is_refused(tmp_path, capsys):
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    np.savez(folder / "heldout.npz", x=np.zeros((2, 16), dtype=np.float32))
    assert verify_command.main(["--artifact-dir", str(folder)]) == 2
    assert "heldout.npz changed since the build" in capsys.readouterr().err

"""CPU profile kinds are runners registered by name (pipeline/verify/cpu_kinds/): the built-in ones answer for their
profiles, and a new kind is one class plus its registration. The toy kind here runs every child through a wrapper
command (a shell that notes each run in a file, then execs the child); a tiny int8 artifact is verified through it
with real onnxruntime, end to end, by the same verify_files every profile goes through."""
import json
import platform

import pytest
from tests.fixtures.tiny_artifact import make_standalone

from pipeline.config import compose_config, rules
from pipeline.isa.targets import PROFILES, CpuProfileError, load_profile, profile
from pipeline.verify.cpu_kinds import ChildJob, CpuKind, kind_of, register, unregister
from pipeline.verify.onnx import verify_files
from pipeline.verify.sandbox import ChildRun, run_local


class Wrapped(CpuKind):
    """This machine, each child run through a wrapper command: `sh -c 'echo ran >> LOG; exec "$@"'`."""

    name = "wrapped"
    required_keys = ("microarchitecture",)

    def __init__(self, log):
        self.log = log

    def where(self, cpu):
        return f"wrapped by sh, logged in {self.log.name}"

    def run(self, command, cpu, job: ChildJob) -> ChildRun:
        wrapper = ["sh", "-c", f'echo ran >> "{self.log}"; exec "$@"', "wrapper"]
        return run_local(command, cpu.name, job.timeout_seconds, job.memory_limit_mb, wrapper)


@pytest.fixture
def wrapped(tmp_path):
    kind = register(Wrapped(tmp_path / "runs.log"))
    folder = tmp_path / "cpus"
    folder.mkdir()
    (folder / "toy.yaml").write_text("kind: wrapped\nfamily: x86_64\nmicroarchitecture: x86_64_v2\n")
    yield kind, folder
    unregister("wrapped")
    PROFILES.use_extra_folders([])


def test_the_built_in_kinds_answer_for_their_profiles():
    native, haswell = profile("native"), profile("haswell")
    assert (kind_of(native).name, kind_of(native).emulated(native), kind_of(native).where(native)) == \
        ("native", False, "native")
    assert (kind_of(haswell).name, kind_of(haswell).emulated(haswell), kind_of(haswell).where(haswell)) == \
        ("qemu", True, "qemu -cpu Haswell")
    cfg = compose_config(["target=avx2"]).verify
    assert (kind_of(native).threads(native), kind_of(haswell).threads(haswell)) == (0, 1)
    assert kind_of(haswell).max_samples(haswell, cfg) == cfg.emulated_max_samples
    assert kind_of(native).latency_repeats(native, cfg) == cfg.latency_repeats
    assert kind_of(haswell).latency_repeats(haswell, cfg) == 0


def test_a_kind_nobody_registered_is_refused_when_its_profile_loads(tmp_path):
    (tmp_path / "odd.yaml").write_text("kind: wrapped\nmicroarchitecture: x86_64_v2\n")
    with pytest.raises(CpuProfileError, match="kind 'wrapped' is not one of native, qemu, ssh"):
        load_profile(tmp_path / "odd.yaml")


def test_a_registered_kind_checks_its_required_keys(wrapped, tmp_path):
    (tmp_path / "bare.yaml").write_text("kind: wrapped\n")
    with pytest.raises(CpuProfileError, match=r"missing \['microarchitecture'\]"):
        load_profile(tmp_path / "bare.yaml")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the toy profile is this x86-64 host, wrapped")
def test_an_artifact_is_verified_through_a_registered_toy_kind(wrapped, tmp_path):
    kind, folder = wrapped
    artifact, reference, inputs = make_standalone(tmp_path, target="x86_64_v2")
    cfg = compose_config(["target=x86_64_v2", f"verify.cpu_profile_dirs=['{folder}']", "verify.profiles=[toy]",
                          "verify.reference_cpu=native", "verify.latency_repeats=2"])
    rules.check_verify(cfg)
    report = verify_files(artifact, reference, inputs, cfg, tmp_path / "verify.json")

    toy = report["profiles"]["toy"]
    assert (toy["status"], toy["expected"], toy["requirement_met"]) == ("pass", "pass", True), toy["reason"]
    assert toy["command"].split(" && ", 1)[1].startswith("sh -c "), toy["command"]
    assert (toy["emulated"], toy["threads"], toy["samples"]) == (False, 0, 8)
    assert toy["guard"] and toy["fidelity"]["cosine_worst"] > 0.99 and "latency" in toy
    assert kind.log.read_text().splitlines() == ["ran"]  # the toy profile's child, and only it, ran wrapped
    assert json.loads((tmp_path / "verify.json").read_text())["status"] == report["status"] == "pass"

"""An ONNX artifact's stamp requires what onnxruntime's kernels need (pipeline.isa.targets.RUNTIME_FEATURES), not
every feature archspec lists for the target's microarchitecture. The guard (`python -m pipeline.guard`) is judged
against the feature sets of real cores without crypto or AES-NI: accepted where the kernels run, refused with the
missing feature named where they do not."""
import json
import shutil
import subprocess
import sys

import pytest

from pipeline.config import compose_config
from pipeline.guard import REQUIRED_STAMP_KEYS, check_stamp
from pipeline.isa.targets import microarchitecture_features, required_cpu_features, runtime_floor
from pipeline.paths import PROJECT_ROOT
from tests.unit.guard.test_guard import write_stamped_model

# /proc/cpuinfo as these machines show it.
RASPBERRY_PI_4 = "fp asimd evtstrm crc32 cpuid"  # BCM2711, Cortex-A72 without the Armv8 crypto extension
# Celeron J1900 (Silvermont, Bay Trail-D): SSE4.2, POPCNT, MOVBE, RDRAND; no AES-NI, no AVX (x86 says `pni` for SSE3).
CELERON_J1900 = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
                 "syscall nx rdtscp lm constant_tsc pni ssse3 cx16 sse4_1 sse4_2 movbe popcnt rdrand lahf_lm")
CRYPTO = {"aes", "pmull", "sha1", "sha2"}


def floor(target: str) -> list[str]:
    cfg = compose_config([f"target={target}"])
    return runtime_floor(cfg.target.microarchitecture, list(cfg.target.extra_features))


def stamp(target: str) -> dict[str, str]:
    values = {key: "x" for key in REQUIRED_STAMP_KEYS}
    return values | {"schema": "1", "target_isa": target, "required_cpu_features": json.dumps(floor(target)),
                     "versions": json.dumps({"onnxruntime": "1.32.0"})}


def guard(model, *args: str, emulator: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*emulator, sys.executable, "-m", "pipeline.guard", str(model), *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_each_target_requires_the_kernels_floor_and_nothing_incidental():
    assert floor("arm64") == ["asimd", "fp"]  # archspec's cortex_a72 also lists aes, pmull, sha1, sha2, crc32
    assert CRYPTO <= set(required_cpu_features("cortex_a72"))
    v2 = {"sse", "sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm"}  # numpy 2.4's baseline
    assert set(floor("x86_64_v2")) == v2
    assert set(floor("avx2")) == v2 | {"avx", "avx2", "fma", "f16c"}  # MLAS's AVX2 kernels
    avx512 = v2 | {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl"}
    assert set(floor("avx512")) == avx512 and set(floor("avx512_vnni")) == avx512 | {"avx512_vnni"}
    # a target named after a real core asks no more: its crypto and bit-manipulation features are a compiler's
    assert runtime_floor("haswell") == runtime_floor("x86_64_v3")
    assert not {"aes", "pclmulqdq", "rdrand", "movbe", "bmi1", "bmi2", "abm", "xsave"} & set(floor("avx512_vnni"))


def test_the_floor_cpus_of_every_target_still_run_and_those_below_are_still_refused():
    for target, runs, refused in (("x86_64_v2", "nehalem", None), ("avx2", "haswell", "sandybridge"),
                                  ("avx512", "skylake_avx512", "haswell"), ("arm64", "cortex_a72", None)):
        assert check_stamp(stamp(target), host_features=microarchitecture_features(runs)).can_run, target
        if refused:
            assert not check_stamp(stamp(target), host_features=microarchitecture_features(refused)).can_run, target


def test_raspberry_pi_4_without_crypto_runs_an_arm64_artifact(tmp_path):
    model = tmp_path / "model.onnx"
    write_stamped_model(model, stamp("arm64"))
    ok = guard(model, "--cpu-features", RASPBERRY_PI_4)
    assert ok.returncode == 0 and "can run the artifact built for arm64" in ok.stdout, ok.stderr
    x86 = guard(model, "--cpu-features", CELERON_J1900)
    assert x86.returncode == 3 and "this CPU lacks: asimd, fp" in x86.stderr and "64-bit Arm" in x86.stderr
    assert "Traceback" not in x86.stderr


def test_an_x86_core_without_aes_runs_x86_64_v2_and_is_refused_avx2_naming_what_it_lacks(tmp_path):
    v2, avx2 = tmp_path / "v2.onnx", tmp_path / "avx2.onnx"
    write_stamped_model(v2, stamp("x86_64_v2"))
    write_stamped_model(avx2, stamp("avx2"))
    assert guard(v2, "--cpu-features", CELERON_J1900).returncode == 0
    refused = guard(avx2, "--cpu-features", CELERON_J1900)
    assert refused.returncode == 3 and "this CPU lacks: avx, avx2, f16c, fma." in refused.stderr, refused.stderr
    haswell_without_extras = set(microarchitecture_features("haswell")) - {
        "aes", "pclmulqdq", "rdrand", "movbe", "bmi1", "bmi2", "abm", "xsave"}
    assert guard(avx2, "--cpu-features", ",".join(sorted(haswell_without_extras))).returncode == 0


QEMU = shutil.which("qemu-x86_64")


@pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (`apt-get install qemu-user`) to run the guard on an "
                                         "emulated CPU with features taken away")
def test_the_guard_on_an_emulated_avx2_cpu_without_aes_and_bmi_runs_avx2_and_refuses_without_fma(tmp_path):
    """The guard's own CPUID reader, on QEMU's Haswell with AES-NI, CLMUL, RDRAND, MOVBE and BMI taken away (as
    hypervisors mask them): accepted; the same CPU without FMA: refused, naming fma."""
    model = tmp_path / "avx2.onnx"
    write_stamped_model(model, stamp("avx2"))
    masked = "Haswell,-aes,-pclmulqdq,-rdrand,-movbe,-bmi1,-bmi2"
    ok = guard(model, "--cpu-only", emulator=[QEMU, "-cpu", masked])
    assert ok.returncode == 0, ok.stderr
    refused = guard(model, "--cpu-only", emulator=[QEMU, "-cpu", masked + ",-fma"])
    assert refused.returncode == 3 and "this CPU lacks: fma." in refused.stderr, refused.stderr

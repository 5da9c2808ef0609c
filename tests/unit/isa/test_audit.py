"""The static ISA audit on small libraries compiled here, the inductor ISA plan, the torch guard."""
import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from pipeline.isa import audit
from pipeline.guard import ArtifactRefused, StampError

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to compile a test library")

# A loop gcc vectorises with whatever -m flags it is given.
SOURCE = "void scale(float *x, int n) { for (int i = 0; i < n; i++) x[i] = x[i] * 3.0f + 1.0f; }\n"


def compile_library(tmp_path, *flags) -> str:
    source = tmp_path / "scale.c"
    source.write_text(SOURCE)
    library = tmp_path / f"libscale{'-'.join(f.strip('-') for f in flags)}.so"
    subprocess.run(["gcc", "-O3", "-shared", "-fPIC", *flags, str(source), "-o", str(library)], check=True)
    return str(library)


@needs_gcc
def test_audit_flags_avx512f_and_fails_an_avx2_target(tmp_path):
    library = compile_library(tmp_path, "-mavx512f")
    report = audit.audit_path(library)
    assert report.kind == "elf" and report.audited
    counts = report.counts()
    assert counts.get("avx512f", 0) > 0, counts
    from pipeline.isa.targets import required_cpu_features
    avx2 = required_cpu_features("x86_64_v3")
    problems = audit.check(report, avx2, "avx2")
    assert len(problems) == 1
    # Names the feature, how many instructions need it, and shows instructions with addresses.
    assert f"avx512f ({counts['avx512f']} instructions)" in problems[0]
    assert "0x" in problems[0] and "<scale>" in problems[0]
    # The same library is within avx512 (x86_64_v4).
    assert audit.check(report, required_cpu_features("x86_64_v4"), "avx512") == []


@needs_gcc
def test_audit_cli_exit_codes(tmp_path):
    avx512 = compile_library(tmp_path, "-mavx512f")
    sse = compile_library(tmp_path)  # the psABI baseline only
    over = subprocess.run([sys.executable, "-m", "pipeline.commands.audit", avx512, "--target", "avx2"],
                          capture_output=True, text=True)
    assert over.returncode == audit.EXIT_EXCEEDS, over.stdout + over.stderr
    assert "EXCEEDED by avx512f" in over.stdout
    within = subprocess.run([sys.executable, "-m", "pipeline.commands.audit", sse, "--target", "x86_64_v2",
                             "--json", str(tmp_path / "a.json")], capture_output=True, text=True)
    assert within.returncode == 0, within.stdout + within.stderr
    assert json.loads((tmp_path / "a.json").read_text())["audited_cpu_features"] == []


@needs_gcc
def test_foreign_architecture_is_reported_not_audited(tmp_path):
    """An ELF whose header says aarch64 (e_machine 183): listed, not decoded as x86, exit 4."""
    data = bytearray(open(compile_library(tmp_path), "rb").read())
    data[18:20] = (183).to_bytes(2, "little")
    foreign = tmp_path / "libforeign.so"
    foreign.write_bytes(bytes(data))
    report = audit.audit_path(foreign)
    assert not report.audited and report.libraries[0].architecture == "aarch64"
    assert "decodes x86-64 only" in report.libraries[0].reason
    result = subprocess.run(["make", "-s", "audit", f"ARTIFACT={foreign}"], cwd=audit.Path(__file__).parents[3],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "NOT AUDITED" in result.stdout and "aarch64" in result.stdout
    assert "not audited" in result.stderr


def test_onnx_and_plain_files_hold_no_native_code(tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x0a")
    assert "no native code inside" in audit.audit_path(onnx).note
    package = tmp_path / "empty.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("empty/archive_format", "pt2")
    report = audit.audit_path(package)
    assert report.kind == "pt2" and report.libraries == [] and "no native code" in report.note


@pytest.mark.parametrize("microarchitecture, extra, expected", [
    ("x86_64_v2", [], ("x86-64-v2", "", 0)),
    ("x86_64_v3", [], ("x86-64-v3", "avx2", 256)),
    ("x86_64_v4", [], ("x86-64-v4", "avx512", 512)),
    ("x86_64_v4", ["avx512_vnni"], ("x86-64-v4", "avx512_vnni", 512)),
])
def test_isa_plan_per_target(microarchitecture, extra, expected):
    from pipeline.builder.aoti import isa_plan
    from pipeline.isa.targets import required_cpu_features
    plan = isa_plan(microarchitecture, required_cpu_features(microarchitecture, extra))
    assert (plan.march, plan.vec_isa, plan.simdlen) == expected


def test_isa_plan_refuses_arm64():
    from pipeline.builder.aoti import isa_plan
    from pipeline.config import QuantgateError
    with pytest.raises(QuantgateError, match="x86-64 code only"):
        isa_plan("cortex_a72", [])


def test_pinned_isa_ignores_what_the_build_host_has():
    """On a VNNI/BF16 host inductor alone would pick `avx512 avx512_vnni` and add -mavx512bf16."""
    from torch._inductor import config, cpu_vec_isa

    from pipeline.builder.aoti import IsaPlan, pinned_isa
    with pinned_isa(IsaPlan("x86-64-v4", "avx512", 512)):
        isa = cpu_vec_isa.pick_vec_isa()
        assert str(isa) == "avx512" and config.cpp.march == "x86-64-v4"
        assert "vnni" not in isa.build_arch_flags() and "bf16" not in isa.build_arch_flags()
    with pinned_isa(IsaPlan("x86-64-v2", "", 0)):
        assert cpu_vec_isa.pick_vec_isa() is cpu_vec_isa.invalid_vec_isa
    assert config.cpp.march is None or config.cpp.march != "x86-64-v2"


def _stamped_package(tmp_path, **overrides):
    from pipeline.guard import REQUIRED_STAMP_KEYS
    from pipeline.isa.targets import required_cpu_features
    stamp = {key: "x" for key in REQUIRED_STAMP_KEYS} | {
        "schema": "1", "target_isa": "avx2", "artifact_kind": "aoti",
        "required_cpu_features": json.dumps(required_cpu_features("x86_64_v3")),
        "audited_cpu_features": json.dumps(["avx", "avx2", "bmi2"]), "versions": json.dumps({"torch": "2.13.0"})}
    stamp |= overrides
    package = tmp_path / "model.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("model/extra/quantgate_stamp.json", json.dumps({f"quantgate.{k}": v for k, v in stamp.items()}))
    return package


def test_torch_guard_refuses_a_cpu_without_avx2(tmp_path):
    from pipeline.guard.pt2 import ensure_can_run
    from pipeline.isa.targets import microarchitecture_features
    package = _stamped_package(tmp_path)
    with pytest.raises(ArtifactRefused, match=r"built for avx2 needs .*avx2.*; this CPU lacks: .*avx2"):
        ensure_can_run(package, microarchitecture_features("sandybridge"))
    assert ensure_can_run(package, microarchitecture_features("haswell")).can_run


def test_torch_guard_checks_the_audited_set_and_torch_version(tmp_path):
    from pipeline.guard.pt2 import check_package, read_package_stamp
    from pipeline.isa.targets import microarchitecture_features
    lying = read_package_stamp(_stamped_package(tmp_path, audited_cpu_features=json.dumps(["avx512f"])))
    verdict = check_package(lying, microarchitecture_features("haswell"))
    assert not verdict.can_run and "audited to need avx512f" in verdict.message()
    newer = read_package_stamp(_stamped_package(tmp_path, versions=json.dumps({"torch": "9.0.0"})))
    verdict = check_package(newer, microarchitecture_features("haswell"), torch_version="2.13.0")
    assert not verdict.can_run and "built with torch 9.0.0" in verdict.message()


def test_torch_guard_needs_a_stamp(tmp_path):
    from pipeline.guard.pt2 import ensure_can_run
    package = tmp_path / "bare.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("bare/archive_format", "pt2")
    with pytest.raises(StampError, match="carries no quantgate stamp"):
        ensure_can_run(package)

"""A profile that does not count cannot fail the verdict. An Optimum-style artifact (dynamic u8s8 at full range, per
channel, no stamp; tests/fixtures/optimum_style.py) verified for target=avx512_vnni: haswell is below the target and,
the file being unstamped, informational. There it saturates and padding moves its outputs; that is reported, with the
right cause (dynamic int8's per-batch ranges, not the attention mask), and the verdict is the target's profiles' own:
pass where this host has AVX512-VNNI, not_verified (exit 4) where it has not, never fail because of haswell."""
import json
import shutil
import subprocess
import sys

import pytest

from pipeline.config import compose_config
from pipeline.errors import ExitCode
from pipeline.isa.targets import required_cpu_features
from pipeline.paths import PROJECT_ROOT
from pipeline.verify import onnx as verify
from tests.fixtures import optimum_style
from tests.helpers.cpu import host_features

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason=(
    "needs qemu-x86_64 (`apt-get install qemu-user`): haswell, the informational profile, is emulated"))]
HASWELL_AND_NATIVE = ("verify.emulated_max_samples=3", "verify.native_max_samples=16", "verify.latency_repeats=2")


@pytest.fixture(scope="module")
def optimum_artifact(tmp_path_factory):
    return optimum_style.build(tmp_path_factory.mktemp("optimum_style"))


def test_haswell_below_the_target_is_reported_and_never_decides(optimum_artifact, tmp_path):
    artifact, reference, inputs = optimum_artifact
    cfg = compose_config(["target=avx512_vnni", *HASWELL_AND_NATIVE])
    report = verify.verify_files(artifact, reference, inputs, cfg, tmp_path / "verify.json", model_kind="embedding")
    haswell, native = report["profiles"]["haswell"], report["profiles"]["native"]
    assert not haswell["required"] and haswell["counted"] is False
    assert haswell["counted_why"].startswith("informational, never decides the verdict") and "no quantgate stamp" \
        in haswell["counted_why"]
    assert native["required"] and native["counted"] and native["counted_why"].startswith("counts toward the verdict")
    # haswell ran, and its u8s8 products saturated: off fp32 and off the exact kernels, reported in words
    assert haswell["status"] == "fail" and haswell["failure"] in ("fidelity", "cpu_numerics"), haswell["reason"]
    # padding moved haswell's outputs past the padding bounds, but within its own int8 error: the cause is named,
    # and it is not the mask (before, this alone failed the verdict as "the attention_mask is ignored")
    moved = haswell["padding"]
    assert moved["figures"]["cosine_worst"] < cfg.verify.padding_min_cosine_worst, moved
    assert moved["cause"] == "batch_ranges" and moved["within_int8_noise"] and moved["status"] == "pass", moved
    assert "dynamic int8's per-batch activation ranges" in moved["reason"] and "not the attention mask" in moved["reason"]
    assert "u8s8 saturation" in moved["reason"]
    assert report["padding"]["fp32_reference"]["status"] == "pass"
    assert report["padding"]["native_int8"]["status"] == "kept"
    assert "haswell" in report["padding"]["informational"] and "haswell" not in report["padding"]["counted"]
    # the verdict is native's alone
    if "avx512_vnni" in host_features():
        assert native["status"] == "pass" and report["status"] == "pass", native["reason"]
        assert report["padding"]["status"] == "pass"
    else:
        assert native["status"] == "not_verified" and report["status"] == "not_verified"
        assert report["padding"]["status"] == "not_verified"


def test_where_the_host_lacks_avx512_vnni_the_verdict_is_not_verified_never_fail(optimum_artifact, tmp_path):
    """This host pretends AVX-512 without VNNI (verify.assume_host_features): the required profile cannot run, haswell
    fails its own checks, and the command exits 4 (not verified), not 1."""
    artifact, reference, inputs = optimum_artifact
    no_vnni = ",".join(required_cpu_features("x86_64_v4"))
    out = tmp_path / "verify.json"
    result = subprocess.run([sys.executable, "-m", "pipeline.commands.verify", "--artifact", str(artifact), "--reference",
                             str(reference), "--inputs", str(inputs), "--target", "avx512_vnni", "--out", str(out),
                             *HASWELL_AND_NATIVE, f"verify.assume_host_features=[{no_vnni}]"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == ExitCode.NOT_VERIFIED, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "not_verified" and report["profiles"]["native"]["status"] == "not_verified"
    assert "avx512_vnni" in report["profiles"]["native"]["reason"]
    assert report["profiles"]["haswell"]["status"] == "fail" and not report["profiles"]["haswell"]["counted"]


def test_the_signoff_names_an_informational_profile_and_its_cause_without_blocking(digits_release, tmp_path):
    """A ready artifact whose verify.json also holds an informational profile that failed (as haswell's above):
    the signoff stays ready and says, in words, that the profile was not counted and why it moved."""
    from pipeline.commands.signoff import main as signoff_main
    from tests.fixtures.matrix import combination, write_matrix

    name = "digits_cnn-static-avx2"
    folder = tmp_path / "artifacts" / "rc"
    shutil.copytree(digits_release / name, folder / name)
    write_matrix(folder, combination(folder, name, ["model=digits_cnn", "mode=static"]))
    path = folder / name / "verify.json"
    payload = json.loads(path.read_text())
    cause = ("padding changes the output, but only within int8's own error; the cause is dynamic int8's per-batch "
             "activation ranges, not the attention mask")
    why = "haswell lacks avx512_vnni, but the artifact has no quantgate stamp, so no guard can refuse it"
    payload["profiles"]["haswell"] = payload["profiles"]["native"] | {  # the release verified on native only
        "cpu": "haswell", "expected": "refused_by_guard", "why": why, "required": False, "counted": False,
        "counted_why": f"informational, never decides the verdict: {why}", "status": "fail", "failure": "fidelity",
        "requirement_met": False, "reason": f"out of bounds; padding: {cause}", "latency": None}
    path.write_text(json.dumps(payload))
    out = tmp_path / "reports"
    code = signoff_main(["--release", "rc", "--artifacts-dir", str(folder), "--out", str(out),
                         "release.max_latency_ratio=1000"])
    report = json.loads((out / "signoff.json").read_text())
    assert code == 0 and report["verdict"] == "ready", report["blocking"]
    row = next(r for r in report["rows"] if r["profile"] == "haswell")
    assert row["outcome"] == "info" and "informational, never decides the verdict" in row["reason"]
    markdown = (out / "signoff.md").read_text()
    assert "per-batch activation ranges, not the attention mask" in markdown and why in markdown

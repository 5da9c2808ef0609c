"""Per-CPU numerics: an artifact that is only wrong on some CPUs fails there, in words, with the worst values.

The case is made here (tests/fixtures/cpu_numerics.py): u8 x s8 at full range saturates in AVX2's
VPMADDUBSW. Its reduce_range twin must pass everywhere. A whole-output cosine near 0.99 must not hide it.
"""
import json

import numpy as np
import pytest
from tests.fixtures import cpu_numerics
from tests.helpers.cpu import VNNI, emulated_python_runs, host_features, requires_emulated_python

from pipeline.config import compose_config
from pipeline.verify import onnx as verify
from pipeline.verify.fidelity import Limits, choose_samples, compare_cpus, judge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def saturating(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numerics")
    return cpu_numerics.build(folder, reduce_range=False), cpu_numerics.build(folder, reduce_range=True)


def verify_standalone(files, tmp_path, *overrides):
    artifact, reference, inputs = files
    cfg = compose_config(["target=avx2", "verify.emulated_max_samples=3", *overrides])
    return verify.verify_files(artifact, reference, inputs, cfg, tmp_path / f"{artifact.stem}.json")


@requires_emulated_python("SandyBridge")
def test_saturating_artifact_fails_on_haswell_against_an_exact_reference_cpu(saturating, tmp_path):
    full_range, reduce_range = saturating
    report = verify_standalone(full_range, tmp_path, "verify.profiles=[haswell]", "verify.reference_cpu=sandybridge")
    haswell = report["profiles"]["haswell"]
    assert (haswell["status"], haswell["failure"]) == ("fail", "cpu_numerics"), haswell["reason"]
    assert haswell["fidelity"]["cosine_worst"] > 0.98  # the whole-vector cosine does not see it
    comparison = haswell["cpu_comparison"]
    assert comparison["reference_cpu"] == "sandybridge" and comparison["divergence"] > 1.0
    assert comparison["excess_error"] > 1.0
    assert comparison["error_ratio"] > 50  # its error to fp32 is many times the exact kernels'
    assert "u8s8 saturation" in haswell["reason"] and "reduce_range" in haswell["reason"]
    worst = comparison["worst"][0]
    assert worst["sample"] in report["sample_selection"]["emulated"]
    assert abs(worst["value"]) < 0.7 * abs(worst["reference_cpu_value"])  # about half of the value is lost
    assert report["status"] == "fail"
    on_disk = json.loads((tmp_path / "int8.json").read_text())
    assert on_disk["profiles"]["haswell"]["cpu_comparison"]["worst"] == comparison["worst"]

    twin = verify_standalone(reduce_range, tmp_path, "verify.profiles=[haswell]", "verify.reference_cpu=sandybridge")
    assert twin["profiles"]["haswell"]["status"] == "pass", twin["profiles"]["haswell"]["reason"]
    assert twin["profiles"]["haswell"]["cpu_comparison"]["divergence"] < 0.05
    assert twin["status"] == "pass"


def test_saturating_artifact_with_the_default_reference_cpu(saturating, tmp_path):
    """`auto`: this host when it has VNNI (exact), else sandybridge. Either way haswell fails; the native
    host fails exactly when it lacks VNNI (it saturates too), and the reduce_range twin passes on both."""
    has_vnni = bool(VNNI & host_features())
    if not has_vnni and not emulated_python_runs("SandyBridge"):
        pytest.skip("this host lacks VNNI and cannot run Python under -cpu SandyBridge: no exact reference CPU")
    full_range, reduce_range = saturating
    report = verify_standalone(full_range, tmp_path, "verify.profiles=[haswell,native]")
    assert report["reference_cpu"]["cpu"] == ("native" if has_vnni else "sandybridge")
    haswell, native = report["profiles"]["haswell"], report["profiles"]["native"]
    assert (haswell["status"], haswell["failure"]) == ("fail", "cpu_numerics")
    assert native["status"] == ("pass" if has_vnni else "fail"), native["reason"]
    twin = verify_standalone(reduce_range, tmp_path, "verify.profiles=[haswell,native]")
    assert {p["status"] for p in twin["profiles"].values()} == {"pass"}


def test_cpu_comparison_masks_padding_and_names_the_worst_value():
    rng = np.random.default_rng(0)
    fp32 = {"hidden": rng.standard_normal((2, 4, 3))}
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    other = {"hidden": fp32["hidden"].copy()}
    other["hidden"][0, 3, :] = 100.0  # padding: does not count
    scales = {"hidden": 1.0}
    same = compare_cpus("haswell", other, fp32, fp32, reference_cpu="native", mask=mask, sample_ids=[5, 9],
                        scales=scales, max_excess_error=0.5, max_error_ratio=2.0)
    assert same.status == "pass" and same.divergence == 0.0
    other["hidden"][1, 2, 1] = fp32["hidden"][1, 2, 1] + 3.0
    broken = compare_cpus("haswell", other, fp32, fp32, reference_cpu="native", mask=mask, sample_ids=[5, 9],
                          scales=scales, max_excess_error=0.5, max_error_ratio=2.0, hint="a hint")
    assert broken.status == "fail" and broken.divergence == pytest.approx(3.0)
    assert broken.excess_error == pytest.approx(3.0) and broken.error_ratio > 1e5
    assert broken.worst[0]["sample"] == 9 and broken.worst[0]["position"] == [2, 1]
    assert "sample 9 position [2, 1]" in broken.reason and broken.reason.endswith("a hint")


def test_emulated_samples_are_the_most_stressed_not_the_first():
    fp32 = {"y": np.ones((10, 4))}
    fp32["y"][3] *= 9  # the largest magnitude
    native = {"y": fp32["y"].copy()}
    native["y"][7, 1] = 1.5  # the largest error natively
    chosen, why = choose_samples(native, fp32, None, {"y": 1.0}, 2)
    assert chosen == [7, 3] and "largest" in why


def test_every_output_of_any_rank_is_judged_and_named():
    rng = np.random.default_rng(1)
    reference = {"logits": rng.standard_normal((4, 5, 3)), "pooled": rng.standard_normal((4, 8))}
    mask = np.ones((4, 5), dtype=np.int64)
    outputs = {"logits": reference["logits"].copy(), "pooled": -reference["pooled"]}
    limits = Limits(0.98, 0.95, 0.97)
    judgement = judge(outputs, reference, model_kind="embedding", mask=mask, labels=None, limits=limits,
                      scales={"logits": 1.0, "pooled": 1.0})
    assert judgement.by_output["logits"]["kind"] == "token_states"
    assert judgement.by_output["logits"]["cosine_worst"] == pytest.approx(1.0)
    assert any(problem.startswith("pooled: cosine mean") for problem in judgement.problems)
    assert judgement.summary["cosine_worst"] == pytest.approx(-1.0)

"""Signoff findings that come from what the build and verification recorded (issue 37): int8 slower than fp32 at
build time is a finding naming its cause, a model too small to time gives none; a weight-only decoder's rows show
its figures (KL, next-token agreement, perplexity) against their budgets. Real folders, real onnxruntime profiles,
the real figures of pipeline/verify/language_model.py."""
import numpy as np
import pytest

from pipeline.builder import speed
from pipeline.config.schema import ReleaseConfig, VerifyConfig
from pipeline.manifest import Manifest, SpeedRecord
from pipeline.release.signoff.checks import profile_row
from pipeline.release.signoff.facts import inspect_artifact
from pipeline.release.signoff.findings import FINDINGS, build_speed_rows, finding_rows
from pipeline.release.signoff.plots import fidelity_plot
from pipeline.release.signoff.verdict import signoff
from pipeline.timing import batch_of, op_type_profile
from tests.fixtures.matrix import combination, write_matrix
from tests.fixtures.tiny_artifact import make_artifact_folder

SLOWER = {"fp32_p50_ms": 0.3, "int8_p50_ms": 1.2, "ratio": 4.0, "low": 3.5, "high": 4.4, "rounds": 20}
TOO_SMALL = {"fp32_p50_ms": 0.02, "int8_p50_ms": 0.05, "ratio": 2.5, "low": 2.2, "high": 2.8, "rounds": 40}


def record_speed(folder, figures, tmp_path) -> SpeedRecord:
    """Stamp manifest.json's `speed` as pipeline/builder/speed.py does after timing (`measure`): the verdict by
    `judge`, the op profile of the int8 graph when slower (onnxruntime's profiler, really run), `words`."""
    manifest = Manifest.load(folder)
    model = manifest.path(manifest.model_file)
    record = SpeedRecord(threads=1, size_ratio=0.5, latency={"1": dict(figures)})
    record.verdict = speed.judge(figures, figures["fp32_p50_ms"], min_timeable_ms=0.1)
    if record.verdict == "slower":
        with np.load(manifest.path(manifest.heldout_file)) as heldout:
            feed = batch_of({"x": heldout["x"]}, 1, None)
        record.int8_share_by_op_type = op_type_profile(model, feed, 1, tmp_path)["share_by_op_type"]
    record.warnings = speed.words(record, [1], model)
    manifest.speed = record
    manifest.save()
    return record


def test_a_folder_whose_build_measured_int8_slower_gives_a_finding_naming_the_cause(tmp_path):
    release = tmp_path / "rc"
    folder = make_artifact_folder(release / "tiny-dynamic-avx2")
    record = record_speed(folder, SLOWER, tmp_path)
    assert record.verdict == "slower" and record.int8_share_by_op_type
    facts, _ = inspect_artifact(folder)
    (found,) = build_speed_rows([facts])
    assert (found["profile"], found["status"], found["ok"]) == ("build-speed", "int8_slower", None)
    # the cause: the op type where int8 spends its time, with its share and what avoids it (speed.SLOW_CAUSES)
    top = max((op for op in record.int8_share_by_op_type if op in speed.SLOW_CAUSES),
              key=record.int8_share_by_op_type.get)
    assert found["reason"].startswith("measured at build time: int8 is 4.00x fp32's latency at batch 1 (95% interval "
                                      "3.50-4.40, 20 interleaved rounds on this host): ")
    assert f"{top}: " in found["reason"] and speed.SLOW_CAUSES[top] in found["reason"]
    # and the whole signoff lists it, informational (the native latency row is what blocks)
    write_matrix(release, combination(release, folder.name, ["model=tiny"]))
    report = signoff("rc", release, None, settings=ReleaseConfig())
    (listed,) = [r for r in report["rows"] if r["profile"] == "build-speed"]
    assert listed["status"] == "int8_slower" and listed["outcome"] == "info" and listed["reason"] == found["reason"]


def test_a_model_too_small_to_time_gives_no_build_speed_finding(tmp_path):
    folder = make_artifact_folder(tmp_path / "rc" / "tiny-dynamic-avx2")
    record = record_speed(folder, TOO_SMALL, tmp_path)
    assert record.verdict == "too_small_to_time" and record.warnings == {}
    facts, _ = inspect_artifact(folder)
    assert facts["build_speed"]["verdict"] == "too_small_to_time"
    assert build_speed_rows([facts]) == []
    assert [r for r in finding_rows([facts], ReleaseConfig()) if r["profile"] == "build-speed"] == []


def test_every_finding_kind_is_registered_once_in_report_order():
    assert list(FINDINGS) == ["latency", "size", "build-speed"]


def decoder_profile(noise: float) -> dict:
    """A weight-only decoder's profile as pipeline/verify/decoder.py records it: teacher-forced logits of fp32 and of
    a perturbed copy, judged with language_model's figures and the schema's default budgets."""
    from pipeline.verify import language_model
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 50, size=12) for _ in range(3)]
    reference = [rng.standard_normal((12, 50)).astype(np.float32) * 3 for _ in sequences]
    quantized = [logits + rng.standard_normal(logits.shape).astype(np.float32) * noise for logits in reference]
    found = language_model.figures(reference, quantized, sequences)
    thresholds = language_model.thresholds(VerifyConfig())
    wrong = language_model.problems(found, thresholds)
    return {"status": "fail" if wrong else "pass", "required": True, "requirement_met": not wrong, "expected": "pass",
            "reason": "; ".join(wrong) or "KL ...", "fidelity": found, "thresholds": thresholds, "samples": 3}


@pytest.mark.parametrize("noise, within", [(0.05, True), (3.0, False)])
def test_a_decoder_row_shows_kl_top1_agreement_and_perplexity_against_their_budgets(noise, within):
    profile = decoder_profile(noise)
    found = profile["fidelity"]
    row = profile_row("qwen-int4-avx2", "native", profile)
    words = row["fidelity"]
    assert f"KL divergence (nats/token) {found['kl_divergence']:.4f}" in words
    assert f"next-token (top-1) agreement {found['next_token_agreement']:.4f}" in words
    assert (f"perplexity {found['perplexity']:.3f} vs fp32 {found['perplexity_fp32']:.3f} "
            f"({found['perplexity_increase']:+.1%}") in words
    assert (" ≤ 0.1" in words) == within and (" > 0.1" in words) == (not within)
    assert set(row["margins"]) == {"kl_divergence", "next_token_agreement", "perplexity_increase"}
    assert (min(row["margins"].values()) >= 0) == within
    row["outcome"] = "ok" if within else "failed"
    assert fidelity_plot([row])["fidelity.png"].startswith(b"\x89PNG")

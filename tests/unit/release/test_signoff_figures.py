"""Figures of the whole held-out set (cosine mean, top-1 agreement, score correlation) are judged on the native run
of every sample, not on an emulated profile's few hardest samples. Such a profile's thresholds for them are null,
and the signoff says they were not judged there; it showed `cosine mean 0.9913 ≥ -1` and a margin of 1.99."""
import numpy as np

from pipeline.release.signoff import fidelity_words, margins
from pipeline.verify.fidelity import Limits, judge

LIMITS = Limits(min_cosine_mean=0.98, min_cosine_worst=0.5, min_top1_agreement=0.97)
RNG = np.random.default_rng(1)
FP32 = RNG.standard_normal((3, 16)).astype(np.float32)
NOISY = FP32 + RNG.standard_normal(FP32.shape).astype(np.float32) * 0.4  # cosine ~0.93: below the mean's bound


def test_on_a_few_chosen_samples_only_per_sample_bounds_are_judged():
    full = judge({"out": NOISY}, {"out": FP32}, model_kind="generic", mask=None, labels=None, limits=LIMITS,
                 scales={"out": 1.0})
    chosen = judge({"out": NOISY}, {"out": FP32}, model_kind="generic", mask=None, labels=None,
                   limits=LIMITS.per_sample_only(), scales={"out": 1.0})
    assert [p.split(" mean")[0] for p in full.problems] == ["out: cosine"]
    assert chosen.problems == [] and chosen.summary["cosine_mean"] == full.summary["cosine_mean"]
    worse = judge({"out": -NOISY}, {"out": FP32}, model_kind="generic", mask=None, labels=None,
                  limits=LIMITS.per_sample_only(), scales={"out": 1.0})
    assert any("cosine worst" in p for p in worse.problems)  # the per-sample bound still holds there


def test_the_signoff_says_set_figures_were_not_judged_on_an_emulated_profile():
    emulated = {"fidelity": {"cosine_mean": 0.9913, "cosine_worst": 0.9804, "score_correlation": 0.99},
                "thresholds": LIMITS.per_sample_only().to_json()}
    words = fidelity_words(emulated)
    assert words == ("cosine mean 0.9913 (not judged on these samples), cosine worst 0.9804 ≥ 0.5, "
                     "score correlation 0.9900 (not judged on these samples)")
    assert margins(emulated) == {"cosine_worst": 0.9804 - 0.5}
    native = {"fidelity": emulated["fidelity"], "thresholds": LIMITS.to_json()}
    assert fidelity_words(native).startswith("cosine mean 0.9913 ≥ 0.98, ")
    assert set(margins(native)) == {"cosine_mean", "cosine_worst", "score_correlation"}

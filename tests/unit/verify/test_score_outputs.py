"""One value per sample (a reranker's score, a regression, a one-logit classifier): the cosine of one number is
only its sign, so every such output passed "cosine 1.0000" whatever int8 did to it. Such outputs are judged by
their correlation with fp32's scores across the samples, in the build gate, in verification and in the signoff.
One value per token (`(batch, tokens, 1)`: a token-level regression, a one-label token classifier) is the same
trap per token, and is judged by the correlation across the non-padding tokens."""
import numpy as np
import pytest

from pipeline.builder.gate import budget_text, metrics, within_budget
from pipeline.config import compose_config
from pipeline.verify.fidelity import LOGITS, SCORE, TOKEN_STATES, Limits, judge, output_kind, score_correlation
from pipeline.verify.report import ProfileResult, contradictions

RNG = np.random.default_rng(0)
FP32 = (RNG.standard_normal((32, 1)) * 3 + 5).astype(np.float32)  # positive scores: every sign agrees
SHUFFLED = FP32[RNG.permutation(32)]  # the same values on the wrong samples: a useless reranker
CLOSE = FP32 + RNG.standard_normal(FP32.shape).astype(np.float32) * 0.05


def judged(name, output, fp32, model_kind, mask):
    limits = Limits(min_cosine_mean=0.98, min_cosine_worst=0.95, min_top1_agreement=0.97)
    return judge({name: output}, {name: fp32}, model_kind=model_kind, mask=mask, labels=None, limits=limits,
                 scales={name: 5.0})


@pytest.mark.parametrize("shape, model_kind, kind", [((32, 1), "classifier", SCORE), ((32,), "generic", SCORE),
                                                     ((32, 1), "embedding", SCORE), ((32, 3), "classifier", LOGITS)])
def test_one_value_per_sample_is_a_score(shape, model_kind, kind):
    assert output_kind(np.zeros(shape, np.float32), model_kind, None) == kind


def test_scores_are_judged_by_correlation_not_by_their_sign():
    assert score_correlation(CLOSE, FP32) > 0.99 and score_correlation(SHUFFLED, FP32) < 0.5
    assert score_correlation(np.full((4, 1), 2.0), np.full((4, 1), 2.0)) == 1.0  # constant and equal
    assert score_correlation(np.full((4, 1), 3.0), np.full((4, 1), 2.0)) == 0.0
    passed, failed = (judged("logits", output, FP32, "classifier", None) for output in (CLOSE, SHUFFLED))
    assert passed.problems == [] and passed.summary["score_correlation"] > 0.99
    assert len(failed.problems) == 1 and "logits: score correlation with fp32" in failed.problems[0]


def test_the_gate_holds_scores_to_the_cosine_mean_budget():
    verify_cfg = compose_config([]).verify
    fp32 = metrics("classifier", FP32, FP32, None)
    assert fp32 == {"score_correlation": 1.0}
    assert budget_text(fp32, verify_cfg) == f"score correlation >= {verify_cfg.min_cosine_mean}"
    assert within_budget("classifier", metrics("classifier", CLOSE, FP32, None), fp32, verify_cfg)[0]
    ok, text = within_budget("classifier", metrics("classifier", SHUFFLED, FP32, None), fp32, verify_cfg)
    assert not ok and text.startswith("score correlation with fp32")


def test_a_pass_whose_score_correlation_breaks_its_bound_is_a_contradiction():
    profile = ProfileResult(cpu="native", expected="pass", required=True, why="the host", status="pass", reason="",
                            fidelity={"score_correlation": 0.5}, thresholds={"min_cosine_mean": 0.98})
    assert contradictions(profile) == ["score_correlation 0.5 < min_cosine_mean 0.98"]


# one value per token: 4 samples of 8 tokens, the last 3 of every row padding
MASK = np.repeat([[1] * 5 + [0] * 3], 4, axis=0).astype(np.int64)
TOKEN_FP32 = (RNG.standard_normal((4, 8, 1)) * 2 + 6).astype(np.float32)  # positive: every sign agrees
TOKEN_CLOSE = TOKEN_FP32 + RNG.standard_normal(TOKEN_FP32.shape).astype(np.float32) * 0.05
TOKEN_SHUFFLED = TOKEN_FP32.copy()
TOKEN_SHUFFLED[MASK.astype(bool)] = TOKEN_FP32[MASK.astype(bool)][RNG.permutation(20)]


@pytest.mark.parametrize("shape, model_kind, kind", [
    ((4, 8, 1), "classifier", SCORE), ((4, 8, 1), "generic", SCORE), ((4, 8, 3), "classifier", LOGITS),
    ((4, 8, 3), "generic", TOKEN_STATES), ((4, 7, 1), "generic", "vector")])
def test_one_value_per_token_is_a_score(shape, model_kind, kind):
    assert output_kind(np.zeros(shape, np.float32), model_kind, MASK) == kind


def test_token_scores_are_judged_by_correlation_over_the_tokens_that_count():
    passed, failed = (judged("scores", output, TOKEN_FP32, "generic", MASK) for output in (TOKEN_CLOSE, TOKEN_SHUFFLED))
    assert passed.problems == [] and passed.summary["score_correlation"] > 0.99
    assert failed.summary["score_correlation"] < 0.6
    assert failed.problems == [f"scores: score correlation with fp32 across the tokens "
                               f"{failed.summary['score_correlation']:.4f} < 0.98"]
    # padding does not count: garbage there changes nothing
    garbage = TOKEN_CLOSE.copy()
    garbage[~MASK.astype(bool)] = -1000.0
    padded = judged("scores", garbage, TOKEN_FP32, "generic", MASK)
    assert padded.summary["score_correlation"] == passed.summary["score_correlation"]


def test_the_gate_holds_token_scores_to_the_cosine_mean_budget():
    verify_cfg = compose_config([]).verify
    fp32 = metrics("classifier", TOKEN_FP32, TOKEN_FP32, None, MASK)
    assert list(fp32) == ["score_correlation"] and fp32["score_correlation"] == pytest.approx(1.0)
    assert within_budget("classifier", metrics("classifier", TOKEN_CLOSE, TOKEN_FP32, None, MASK), fp32, verify_cfg)[0]
    ok, text = within_budget("classifier", metrics("classifier", TOKEN_SHUFFLED, TOKEN_FP32, None, MASK), fp32,
                             verify_cfg)
    assert not ok and text.startswith("score correlation with fp32")


def test_too_few_scores_for_a_correlation_are_judged_element_wise_only():
    """One sample (an emulated profile's) or two (always +-1): no correlation figure, nor a verdict from one; the
    element-wise bound still holds. One sample used to count as 0.0 whenever int8 noise moved it at all."""
    for n in (1, 2):
        close = judged("logits", CLOSE[:n], FP32[:n], "classifier", None)
        assert "score_correlation" not in close.summary and close.problems == []
        limits = Limits(min_cosine_mean=0.98, min_cosine_worst=0.95, min_top1_agreement=0.97, max_scaled_error=0.01)
        far = judge({"logits": FP32[:n] + 1.0}, {"logits": FP32[:n]}, model_kind="classifier", mask=None,
                    labels=None, limits=limits, scales={"logits": 5.0})
        assert far.problems == ["logits: max error 0.2x the output's scale > 0.01"]
    assert "score_correlation" in judged("logits", CLOSE[:3], FP32[:3], "classifier", None).summary

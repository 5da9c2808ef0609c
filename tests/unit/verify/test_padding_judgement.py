"""The padding check compares each sequence alone with itself in a padded batch. Dynamic int8 takes ranges over the
padded positions too, so the two differ by int8 noise, and a decision near its boundary may flip. On a VNNI host the
native run chose other emulated samples for a multi-label build: one label logit 0.16 from zero flipped under
padding, the outputs at most 0.16 apart while int8 was up to 0.34 off fp32, and the build failed as if its attention
mask were ignored. A sample that padding moved no further than the artifact's own int8 error keeps its decisions; an
ignored mask moves outputs further and flips clear decisions, and fails."""
import numpy as np

from pipeline.verify.fidelity import LOGITS, Limits, keep_decisions_within_noise
from pipeline.verify.onnx.evidence import Evidence
from pipeline.verify.onnx.padding_runs import judge_padding

PADDING = {"extra_tokens": 16, "thresholds": Limits(0.98, 0.95, 0.97).to_json()}
ALONE = np.array([[2.5, 0.05, -1.5, -2.0], [-1.0, 3.0, 1.2, -0.7], [1.8, -2.2, -0.9, 0.6]])


def judged(kind: str, batched: np.ndarray, int8_error: float) -> dict:
    """The padding verdict on a profile where the artifact is up to `int8_error` off fp32 on this output."""
    outputs = {"padding_mask": np.ones((3, 8), np.int64), "padding_alone.logits": ALONE,
               "padding_batched.logits": batched}
    evidence = Evidence(fp32={"logits": ALONE}, mask=None, labels=None, scales={"logits": 1.0},
                        limits=Limits(0.98, 0.95, 0.97), model_kind=kind, reference_cpu="native")
    return judge_padding(outputs, evidence, PADDING, {"logits": {"max_abs_error": int8_error}})


def test_a_label_flipped_by_a_move_within_the_int8_error_is_kept():
    noisy = ALONE.copy()
    noisy[0, 1] = -0.03  # 0.05 -> -0.03: the label turns off, the logits barely move
    exact_artifact = judged("multi_label", noisy, int8_error=0.01)
    assert exact_artifact["status"] == "fail" and "label-set agreement 0.6667 < 0.97" in exact_artifact["reason"]
    noisy_artifact = judged("multi_label", noisy, int8_error=0.1)  # int8 itself moves values up to 0.1
    assert noisy_artifact["status"] == "pass" and noisy_artifact["decisions_kept_within_int8_noise"] == 1
    assert noisy_artifact["figures"]["label_set_agreement"] == 2 / 3  # the figures say what padding did


def test_an_ignored_mask_moves_outputs_further_and_fails():
    moved = ALONE[[1, 2, 0]]  # each sample's logits become another's
    for kind, figure in (("multi_label", "label-set agreement"), ("classifier", "top-1 agreement")):
        report = judged(kind, moved, int8_error=0.5)
        assert report["status"] == "fail" and figure in report["reason"], report
        assert report["decisions_kept_within_int8_noise"] == 0


def test_per_token_decisions_count_the_tokens_only():
    alone = np.array([[[2.0, 1.0], [1.98, 2.0], [0.0, 0.0]]])  # one sample, two tokens, then padding
    moved = alone.copy()
    moved[0, 1] = [2.03, 1.97]  # the second token's class flips, moved by 0.05
    moved[0, 2] = [9.0, -9.0]  # the padding position is not counted
    mask = np.array([[1, 1, 0]])
    kept, count = keep_decisions_within_noise(LOGITS, moved, alone, mask, noise=0.1)
    assert count == 1 and (kept == alone).all()
    kept, count = keep_decisions_within_noise(LOGITS, moved, alone, mask, noise=0.01)
    assert count == 0 and (kept == moved).all()
    scores = np.array([[0.3], [0.5]])  # other kinds are not decisions: as they are
    shifted = scores + 1
    assert keep_decisions_within_noise("score", shifted, scores, None, noise=5.0) == (shifted, 0)

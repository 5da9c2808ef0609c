"""The padding check compares each sequence alone with itself in a padded batch. Dynamic int8 takes ranges over the
padded positions too, so the two differ by int8 noise; a decision that lies within that noise of its boundary may
flip either way. On a VNNI host the native run chose other emulated samples for a multi-label build, one label
logit 0.16 from zero flipped under padding (outputs 0.04x the scale apart), and the build failed as if its
attention mask were ignored. Such near ties now count as kept; an ignored mask flips clear decisions and fails."""
import numpy as np

from pipeline.verify.fidelity import LABEL_SETS, LOGITS, Limits, settle_near_ties
from pipeline.verify.onnx import Evidence, judge_padding

PADDING = {"extra_tokens": 16, "thresholds": Limits(0.98, 0.95, 0.97).to_json()}
ALONE = np.array([[2.5, 0.05, -1.5, -2.0], [-1.0, 3.0, 1.2, -0.7], [1.8, -2.2, -0.9, 0.6]])


def padding_outputs(batched: np.ndarray) -> dict:
    return {"padding_mask": np.ones((3, 8), np.int64), "padding_alone.logits": ALONE, "padding_batched.logits": batched}


def judged(kind: str, batched: np.ndarray, int8_error: float) -> dict:
    evidence = Evidence(fp32={"logits": ALONE}, mask=None, labels=None, scales={"logits": 1.0},
                        limits=Limits(0.98, 0.95, 0.97), model_kind=kind, reference_cpu="native")
    return judge_padding(padding_outputs(batched), evidence, PADDING, {"logits": {"max_abs_error": int8_error}})


def test_a_label_within_the_int8_noise_of_its_threshold_may_flip():
    noisy = ALONE.copy()
    noisy[0, 1] = -0.03  # 0.05 -> -0.03: the label turns off, the logits barely move
    exact_artifact = judged("multi_label", noisy, int8_error=0.01)
    assert exact_artifact["status"] == "fail" and "label-set agreement 0.6667 < 0.97" in exact_artifact["reason"]
    noisy_artifact = judged("multi_label", noisy, int8_error=0.1)  # its outputs are up to 0.1 off fp32's
    assert noisy_artifact["status"] == "pass" and noisy_artifact["near_ties_not_judged"] == 1


def test_an_ignored_mask_flips_clear_decisions_and_fails():
    moved = ALONE[[1, 2, 0]]  # each sample's logits become another's
    for kind, figure in (("multi_label", "label-set agreement"), ("classifier", "top-1 agreement")):
        report = judged(kind, moved, int8_error=0.1)
        assert report["status"] == "fail" and figure in report["reason"], report


def test_near_ties_of_classes_are_the_two_largest_logits_within_twice_the_noise():
    reference = np.array([[1.0, 0.9, -3.0], [2.0, -1.0, 0.0]])
    flipped = np.array([[0.9, 1.0, -3.0], [-1.0, 2.0, 0.0]])
    settled, count = settle_near_ties(LOGITS, flipped, reference, noise=0.06)
    assert count == 1 and (settled.argmax(-1) == [0, 1]).all()  # the near tie is kept, the clear flip stays
    settled, count = settle_near_ties(LABEL_SETS, flipped, reference, noise=0.06)
    assert count == 1 and settled[1, 2] == 0.0 and settled[0, 0] == 0.9

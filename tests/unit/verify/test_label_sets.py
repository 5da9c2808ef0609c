"""A multi-label classifier (a sigmoid per label: toxicity, emotions) decides each label on its own, at logit 0.
Judged by argmax, as classifiers were, int8 could turn a label on or off without a word: the largest logit stays
the largest. It is judged by the share of samples whose set of labels equals fp32's."""
import numpy as np

from pipeline.verify.fidelity import LABEL_SETS, LOGITS, Limits, classification_figures, judge_output, output_kind
from pipeline.verify.fidelity.figures import multi_label_figures

LIMITS = Limits(0.98, 0.95, 0.97, max_accuracy_drop=0.02, max_macro_f1_drop=0.05)
FP32 = np.array([[3.0, 0.4, -2.0, -1.0]] * 10 + [[-1.0, 2.0, -0.5, 0.8]] * 10, dtype=np.float64)


def test_a_label_crossing_zero_fails_where_argmax_saw_nothing():
    int8 = FP32.copy()
    int8[:2, 1] = -0.1  # the second label of two samples turns off; the largest logit does not move
    assert classification_figures(int8, FP32, None, None)["top1_agreement"] == 1.0
    assert output_kind(FP32, "multi_label", None) == LABEL_SETS and output_kind(FP32, "classifier", None) == LOGITS
    figures, problems = judge_output("logits", LABEL_SETS, int8, FP32, None, None, LIMITS, scale=1.0)
    assert figures["label_set_agreement"] == 18 / 20 and figures["label_agreement"] == 78 / 80
    assert problems == ["logits: label-set agreement 0.9000 < 0.97"]
    assert judge_output("logits", LABEL_SETS, FP32, FP32, None, None, LIMITS, scale=1.0)[1] == []


def test_probabilities_are_decided_at_one_half():
    probabilities = 1 / (1 + np.exp(-FP32))
    moved = probabilities.copy()
    moved[0, 1] = 0.49  # was 0.599: off now
    figures = multi_label_figures(moved, probabilities, None, None)
    assert figures["label_set_agreement"] == 19 / 20


def test_multi_hot_labels_give_subset_accuracy_and_macro_f1_over_the_labels():
    labels = np.array([[1, 1, 0, 0]] * 10 + [[0, 1, 0, 0]] * 10)  # the second group's fourth label is wrong in fp32
    int8 = FP32.copy()
    int8[0, 1] = -0.1
    figures = multi_label_figures(int8, FP32, None, labels)
    assert figures["reference_accuracy"] == 10 / 20 and figures["accuracy"] == 9 / 20
    # fp32: label 0 F1 1, label 1 F1 1, label 3 F1 0 (10 false positives), label 2 occurs nowhere
    assert np.isclose(figures["reference_macro_f1"], 2 / 3)
    assert np.isclose(figures["macro_f1"], (1 + 2 * 19 / (19 + 20) + 0) / 3)
    _, problems = judge_output("logits", LABEL_SETS, int8, FP32, None, labels, LIMITS, scale=1.0)
    assert "logits: accuracy 0.4500 vs fp32 0.5000 (drop 0.0500 > 0.02)" in problems


def test_per_token_label_sets_count_non_padding_tokens_only():
    tokens = np.stack([FP32[:4], FP32[10:14]])  # (2 samples, 4 tokens, 4 labels)
    int8 = tokens.copy()
    int8[0, 0, 1] = -0.1  # a padding position: not counted
    int8[1, 1, 3] = -0.1  # counted
    mask = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert multi_label_figures(int8, tokens, mask, None)["label_set_agreement"] == 6 / 7


def test_the_signoff_and_the_recomputed_verdict_hold_the_label_set_agreement():
    from pipeline.release.signoff import fidelity_words, margins
    from pipeline.verify.report import ProfileResult, contradictions

    profile = {"fidelity": {"label_set_agreement": 0.95, "accuracy": 0.7, "reference_accuracy": 0.72},
               "thresholds": LIMITS.to_json()}
    assert fidelity_words(profile).startswith("label-set agreement 0.9500 < 0.97, accuracy 0.700 (fp32 0.720)")
    assert np.isclose(margins(profile)["label_set_agreement"], -0.02)
    # a verify.json whose status says pass although its figures break its limits is not believed
    passed = ProfileResult(cpu="native", expected="pass", required=True, why="", status="pass", reason="",
                           fidelity=profile["fidelity"], thresholds=profile["thresholds"])
    assert contradictions(passed) == ["label_set_agreement 0.95 < min_top1_agreement 0.97"]

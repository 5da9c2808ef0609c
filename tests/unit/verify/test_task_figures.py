"""The pieces model=hf's data and judgement are made of: labels mapped onto id2label, samples of pairs and
images, accuracy and macro-F1 per example and per non-padding token."""
import numpy as np
import pytest

from calibration.errors import CalibrationError
from calibration.sampling import draw
from calibration.sources import label_ids
from pipeline.verify.fidelity import classification_figures, macro_f1

ID2LABEL = {0: "negative", 1: "positive"}


def test_labels_by_name_id_or_class_label_name():
    assert label_ids(["positive", "NEGATIVE", 1, "0"], ID2LABEL, "x") == [1, 0, 1, 0]
    # a datasets ClassLabel column holds ids into its own names: read by name
    assert label_ids([0, 1], ID2LABEL, "x", names=["positive", "negative"]) == [1, 0]
    # a checkpoint with default names (LABEL_0...) takes the column's ids as they are
    assert label_ids([1, 0], {0: "LABEL_0", 1: "LABEL_1"}, "x", names=["cat", "dog"]) == [1, 0]


@pytest.mark.parametrize("values, shown", [(["neutral"], "'neutral'"), ([2], "2"), ([-1], "-1"), ([0.5], "0.5")])
def test_labels_outside_id2label_are_refused_by_row(values, shown):
    with pytest.raises(CalibrationError, match=f"x, row 1: label {shown} is outside the model's labels"):
        label_ids(values, ID2LABEL, "x")


def test_macro_f1_is_the_mean_of_per_class_f1():
    labels = np.array([0, 0, 0, 1])
    assert macro_f1(labels, labels) == 1.0
    # class 0: P=1, R=2/3 -> 0.8; class 1: P=1/2, R=1 -> 2/3
    assert macro_f1(np.array([0, 0, 1, 1]), labels) == pytest.approx((0.8 + 2 / 3) / 2)


def test_token_figures_count_only_labelled_non_padding_tokens():
    reference = np.zeros((1, 4, 2))
    reference[0, :, 1] = 1  # fp32 says class 1 everywhere
    output = reference.copy()
    output[0, 3] = [1, 0]  # int8 differs only on the padding position
    mask = np.array([[1, 1, 1, 0]])
    labels = np.array([[-100, 1, 0, -100]])
    figures = classification_figures(output, reference, mask, labels)
    assert figures["top1_agreement"] == 1.0  # padding does not count
    assert figures["accuracy"] == 0.5 and figures["reference_accuracy"] == 0.5  # two labelled tokens


def test_samples_of_pairs_and_images_are_seeded_deduplicated_and_fingerprinted():
    pairs = [("A b", "c"), ("a  B", "C"), ("x", "y"), ("p", "q"), ("r", "s")]
    first = draw(pairs, 3, seed=1, strategy="length_stratified")
    assert first.indices == draw(pairs, 3, seed=1, strategy="length_stratified").indices
    assert not {0, 1} <= set(first.indices)  # the same pair, case and spaces aside
    images = [b"\x89PNG one", b"\x89PNG two", b"\x89PNG one", b"\x89PNG three"]
    sample = draw(images, 3, seed=0, strategy="length_stratified")
    assert sorted(sample.examples) == sorted({b"\x89PNG one", b"\x89PNG two", b"\x89PNG three"})
    assert sample.sha256() == draw(images, 3, seed=0).sha256()

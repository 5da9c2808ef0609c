from collections import Counter

import pytest

from calibration.sampling import deduplicated_indices, draw, split_calibration_heldout
from calibration.sources import pydoc_sentences
from calibration.errors import CalibrationError


def test_split_is_seeded_deduplicated_and_disjoint():
    texts = [f"sentence number {i % 50}" for i in range(100)]  # every text twice
    calibration, heldout = split_calibration_heldout(texts, 20, 10, seed=3)
    again, _ = split_calibration_heldout(texts, 20, 10, seed=3)
    other, _ = split_calibration_heldout(texts, 20, 10, seed=4)
    assert calibration.indices == again.indices and calibration.sha256() == again.sha256()
    assert calibration.sha256() != other.sha256()
    assert not set(calibration.examples) & set(heldout.examples)
    assert len(set(calibration.examples)) == 20
    assert deduplicated_indices(["A b", "a  B", "c"]) == [0, 2]


def test_stratified_sampling_keeps_label_proportions():
    labels = [0] * 600 + [1] * 300 + [2] * 100
    examples = [[i] for i in range(len(labels))]
    sample = draw(examples, 100, seed=0, strategy="stratified", labels=labels)
    assert Counter(sample.labels) == {0: 60, 1: 30, 2: 10}
    random_sample = draw(examples, 10, seed=0, strategy="random", labels=labels)
    assert len(random_sample) == 10


def test_length_stratified_sampling_takes_long_texts_too():
    texts = [f"short {i}" for i in range(300)] + [f"a much longer sentence, number {i}, " * 5 for i in range(100)]
    sample = draw(texts, 40, seed=1, strategy="length_stratified")
    long_share = sum(len(t) > 50 for t in sample.examples) / len(sample)
    assert 0.2 <= long_share <= 0.3  # 100 of 400 source texts are long


def test_stratified_without_labels_is_a_clear_error():
    with pytest.raises(CalibrationError, match="needs labels"):
        draw(["a", "b"], 1, seed=0, strategy="stratified")


def test_too_few_examples_and_nonpositive_counts_are_clear_errors():
    with pytest.raises(CalibrationError, match="only 1 left"):
        split_calibration_heldout(["a", "b", "c"], 2, 2, seed=0)
    with pytest.raises(CalibrationError, match="positive"):
        split_calibration_heldout(["a", "b", "c"], 0, 1, seed=0)


def test_pydoc_source_is_offline_prose():
    sentences = pydoc_sentences(24)
    assert len(sentences) > 1000
    assert all(len(s) >= 24 for s in sentences)

import pytest

from calibration.sampling import deduplicated_indices, split_calibration_heldout
from calibration.sources import pydoc_sentences
from pipeline.config import QuantgateError


def test_split_is_seeded_deduplicated_and_disjoint():
    texts = [f"sentence number {i % 50}" for i in range(100)]  # every text twice
    calibration, heldout = split_calibration_heldout(texts, 20, 10, seed=3)
    again, _ = split_calibration_heldout(texts, 20, 10, seed=3)
    other, _ = split_calibration_heldout(texts, 20, 10, seed=4)
    assert calibration.indices == again.indices and calibration.sha256() == again.sha256()
    assert calibration.sha256() != other.sha256()
    assert not set(calibration.texts) & set(heldout.texts)
    assert len(set(calibration.texts)) == 20
    assert deduplicated_indices(["A b", "a  B", "c"]) == [0, 2]


def test_too_few_examples_and_nonpositive_counts_are_clear_errors():
    with pytest.raises(QuantgateError, match="fewer than"):
        split_calibration_heldout(["a", "b", "c"], 2, 2, seed=0)
    with pytest.raises(QuantgateError, match="positive"):
        split_calibration_heldout(["a", "b", "c"], 0, 1, seed=0)


def test_pydoc_source_is_offline_prose():
    sentences = pydoc_sentences(24)
    assert len(sentences) > 1000
    assert all(len(s) >= 24 for s in sentences)

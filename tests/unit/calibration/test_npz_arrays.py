"""calibration/arrays.py (the .npz data of model=onnx / model=torch) and the build gate on several outputs."""
import numpy as np
import pytest

from calibration.arrays import InputSpec, load_arrays
from calibration.errors import CalibrationError
from pipeline.builder.gate import metrics, within_budget

SPECS = [InputSpec("ids", np.dtype(np.int64), (None, None)), InputSpec("x", np.dtype(np.float32), (None, 4))]


def test_a_folder_of_files_is_one_pool_cast_to_the_inputs_types(tmp_path):
    np.savez(tmp_path / "a.npz", ids=np.ones((3, 5), np.int32), x=np.zeros((3, 4)), labels=np.arange(3))
    np.savez(tmp_path / "b.npz", ids=np.ones((2, 5), np.int64), x=np.ones((2, 4), np.float32), labels=np.arange(2))
    data = load_arrays(tmp_path, SPECS)
    assert len(data) == 5 and data.arrays["ids"].dtype == np.int64 and data.arrays["x"].dtype == np.float32
    assert data.labels.tolist() == [0, 1, 2, 0, 1]
    digests = data.row_digests()
    assert digests[0] == digests[1] != digests[3]  # equal examples, equal digest: deduplicated by content


@pytest.mark.parametrize("arrays, expected", [
    ({"ids": np.ones((3, 5), np.int64), "x": np.zeros((3, 4), np.float32), "labels": np.zeros(2, np.int64)},
     "the same number of examples"),
    ({"ids": np.ones((3, 5), np.int64), "x": np.zeros((3, 4), np.float32), "labels": np.zeros(3)},
     "labels must be integer class ids"),
    ({"ids": np.ones((3, 5), np.int64), "x": np.full((3, 4), np.nan, np.float32)}, "finite float32"),
    ({"ids": np.full((3, 5), 2 ** 40), "x": np.zeros((3, 4), np.float32)}, None),  # fits int64: fine
])
def test_bad_arrays_are_refused_in_words(tmp_path, arrays, expected):
    np.savez(tmp_path / "c.npz", **arrays)
    if expected is None:
        assert len(load_arrays(tmp_path / "c.npz", SPECS)) == 3
        return
    with pytest.raises(CalibrationError, match=expected):
        load_arrays(tmp_path / "c.npz", SPECS)


def test_files_that_disagree_on_a_shape_are_refused(tmp_path):
    np.savez(tmp_path / "a.npz", ids=np.ones((3, 5), np.int64), x=np.zeros((3, 4), np.float32))
    np.savez(tmp_path / "b.npz", ids=np.ones((3, 7), np.int64), x=np.zeros((3, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"disagree on the shape of ids .*pad to a common length"):
        load_arrays(tmp_path, SPECS)


def test_the_gate_judges_every_output_and_takes_the_worst():
    rng = np.random.default_rng(0)
    logits, states = rng.standard_normal((8, 3)), rng.standard_normal((8, 5, 6))
    broken = states.copy()
    broken[0] *= -1  # one sample of the second output destroyed
    figures = metrics("generic", [logits, broken], [logits, states], None)
    assert figures["cosine_mean"] < 0.8 and figures["cosine_worst"] == pytest.approx(-1.0)
    budget = type("Verify", (), {"min_cosine_mean": 0.98, "min_cosine_worst": 0.95})()
    ok, text = within_budget("generic", figures, {}, budget)
    assert not ok and "cosine mean" in text
    labels = logits.argmax(-1)
    figures = metrics("classifier", [logits, broken], [logits, states], labels)
    assert figures["accuracy"] == 1.0 and figures["top1_agreement"] < 1.0  # argmax along the last axis, per position

"""Streamed runs and their figures (pipeline/verify/child_onnx.py stream_run, pipeline/verify/fidelity/): a real
onnxruntime session of a recurrence built with onnx.helper, the state's drift per step, sequences chosen whole, and a
detector's per-chunk decisions at a threshold."""
import numpy as np
import onnxruntime as ort
import pytest

from pipeline.layout import find_layout
from pipeline.verify.child_onnx import stream_run
from pipeline.verify.fidelity import Limits, choose_sequences, judge, state_drift
from tests.fixtures import streaming


@pytest.fixture(scope="module")
def recurrence(tmp_path_factory):
    import onnx
    path = streaming.chaotic_recurrence(tmp_path_factory.mktemp("rec") / "rec.onnx", gain=0.5)
    layout = find_layout(onnx.load(str(path))).to_json()
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), layout


def test_stream_run_carries_the_state_from_step_to_step_as_a_loop_would(recurrence):
    session, layout = recurrence
    assert layout["state"] == {"stateN": "state"} and layout["inputs"] == {"audio": 0, "state": 1}
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((6, streaming.FRAME)).astype(np.float32)  # 2 sequences of 3 chunks
    state = rng.standard_normal((1, 6, streaming.HIDDEN)).astype(np.float32)
    streamed = stream_run(session.run, ["prob", "stateN"], {"audio": audio, "state": state}, layout, 3)
    assert streamed["stateN"].shape == (6, 1, streaming.HIDDEN)  # examples on axis 0, in sample order
    for sequence in range(2):
        carried = state[:, [sequence * 3]]
        for step in range(3):
            row = sequence * 3 + step
            prob, carried = session.run(None, {"audio": audio[[row]], "state": carried})
            np.testing.assert_allclose(streamed["stateN"][row], carried[:, 0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(streamed["prob"][row], prob[0], rtol=1e-5, atol=1e-6)


def test_the_drift_is_reported_per_step_and_a_run_away_state_is_named():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((8, 1, 5))  # 2 sequences of 4 steps, batch-first
    grown = exact + np.array([0.01, 0.05, 0.2, 0.6])[np.tile(np.arange(4), 2)][:, None, None] * rng.standard_normal(
        exact.shape)
    figures, problems = state_drift({"stateN": grown}, {"stateN": exact}, {"stateN": "state"}, 4, 0.25)
    drift = figures["stateN"]
    assert drift["sequences"] == 2 and drift["worst_step"] == 4 and drift["first"] < 0.05 < 0.25 < drift["last"]
    assert len(problems) == 1 and problems[0].startswith("stateN (the state fed back as state) drifts from fp32's")
    assert "at step 4 of 4 (> verify.max_state_drift 0.25)" in problems[0]
    assert state_drift({"stateN": exact}, {"stateN": exact}, {"stateN": "state"}, 4, 0.25)[1] == []


def test_emulated_profiles_get_whole_sequences():
    fp32 = {"prob": np.zeros((12, 1))}
    native = {"prob": np.zeros((12, 1))}
    native["prob"][7] = 3.0  # sequence 1 (samples 4..7) has the largest error
    chosen, why = choose_sequences(native, fp32, {"prob": 1.0}, 4, 1)
    assert chosen == [4, 5, 6, 7] and "1 of 3 held-out sequences of 4 chunks" in why


def test_a_detector_is_judged_by_its_decisions_at_the_threshold():
    fp32 = np.array([[0.1], [0.45], [0.55], [0.9], [0.2], [0.7]])
    close = fp32 + 0.02  # 0.45 -> 0.47: every decision kept
    flipped = fp32 + np.array([[0.0], [0.1], [0.0], [0.0], [0.0], [0.0]])  # 0.45 -> 0.55: one decision flipped
    labels = np.array([0, 0, 1, 1, 0, 1])
    limits = Limits(0.98, 0.95, 0.97, threshold=0.5)
    kept = judge({"prob": close}, {"prob": fp32}, model_kind="event", mask=None, labels=labels, limits=limits,
                 scales={"prob": 0.5})
    assert kept.by_output["prob"]["kind"] == "events" and kept.summary["decision_agreement"] == 1.0
    assert kept.by_output["prob"]["accuracy"] == 1.0 and not kept.problems
    moved = judge({"prob": flipped}, {"prob": fp32}, model_kind="event", mask=None, labels=labels, limits=limits,
                  scales={"prob": 0.5})
    assert moved.summary["decision_agreement"] == pytest.approx(5 / 6)
    assert any("agreement of the per-chunk decisions (score above verify.threshold) 0.8333 < 0.97" in problem
               for problem in moved.problems)
    # The same outputs as a generic model: a score, judged by correlation only, and the flip goes unseen.
    assert not judge({"prob": flipped}, {"prob": fp32}, model_kind="generic", mask=None, labels=None,
                     limits=Limits(0.9, 0.95, 0.97), scales={"prob": 0.5}).problems

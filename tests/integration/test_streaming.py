"""Streaming models a user brings (tests/fixtures/streaming.py): a torch GRU tone detector exported with its state
`[layers, batch, hidden]` as input and output, and the same behind an `If` on a scalar sample rate. Built from .npz
arrays in the model's own layout, verified on `haswell` (QEMU) and `native`. docs/streaming.md."""
import json

import numpy as np
import onnx
import pytest

from pipeline.builder.calibrate import load_batches
from pipeline.builder.int8_nodes import subgraphs
from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.errors import BuildFailed, QuantgateError
from pipeline.guard import read_stamp
from pipeline.manifest import Manifest
from pipeline.commands.bench import main as bench_main
from tests.fixtures import streaming

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=48", "calibration.n_validation=16", "calibration.n_heldout=16",
         "verify.emulated_max_samples=2"]
PROFILES = ["target=avx2", "verify.profiles=[haswell,native]", "verify.reference_cpu=native"]


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """The detector (trained for a few seconds), its If-on-sr twin, and the chunks with the states a streamed fp32
    run carries into them, in the models' layout (state: [layers, examples, hidden])."""
    root = tmp_path_factory.mktemp("streaming")
    detector = streaming.gru_detector(root / "detector.onnx", train_steps=50)
    with_sr = streaming.gru_detector_with_sr(root / "detector_sr.onnx", detector)
    signals, _ = streaming.streams(12, 8, seed=100)
    np.savez(root / "calib.npz", **streaming.streamed_npz(detector, signals))
    np.savez(root / "calib_sr.npz", **streaming.streamed_npz(with_sr, signals, streaming.RATE))
    return {"detector": detector, "with_sr": with_sr, "calib": root / "calib.npz", "calib_sr": root / "calib_sr.npz"}


def build(user_files, model: str, data: str, mode: str, tmp_path, *extra) -> tuple[int, object]:
    overrides = ["model=onnx", f"model.path={user_files[model]}", "calibration=npz",
                 f"calibration.path={user_files[data]}", f"mode={mode}", f"artifacts_dir={tmp_path}", *SMALL, *extra]
    return quantize_task(compose_config(overrides), overrides), tmp_path / f"{user_files[model].stem}-{mode}-avx2"


def test_a_recurrent_state_laid_out_as_onnx_prescribes_builds_and_verifies_on_haswell_and_native(user_files, tmp_path):
    code, folder = build(user_files, "detector", "calib", "static", tmp_path, *PROFILES)
    assert code == 0
    report = json.loads((folder / "verify.json").read_text())
    assert {name: row["status"] for name, row in report["profiles"].items()} == {"haswell": "pass", "native": "pass"}
    manifest = Manifest.load(folder)
    assert manifest.batch_axes == {"inputs": {"audio": 0, "state": 1}, "outputs": {"prob": 0, "stateN": 1},
                                   "state": {"stateN": "state"}}
    with np.load(folder / "heldout.npz") as heldout:  # written in the model's layout, examples on axis 1
        assert heldout["state"].shape == (streaming.LAYERS, 16, streaming.HIDDEN) and heldout["audio"].shape[0] == 16
    # Both outputs judged per example: stateN with its examples moved to axis 0.
    assert set(report["profiles"]["native"]["fidelity_by_output"]) == {"prob", "stateN"}
    # The state pair is found by name and shape, and every profile ran streamed: 2 sequences of 8 chunks.
    assert report["settings"]["stream_steps"] == 8
    assert "held-out sequences of 8 chunks, run streamed" in report["sample_selection"]["why"]
    for name in ("haswell", "native"):
        drift = report["profiles"][name]["state_drift"]["stateN"]
        assert drift["steps"] == 8 and drift["sequences"] == 2 and drift["worst"] <= 0.25


def test_a_scalar_sample_rate_is_given_once_and_the_network_inside_the_if_is_quantized_dynamically(user_files,
                                                                                                    tmp_path):
    code, folder = build(user_files, "with_sr", "calib_sr", "dynamic", tmp_path, "target=avx2",
                         "verify.profiles=[native]", "verify.reference_cpu=native")
    assert code == 0
    with np.load(folder / "heldout.npz") as heldout:
        assert heldout["sr"].shape == () and int(heldout["sr"]) == streaming.RATE
    counts = json.loads(read_stamp(str(folder / "model.onnx"))["subgraphs"])
    assert counts == {"by_rate/else_branch": {"compute_nodes": 2, "int8_nodes": 2},
                      "by_rate/then_branch": {"compute_nodes": 2, "int8_nodes": 2}}
    ops = {node.op_type for _, body in subgraphs(onnx.load(str(folder / "model.onnx")).graph) for node in body.node}
    assert "MatMulInteger" in ops


def test_static_says_which_subgraphs_stay_fp32_and_why(user_files, tmp_path):
    with pytest.raises(BuildFailed) as refused:
        build(user_files, "with_sr", "calib_sr", "static", tmp_path, "verify.enabled=false")
    assert ("no int8 compute node: every MatMul/Conv stayed fp32 (subgraph(s) by_rate/else_branch (2 compute nodes), "
            "by_rate/then_branch (2 compute nodes) stay fp32: onnxruntime's static quantizer does not enter "
            "If/Loop/Scan subgraphs") in str(refused.value) and "build with mode=dynamic" in str(refused.value)
    assert not (tmp_path / "detector_sr-static-avx2").exists()


def test_a_state_that_int8_error_runs_away_in_fails_streamed_naming_the_drift(tmp_path):
    """A chaotic recurrence: one step from a given state stays close to fp32, but carried over 12 chunks int8's
    error in the state grows until nothing of fp32's is left. The gate runs the validation chunks streamed and
    refuses it over the drift; without the gate, verification fails it on the native CPU, naming the state and the
    steps."""
    model = streaming.chaotic_recurrence(tmp_path / "chaotic.onnx", gain=5.0)
    signals, _ = streaming.streams(12, 12, seed=100)
    np.savez(tmp_path / "calib.npz", **streaming.streamed_npz(model, signals))
    overrides = ["model=onnx", f"model.path={model}", "calibration=npz", f"calibration.path={tmp_path / 'calib.npz'}",
                 "mode=dynamic", f"artifacts_dir={tmp_path / 'artifacts'}", "calibration.n_samples=48",
                 "calibration.n_validation=24", "calibration.n_heldout=36", "verify.stream_steps=12", "target=avx2",
                 "verify.profiles=[native]", "verify.reference_cpu=native"]
    gate = [*overrides, "verify.fallback_max_excluded_nodes=0"]  # the streamed budget, no fallback
    with pytest.raises(QuantgateError, match=r"over its accuracy budget on the validation split: .*stateN \(the state "
                                             r"fed back as state\) drifts from fp32's as the sequence runs"):
        quantize_task(compose_config(gate), gate)
    overrides.append("verify.build_gate=false")
    assert quantize_task(compose_config(overrides), overrides) == 1
    folder = tmp_path / "artifacts" / "chaotic-dynamic-avx2"  # no verified build to keep: published, failed
    assert Manifest.load(folder).int8_metrics["validation_state_drift"] > 0.25  # measured, not enforced
    native = json.loads((folder / "verify.json").read_text())["profiles"]["native"]
    drift = native["state_drift"]["stateN"]
    assert native["status"] == "fail" and drift["first"] < 0.1 < 0.25 < drift["worst"] and drift["growth"] > 5
    assert ("stateN (the state fed back as state) drifts from fp32's as the sequence runs: " in native["reason"]
            and "(> verify.max_state_drift 0.25); int8 error accumulates in the recurrent state" in native["reason"])


def test_calibration_sees_the_states_a_streamed_fp32_run_carries_not_the_zeros_given(user_files, tmp_path):
    with np.load(user_files["calib"]) as arrays:
        np.savez(tmp_path / "zeros.npz", audio=arrays["audio"], state=np.zeros_like(arrays["state"]))
    user_files = {**user_files, "zeros": tmp_path / "zeros.npz"}
    code, folder = build(user_files, "detector", "zeros", "static", tmp_path, "verify.enabled=false",
                         "verify.stream_steps=4")
    assert code == 0
    states = np.concatenate([batch["state"] for batch in load_batches(folder / "calibration.npz")], axis=1)
    per_example = np.abs(states).max(axis=(0, 2))
    assert (per_example[::4] == 0).all() and (per_example.reshape(-1, 4)[:, 1:] > 0.05).all()


def test_a_detector_is_judged_by_its_per_chunk_decisions_at_the_threshold(user_files, tmp_path):
    signals, truth = streaming.streams(12, 8, seed=200)
    np.savez(tmp_path / "labelled.npz", **streaming.streamed_npz(user_files["detector"], signals, truth=truth))
    user_files = {**user_files, "labelled": tmp_path / "labelled.npz"}
    code, folder = build(user_files, "detector", "labelled", "dynamic", tmp_path, "model.kind=event",
                         "verify.threshold=0.5", "target=avx2", "verify.profiles=[native]",
                         "verify.reference_cpu=native")
    assert code == 0
    native = json.loads((folder / "verify.json").read_text())["profiles"]["native"]
    prob = native["fidelity_by_output"]["prob"]
    assert prob["kind"] == "events" and prob["threshold"] == 0.5 and prob["decision_agreement"] >= 0.97
    assert abs(prob["accuracy"] - prob["reference_accuracy"]) <= 0.02 and native["thresholds"]["threshold"] == 0.5
    assert native["fidelity_by_output"]["stateN"]["kind"] == "vector"  # the state: element-wise and cosine
    assert "validation_decision_agreement" in Manifest.load(folder).int8_metrics
    # The bench times it per chunk, each input batched on its own axis (state on axis 1).
    assert bench_main(["--artifacts-dir", str(tmp_path), "--out", str(tmp_path / "bench"), "--seconds", "0.1",
                       "--batches", "1", "4"]) == 0
    timed = json.loads((tmp_path / "bench" / "results.json").read_text())["artifacts"][0]
    assert timed["artifact"] == folder.name and timed["ratios"]["4"]["int8_vs_fp32_p50"] > 0

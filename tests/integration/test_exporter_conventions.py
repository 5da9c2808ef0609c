"""A Paddle2ONNX-style file end to end (tests/fixtures/paddle_style.py: opset 11, a `-1` batch axis, unnamed
spatial axes, weights as Constant nodes, an Identity chain in front of one, one weight shared by two convolutions):
`model=onnx` builds it in static and dynamic int8 with its weights really stored as int8 (per channel where
onnxruntime can), smaller than the fp32 file, the stamp's counts saying so, verified natively.
Before: refused as "a fixed first axis (-1)"; once renamed, static int8 kept the weights fp32 (1.10x the fp32 size)
while the stamp said int8 per channel, and dynamic int8 died with a traceback (exit 70)."""
import json

import pytest

from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.guard import read_stamp
from pipeline.manifest import Manifest
from tests.fixtures.paddle_style import write_model, write_npz

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=32", "calibration.n_validation=16", "calibration.n_heldout=16"]
NATIVE = ["target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"]


@pytest.fixture(scope="module")
def paddle_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paddle")
    return write_model(root / "paddle.onnx"), write_npz(root / "paddle.npz")


@pytest.mark.parametrize("mode, per_channel_weights", [("static", 3), ("dynamic", 1)])
def test_a_paddle_style_file_builds_with_int8_weights(paddle_files, tmp_path, mode, per_channel_weights):
    model, data = paddle_files
    overrides = ["model=onnx", f"model.path={model}", "calibration=npz", f"calibration.path={data}", f"mode={mode}",
                 f"artifacts_dir={tmp_path}", *SMALL, *NATIVE]
    assert quantize_task(compose_config(overrides), overrides) == 0
    folder = tmp_path / f"paddle-{mode}-avx2"  # named after the model file
    assert json.loads((folder / "verify.json").read_text())["status"] == "pass"
    stamp = read_stamp(str(folder / "model.onnx"))
    # Three distinct weights (the shared one once), all stored int8; dynamic int8's ConvInteger is per tensor.
    assert json.loads(stamp["graph_counts"]) == {"int8_weights": 3, "per_channel_weights": per_channel_weights,
                                                 "run_time_weights": 0, "fp32_weights": 0, "int8_nodes": 4,
                                                 "fp32_nodes": 0}
    assert stamp["per_channel"] == "true" and stamp["weight_type"] == "int8"
    manifest = Manifest.load(folder)
    assert manifest.quantization.graph_counts == json.loads(stamp["graph_counts"])
    assert manifest.model_size_bytes < 0.5 * manifest.reference_size_bytes
    assert manifest.model_size_bytes < 0.5 * model.stat().st_size

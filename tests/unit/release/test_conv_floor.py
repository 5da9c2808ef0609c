"""The convolution floor (pipeline/release/floors.py) on a model's own convolutions: found through the Pads static
int8 fuses into them, timed by kernel time, with the whole model's floor. Real onnxruntime sessions; no timing is
asserted (which kernel is faster depends on the host), only what the figures are and how they relate."""
from pathlib import Path

import numpy as np
import onnx

from pipeline.release.floors import conv_floor, conv_shapes
from tests.fixtures.convnet import write_conv_model
from tests.fixtures.padded_convnet import padded_graph


def test_convolutions_behind_computed_pads_are_found_with_the_pads_they_get(tmp_path):
    path = tmp_path / "padded.onnx"
    onnx.save(padded_graph(), str(path))
    feed = {"image": np.zeros((2, 8, 12, 12), np.float32)}
    shapes = conv_shapes(path, feed)
    # the 3x3 convolution reads a Pad whose pads a ConstantOfShape/Concat/Slice computes: onnx's shape inference alone
    # cannot size it; after the fusion static int8 does, it is a padded 3x3 convolution at 12x12
    assert shapes == {((2, 8, 12, 12), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1): 1,
                      ((2, 16, 12, 12), (4, 16, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1): 1,
                      ((2, 4, 12, 12), (16, 4, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1): 1}


def test_the_floor_of_a_cnn_has_its_kernels_ratio_and_the_whole_models(tmp_path):
    path = write_conv_model(Path(tmp_path) / "convnet.onnx")
    feed = {"image": np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)}
    floor = conv_floor(path, feed, threads=1, seconds=0.05)
    assert floor["batch"] == 1 and set(floor["shapes"]) == {
        "3->16 3x3/1 g1 at 32x32", "16->32 3x3/1 g1 at 32x32", "32->32 3x3/1 g1 at 16x16"}
    for figures in floor["shapes"].values():
        assert figures["nodes"] == 1 and figures["fp32_gmac_per_s"] > 0 and figures["int8_gmac_per_s"] > 0
    # the best of int8 and fp32 per shape is never slower than all-int8; the model's floor sits between it and 1
    assert 0 < floor["best_kernel_ratio"] <= floor["int8_vs_fp32"] + 1e-3
    assert 0 < floor["fp32_conv_share"] <= 1
    assert floor["best_kernel_ratio"] - 1e-3 <= floor["model_int8_vs_fp32"] <= 1

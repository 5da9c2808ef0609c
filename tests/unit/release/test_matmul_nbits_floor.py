"""The MatMulNBits floor of weight-only decoders (pipeline/release/floors.py matmul_nbits_floor, bench/floor.py
decoder_floors) and the op-type profile's shares (pipeline/timing.py op_type_profile), on a small MLP quantized to
4 bits by onnxruntime's own MatMulNBitsQuantizer. Real onnxruntime sessions; no timing is asserted (which kernel is
faster depends on the host), only what the figures are and how they relate."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.release.bench.floor import decoder_floor_words, decoder_floors
from pipeline.release.floors import matmul_nbits_floor, nbits_shapes
from pipeline.timing import MIN_REPEATS, op_type_profile

SHAPES = ((64, 128), (128, 128), (128, 64))  # two layers' weight shapes and one more: (K, N)


def write_mlp(path: Path) -> Path:
    """x -> MatMul (64x128) -> Relu -> MatMul (128x128) -> Relu -> MatMul (128x128) -> MatMul (128x64)."""
    rng = np.random.default_rng(0)
    nodes, weights, name = [], [], "x"
    for index, (k, n) in enumerate([SHAPES[0], SHAPES[1], SHAPES[1], SHAPES[2]]):
        weights.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) / 8, f"w{index}"))
        nodes.append(helper.make_node("MatMul", [name, f"w{index}"], [f"m{index}"]))
        name = f"m{index}"
        if index < 2:
            nodes.append(helper.make_node("Relu", [name], [f"r{index}"]))
            name = f"r{index}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "rows", 64])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "rows", 64])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """(the fp32 MLP, its int4 MatMulNBits version: block size 32, symmetric, accuracy level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    work = tmp_path_factory.mktemp("nbits")
    fp32 = write_mlp(work / "fp32.onnx")
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=32, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(work / "int4.onnx"))
    return fp32, work / "int4.onnx"


def test_the_shapes_are_the_artifacts_own_matmul_nbits_with_how_many_nodes_have_each(mlp):
    _, int4 = mlp
    shapes = nbits_shapes(int4)
    assert {(k, n, bits, block, level): count for (k, n, bits, block, level, _), count in shapes.items()} == {
        (64, 128, 4, 32, 4): 1, (128, 128, 4, 32, 4): 2, (128, 64, 4, 32, 4): 1}
    # the packed weights and their scales, as the artifact stores them: (N, blocks, block bytes) uint8, (N x blocks)
    (_, _, _, _, _, others), _ = next(item for item in shapes.items() if item[0][:2] == (64, 128))
    assert others[0] == ((128, 2, 16), TensorProto.UINT8) and np.prod(others[1][0]) == 128 * 2


@pytest.mark.parametrize("rows", [1, 16])
def test_the_floor_times_each_shape_against_fp32_matmul_at_the_steps_rows(mlp, rows):
    _, int4 = mlp
    floor = matmul_nbits_floor(int4, rows, threads=1, seconds=0.02)
    assert floor["rows"] == rows and set(floor["shapes"]) == {"64x128 int4", "128x128 int4", "128x64 int4"}
    assert floor["shapes"]["128x128 int4"]["nodes"] == 2
    for figures in floor["shapes"].values():
        assert figures["fp32_gmac_per_s"] > 0 and figures["nbits_gmac_per_s"] > 0
    assert floor["kernel_vs_fp32"] > 0


def test_a_decoders_whole_model_floor_is_fp32s_matmul_share_at_the_kernels_ratio(mlp, tmp_path):
    fp32, int4 = mlp
    feeds = {step: {"x": np.random.default_rng(1).standard_normal((1, rows, 64)).astype(np.float32)}
             for step, rows in (("prefill", 16), ("decode", 1))}
    profiles = {step: op_type_profile(fp32, feed, 1, tmp_path) for step, feed in feeds.items()}
    floors = decoder_floors(int4, fp32, {"prefill": 16, "decode": 1}, profiles, threads=1, seconds=0.02)
    for step, floor in floors.items():
        share = profiles[step]["share_by_op_type"]["MatMul"]
        assert floor["fp32_matmul_share"] == share and 0 < share <= 1
        assert floor["model_vs_fp32"] == pytest.approx(1 - share * (1 - floor["kernel_vs_fp32"]))
        # the step is held to the kernels' ratio; the whole-model figure is said beside it
        words = decoder_floor_words(floor, 2 * floor["kernel_vs_fp32"])
        assert words.startswith(f"the MatMulNBits floor on this model's shapes ({floor['rows']} row")
        assert f"{floor['kernel_vs_fp32']:.2f}x fp32's time (MatMulNBits alone against fp32 MatMul" in words
        assert f"other {1 - share:.0%} of kernel time unchanged {floor['model_vs_fp32']:.2f}x" in words
        assert words.endswith(": 2.00x the floor")
    # a model with no MatMulNBits has no such floor
    assert decoder_floors(fp32, fp32, {"decode": 1}, profiles, threads=1, seconds=0.02) is None


def test_the_op_type_profile_gives_shares_over_enough_runs_most_first(mlp, tmp_path):
    fp32, _ = mlp
    feed = {"x": np.ones((1, 256, 64), np.float32)}  # 2-4 M multiply-adds a MatMul, 33 k values a Relu
    profile = op_type_profile(fp32, feed, 1, tmp_path)
    shares = profile["share_by_op_type"]
    assert profile["profiled_runs"] >= MIN_REPEATS and set(profile) == {"profiled_runs", "share_by_op_type"}
    assert set(shares) == {"MatMul", "Relu"} and list(shares)[0] == "MatMul"
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert sum(shares.values()) == pytest.approx(1, abs=1e-3)
    assert not list(tmp_path.glob("profile-*"))  # the profiler's file is removed

"""What an int8 graph holds, counted (pipeline/builder/graph_counts.py), and the stamp's claims checked against it, on
graphs onnxruntime's quantizer really writes from the Paddle-style file (tests/fixtures/paddle_style.py)."""
import json
from pathlib import Path

import onnx
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

from pipeline.builder.graph_counts import StampCheckFailed, check_claims, count_graph
from pipeline.builder.onnx_family import read_model, upgrade_opset
from pipeline.builder.stamp import as_held
from pipeline.errors import ExitCode
from pipeline.manifest import QuantizationRecord
from tests.fixtures.paddle_style import images, paddle_model


class Images(CalibrationDataReader):
    def __init__(self):
        self.batches = iter([{"x": images(16)[i:i + 8]} for i in (0, 8)])

    def get_next(self):
        return next(self.batches, None)


def quantized(tmp_path: Path, model, mode: str, **options):
    """`model` through onnxruntime's quantizer (int8 weights), loaded back."""
    source, target = tmp_path / f"{mode}.fp32.onnx", tmp_path / f"{mode}.onnx"
    onnx.save(model, str(source))
    if mode == "dynamic":
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, **options)
    else:
        quantize_static(str(source), str(target), Images(), **options)
    return onnx.load(str(target))


def stamp(counts, per_channel: bool, weight_type: str = "int8") -> dict[str, str]:
    return {"weight_type": weight_type, "per_channel": str(per_channel).lower(),
            "graph_counts": json.dumps(counts.as_stamp())}


def lifted(tmp_path: Path):
    onnx.save(paddle_model(batch_dim="N"), str(tmp_path / "paddle.onnx"))
    return read_model(str(tmp_path / "paddle.onnx"))


def test_constant_weights_left_as_they_are_are_quantized_at_run_time_and_the_claim_fails(tmp_path):
    """The issue's case: Constant-node weights stay fp32 and are quantized per tensor at every run, while a stamp
    made from the policy says int8 weights, per channel."""
    graph = quantized(tmp_path, upgrade_opset(paddle_model(batch_dim="N"), "paddle"), "static", per_channel=True)
    counts = count_graph(graph)
    assert counts.int8_weights == 0 and counts.run_time_weights == 3  # the shared weight counts once
    assert counts.run_time_readers == ("conv2d_0", "conv2d_1", "conv2d_2", "linear_0")
    with pytest.raises(StampCheckFailed) as raised:
        check_claims(stamp(counts, per_channel=True), graph, "model.onnx")
    message = str(raised.value)
    assert raised.value.exit_code == ExitCode.FAILED and "\n" not in message
    assert "stored fp32 and quantized at every run" in message and "mode.nodes_to_exclude=[" in message


@pytest.mark.parametrize("mode, per_channel_weights", [("static", 3), ("dynamic", 1)])
def test_lifted_weights_are_stored_int8_and_the_claims_hold(tmp_path, mode, per_channel_weights):
    """Lifted (read_model), every weight is an int8 initializer: per channel in static QDQ; dynamic int8 keeps
    onnxruntime's ConvInteger per tensor (the MatMul is per channel). The shared weight counts once."""
    graph = quantized(tmp_path, lifted(tmp_path), mode, per_channel=True)
    counts = count_graph(graph)
    assert counts.as_stamp() == {"int8_weights": 3, "per_channel_weights": per_channel_weights,
                                 "run_time_weights": 0, "fp32_weights": 0, "int8_nodes": 4, "fp32_nodes": 0}
    assert check_claims(stamp(counts, per_channel=True), graph, "model.onnx") == counts


def test_per_channel_is_claimed_only_where_the_graph_has_it(tmp_path):
    graph = quantized(tmp_path, lifted(tmp_path), "static", per_channel=False)
    counts = count_graph(graph)
    assert counts.int8_weights == 3 and counts.per_channel_weights == 0
    with pytest.raises(StampCheckFailed, match="per_channel=true, but every int8 weight has one scale"):
        check_claims(stamp(counts, per_channel=True), graph, "model.onnx")
    record = QuantizationRecord(mode="static", quant_format="QDQ", weight_type="int8", activation_type="uint8",
                                per_channel=True, reduce_range=True)
    held = as_held(record, counts)
    assert held.per_channel is False and held.graph_counts == counts.as_stamp()
    check_claims(stamp(counts, per_channel=held.per_channel), graph, "model.onnx")


def test_nodes_left_fp32_and_stamped_counts_that_drifted_are_told_apart(tmp_path):
    graph = quantized(tmp_path, lifted(tmp_path), "static", per_channel=True, nodes_to_exclude=["linear_0"])
    counts = count_graph(graph)
    assert (counts.int8_nodes, counts.fp32_nodes, counts.fp32_weights, counts.int8_weights) == (3, 1, 1, 2)
    check_claims(stamp(counts, per_channel=True), graph, "model.onnx")
    claimed = stamp(counts, per_channel=True) | {"graph_counts": json.dumps(counts.as_stamp() | {"fp32_nodes": 0})}
    with pytest.raises(StampCheckFailed, match="graph_counts says .* the graph holds"):
        check_claims(claimed, graph, "model.onnx")


def test_the_fp32_reference_holds_fp32_weights_only(tmp_path):
    counts = count_graph(lifted(tmp_path))
    assert (counts.fp32_weights, counts.fp32_nodes, counts.int8_weights, counts.int8_nodes) == (3, 4, 0, 0)
    with pytest.raises(StampCheckFailed, match="every weight is fp32"):
        check_claims(stamp(counts, per_channel=False), lifted(tmp_path), "model.onnx")

"""What a build bought, measured at build time (pipeline/builder/speed.py), and mode=auto (pipeline/builder/auto.py), on a
small convolutional network a user brings (tests/fixtures/convnet.py). No timing is asserted: the figures are
recorded and their shape checked; which mode is faster on a CPU goes to `make bench`, not to tests."""
import numpy as np
import onnx
import pytest

from pipeline.builder import speed
from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.manifest import Manifest, SpeedRecord
from pipeline.timing import batch_of, op_type_profile
from tests.fixtures.convnet import write_conv_model, write_images

SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8", "target=avx2",
         "verify.enabled=false", "speed.seconds_per_batch=0.05", "speed.min_rounds=5"]


@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("convnet")
    model, images = write_conv_model(root / "convnet.onnx"), write_images(root / "images.npz", n=32)
    return ["model=onnx", f"model.path={model}", "calibration=npz", f"calibration.path={images}", *SMALL]


def build(overrides: list[str], artifacts) -> Manifest:
    overrides = [*overrides, f"artifacts_dir={artifacts}"]
    assert quantize_task(compose_config(overrides), overrides) == 0
    return Manifest.load(next(artifacts.glob("convnet-*")))


def op_types(manifest: Manifest) -> set[str]:
    return {node.op_type for node in onnx.load(str(manifest.path(manifest.model_file))).graph.node}


def check_speed_figures(record: SpeedRecord) -> None:
    assert set(record.latency) == {"1", "8"} and record.threads >= 1 and 0 < record.size_ratio < 1
    for figures in record.latency.values():
        assert figures["rounds"] >= 5 and figures["low"] <= figures["ratio"] <= figures["high"]
        assert figures["fp32_p50_ms"] > 0 and figures["int8_p50_ms"] > 0
    assert record.verdict in ("faster", "within_noise", "slower", "too_small_to_time")


@pytest.mark.parametrize("mode, int8_conv", [("dynamic", "ConvInteger"), ("static", "QuantizeLinear")])
def test_a_conv_graph_quantized_dynamic_and_static_records_its_speed(convnet, tmp_path, mode, int8_conv):
    manifest = build([*convnet, f"mode={mode}"], tmp_path)
    assert manifest.name == f"convnet-{mode}-avx2" and manifest.mode == mode and manifest.mode_choice is None
    assert int8_conv in op_types(manifest)
    check_speed_figures(manifest.speed)
    if mode == "static":  # int8 from one convolution to the next; the RGB stem (reduction 3x3x3 = 27) stays fp32
        assert manifest.quantization.fp32_convs == ["conv0"]
        graph = onnx.load(str(manifest.path(manifest.model_file))).graph
        producer = {output: node.op_type for node in graph.node for output in node.output}
        for node in graph.node:
            if node.op_type in ("MaxPool", "GlobalAveragePool", "Flatten") or node.name in ("conv1", "conv2"):
                assert producer[node.input[0]] == "DequantizeLinear", node.name
        assert next(node for node in graph.node if node.name == "conv0").input[1] == "conv0.weight"  # fp32, as it was


def test_auto_keeps_static_for_a_conv_graph_and_records_both_candidates(convnet, tmp_path, capsys):
    manifest = build(convnet, tmp_path)  # model=onnx: mode=auto unless told
    # the folder keeps the mode asked for; manifest.json says which was kept and why
    assert manifest.name == "convnet-auto-avx2" and manifest.mode == "static" == manifest.quantization.mode
    choice = manifest.mode_choice
    assert choice.requested == "auto" and choice.chosen == "static" and "convolution" in choice.reason
    assert set(choice.candidates) == {"static", "dynamic"}
    for mode, figures in choice.candidates.items():
        assert figures["within_budget"] and figures["validation"]["validation_cosine_mean"] > 0.98
        check_speed_figures(SpeedRecord(**figures["speed"]))
        assert figures["outcome"] == ("kept" if mode == "static" else "slower, or not preferred")
    assert manifest.speed.latency == choice.candidates["static"]["speed"]["latency"]
    assert "QLinearConv" not in op_types(manifest) and "ConvInteger" not in op_types(manifest)  # QDQ: Conv in int8
    assert "speed      int8/fp32 latency on this host" in capsys.readouterr().out


def test_auto_does_not_build_static_on_calibration_that_does_not_cover_the_inputs(convnet, tmp_path):
    manifest = build([*convnet, "calibration.coverage_warn=0", "calibration.coverage_fail=0"], tmp_path)
    choice = manifest.mode_choice
    assert manifest.mode == choice.chosen == "dynamic" and "ConvInteger" in op_types(manifest)
    assert choice.candidates["static"] == {"within_budget": False, "outcome": (
        "not built: the calibration sample failed its coverage bound (calibration_report.json), which static int8's "
        "fixed ranges rely on")}
    assert choice.reason.startswith("the only candidate within the accuracy budget (static: not built")


def test_the_int8_slower_warning_names_convinteger(convnet, tmp_path):
    manifest = build([*convnet, "mode=dynamic"], tmp_path)
    with np.load(manifest.path(manifest.heldout_file)) as arrays:
        feed = batch_of({"image": arrays["image"]}, 1)
    shares = op_type_profile(manifest.path(manifest.model_file), feed, 1, tmp_path)["share_by_op_type"]
    slower = SpeedRecord(threads=1, size_ratio=0.3, verdict="slower", int8_share_by_op_type=shares,
                         latency={"1": {"fp32_p50_ms": 0.3, "int8_p50_ms": 1.2, "ratio": 4.0, "low": 3.5, "high": 4.4,
                                        "rounds": 20}})
    said = speed.words(slower, [1, 8], manifest.path(manifest.model_file))
    assert list(said) == ["slower"]
    assert said["slower"].startswith("int8 is 4.00x fp32's latency at batch 1 (95% interval 3.50-4.40, 20 ")
    assert "ConvInteger: " in said["slower"] and "static mode quantizes convolutions to QLinearConv" in said["slower"]
    # larger than fp32 is said with what stayed fp32 (here the Gemm head, which dynamic int8 leaves alone, and biases)
    larger = SpeedRecord(threads=1, size_ratio=1.12, verdict="faster", latency=slower.latency)
    said = speed.words(larger, [1, 8], manifest.path(manifest.model_file))
    assert list(said) == ["larger"] and said["larger"].startswith("int8 is 1.12x the fp32 file's size: 0.00")
    assert said["larger"].endswith("MB of weights are still fp32 (weights quantized at run time, or nodes left fp32)")


def test_a_model_too_small_to_time_is_not_judged():
    clearly_slower = {"ratio": 2.0, "low": 1.9, "high": 2.1}
    assert speed.judge(clearly_slower, fp32_ms=0.02, min_timeable_ms=0.1) == "too_small_to_time"
    assert speed.judge(clearly_slower, fp32_ms=2.0, min_timeable_ms=0.1) == "slower"
    assert speed.judge({"ratio": 1.0, "low": 0.8, "high": 1.2}, 2.0, 0.1) == "within_noise"
    assert speed.judge({"ratio": 0.5, "low": 0.4, "high": 0.6}, 2.0, 0.1) == "faster"


def test_signoff_lists_what_the_build_measured_as_findings():
    from pipeline.release.signoff import build_speed_rows
    facts = {"name": "onnx-dynamic-avx2", "build_speed": {"warnings": {"slower": "int8 is 4.00x ... ConvInteger"}}}
    (row,) = build_speed_rows([facts, {"name": "quiet", "build_speed": None}])
    assert row["profile"] == "build-speed" and row["status"] == "int8_slower" and row["ok"] is None
    assert "ConvInteger" in row["reason"]


def test_without_convolutions_auto_keeps_the_faster_of_the_two_timed_in_one_loop():
    from pipeline.builder.auto import choose
    within = {"within_budget": True, "outcome": "", "speed": {"verdict": "faster", "latency": {"1": {"ratio": 0.4}}}}
    candidates = {"static": within, "dynamic": within}

    def duel(ratio, low, high):
        return {"batch": 1, "ratio": ratio, "low": low, "high": high, "rounds": 20}
    kept, reason = choose(None, "no convolutions", candidates, duel(0.8, 0.7, 0.9))
    assert kept == "static" and "faster on this host beyond noise (static/dynamic 0.80x, 95% interval 0.70-0.90" in reason
    assert choose(None, "no convolutions", candidates, duel(1.3, 1.1, 1.4))[0] == "dynamic"
    kept, reason = choose(None, "no convolutions", candidates, duel(1.02, 0.9, 1.1))
    assert kept == "dynamic" and reason.endswith("kept the faster median")
    # the graph decides where it can tell, whatever was measured
    assert choose("static", "3 convolution(s)", candidates, None) == (
        "static", "both within budget (int8/fp32 static 0.40x, dynamic 0.40x on this host); the graph decides: "
                  "3 convolution(s)")
    over = {**within, "within_budget": False, "outcome": "over the accuracy budget: cosine 0.9"}
    assert choose(None, "no convolutions", {"static": over, "dynamic": within}, None) == (
        "dynamic", "the only candidate within the accuracy budget (static: over the accuracy budget: cosine 0.9)")


def test_auto_with_no_candidate_within_budget_fails_with_both_figures(convnet, tmp_path):
    from pipeline.errors import BuildFailed
    overrides = [*convnet, "verify.min_cosine_mean=1.0", "verify.min_cosine_worst=1.0", "verify.build_gate=true",
                 "verify.fallback_max_excluded_nodes=1", f"artifacts_dir={tmp_path}"]
    with pytest.raises(BuildFailed) as refused:
        quantize_task(compose_config(overrides), overrides)
    message = str(refused.value)
    assert message.startswith("mode=auto: no candidate is within the accuracy budget: static: over the accuracy budget")
    assert "; dynamic: over the accuracy budget" in message and not list(tmp_path.glob("convnet-*"))

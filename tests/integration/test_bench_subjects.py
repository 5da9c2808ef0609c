"""`quantgate bench` on a release holding a CNN, a detector (tests/fixtures/convnet.py, model=onnx, static int8) and a
tiny weight-only decoder built int4 and int8 (tests/fixtures/tiny_decoder.py): each is benched as what it is and the
report has each section: ratios present and positive, the op-type profile naming the top operator types, and the
distance to this host's int8 floor or why it is absent. No timing is asserted: speed targets go in the report."""
import json
import shutil

import pytest

from pipeline.builder.task import quantize_task
from pipeline.commands.bench import main as bench_main
from pipeline.config import compose_config
from tests.conftest import run_cli
from tests.fixtures.convnet import write_conv_model, write_images

pytestmark = pytest.mark.slow

SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8", "target=avx2",
         "verify.enabled=false", "speed.seconds_per_batch=0.05", "speed.min_rounds=5", "mode=static"]
DECODER = ["model=hf", "model.task=text-generation", "target=avx2", "verify.enabled=false",
           "verify.build_gate=false", "calibration.n_heldout=4"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """One release folder: convnet-static-avx2, detector-static-avx2, tiny-llama-int4-avx2, tiny-llama-int8-avx2."""
    from tests.fixtures.tiny_decoder import build
    root = tmp_path_factory.mktemp("bench-subjects")
    images = write_images(root / "images.npz", n=32)
    for name, detector in (("convnet", False), ("detector", True)):
        model = write_conv_model(root / f"{name}.onnx", detector=detector)
        overrides = ["model=onnx", f"model.path={model}", "calibration=npz", f"calibration.path={images}", *SMALL,
                     f"artifacts_dir={root / 'rc'}", *(["model.kind=detector"] if detector else [])]
        assert quantize_task(compose_config(overrides), overrides) == 0
    checkpoint = build(root / "tiny-llama", steps=20)  # its text does not matter here, only that it runs
    for mode in ("int4", "int8"):
        done = run_cli("-m", "pipeline.cli", "build", *DECODER, f"mode={mode}", f"model.name_or_path={checkpoint}",
                       f"artifacts_dir={root / 'rc'}")
        assert done.returncode == 0, done.stdout + done.stderr
    return root / "rc"


@pytest.fixture(scope="module")
def report(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    assert bench_main(["--artifacts-dir", str(release), "--out", str(out), "--batches", "1", "4", "--seconds", "0.05",
                       "--threads", "1", "--prompt-tokens", "24", "--new-tokens", "8"]) == 0
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_each_artifact_is_benched_as_what_it_is(report):
    from pipeline.jsonfiles import validator
    found, _ = report
    validator("bench").validate(found)  # docs/schemas/bench.schema.json
    assert found["subjects"] == {"weight_only_decoder": ["tiny-llama-int4-avx2", "tiny-llama-int8-avx2"],
                                 "detector": ["detector-static-avx2"], "cnn": ["convnet-static-avx2"]}
    assert {case["artifact"]: case["subject"] for case in found["artifacts"]} == {
        "detector-static-avx2": "detector", "convnet-static-avx2": "cnn"}


def test_the_cnn_and_the_detector_have_ratios_noise_profile_and_floor(report):
    found, table = report
    for case in found["artifacts"]:
        for batch in ("1", "4"):
            ratios, noise = case["ratios"][batch], case["noise"][batch]
            assert ratios["int8_vs_fp32_p50"] > 0 and ratios["int8_vs_plain_int8_p50"] > 0
            assert 0 < noise["low"] <= noise["ratio"] <= noise["high"] and noise["rounds"] >= 5
            # the model's three 3x3 convolutions (and the detector's 1x1 head) timed alone, fp32 against QLinearConv
            floor = case["conv_floor"][batch]
            assert floor["int8_vs_fp32"] == ratios["int8_vs_fp32_conv_floor"] > 0
            # the distance is to the whole model's floor (its convolutions' share sped up), said in words
            level = floor["model_int8_vs_fp32"]
            assert ratios["int8_vs_conv_floor"] == pytest.approx(ratios["int8_vs_fp32_p50"] / level)
            assert (f"batch {batch}: int8 {ratios['int8_vs_fp32_p50']:.2f}x fp32; the conv floor on this model's "
                    f"shapes {level:.2f}x (convolutions {floor['fp32_conv_share']:.0%} of fp32's kernel time") in table
            assert f"{ratios['int8_vs_conv_floor']:.2f}x the floor" in table
            assert case["verdict"][batch] in ("faster", "within_noise", "slower", "too_small_to_time")
        profile = case["op_type_profile"]
        assert profile["batch"] == 4 and "Conv" in list(profile["fp32"]["share_by_op_type"])[:3]
        assert {"QLinearConv", "Conv", "ConvInteger", "QuantizeLinear"} & set(profile["int8"]["share_by_op_type"])
        assert f"| {case['artifact']} | {case['subject']} |" in table
        assert f"- {case['artifact']}, distance to this host's int8 floor on its convolutions: batch 1" in table
    detector = next(case for case in found["artifacts"] if case["subject"] == "detector")
    assert "gemm_floor" in detector["floor_absent"]  # no MatMul: said, not left blank
    assert "Noise: the median per-round int8/fp32 ratio" in table and "Where the time goes" in table


def test_the_decoders_have_tokens_per_second_memory_size_and_profile_against_fp32(report):
    found, table = report
    [group] = found["decoders"]
    assert group["artifacts"] == ["tiny-llama-int4-avx2", "tiny-llama-int8-avx2"]
    assert group["prompt_tokens"] == 24 and group["new_tokens"] == 8
    assert set(group["models"]) == {"fp32", "tiny-llama-int4-avx2", "tiny-llama-int8-avx2"}
    for figures in group["models"].values():
        assert figures["prefill_tokens_per_s"] > 0 and figures["decode_tokens_per_s"] > 0 and figures["rounds"] >= 3
        assert figures["peak_rss_mb"] > group["baseline_rss_mb"] > 0 and figures["size_bytes"] > 0
    for name, ratios in group["ratios"].items():
        for key in ("prefill_tokens_per_s_vs_fp32", "decode_tokens_per_s_vs_fp32"):
            assert 0 < ratios[key]["low"] <= ratios[key]["ratio"] <= ratios[key]["high"]
        assert 0 < ratios["size_vs_fp32"] < 1 and ratios["peak_rss_vs_fp32"] > 0
        for step in ("prefill", "decode"):
            assert "MatMulNBits" in list(group["op_type_profile"][step][name]["share_by_op_type"])[:4]
        assert f"| {name} | {ratios['size_vs_fp32']:.2f}x |" in table
    assert "MatMul" in group["op_type_profile"]["decode"]["fp32"]["share_by_op_type"]
    assert "floor_absent" not in group


def test_the_decoders_floor_is_matmul_nbits_on_their_own_weights_at_decode_and_prefill_rows(report):
    found, table = report
    [group] = found["decoders"]
    for name, bits in (("tiny-llama-int4-avx2", 4), ("tiny-llama-int8-avx2", 8)):
        floors = group["matmul_nbits_floor"][name]
        assert (floors["prefill"]["rows"], floors["decode"]["rows"]) == (24, 1)
        for step, floor in floors.items():
            # the tiny Llama's four weight shapes (qkv, o, gate/up, down; lm_head), its 11 MatMuls
            assert sum(shape["nodes"] for shape in floor["shapes"].values()) == 11
            assert all(key.endswith(f" int{bits}") for key in floor["shapes"])
            assert floor["kernel_vs_fp32"] > 0 and 0 < floor["fp32_matmul_share"] <= 1
            # the whole model's floor: fp32's MatMul share at that step sped up to the kernels' ratio
            share, kernels = floor["fp32_matmul_share"], floor["kernel_vs_fp32"]
            assert floor["model_vs_fp32"] == pytest.approx(1 - share * (1 - kernels))
            assert share == group["op_type_profile"][step]["fp32"]["share_by_op_type"]["MatMul"]


def test_a_tiny_decoders_step_is_too_small_to_time_and_said_so(report):
    """The tiny decoder's fp32 decode step takes a few hundredths of a millisecond: under the build's
    speed.min_timeable_ms (pipeline/builder/speed.py), so it is not judged; a judged step states its floor."""
    from pipeline.config.schema import SpeedConfig
    found, table = report
    [group] = found["decoders"]
    for name, ratios in group["ratios"].items():
        assert ratios["verdict"]["decode"] == "too_small_to_time"
        for step in ("prefill", "decode"):
            too_small = ratios["fp32_step_ms"][step] < SpeedConfig.min_timeable_ms
            assert (ratios["verdict"][step] == "too_small_to_time") == too_small
            tokens = ratios[f"{step}_tokens_per_s_vs_fp32"]["ratio"]
            said = f"- {name} {step}: {tokens:.2f}x fp32's tokens/s"
            [line] = [line for line in table.splitlines() if line.startswith(said)]
            if too_small:
                assert "too small to time here" in line and "not judged" in line
            else:
                assert "the MatMulNBits floor on this model's shapes" in line
                assert f"{ratios[step + '_time_vs_floor']:.2f}x the floor" in line


def test_a_release_of_one_decoder_folder_benches_it_alone(release, tmp_path):
    one = tmp_path / "tiny-llama-int4-avx2"
    shutil.copytree(release / one.name, one)
    assert bench_main(["--artifacts-dir", str(one), "--out", str(tmp_path / "out"), "--seconds", "0.01",
                       "--threads", "1", "--prompt-tokens", "8", "--new-tokens", "4"]) == 0
    [group] = json.loads((tmp_path / "out" / "results.json").read_text())["decoders"]
    assert group["artifacts"] == [one.name] and set(group["ratios"]) == {one.name}


def test_more_new_tokens_than_the_context_holds_is_refused_in_one_line(release, tmp_path, capsys):
    assert bench_main(["--artifacts-dir", str(release / "tiny-llama-int4-avx2"), "--out", str(tmp_path),
                       "--new-tokens", "4096"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("quantgate bench: error: --new-tokens 4096: tiny-llama-int4-avx2 holds 256 tokens of "
                           "context; give fewer new tokens") and not (tmp_path / "results.json").exists()


def test_a_decoder_folder_without_its_fp32_export_is_refused_in_one_line(release, tmp_path, capsys):
    folder = tmp_path / "tiny-llama-int8-avx2"
    shutil.copytree(release / folder.name, folder)
    shutil.rmtree(folder / "reference")
    assert bench_main(["--artifacts-dir", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quantgate bench: error: tiny-llama-int8-avx2 has no fp32 export in reference/")
    assert err.count("\n") == 1 and not (tmp_path / "out" / "results.json").exists()

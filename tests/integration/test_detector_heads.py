"""A real YOLO-style detector (tests/fixtures/tiny_detector.py: torch, trained on synthetic squares, exported with one
packed output `[batch, 4 + classes, anchors]`) verified as a foreign file: int8 that keeps the detections passes on
haswell and natively; an "int8" file whose class rows are wrong while its boxes are right fails, naming the score
group (model.kind=generic) and the detection recall with its budget (model.kind=detector). Before issue 34 both
passed: the box rows carry the head's norm (whole-output cosine 0.9999)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from tests.fixtures import tiny_detector

from pipeline.builder.gate import named_metrics, within_budget
from pipeline.config import compose_config
from pipeline.errors import ExitCode
from pipeline.paths import PROJECT_ROOT
from pipeline.release.signoff import fidelity_words
from pipeline.verify.fidelity import output_reading

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    paths = tiny_detector.build(tmp_path_factory.mktemp("detector"))
    paths["swapped"] = paths["int8"].with_name("swapped.onnx")
    tiny_detector.swap_class_rows(paths["int8"], paths["swapped"])
    return paths


def verify(paths, artifact, out, *overrides):
    result = subprocess.run([sys.executable, "-m", "pipeline.commands.verify", "--artifact", str(paths[artifact]),
                             "--reference", str(paths["fp32"]), "--inputs", str(paths["inputs"]), "--target", "avx2",
                             "--out", str(out), *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=900)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result, json.loads(out.read_text()) if out.is_file() else None


def test_int8_that_keeps_the_detections_passes_on_haswell_and_native(detector, tmp_path):
    result, report = verify(detector, "int8", tmp_path / "verify.json", "model.kind=detector",
                            "verify.profiles=[haswell,native]")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("haswell", "native"):
        figures = report["profiles"][name]["fidelity_by_output"]
        assert set(figures) == {"output0", "output0[0:4] (boxes)", "output0[4:6] (scores)"}
        assert figures["output0[4:6] (scores)"]["scale"] < 1 < figures["output0[0:4] (boxes)"]["scale"]
    native = report["profiles"]["native"]
    assert native["fidelity"]["detection_recall"] >= 0.9 and native["fidelity"]["detection_precision"] >= 0.9
    assert native["fidelity_by_output"]["output0"]["fp32_detections"] >= 16  # confident detections on 14 pages
    assert native["fidelity_by_output"]["output0[4:6] (scores)"]["near_empty_samples"] == 2  # the blank pages
    assert "detection recall" in fidelity_words(native)


def test_wrong_scores_beside_right_boxes_fail_naming_the_group_and_the_detection_budget(detector, tmp_path):
    result, report = verify(detector, "swapped", tmp_path / "generic.json", "verify.profiles=[native]")
    assert result.returncode == ExitCode.FAILED, result.stderr[-3000:]
    native = report["profiles"]["native"]
    assert native["fidelity_by_output"]["output0"]["cosine_worst"] > 0.999  # the whole head: the old verdict
    assert native["reason"].startswith("out of bounds: output0[4:6]: cosine mean")
    assert "in output0[4:6] < 0.95" in fidelity_words(native)

    result, report = verify(detector, "swapped", tmp_path / "detector.json", "model.kind=detector",
                            "verify.profiles=[native]")
    assert result.returncode == ExitCode.FAILED
    reason = report["profiles"]["native"]["reason"]
    assert "output0: detection recall of fp32's detections 0.0000 < 0.9 (verify.detection.min_recall" in reason
    assert "output0[4:6] (scores): cosine worst" in reason


def test_named_groups_and_the_gate_judge_the_same_figures(detector, tmp_path):
    result, report = verify(detector, "swapped", tmp_path / "named.json", "verify.profiles=[native]",
                            "verify.output_groups=[{output:output0,start:4,stop:6,label:classes}]")
    assert result.returncode == ExitCode.FAILED
    assert "output0[4:6] (classes)" in report["profiles"]["native"]["fidelity_by_output"]

    import onnxruntime as ort
    images = np.load(detector["inputs"])["images"]
    fp32, swapped = ([ort.InferenceSession(str(detector[name])).run(None, {"images": images})[0]]
                     for name in ("fp32", "swapped"))
    verify_cfg = compose_config(["model.kind=detector"]).verify
    reading = output_reading({"output0": fp32[0]}, "detector", None, verify_cfg)
    reference, _ = named_metrics("detector", fp32, fp32, None, None, reading, ["output0"])
    figures, holders = named_metrics("detector", swapped, fp32, None, None, reading, ["output0"])
    ok, words = within_budget("detector", figures, reference, verify_cfg, holders)
    assert not ok and "in output0[4:6] (scores)" in words
    assert "detection recall 0.0000 in output0 (budget verify.detection.min_recall >= 0.9)" in words

"""Outputs whose parts live on different scales are judged in groups, each on its own scale; detectors by their
detections; near-empty samples by magnitude. Issue 34: a YOLO-style head `[batch, 4 + classes, anchors]` passed with
wrong class scores (the box rows carry the norm), and fp32 verified against itself failed on a probability map of
~1e-7 whose direction is rounding noise."""
import numpy as np
import pytest

from pipeline.builder.gate import budget_text, named_metrics, within_budget
from pipeline.config import compose_config
from pipeline.errors import InputError
from pipeline.release.signoff import fidelity_words
from pipeline.verify.detection import DetectionSettings, decode, detection_figures
from pipeline.verify.fidelity import Limits, judge, output_reading
from pipeline.verify.groups import Group, configured_groups, feature_axis, split_by_scale
from pipeline.verify.report import ProfileResult, contradictions

RNG = np.random.default_rng(0)
LIMITS = Limits(0.98, 0.95, 0.97, near_empty_ratio=0.1, max_near_empty_error=0.316, min_detection_recall=0.9,
                min_detection_precision=0.9, min_detection_mean_iou=0.85)
ANCHORS, CLASSES = 64, 3


def head(samples: int = 8) -> np.ndarray:
    """A packed head: boxes in pixels (0-320) at every anchor, class probabilities near 0 except one confident
    detection per sample, on its own anchor."""
    output = np.zeros((samples, 4 + CLASSES, ANCHORS), np.float32)
    output[:, :2] = RNG.uniform(20, 300, (samples, 2, ANCHORS))
    output[:, 2:4] = RNG.uniform(10, 60, (samples, 2, ANCHORS))
    output[:, 4:] = RNG.uniform(0, 0.02, (samples, CLASSES, ANCHORS))
    for sample in range(samples):
        output[sample, 4 + sample % CLASSES, sample * 5] = 0.95
    return output


def swap_classes(output: np.ndarray) -> np.ndarray:
    return output[:, [0, 1, 2, 3, 5, 6, 4]]


def reading(fp32: dict, model_kind: str = "generic", *overrides: str):
    return output_reading(fp32, model_kind, None, compose_config(list(overrides)).verify)


def test_a_packed_head_splits_into_boxes_and_scores_and_positions_never_split():
    groups = split_by_scale("output0", head(), None, 30.0)
    assert [(g.axis, g.start, g.stop) for g in groups] == [(1, 0, 4), (1, 4, 7)]
    assert [g.name for g in groups] == ["output0[0:4]", "output0[4:7]"]
    assert split_by_scale("o", np.moveaxis(head(), 1, 2), None, 30.0)[1].name == "o[:, 4:7]"  # [batch, anchors, 4+C]
    assert feature_axis(np.zeros((2, 24, 24)), None) is None  # a map: two position axes
    assert feature_axis(np.zeros((2, 1, 24, 24)), None) is None  # one channel
    hidden = RNG.standard_normal((4, 8, 64))
    hidden[..., 3] *= 20  # an outlier dimension lifts the RMS; the others are not drowned by it
    assert split_by_scale("last_hidden_state", hidden, np.ones((4, 8), bool), 30.0) == []


def test_an_embeddings_scattered_quiet_dimensions_and_single_numbers_are_not_parts_of_a_head():
    """MiniLM's sentence_embedding has single dimensions 30x under its RMS: split, each judged as a score of one
    number per sample, they failed good builds (correlation 0.76). Scattered runs and one-number groups stay whole;
    a head of two blocks, [batch, 6] with coordinates beside confidences, still splits."""
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((32, 384))
    embedding[:, [127, 223, 300]] *= 0.001
    assert split_by_scale("sentence_embedding", embedding, None, 30.0) == []
    one_number = np.concatenate([rng.standard_normal((32, 5)) * 100, rng.standard_normal((32, 1))], axis=1)
    assert split_by_scale("o", one_number, None, 30.0) == []  # [5:6] is one number per sample
    head = np.concatenate([rng.standard_normal((32, 4)) * 100, rng.random((32, 2))], axis=1)
    assert [g.name for g in split_by_scale("o", head, None, 30.0)] == ["o[0:4]", "o[4:6]"]


def test_wrong_class_scores_fail_in_their_group_while_the_whole_head_passes():
    fp32 = {"output0": head()}
    read = reading(fp32)
    judged = judge({"output0": swap_classes(fp32["output0"])}, fp32, model_kind="generic", mask=None, labels=None,
                   limits=LIMITS, scales=read.scales, groups=read.groups)
    assert judged.by_output["output0"]["cosine_worst"] > 0.999  # what verify said before
    assert judged.problems and all(problem.startswith("output0[4:7]: cosine") for problem in judged.problems)
    assert judged.by_output["output0[4:7]"]["group"] == {"output": "output0", "axis": 1, "start": 4, "stop": 7,
                                                         "kind": None, "label": ""}
    assert judged.summary["worst_of"]["cosine_worst"] == "output0[4:7]"


def test_configured_groups_are_named_by_their_label_and_refused_when_they_do_not_fit():
    fp32 = {"output0": head()}
    entry = "verify.output_groups=[{output:output0,start:4,stop:7,label:classes}]"
    assert [g.name for g in reading(fp32, "generic", entry).groups] == ["output0[4:7] (classes)"]
    for bad, words in (("{output:boxes,start:0,stop:4}", "no output 'boxes'"),
                       ("{output:output0,start:4,stop:90}", r"does not fit the output's shape \[8, 7, 64\]"),
                       ("{output:output0,start:0,stop:4,kind:pixels}", "unknown kind 'pixels'")):
        with pytest.raises(InputError, match=words):
            configured_groups(compose_config([f"verify.output_groups=[{bad}]"]).verify.output_groups, fp32)


def test_decode_thresholds_and_suppresses_overlapping_boxes_of_one_class():
    sample = np.zeros((4 + 2, 4), np.float32)
    sample[:4] = [[100, 102, 200, 100], [100, 100, 100, 100], [40, 40, 40, 40], [40, 40, 40, 40]]  # cx, cy, w, h
    sample[4:] = [[0.9, 0.8, 0.1, 0.0], [0.0, 0.0, 0.7, 0.2]]  # anchors 0, 1 overlap (class 0); 2 is class 1
    found = decode(sample, DetectionSettings("o", score_threshold=0.25), "packed")
    assert found.classes.tolist() == [0, 1] and np.allclose(found.scores, [0.9, 0.7])
    assert np.allclose(found.boxes[0], [80, 80, 120, 120])
    boxes = np.array([[[0, 0, 10, 10, 0.9, 2], [5, 5, 9, 9, 0.1, 1]]], np.float32)  # a head that ran NMS already
    assert decode(boxes[0], DetectionSettings("o"), "boxes").classes.tolist() == [2]


def test_detector_budgets_fail_naming_the_figure_and_the_budget():
    fp32 = {"output0": head()}
    read = reading(fp32, "detector")
    assert [g.name for g in read.groups] == ["output0[0:4] (boxes)", "output0[4:7] (scores)"]
    judged = judge({"output0": swap_classes(fp32["output0"])}, fp32, model_kind="detector", mask=None, labels=None,
                   limits=LIMITS, scales=read.scales, groups=read.groups, detection=read.detection)
    figures = judged.by_output["output0"]
    assert (figures["detection_recall"], figures["fp32_detections"], figures["detections"]) == (0.0, 8.0, 8.0)
    assert ("output0: detection recall of fp32's detections 0.0000 < 0.9 (verify.detection.min_recall; 8 fp32 "
            "detections, 8 int8)") in judged.problems
    assert any(problem.startswith("output0[4:7] (scores): cosine") for problem in judged.problems)
    kept = judge(fp32, fp32, model_kind="detector", mask=None, labels=None, limits=LIMITS, scales=read.scales,
                 groups=read.groups, detection=read.detection)
    assert kept.problems == [] and kept.summary["detection_recall"] == 1.0 and kept.summary["detection_mean_iou"] == 1
    moved = fp32["output0"].copy()
    moved[:, 0] += 25  # every box shifted by 25 pixels: same classes, IoU about 0.3
    assert detection_figures(moved, fp32["output0"], read.detection)["detection_recall"] < 0.5


def test_a_detector_head_that_cannot_hold_detections_is_refused():
    with pytest.raises(InputError, match="model.kind=detector: output o has shape"):
        reading({"o": np.zeros((2, 5))}, "detector")


def test_the_gate_names_the_group_and_the_detection_budget():
    verify_cfg = compose_config(["model=onnx", "model.kind=detector"]).verify
    fp32 = [head()]
    read = output_reading({"output0": fp32[0]}, "detector", None, verify_cfg)
    reference, _ = named_metrics("detector", fp32, fp32, None, None, read, ["output0"])
    assert "detection recall >= 0.9" in budget_text(reference, verify_cfg)
    figures, holders = named_metrics("detector", [swap_classes(fp32[0])], fp32, None, None, read, ["output0"])
    ok, words = within_budget("detector", figures, reference, verify_cfg, holders)
    assert not ok
    assert "worst 0." in words and "in output0[4:7] (scores)" in words
    assert "detection recall 0.0000 in output0 (budget verify.detection.min_recall >= 0.9)" in words
    assert within_budget("detector", reference, reference, verify_cfg, holders)[0]


# --- near-empty samples -------------------------------------------------------------------------------
def text_maps(blank_noise: float, seed: int) -> np.ndarray:
    """Probability maps, 4 pages with text (~1 along strokes), 4 blank (~1e-7 with rounding noise)."""
    rng = np.random.default_rng(seed)
    maps = np.abs(rng.standard_normal((8, 1, 16, 16)) * blank_noise + 1.2e-7).astype(np.float32)
    maps[:4, 0, 4:6, 2:12] = 0.98
    return maps


def test_fp32_against_itself_on_other_kernels_passes_where_the_cosine_of_noise_failed():
    fp32, other_cpu = text_maps(6e-8, 0), text_maps(6e-8, 1)  # the blank pages differ only in rounding noise
    other_cpu[:4] = fp32[:4]
    old = judge({"map": other_cpu}, {"map": fp32}, model_kind="generic", mask=None, labels=None,
                limits=Limits(0.98, 0.95, 0.97), scales={"map": 0.2})
    assert old.problems and "cosine worst" in old.problems[-1]  # the verdict of issue 34
    read = reading({"map": fp32})
    judged = judge({"map": other_cpu}, {"map": fp32}, model_kind="generic", mask=None, labels=None, limits=LIMITS,
                   scales=read.scales)
    assert judged.problems == []
    assert judged.by_output["map"]["near_empty_samples"] == 4 and judged.by_output["map"]["cosine_worst"] > 0.999999
    # every page blank: the output's own scale is noise too; verify.near_zero (1e-4) is its floor
    blank, other_blank = text_maps(6e-8, 2)[4:], text_maps(6e-8, 3)[4:]
    read = reading({"map": blank})
    assert read.scales["map"] == 1e-4
    assert judge({"map": other_blank}, {"map": blank}, model_kind="generic", mask=None, labels=None, limits=LIMITS,
                 scales=read.scales).problems == []


def test_a_near_empty_sample_that_int8_lights_up_fails_by_magnitude():
    fp32 = text_maps(6e-8, 0)
    lit = fp32.copy()
    lit[4:] = 0.3  # the blank pages glow
    read = reading({"map": fp32})
    judged = judge({"map": lit}, {"map": fp32}, model_kind="generic", mask=None, labels=None, limits=LIMITS,
                   scales=read.scales)
    assert any(problem.startswith("map: 4 near-empty samples (fp32 under 0.1x the output's scale") and
               "> 0.316" in problem for problem in judged.problems)


def test_signoff_words_name_where_the_worst_figure_is_and_contradictions_see_the_new_figures():
    profile = {"fidelity": {"cosine_worst": 0.28, "detection_recall": 0.57,
                            "worst_of": {"cosine_worst": "output0[4:84] (scores)", "detection_recall": "output0"}},
               "fidelity_by_output": {"output0": {}, "output0[0:4] (boxes)": {"group": {}, "cosine_worst": 1.0},
                                      "output0[4:84] (scores)": {"group": {}, "cosine_worst": 0.28}},
               "thresholds": {"min_cosine_worst": 0.95, "min_detection_recall": 0.9}}
    words = fidelity_words(profile)
    assert "cosine worst 0.2800 in output0[4:84] (scores) < 0.95" in words
    assert "detection recall 0.5700 in output0 < 0.9" in words
    assert words.endswith("output0[0:4] (boxes): cosine worst 1.0000, output0[4:84] (scores): cosine worst 0.2800")
    record = ProfileResult(cpu="native", expected="pass", required=True, why="", status="pass", reason="",
                           fidelity={"detection_recall": 0.57, "near_empty_error_worst": 2.0},
                           thresholds={"min_detection_recall": 0.9, "max_near_empty_error": 0.316})
    assert contradictions(record) == ["detection_recall 0.57 < min_detection_recall 0.9",
                                      "near_empty_error_worst 2 > max_near_empty_error 0.316"]


def test_groups_are_typed_in_the_schema():
    cfg = compose_config(["verify.output_groups=[{output:output0,start:4,stop:84,label:scores}]"])
    group = cfg.verify.output_groups[0]
    assert (group.axis, group.kind, group.label) == (1, None, "scores")
    assert Group("output0", 1, 4, 84, label="scores").name == "output0[4:84] (scores)"

"""model=hf end to end: tiny transformers checkpoints the tests train for seconds (tests/fixtures/hf_checkpoints.py),
built dynamic and static, verified on haswell (QEMU) and natively, judged by their task's figures."""
import json

import onnx
import pytest

from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.manifest import Manifest
from tests.fixtures import hf_checkpoints

pytestmark = pytest.mark.slow
# haswell under QEMU and this host; per-CPU numerics against this host (no extra emulated reference run).
VERIFY = ["target=avx2", "verify.profiles=[haswell,native]", "verify.reference_cpu=native",
          "verify.emulated_max_samples=2"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    return {"text": hf_checkpoints.text_classifier(folder), "image": hf_checkpoints.image_classifier(folder, steps=300),
            "token": hf_checkpoints.token_classifier(folder, steps=100),
            "headless": hf_checkpoints.headless_text_model(folder), "artifacts": folder / "artifacts"}


def build(made, name: str, *overrides: str) -> tuple[int, Manifest, dict]:
    args = ["model=hf", f"model.name={name}", *VERIFY, f"artifacts_dir={made['artifacts']}", *overrides]
    code = quantize_task(compose_config(args), args)
    folders = [p for p in made["artifacts"].iterdir() if p.name.startswith(f"{name}-")]
    manifest = Manifest.load(folders[0])
    return code, manifest, json.loads((folders[0] / "verify.json").read_text())


def graph_inputs(path) -> dict[str, list]:
    graph = onnx.load(str(path)).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


def text_data(made, *extra):
    checkpoint, data = made["text"]
    return [f"model.name_or_path={checkpoint}", "model.task=text-classification", "calibration=files",
            f"calibration.data_files=[{data}]", "calibration.text_column=sentence", "calibration.label_column=label",
            "calibration.n_samples=32", "calibration.n_validation=48", "calibration.n_heldout=48", *extra]


def native_figures(report):
    assert report["status"] == "pass", json.dumps(report["profiles"], indent=1)[-3000:]
    assert report["profiles"]["haswell"]["status"] == "pass" and report["profiles"]["haswell"]["emulated"]
    return report["profiles"]["native"]["fidelity"]


def test_text_classifier_dynamic_keeps_its_head_and_is_judged_by_accuracy_and_macro_f1(made):
    code, manifest, report = build(made, "topics", *text_data(made, "mode=dynamic"))
    assert code == 0
    inputs = graph_inputs(manifest.path("reference.onnx"))
    assert list(inputs) == ["input_ids", "token_type_ids", "attention_mask"]  # BERT has token types
    assert all(isinstance(dims[0], str) and isinstance(dims[1], str) for dims in inputs.values())  # dynamic axes
    assert manifest.output_names == ["logits"] and manifest.model_kind == "classifier"
    # a BERT: the fused graph (model.fuse), whose Attention dynamic int8 runs as QAttention
    assert manifest.fusion.operators["Attention"] == 2 and manifest.fusion.left_unfused == []
    assert sum(node.op_type == "QAttention" for node in onnx.load(str(manifest.path("model.onnx"))).graph.node) == 2
    figures = native_figures(report)
    # Trained for seconds on half the sentences, judged on the other half: real, well above chance (1/3).
    assert figures["reference_accuracy"] > 0.6 and figures["reference_macro_f1"] > 0.55, figures
    assert figures["reference_accuracy"] - figures["accuracy"] <= 0.02 and figures["top1_agreement"] >= 0.97
    assert report["profiles"]["native"]["thresholds"]["max_macro_f1_drop"] == 0.05
    assert {"validation_accuracy", "validation_macro_f1", "validation_top1_agreement"} <= set(manifest.int8_metrics)
    # Optimum's ORTModelForSequenceClassification loads the folder as it is (config.json, tokenizer, model.onnx)
    # and gives the logits onnxruntime gives here
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from tests.fixtures.optimum_venv import optimum_sequence_logits
    text = "Quantized models must run on the CPUs they are meant for."
    loaded = optimum_sequence_logits(manifest.folder, text)
    tokens = AutoTokenizer.from_pretrained(str(manifest.folder))([text], return_tensors="np")
    session = ort.InferenceSession(str(manifest.path("model.onnx")), providers=["CPUExecutionProvider"])
    ours = session.run(None, {i.name: tokens[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    assert np.allclose(np.asarray(loaded["logits"]), ours, atol=1e-5)
    assert len(loaded["labels"]) == ours.shape[-1]


def test_text_classifier_static_on_sentence_pairs(made):
    code, manifest, report = build(made, "topic-pairs", *text_data(made, "mode=static", "calibration.text_pair_column=pair"))
    assert code == 0
    heldout = manifest.path("heldout.npz")
    import numpy as np
    with np.load(heldout) as arrays:
        assert arrays["token_type_ids"].max() == 1  # the second sentence of each pair
    # static int8 of the fused graph: Attention as QAttention (dynamic: QDQ has no rule for it), the rest static QDQ
    assert manifest.fusion.operators["SkipLayerNormalization"] == 4 and manifest.fusion.operators["Attention"] == 2
    assert sum(node.op_type == "QAttention" for node in onnx.load(str(manifest.path("model.onnx"))).graph.node) == 2
    assert "macro_f1" in native_figures(report)


def test_image_classifier_static_on_an_imagefolder(made):
    checkpoint, images = made["image"]
    code, manifest, report = build(made, "digits-vit", f"model.name_or_path={checkpoint}",
                                   "model.task=image-classification", "mode=static", "calibration=images",
                                   f"calibration.path={images}", "calibration.n_samples=32",
                                   "calibration.n_validation=64", "calibration.n_heldout=64")
    assert code == 0
    inputs = graph_inputs(manifest.path("reference.onnx"))
    assert list(inputs) == ["pixel_values"] and isinstance(inputs["pixel_values"][0], str)
    assert inputs["pixel_values"][1:] == [3, 8, 8]
    assert manifest.fusion is None  # a ViT: exported as it is
    figures = native_figures(report)
    assert figures["reference_accuracy"] > 0.6 and figures["macro_f1"] > 0.5, figures  # chance: 0.1
    assert manifest.calibration.dataset == "digit_images"


def test_token_classifier_is_judged_per_non_padding_token(made):
    checkpoint, data = made["token"]
    code, manifest, report = build(made, "tagger", f"model.name_or_path={checkpoint}", "mode=dynamic",
                                   "model.task=token-classification", "calibration=files",
                                   f"calibration.data_files=[{data}]", "calibration.text_column=words",
                                   "calibration.label_column=tags", "calibration.n_samples=16",
                                   "calibration.n_validation=32", "calibration.n_heldout=32")
    assert code == 0
    import numpy as np
    with np.load(manifest.path("heldout.npz")) as arrays:
        labels, mask = arrays["labels"], arrays["attention_mask"]
    assert labels.shape == mask.shape and (labels[mask == 0] == -100).all()  # one label per token, none on padding
    figures = native_figures(report)
    assert figures["reference_accuracy"] > 0.75 and "macro_f1" in figures, figures


def test_feature_extraction_last_hidden_state_by_per_token_cosine(made):
    code, manifest, report = build(made, "hidden", f"model.name_or_path={made['headless']}",
                                   "model.task=feature-extraction", "model.embedding_output=last_hidden_state",
                                   "calibration.n_samples=16", "calibration.n_validation=16", "calibration.n_heldout=16")
    assert code == 0
    assert manifest.model_kind == "embedding" and manifest.output_names == ["last_hidden_state"]
    native = report["profiles"]["native"]
    assert native["fidelity_by_output"]["last_hidden_state"]["kind"] == "token_states"
    assert native_figures(report)["cosine_worst"] > 0.95


def test_image_classifier_qat_distils_without_dropout(made):
    """mode=qat of a checkpoint without a labelled train split: self-distillation, in eval mode. In train mode (as
    before) the ViT's dropout made every step's target noise (with 32 validation images: 0.78 fp32, 0.69 int8)."""
    checkpoint, images = made["image"]
    args = ["model=hf", "model.name=digits-vit-qat", f"model.name_or_path={checkpoint}",
            "model.task=image-classification", "mode=qat", "target=avx2", "calibration=images",
            f"calibration.path={images}", "calibration.n_samples=32", "calibration.n_validation=64",
            "calibration.n_heldout=64", "verify.enabled=false", f"artifacts_dir={made['artifacts']}"]
    assert quantize_task(compose_config(args), args) == 0
    manifest = Manifest.load(made["artifacts"] / "digits-vit-qat-qat-avx2")
    assert manifest.qat["objective"].startswith("1 - cosine to the fp32 model's outputs")
    fp32, int8 = manifest.fp32_metrics, manifest.int8_metrics
    assert fp32["validation_accuracy"] > 0.6, fp32
    assert fp32["validation_accuracy"] - int8["validation_accuracy"] <= 0.02, int8
    assert int8["validation_top1_agreement"] >= 0.9, int8

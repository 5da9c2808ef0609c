"""model=hf's fused fp32 graph (model.fuse, pipeline/builder/fuse.py): BERT-like text encoders are exported with eager
attention by the TorchScript exporter and fused as MiniLM is; image models and model.fuse=false keep the dynamo export.

Real parts: a tiny BERT classifier trained for seconds on Python's own documentation (tests/fixtures/hf_checkpoints.py),
its real tokenizer, real onnxruntime sessions; a tiny random checkpoint of every model type hf_family lists as fusable.
Fast (about 30 s): the export stage alone, no quantization or verification (tests/integration/test_hf_models.py).
"""
from __future__ import annotations

import csv

import numpy as np
import onnx
import pytest

from pipeline.builder import export, hf_family
from pipeline.builder.fuse import CONTRIB_DOMAIN, fuse_transformer, operator_counts
from pipeline.config import compose_config
from pipeline.manifest import Manifest
from tests.fixtures import hf_checkpoints

TINY_BERT_FUSED = {"Attention": 2, "BiasGelu": 2, "EmbedLayerNormalization": 1, "SkipLayerNormalization": 4}
FP32_NOISE = 1e-4


def session(model):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model) if not isinstance(model, bytes) else model, options,
                                providers=["CPUExecutionProvider"])


def graph_ops(path) -> dict[str, int]:
    return operator_counts(onnx.load(str(path)))


def contrib_ops(model) -> set[str]:
    """onnxruntime's own operators in `model` (an onnx.ModelProto or a path)."""
    model = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    return {node.op_type for node in model.graph.node if node.domain == CONTRIB_DOMAIN}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-fused")
    text, data = hf_checkpoints.text_classifier(folder, steps=40)  # trained: logits well away from fp32 noise
    with open(data, newline="") as handle:
        rows = list(csv.DictReader(handle))[:24]
    return {"folder": folder, "text": text, "sentences": [row["sentence"] for row in rows],
            "pairs": [(row["sentence"], row["pair"]) for row in rows],
            "image": hf_checkpoints.image_classifier(folder, steps=0)}  # random: only its graph is looked at


def export_stage(made, name: str, *overrides: str) -> Manifest:
    """The build's export stage (pipeline/builder/export.py) into a folder of its own."""
    cfg = compose_config(["model=hf", *overrides])
    folder = made["folder"] / name
    folder.mkdir()
    manifest = Manifest(name=name, model="hf", mode=cfg.mode.name, target=cfg.target.name, artifact_dir=str(folder))
    return export.run(cfg, manifest)


def family_of(*overrides: str):
    from pipeline.builder.models import model_family
    return model_family(compose_config(["model=hf", *overrides]))


def outputs(path, inputs: dict) -> np.ndarray:
    return session(path).run(None, inputs)[0]


def test_a_bert_classifier_is_fused_and_matches_its_unfused_export(made):
    manifest = export_stage(made, "topics", f"model.name_or_path={made['text']}", "model.task=text-classification")
    assert manifest.fusion.operators == TINY_BERT_FUSED and manifest.fusion.left_unfused == []
    assert (manifest.fusion.num_heads, manifest.fusion.hidden_size) == (2, 32)
    reference, unfused = manifest.path("reference.onnx"), manifest.path(export.UNFUSED_REFERENCE_FILE)
    assert graph_ops(reference) == TINY_BERT_FUSED and contrib_ops(unfused) == set()
    graph = onnx.load(str(reference)).graph
    assert [i.name for i in graph.input] == ["input_ids", "token_type_ids", "attention_mask"]
    assert all(d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim)  # dynamic batch, sequence
    family = family_of(f"model.name_or_path={made['text']}", "model.task=text-classification")
    for examples in (made["sentences"], made["pairs"]):
        inputs = family.encode(examples)
        fused, expected = outputs(reference, inputs), outputs(unfused, inputs)
        assert np.abs(expected).max() > 0.5  # trained logits, not fp32 noise
        assert np.abs(fused - expected).max() < FP32_NOISE
    assert inputs["token_type_ids"].max() == 1  # pairs: the second sentence's segment went through the fused embedding
    # and the export is the model's: the fused graph gives transformers' own logits
    import torch
    with torch.no_grad():
        logits = family.load_torch()(*[torch.from_numpy(inputs[name]) for name in family.input_names]).numpy()
    assert np.abs(fused - logits).max() < FP32_NOISE


def test_a_bert_sentence_embedding_is_fused_the_same_for_every_mode(made):
    checkpoint = f"model.name_or_path={made['text']}"
    manifest = export_stage(made, "embedding", checkpoint, "model.task=feature-extraction")
    # the explicit L2 norm (not F.normalize's Expand) lets symbolic shape inference, and SkipLayerNormalization, through
    assert manifest.fusion.operators == TINY_BERT_FUSED
    family = family_of(checkpoint, "model.task=feature-extraction")
    inputs = family.encode(made["sentences"])
    fused = outputs(manifest.path("reference.onnx"), inputs)
    assert np.abs(fused - outputs(manifest.path(export.UNFUSED_REFERENCE_FILE), inputs)).max() < FP32_NOISE
    assert np.allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-5)
    static = export_stage(made, "embedding-static", checkpoint, "model.task=feature-extraction", "mode=static")
    assert static.fusion.operators == TINY_BERT_FUSED and static.fusion.left_unfused == []
    assert np.abs(outputs(static.path("reference.onnx"), inputs) - fused).max() < FP32_NOISE


def test_without_fuse_a_bert_keeps_the_dynamo_export(made):
    manifest = export_stage(made, "unfused", f"model.name_or_path={made['text']}", "model.task=text-classification",
                            "model.fuse=false")
    assert manifest.fusion is None and not manifest.path(export.UNFUSED_REFERENCE_FILE).exists()
    assert contrib_ops(manifest.path("reference.onnx")) == set()
    assert manifest.input_names == ["input_ids", "token_type_ids", "attention_mask"]


def test_a_vit_image_classifier_is_not_fused(made):
    checkpoint, images = made["image"]
    args = [f"model.name_or_path={checkpoint}", "model.task=image-classification", "calibration=images",
            f"calibration.path={images}"]
    assert family_of(*args).fusable is False
    manifest = export_stage(made, "vit", *args)
    assert manifest.fusion is None and not manifest.path(export.UNFUSED_REFERENCE_FILE).exists()
    reference = onnx.load(str(manifest.path("reference.onnx")))
    assert all(node.op_type != "Attention" for node in reference.graph.node) and contrib_ops(reference) == set()


def tiny_config(model_type: str, vocab_size: int):
    from transformers import AutoConfig
    if model_type == "distilbert":
        sizes = dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    else:
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    # pad_token_id: the tokenizer's [PAD], from which roberta-like models count their positions
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, max_position_embeddings=130, pad_token_id=0,
                                **sizes)


def tiny_encoder(made, model_type: str):
    """(family, unfused TorchScript export) of a random 2-layer `model_type` encoder with MiniLM's tokenizer, as
    model=hf feature-extraction of its per-token hidden states."""
    import torch
    from transformers import AutoModel

    tokenizer = hf_checkpoints._tokenizer()
    torch.manual_seed(0)
    checkpoint = made["folder"] / f"tiny-{model_type}"
    AutoModel.from_config(tiny_config(model_type, tokenizer.vocab_size)).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    family = family_of(f"model.name_or_path={checkpoint}", "model.task=feature-extraction",
                       "model.embedding_output=last_hidden_state")
    unfused = export.export_torchscript(family.load_torch(attention="eager"), family.example_inputs(),
                                        family.dynamic_shapes(), family.input_names, family.output_names, 18)
    return family, unfused


@pytest.mark.parametrize("model_type", sorted(hf_family.FUSABLE_MODEL_TYPES))
def test_every_fusable_model_type_fuses_attention_in_every_layer(model_type, made):
    """hf_family.FUSABLE_MODEL_TYPES as measured: a random 2-layer encoder of each, its per-token hidden states."""
    family, unfused = tiny_encoder(made, model_type)
    assert family.fusable and family.attention_shape() == (2, 32)
    fused, record = fuse_transformer(onnx.load_from_string(unfused), *family.attention_shape())
    assert record.operators["Attention"] == 2 and record.operators["SkipLayerNormalization"] == 4
    # roberta-like position ids (counted from the padding) keep the embeddings' LayerNormalization: recorded
    missing = [] if "EmbedLayerNormalization" in record.operators else ["EmbedLayerNormalization"]
    assert [reason.split()[0] for reason in record.left_unfused] == missing
    inputs = family.encode(made["sentences"][:8] + ["Short.", "A"])
    tokens = inputs["attention_mask"].astype(bool)  # padding positions' states are never used
    expected = session(unfused).run(None, inputs)[0]
    assert np.abs(session(fused.SerializeToString()).run(None, inputs)[0] - expected)[tokens].max() < FP32_NOISE


def test_an_encoder_without_a_fusable_attention_is_recorded_as_such(made):
    """mpnet's relative position bias: the optimizer fuses its layer norms and GELUs but no Attention, and says so."""
    family, unfused = tiny_encoder(made, "mpnet")
    assert not family.fusable  # so a build exports it with the dynamo exporter, unfused
    _, record = fuse_transformer(onnx.load_from_string(unfused), *family.attention_shape())
    assert "Attention" not in record.operators and record.operators["SkipLayerNormalization"] >= 4
    assert [reason.split()[0] for reason in record.left_unfused] == ["Attention", "EmbedLayerNormalization"]

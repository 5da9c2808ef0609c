"""A user's sentence-transformers checkpoint is exported as the embedding it gives in sentence-transformers: a
[CLS]-pooled, unnormalised model's reference.onnx (fused) computes what `SentenceTransformer(folder)` computes, and
the int8 artifact is judged against that; the pooling is in the reference cache's key. (A module quantgate does not
export: tests/reliability/test_bad_hf_inputs.py.)"""
import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.builder import models, reference_cache
from pipeline.builder.models import model_family
from pipeline.builder.task import build
from pipeline.config import compose_config
from pipeline.runtimes import venvs
from tests.fixtures.hf_checkpoints import sentence_transformers_checkpoint

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8", "verify.enabled=false",
         "target=avx2", "mode=dynamic", "reference_cache=false"]


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory):
    return sentence_transformers_checkpoint(tmp_path_factory.mktemp("st") / "cls", "cls", normalize=False)


def sentence_transformers_embedding(folder, inputs: dict) -> np.ndarray:
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()
    with torch.no_grad():
        features = model({name: torch.from_numpy(array) for name, array in inputs.items()})
    return features["sentence_embedding"].numpy()


def run(path, inputs):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def test_a_cls_pooled_unnormalised_model_is_exported_as_sentence_transformers_runs_it(cls_model, tmp_path):
    manifest = build(compose_config(["model=minilm", f"model.name_or_path={cls_model}",
                                     f"artifacts_dir={tmp_path}", *SMALL]))
    with np.load(manifest.path("heldout.npz")) as held:
        inputs = {name: held[name] for name in manifest.input_names}
    expected = sentence_transformers_embedding(cls_model, inputs)
    assert not np.allclose(np.linalg.norm(expected, axis=1), 1.0)  # unnormalised: the old mean + L2 graph differs
    assert manifest.fusion.operators["Attention"] == 2  # the head does not stop the fusion
    assert manifest.sentence_embedding == "cls pooling, not normalised (cls/modules.json)"
    np.testing.assert_allclose(run(manifest.path("reference.onnx"), inputs), expected, rtol=1e-4, atol=1e-4)
    int8 = run(manifest.path("model.onnx"), inputs)
    cosine = np.sum(int8 * expected, axis=1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.95


@pytest.mark.parametrize("pooling", [("max",), ("cls", "max"), ("mean", "mean_sqrt_len_tokens")])
def test_every_pooling_fuses_and_runs_as_in_torch(cls_model, pooling):
    """Each pooling's export keeps the graph typed for onnxruntime's optimizer (max as TopK: ReduceMax-18 has no
    shape rule there), so the encoder still fuses, and the fused graph computes what the torch module does."""
    import dataclasses

    import onnx

    from pipeline.builder.export import export_torchscript
    from pipeline.builder.fuse import fuse_transformer
    family = model_family(compose_config(["model=minilm", f"model.name_or_path={cls_model}"]))
    family.sentence_head = dataclasses.replace(family.sentence_head, pooling=pooling, normalize=True)
    module = family.load_torch(attention="eager")
    exported = export_torchscript(module, family.example_inputs(), family.dynamic_shapes(), family.input_names,
                                  family.output_names, 18)
    fused, record = fuse_transformer(onnx.load_from_string(exported), *family.attention_shape())
    assert record.operators["Attention"] == 2 and record.operators["SkipLayerNormalization"] == 4
    inputs = family.encode(["a first sentence", "and a second, rather longer one"])
    with torch.no_grad():
        expected = module(*[torch.from_numpy(inputs[name]) for name in family.input_names]).numpy()
    actual = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    models._FAMILY_CACHE.clear()  # the family's head was changed for this test


def test_model_hf_feature_extraction_reads_the_same_head(cls_model):
    cfg = compose_config(["model=hf", f"model.name_or_path={cls_model}", "model.task=feature-extraction"])
    family = model_family(cfg)
    assert family.sentence_head.pooling == ("cls",) and not family.sentence_head.normalize
    inputs = {name: array for name, array in family.encode(["a first sentence", "and a second, longer one"]).items()}
    with torch.no_grad():
        ours = family.load_torch()(*[torch.from_numpy(inputs[name]) for name in family.input_names]).numpy()
    np.testing.assert_allclose(ours, sentence_transformers_embedding(cls_model, inputs), rtol=1e-5, atol=1e-5)


def test_the_pooling_is_in_the_reference_cache_key(cls_model, tmp_path):
    import shutil
    checkpoint = shutil.copytree(cls_model, tmp_path / "checkpoint")
    cfg = compose_config(["model=minilm", f"model.name_or_path={checkpoint}"])
    runtime = venvs.prepare(venvs.resolve(cfg.runtime)).record()
    key = reference_cache.entry_key(cfg, model_family(cfg), runtime)
    pooling = checkpoint / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode": "mean"}))
    models._FAMILY_CACHE.clear()  # each build is a process of its own, reading the checkpoint anew
    assert reference_cache.entry_key(cfg, model_family(cfg), runtime) != key



def test_a_fused_graph_the_shape_inference_cannot_type_is_refused_naming_model_fuse_false(cls_model, tmp_path,
                                                                                          monkeypatch, capsys):
    # ReduceMax-18 (its axes an input) has no rule in onnxruntime's symbolic shape inference: max pooling exported
    # that way (before it became TopK) left the fused graph untyped, and the build died with a TypeError, exit 70
    from pipeline.builder.sentence_head import SentenceHead
    from pipeline.cli import main
    from tests.reliability.helpers import published
    monkeypatch.setattr(SentenceHead, "embed", lambda self, hidden, mask: hidden.amax(dim=1) * 2.0)
    command = ["build", "model=minilm", f"model.name_or_path={cls_model}", f"artifacts_dir={tmp_path}", *SMALL]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "onnxruntime's symbolic shape inference cannot type the fused graph of this model" in error
    assert "build it unfused with model.fuse=false" in error and "Traceback" not in error
    assert published(tmp_path) == []
    assert main([*command, "model.fuse=false"]) == 0  # the fix it names


def test_the_default_prompt_comes_first_in_every_split_as_encode_puts_it(tmp_path, capfd):
    """An e5-style checkpoint: `encode` puts "query: " before every text, so traffic starts with it; calibrated on
    bare texts, the artifact was calibrated, gated and verified on inputs it never sees. Texts that already carry
    the prompt are counted, with the way out."""
    from sentence_transformers import SentenceTransformer

    from tests.fixtures.hf_checkpoints import topic_sentences
    folder = sentence_transformers_checkpoint(tmp_path / "e5", "mean", normalize=True,
                                              prompts={"query": "query: ", "passage": "passage: "},
                                              default_prompt_name="query")
    texts = [("query: " if i % 2 else "") + sentence for i, (sentence, _) in enumerate(topic_sentences()[:40])]
    data = tmp_path / "traffic.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    manifest = build(compose_config(["model=minilm", f"model.name_or_path={folder}", f"artifacts_dir={tmp_path}",
                                     "calibration=files", f"calibration.data_files=[{data}]", *SMALL]))
    said = capfd.readouterr().err
    assert "every text gets the prompt 'query: ' first (e5/config_sentence_transformers.json default_prompt_name)" \
        in said
    doubled = sum(text.startswith("query: ") for text in texts)
    assert re.search(r"(\d+) of 16 calibration texts already start with 'query: ' and now read 'query: query: '"
                     r"\.\.\.; if your traffic carries the prompt, build with model.prompt_name=''", said), said
    assert 0 < int(re.search(r"(\d+) of 16 calibration texts already", said).group(1)) <= doubled
    assert manifest.sentence_embedding.endswith("; prompt 'query: ' before every text "
                                                "(e5/config_sentence_transformers.json default_prompt_name)")
    family = model_family(compose_config(["model=minilm", f"model.name_or_path={folder}"]))
    for split, key in (("heldout.npz", "input_ids"), ("validation.npz", "input_ids"),
                       ("calibration.npz", "0000.input_ids")):  # calibration: in batches
        with np.load(manifest.path(split)) as arrays:
            first = family.tokenizer().decode(arrays[key][0])
        assert first.startswith("[CLS] query :"), (split, first)
    texts = ["the first sentence", "and a second one, rather longer"]
    encoded = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(texts)
    np.testing.assert_allclose(run(manifest.path("reference.onnx"), family.encode(texts)), encoded, atol=1e-5)
    bare = model_family(compose_config(["model=minilm", f"model.name_or_path={folder}", "model.prompt_name=''"]))
    assert bare.encode(["a text"])["input_ids"].tolist() == [family.tokenizer()("a text")["input_ids"]]
    passage = model_family(compose_config(["model=minilm", f"model.name_or_path={folder}",
                                           "model.prompt_name=passage"]))
    assert family.tokenizer().decode(passage.encode(["a text"])["input_ids"][0]) == "[CLS] passage : a text [SEP]"
    # the person signing the release sees what a deployment must put before every text
    from pipeline.commands.signoff import main as signoff_main
    signoff_main(["--release", "rc", "--artifacts-dir", str(tmp_path), "--out", str(tmp_path / "reports")])
    expected = "sentence embedding: mean pooling, L2-normalised (e5/modules.json); prompt 'query: ' before every text"
    assert expected in (tmp_path / "reports" / "signoff.md").read_text()
    assert expected.replace("'", "&#39;") in (tmp_path / "reports" / "signoff.html").read_text()

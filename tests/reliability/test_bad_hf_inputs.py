"""model=hf refuses, in words, with exit 2 and no artifact folder: a task it cannot export, a checkpoint without
the task's head, images that cannot be decoded, labels outside the model's id2label. The command runs in this
process (`pipeline.cli.main`, as `quantgate build` does): a child per case would spend most of its time importing
torch; the hub-cache case runs as a child, since huggingface_hub reads HF_HUB_CACHE once, at import."""
import contextlib
import io
import json
import shutil
import subprocess

import pytest

from pipeline.cli import main
from tests.fixtures import hf_checkpoints
from tests.reliability.helpers import assert_user_error, published, quantgate

OFFLINE = {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Untrained tiny checkpoints: these cases fail before any model runs."""
    folder = tmp_path_factory.mktemp("hf-bad")
    text, data = hf_checkpoints.text_classifier(folder, steps=0)
    image, images = hf_checkpoints.image_classifier(folder, steps=0, per_class=2)
    return {"folder": folder, "text": text, "csv": data, "image": image, "images": images,
            "headless": hf_checkpoints.headless_text_model(folder)}


def refused(tmp_path, *args, env=None):
    command = ["build", "model=hf", f"artifacts_dir={tmp_path / 'artifacts'}", "verify.enabled=false", *args]
    if env:
        result = quantgate(*command, env={**OFFLINE, **env})
    else:
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            code = main(command)
        result = subprocess.CompletedProcess(command, code, "", errors.getvalue())
    assert result.returncode == 2, result.stderr[-3000:]
    assert published(tmp_path / "artifacts") == []
    return result


def test_unsupported_task_names_the_supported_ones(tmp_path, made):
    result = refused(tmp_path, f"model.name_or_path={made['text']}", "model.task=summarization")
    assert_user_error(result, "model.task='summarization'", "feature-extraction, text-classification, "
                      "token-classification, image-classification")


def test_architecture_without_the_task_names_what_is_supported(tmp_path, made):
    result = refused(tmp_path, f"model.name_or_path={made['image']}", "model.task=token-classification")
    assert_user_error(result, "architecture 'vit' cannot be exported for model.task=token-classification",
                      "supported model types for token-classification: albert")


def test_checkpoint_without_the_head(tmp_path, made):
    result = refused(tmp_path, f"model.name_or_path={made['headless']}", "model.task=text-classification")
    assert_user_error(result, "BertModel checkpoint without the text-classification head")


def test_weights_without_the_head(tmp_path, made):
    """A config that does not say what it is (no `architectures`): the missing classifier weights are found."""
    checkpoint = shutil.copytree(made["headless"], tmp_path / "no-architectures")
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("architectures", None)
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = refused(tmp_path, f"model.name_or_path={checkpoint}", "model.task=text-classification")
    assert_user_error(result, "the weights lack 2 parameter(s)", "classifier.weight", "no trained text-classification head")


def test_image_that_cannot_be_decoded_is_named(tmp_path, made):
    images = shutil.copytree(made["images"], tmp_path / "images")
    (images / "3" / "broken.png").write_bytes(b"not a png at all")
    result = refused(tmp_path, f"model.name_or_path={made['image']}", "model.task=image-classification",
                     "calibration=images", f"calibration.path={images}")
    assert_user_error(result, f"image {images / '3' / 'broken.png'} cannot be decoded")


def test_labels_outside_id2label(tmp_path, made):
    """Named by the file's row: a text too short to keep before it does not shift the number."""
    data = tmp_path / "labels.csv"
    data.write_text("sentence,label\nHi,debugger\n" + "".join(
        f"A sentence long enough to be kept: number {i}.,{label}\n"
        for i, label in enumerate(["debugger", "string-methods", "weather"])))
    result = refused(tmp_path, f"model.name_or_path={made['text']}", "model.task=text-classification",
                     "calibration=files", f"calibration.data_files=[{data}]", "calibration.text_column=sentence",
                     "calibration.label_column=label")
    assert_user_error(result, "row 4: label 'weather' is outside the model's labels",
                      "0: 'debugger', 1: 'string-methods', 2: 'typesmapping'")


def test_class_id_outside_id2label(tmp_path, made):
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps({"text": f"Another sentence long enough to be kept, {i}.", "label": label}) + "\n"
                            for i, label in enumerate([0, 2, 7])))
    result = refused(tmp_path, f"model.name_or_path={made['text']}", "model.task=text-classification",
                     "calibration=files", f"calibration.data_files=[{data}]", "calibration.label_column=label")
    assert_user_error(result, "row 3: label 7 is outside the model's labels", "ids 0..2")


def test_hub_id_resolves_from_the_local_hub_cache_only(tmp_path, made):
    """A hub id is looked up in the local hub cache (never downloaded): here one made by hand."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--digits-vit" / "snapshots" / ("0" * 40)
    shutil.copytree(made["image"], snapshot)
    (cache / "models--someone--digits-vit" / "refs").mkdir()
    (cache / "models--someone--digits-vit" / "refs" / "main").write_text("0" * 40)
    result = refused(tmp_path, "model.name_or_path=someone/digits-vit", "model.task=token-classification",
                     env={"HF_HUB_CACHE": str(cache)})
    assert_user_error(result, "architecture 'vit' cannot be exported")  # found, read, then refused for the task
    missing = refused(tmp_path, "model.name_or_path=someone/not-cached", "model.task=text-classification")
    assert_user_error(missing, "'someone/not-cached' does not exist", "local hub cache")


@pytest.mark.parametrize("model", ["minilm", "hf"])
def test_a_sentence_transformers_module_quantgate_does_not_export_is_refused(tmp_path, model):
    # Dense after the pooling: exported without it, the artifact would compute another embedding than the model's
    dense = hf_checkpoints.sentence_transformers_checkpoint(tmp_path / "dense", "mean", normalize=True, dense=True)
    command = ["build", f"model={model}", f"model.name_or_path={dense}", f"artifacts_dir={tmp_path / 'artifacts'}",
               "verify.enabled=false", *(["model.task=feature-extraction"] if model == "hf" else [])]
    result = quantgate(*command, env=OFFLINE)
    assert result.returncode == 2, result.stderr[-2000:]
    assert_user_error(result, "dense/modules.json lists Transformer -> Pooling -> Dense -> Normalize",
                      "model.embedding_output=last_hidden_state")
    assert published(tmp_path / "artifacts") == []


def test_a_prompt_the_checkpoint_does_not_have_is_refused(tmp_path):
    e5 = hf_checkpoints.sentence_transformers_checkpoint(tmp_path / "e5", "mean", normalize=True,
                                                         prompts={"query": "query: ", "passage": "passage: "},
                                                         default_prompt_name="query")
    result = quantgate("build", "model=minilm", f"model.name_or_path={e5}", "model.prompt_name=question",
                       f"artifacts_dir={tmp_path / 'artifacts'}", "verify.enabled=false", env=OFFLINE)
    assert result.returncode == 2, result.stderr[-2000:]
    assert_user_error(result, "e5/config_sentence_transformers.json has no prompt named 'question' "
                              "(model.prompt_name=question); its prompts:", "'passage'", "model.prompt_name=''")
    assert published(tmp_path / "artifacts") == []


@pytest.mark.parametrize("model", ["minilm", "hf"])
def test_max_length_longer_than_the_position_table_is_refused(tmp_path, model, made):
    """Before: with calibration texts that long (sentence pairs, model=hf), a traceback from onnxruntime in the
    calibrate stage (exit 70); with shorter ones (model=minilm), an artifact built for 600 tokens that no text over
    512 can run through."""
    extra = ["model.task=text-classification", f"model.name_or_path={made['text']}", "calibration=files",
             f"calibration.data_files=[{made['csv']}]", "calibration.text_column=sentence",
             "calibration.text_pair_column=pair"] if model == "hf" else []
    result = quantgate("build", f"model={model}", "model.max_length=600", *extra,
                       f"artifacts_dir={tmp_path / 'artifacts'}", "verify.enabled=false", env=OFFLINE)
    assert result.returncode == 2, result.stderr[-2000:]
    limit = "512 tokens (config.json max_position_embeddings=512)" if model == "minilm" else \
        "128 tokens (config.json max_position_embeddings=128)"
    assert_user_error(result, "model.max_length=600 is longer than", f"has positions for: {limit}")
    assert published(tmp_path / "artifacts") == []

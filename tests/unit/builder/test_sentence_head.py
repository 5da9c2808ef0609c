"""The sentence head (pipeline/builder/sentence_head.py): each pooling computes what sentence-transformers' own Pooling
and Normalize modules compute; modules.json is read in its new and its older form; what is not exported is refused."""
import json

import pytest
import torch

from pipeline.builder.sentence_head import SentenceHead, read_sentence_head
from pipeline.errors import InputError


@pytest.mark.parametrize("pooling", ["cls", "max", "mean", "mean_sqrt_len_tokens", ("cls", "mean"), ("max", "cls")])
def test_each_pooling_is_what_sentence_transformers_computes(pooling):
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    torch.manual_seed(0)
    hidden = torch.randn(4, 7, 16) * 4
    # padded on the right, as BERT's tokenizers do, and one row on the left, as some tokenizers do
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5, [0] * 3 + [1] * 4])
    theirs = Pooling(16, pooling_mode=pooling)({"token_embeddings": hidden.clone(), "attention_mask": mask})
    modes = (pooling,) if isinstance(pooling, str) else pooling
    ours = SentenceHead(pooling=modes, normalize=False).embed(hidden, mask)
    torch.testing.assert_close(ours, theirs["sentence_embedding"])
    normalised = Normalize()(dict(theirs))["sentence_embedding"]
    torch.testing.assert_close(SentenceHead(pooling=modes).embed(hidden, mask), normalised)
    assert not torch.allclose(ours.norm(dim=1), torch.ones(4))  # the two differ: normalisation is not implied


def write_checkpoint(folder, pooling_config: dict, *after: str):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    modules += [{"idx": 2 + i, "name": str(2 + i), "path": f"{2 + i}_{kind}",
                 "type": f"sentence_transformers.models.{kind}"} for i, kind in enumerate(after)]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return folder


def test_modules_json_in_its_older_and_newer_forms(tmp_path):
    assert read_sentence_head(tmp_path) == SentenceHead(pooling=("mean",), normalize=True)  # no modules.json
    older = write_checkpoint(tmp_path, {"word_embedding_dimension": 64, "pooling_mode_cls_token": True,
                                        "pooling_mode_mean_tokens": False}, "Normalize")
    assert read_sentence_head(older) == SentenceHead(pooling=("cls",), normalize=True,
                                                     source=f"{tmp_path.name}/modules.json")
    newer = write_checkpoint(tmp_path, {"embedding_dimension": 64, "pooling_mode": ["max", "mean"]})
    head = read_sentence_head(newer)
    assert (head.pooling, head.normalize) == (("max", "mean"), False)
    assert head.describe() == f"max + mean pooling, not normalised ({tmp_path.name}/modules.json)"
    single = write_checkpoint(tmp_path, {"embedding_dimension": 64, "pooling_mode": "mean_sqrt_len_tokens"},
                              "Normalize")
    assert read_sentence_head(single).pooling == ("mean_sqrt_len_tokens",)


@pytest.mark.parametrize("case, expected", [
    ("dense", "lists Transformer -> Pooling -> Dense -> Normalize: quantgate exports Transformer -> Pooling "
              "[-> Normalize] only"),
    ("weightedmean", "pooling weightedmean is not one quantgate exports (it exports cls, max, mean, "
                     "mean_sqrt_len_tokens)"),
    ("lasttoken", "pooling lasttoken is not one quantgate exports"),
    ("not json", "is not a sentence-transformers module list"),
    ("no pooling config", "the Pooling module's settings, cannot be read"),
    ("pooling config a list", "the Pooling module's settings, cannot be read"),
    ("pooling mode a number", "pooling_mode (3,) is not a name or a list of names"),
])
def test_what_is_not_exported_is_refused_by_name(tmp_path, case, expected):
    if case == "dense":
        write_checkpoint(tmp_path, {"pooling_mode": "mean"}, "Dense", "Normalize")
    elif case in ("weightedmean", "lasttoken"):
        write_checkpoint(tmp_path, {"pooling_mode": case})
    elif case == "not json":
        write_checkpoint(tmp_path, {"pooling_mode": "mean"})
        (tmp_path / "modules.json").write_text("[{\"type\": ")
    elif case == "pooling config a list":
        write_checkpoint(tmp_path, {"pooling_mode": "mean"})
        (tmp_path / "1_Pooling" / "config.json").write_text("[\"mean\"]")
    elif case == "pooling mode a number":
        write_checkpoint(tmp_path, {"pooling_mode": [3]})
    else:
        write_checkpoint(tmp_path, {"pooling_mode": "mean"})
        (tmp_path / "1_Pooling" / "config.json").unlink()
    with pytest.raises(InputError) as refused:
        read_sentence_head(tmp_path)
    assert expected in str(refused.value)
    if case in ("dense", "weightedmean", "lasttoken"):
        assert "model.embedding_output=last_hidden_state" in str(refused.value)  # the way out


def write_prompts(folder, prompts: dict, default):
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts,
                                                                          "default_prompt_name": default}))
    return folder


def test_the_prompt_is_what_encode_puts_before_every_text(tmp_path):
    write_prompts(write_checkpoint(tmp_path, {"pooling_mode": "mean"}, "Normalize"),
                  {"query": "query: ", "passage": "passage: ", "document": ""}, "query")
    head = read_sentence_head(tmp_path)
    assert head.prompt == "query: " and head.prompted(["a", "b"]) == ["query: a", "query: b"]
    assert head.describe().endswith(f"; prompt 'query: ' before every text "
                                    f"({tmp_path.name}/config_sentence_transformers.json default_prompt_name)")
    assert read_sentence_head(tmp_path, "passage").prompted(["a"]) == ["passage: a"]
    for none in ("", "document"):
        head = read_sentence_head(tmp_path, none)
        assert head.prompt == "" and head.prompted(["a"]) == ["a"] and "before every text" not in head.describe()
    write_prompts(tmp_path, {"query": "query: "}, None)  # prompts, no default: encode puts none
    assert read_sentence_head(tmp_path).prompt == ""
    assert read_sentence_head(tmp_path, "query").prompt == "query: "


@pytest.mark.parametrize("prompts, default, prompt_name, pooling, expected", [
    ({"query": "q: "}, None, "pasage", {}, "has no prompt named 'pasage' (model.prompt_name=pasage); its prompts: "
                                           "'query'"),
    ({"query": "q: "}, "search", None, {}, "has no prompt named 'search' (its default_prompt_name 'search')"),
    ("q: ", None, None, {}, "config_sentence_transformers.json cannot be read (prompts 'q: ' is not a mapping"),
    ({}, None, "query", {}, "has no prompt named 'query' (model.prompt_name=query); it has no prompts; leave "
                            "model.prompt_name out"),
    ({"query": "q: "}, "query", None, {"include_prompt": False}, "leaves the prompt's tokens out of the pooling"),
])
def test_a_prompt_that_cannot_be_applied_is_refused(tmp_path, prompts, default, prompt_name, pooling, expected):
    write_prompts(write_checkpoint(tmp_path, {"pooling_mode": "mean", **pooling}), prompts, default)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_sentence_head(tmp_path, prompt_name)
    # without a prompt, include_prompt=false changes nothing: read as before
    if pooling:
        assert read_sentence_head(tmp_path, "").prompt == ""

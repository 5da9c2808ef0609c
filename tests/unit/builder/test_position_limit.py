"""model.max_length longer than a checkpoint has positions for stopped onnxruntime in the calibrate stage with a
traceback (exit 70: "input_ids and position_ids shall have same sequence_length"). It is refused when the family is
made, with the limit. The limit is checked here against transformers' own modules: each architecture runs at the
limit and fails one token past it."""
import pytest
import torch

from pipeline.builder.checkpoints import POSITIONS_AFTER_PADDING, POSITIONS_FROM_ZERO, check_max_length, max_tokens
from pipeline.errors import InputError

SMALL = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=20)


def config_for(model_type: str):
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    config = CONFIG_MAPPING[model_type](**SMALL)
    if model_type == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                               max_position_embeddings=20)
    if model_type in ("albert", "electra", "squeezebert"):
        config.embedding_size = 16
    return config


@pytest.mark.parametrize("model_type", sorted(POSITIONS_FROM_ZERO | POSITIONS_AFTER_PADDING))
def test_the_limit_is_where_transformers_stops(model_type):
    from transformers import AutoModel
    config = config_for(model_type)
    limit = max_tokens(config.to_dict())
    assert limit == (20 if model_type in POSITIONS_FROM_ZERO else 20 - config.pad_token_id - 1)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    ids = torch.full((1, limit + 1), 5)
    with torch.no_grad():
        model(input_ids=ids[:, :limit])  # runs at the limit
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=ids)  # one past it: no position for the last token


def test_a_longer_max_length_is_refused_with_the_limit(tmp_path):
    roberta = {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    check_max_length(512, roberta, tmp_path / "roberta-base")
    with pytest.raises(InputError) as refused:
        check_max_length(514, roberta, tmp_path / "roberta-base")
    assert str(refused.value) == ("model.max_length=514 is longer than roberta-base has positions for: 512 tokens "
                                  "(config.json max_position_embeddings=514; roberta counts positions from "
                                  "pad_token_id + 1 = 2); set model.max_length=512 or less")
    with pytest.raises(InputError, match=r"bert has positions for: 128 tokens \(config.json max_position_embeddings="
                                         r"128\); set model.max_length=128 or less"):
        check_max_length(129, {"model_type": "bert", "max_position_embeddings": 128}, tmp_path / "bert")
    # positions quantgate does not know to be a bounded table: not refused here
    check_max_length(10_000, {"model_type": "modernbert", "max_position_embeddings": 128}, tmp_path / "modern")
    check_max_length(10_000, {"model_type": "bert"}, tmp_path / "no-table")

"""Texts the tokenizer cuts at model.max_length are counted (the build says how many, and what it means)."""
from pipeline.builder.calibrate import rows_at_max_length
from pipeline.builder.models import model_family
from pipeline.config import compose_config


def test_texts_longer_than_max_length_are_counted_and_shorter_ones_are_not():
    family = model_family(compose_config(["model=minilm", "model.max_length=16"]))
    short = ["a short sentence.", "another one, also short."]
    long = [" ".join(["word"] * 40), " ".join(["token"] * 15)]  # 42 and 17 tokens with [CLS] and [SEP]
    exact = [" ".join(["x"] * 14)]  # 16 tokens: fills the length, counted as possibly cut
    batches = [family.encode(short + long[:1]), family.encode(long[1:] + exact), family.encode(short, True)]
    assert [b["input_ids"].shape[1] for b in batches] == [16, 16, 16]
    assert rows_at_max_length(batches, 16) == 3
    assert rows_at_max_length([family.encode(short)], 16) == 0
    assert rows_at_max_length([{"pixels": batches[0]["input_ids"]}], 16) == 0  # no token mask: nothing to count

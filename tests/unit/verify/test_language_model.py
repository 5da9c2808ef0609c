"""Language-model figures and the rules of weight-only decoder configs (no model: fast)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.verify.language_model import figures, problems


def test_identical_logits_are_perfect_and_a_shuffled_model_fails_in_words():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(12, 50)).astype(np.float32) * 3 for _ in range(3)]
    ids = [rng.integers(0, 50, 12) for _ in range(3)]
    same = figures(logits, logits, ids)
    assert same["kl_divergence"] == pytest.approx(0, abs=1e-9) and same["next_token_agreement"] == 1.0
    assert same["perplexity_increase"] == pytest.approx(0, abs=1e-9) and same["positions"] == 33
    limits = {"max_kl_divergence": 0.1, "min_next_token_agreement": 0.8, "max_perplexity_increase": 0.1}
    assert problems(same, limits) == []
    shuffled = figures(logits, [a[:, rng.permutation(50)] for a in logits], ids)
    words = problems(shuffled, limits)
    assert any(w.startswith("KL divergence to fp32") and f"{shuffled['kl_divergence']:.4f}" in w for w in words)
    assert any("next-token agreement" in w for w in words)


def test_matmulnbits_weights_are_counted_by_bits_and_scheme():
    from pipeline.builder.graph_counts import count_graph
    weight = helper.make_tensor("w", TensorProto.UINT8, [8, 1, 16], bytes(128), raw=True)
    scales = helper.make_tensor("s", TensorProto.FLOAT, [8], [1.0] * 8)
    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=32, N=8, bits=4,
                            block_size=32, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight, scales])
    counts = count_graph(helper.make_model(graph))
    assert counts.as_stamp()["blockwise_weights"] == [
        {"op": "MatMulNBits", "bits": 4, "block_size": 32, "symmetric": True, "accuracy_level": 4, "weights": 1}]
    assert counts.int8_weights == 0 and "1 MatMulNBits weight(s) of 4 bits in blocks of 32" in counts.describe()


@pytest.mark.parametrize("overrides,words", [
    (["mode=int4"], "mode=int4 is weight-only for decoder language models"),
    (["model=hf", "model.task=text-generation", "model.name_or_path=x", "mode=dynamic"], "use MODE=int4 or MODE=int8"),
    (["model=hf", "model.task=text-generation", "model.name_or_path=x", "mode=int4", "mode.block_size=48"],
     "mode.block_size=48"),
    (["model=hf", "model.task=text-generation", "model.name_or_path=x", "mode=int8", "target.accuracy_level=7"],
     "target.accuracy_level=7"),
    (["model=hf", "model.task=text-generation", "model.name_or_path=x", "mode=int4", "target.decoder_features=[avx3]"],
     "target.decoder_features names avx3"),
])
def test_weight_only_configs_are_refused_in_words(compose, overrides, words):
    from pipeline.config import rules
    from pipeline.errors import UsageError
    with pytest.raises(UsageError, match=words.replace(".", r"\.").replace("(", r"\(")):
        rules.check(compose(overrides))


def test_greedy_agreement_counts_tokens_before_the_first_difference():
    from pipeline.verify.language_model import greedy_agreement
    assert greedy_agreement([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0
    assert greedy_agreement([[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 2, 9, 4], [0, 6, 7, 8]]) == pytest.approx(0.25)

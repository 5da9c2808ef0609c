"""Keys nothing reads and onnxruntime knobs that cannot apply are refused before any work, naming the fix."""
import pytest

from pipeline.config import compose_config
from pipeline.config.rules import check
from pipeline.errors import UsageError



@pytest.mark.parametrize("overrides, message", [
    (["+foo=1"], "unknown config key(s): foo."),
    (["+mode.foo=1"], "unknown config key(s): mode.foo."),
    (["+verify.min_cosine=0.9"], "verify.min_cosine (did you mean verify.min_cosine_mean, verify.min_cosine_worst?)"),
    (["+mode.extra_options.WeightSymetric=true"], "did you mean mode.extra_options.WeightSymmetric?"),
    (["mode.op_types_to_quantize=[MatMull]"], "'MatMull' (did you mean MatMul"),
    (["mode.extra_options.CalibMovingAverage=true"], "applies to static calibration only (mode=static)"),
    (["mode=static", "mode.extra_options.CalibMovingAverageConstant=0.1"],
     "takes effect only with mode.extra_options.CalibMovingAverage=true"),
    (["mode=static", "mode.extra_options.SmoothQuant=true", "mode.extra_options.SmoothQuantAlpha=2"],
     "SmoothQuantAlpha=2.0 is out of range"),
    (["mode=static", "calibration.method=entropy", "mode.extra_options.CalibMovingAverage=true"],
     "calibration.method=minmax only"),
    (["mode=qat", "mode.nodes_to_exclude=[node_gemm]"], "mode=qat fine-tunes and exports in torch"),
    (["mode.nodes_to_exclude=[a]", "mode.nodes_to_quantize=[a]"], "both name ['a']"),
    (["model=digits_cnn", "model.prompt_name=query"], "model.prompt_name='query' applies to sentence embeddings only"),
    (["model=hf", "model.name_or_path=x", "model.task=feature-extraction", "model.embedding_output=last_hidden_state",
      "model.prompt_name=query"], "put the prompt in your calibration texts instead"),
])
def test_refused_before_any_work(overrides, message):
    with pytest.raises(UsageError) as refused:
        check(compose_config(overrides))
    assert message in str(refused.value)


def test_knobs_that_apply_are_accepted():
    for overrides in (["mode.extra_options.WeightSymmetric=false", "mode.nodes_to_exclude=[node_gemm]"],
                      ["mode=static", "mode.extra_options.CalibMovingAverage=true",
                       "mode.extra_options.CalibMovingAverageConstant=0.05", "mode.op_types_to_quantize=[MatMul,Add]"],
                      ["experiment=release"], ["model.prompt_name=query"], ["model.prompt_name=''"],
                      ["model=hf", "model.name_or_path=x", "model.task=feature-extraction", "model.prompt_name=query"]):
        check(compose_config(overrides))

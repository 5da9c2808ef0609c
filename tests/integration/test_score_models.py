"""A one-logit text classifier (a cross-encoder reranker, a regression head), built static and verified: the gate
and verification judge its score by correlation with fp32's, so the int8 noise that reorders the scores of this
untrained model is caught and the gate keeps the noisiest nodes out until the order holds. Judged by cosine of one
number (its sign), the first int8 model passed as "cosine 1.0000"."""
import json

import pytest

from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.manifest import Manifest
from tests.fixtures import hf_checkpoints

pytestmark = pytest.mark.slow


def test_a_reranker_score_is_held_to_its_correlation_with_fp32(tmp_path):
    _, data = hf_checkpoints.text_classifier(tmp_path, steps=0)  # sentence pairs from Python's documentation
    reranker = hf_checkpoints.score_classifier(tmp_path / "reranker")
    args = ["model=hf", f"model.name_or_path={reranker}", "model.task=text-classification", "calibration=files",
            f"calibration.data_files=[{data}]", "calibration.text_column=sentence", "calibration.text_pair_column=pair",
            "mode=static", "target=avx2", "verify.profiles=[haswell,native]",
            "verify.reference_cpu=native", "verify.emulated_max_samples=2", f"artifacts_dir={tmp_path / 'artifacts'}"]
    assert quantize_task(compose_config(args), args) == 0
    manifest = Manifest.load(tmp_path / "artifacts" / f"{reranker.name}-static-avx2")
    assert manifest.fallback.budget == "score correlation >= 0.98"
    first = manifest.fallback.steps[0]
    # the first int8 model reordered the scores: caught
    assert first["excluded_nodes"] == 0 and first["score_correlation"] < 0.9
    assert manifest.fallback.within_budget and manifest.int8_metrics["validation_score_correlation"] >= 0.98
    report = json.loads(manifest.path("verify.json").read_text())
    assert report["status"] == "pass"
    native = report["profiles"]["native"]["fidelity"]
    assert native["score_correlation"] >= 0.98 and "cosine_mean" not in native


def test_one_value_per_token_is_held_to_its_correlation_over_the_tokens(tmp_path, capfd):
    """(batch, tokens, 1): per-token cosine is each token's sign, so it too could not fail."""
    _, words = hf_checkpoints.token_classifier(tmp_path, steps=0)
    model = hf_checkpoints.token_score_model(tmp_path / "token-scores")
    args = ["model=hf", f"model.name_or_path={model}", "model.task=token-classification", "calibration=files",
            f"calibration.data_files=[{words}]", "calibration.text_column=words", "mode=dynamic", "target=avx2",
            "verify.profiles=[native]", "verify.reference_cpu=native", f"artifacts_dir={tmp_path / 'artifacts'}"]
    assert quantize_task(compose_config(args), args) == 0
    manifest = Manifest.load(tmp_path / "artifacts" / f"{model.name}-dynamic-avx2")
    assert manifest.fallback.budget == "score correlation >= 0.98"
    assert 0.98 <= manifest.int8_metrics["validation_score_correlation"] < 1.0
    native = json.loads(manifest.path("verify.json").read_text())["profiles"]["native"]
    assert native["fidelity_by_output"]["logits"]["kind"] == "score"
    assert 0.98 <= native["fidelity"]["score_correlation"] < 1.0 and "cosine_mean" not in native["fidelity"]
    table = capfd.readouterr()
    native_row = next(line for line in (table.out + table.err).splitlines() if line.strip().startswith("native "))
    assert f"score_correlation {native['fidelity']['score_correlation']:.4g}" in native_row


def test_several_regressed_values_are_values_not_classes(tmp_path):
    """problem_type regression with 3 outputs (sentiment dimensions, say): argmax over them means nothing, so the
    model is `generic` and its outputs are judged by cosine per sample and element-wise, not top-1 agreement."""
    _, data = hf_checkpoints.text_classifier(tmp_path, steps=0)
    model = hf_checkpoints._untrained(tmp_path / "regression", "BertForSequenceClassification", num_labels=3,
                                      problem_type="regression")
    args = ["model=hf", f"model.name_or_path={model}", "model.task=text-classification", "calibration=files",
            f"calibration.data_files=[{data}]", "calibration.text_column=sentence", "mode=dynamic", "target=avx2",
            "verify.profiles=[native]", "verify.reference_cpu=native", f"artifacts_dir={tmp_path / 'artifacts'}"]
    assert quantize_task(compose_config(args), args) == 0
    manifest = Manifest.load(tmp_path / "artifacts" / f"{model.name}-dynamic-avx2")
    assert manifest.model_kind == "generic" and manifest.output_names == ["logits"]
    assert manifest.fallback.budget.startswith("cosine mean >= ")
    native = json.loads(manifest.path("verify.json").read_text())["profiles"]["native"]
    assert native["fidelity_by_output"]["logits"]["kind"] == "vector" and "top1_agreement" not in native["fidelity"]

"""QAT of a model that computes integer tensors in its graph (RoBERTa's position ids: a cumulative sum over
`input_ids != pad`): torchao's X86InductorQuantizer annotated those int64 adds and multiplies too, and the first
training step died in its fake-quantize kernel ("expected scalar type Float but found Int", exit 70). Integer
tensors are indices and counts: the quantizer leaves them alone, and the build completes and verifies."""
import json

import pytest

from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.manifest import Manifest
from tests.fixtures import hf_checkpoints

pytestmark = pytest.mark.slow


def test_qat_of_roberta_observes_floating_point_tensors_only(tmp_path):
    _, data = hf_checkpoints.text_classifier(tmp_path, steps=0)
    roberta = hf_checkpoints.roberta_classifier(tmp_path / "roberta")
    args = ["model=hf", "model.name=roberta", f"model.name_or_path={roberta}", "model.task=text-classification",
            "calibration=files", f"calibration.data_files=[{data}]", "calibration.text_column=sentence",
            "calibration.n_samples=32", "calibration.n_validation=16", "calibration.n_heldout=16", "mode=qat",
            "mode.qat_steps=10", "target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native",
            # untrained: near ties may flip on another CPU's kernels; that QAT trains and the artifact runs is the point
            "verify.min_top1_agreement=0.75", f"artifacts_dir={tmp_path / 'artifacts'}"]
    assert quantize_task(compose_config(args), args) == 0
    manifest = Manifest.load(tmp_path / "artifacts" / "roberta-qat-avx2")
    assert manifest.qat["steps"] == 10
    assert json.loads(manifest.path("verify.json").read_text())["status"] == "pass"


def test_no_observer_is_put_on_an_integer_tensor(tmp_path):
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from pipeline.builder.models import model_family
    from pipeline.builder.qat import quantizer_for
    from pipeline.manifest import QuantizationRecord
    roberta = hf_checkpoints.roberta_classifier(tmp_path / "roberta")
    family = model_family(compose_config(["model=hf", f"model.name_or_path={roberta}",
                                          "model.task=text-classification"]))
    graph = torch.export.export(family.load_torch().eval(), family.example_inputs(),
                                dynamic_shapes=family.dynamic_shapes()).module()
    record = QuantizationRecord(mode="qat", quant_format="QDQ", weight_type="int8", activation_type="uint8",
                                per_channel=True, reduce_range=False)
    prepared = prepare_qat_pt2e(graph, quantizer_for(record))
    observed = [node for node in prepared.graph.nodes if node.op == "call_module" and "activation_post_process" in
                str(node.target)]
    assert observed  # the linears are observed
    integer = [node.name for node in observed if not node.args[0].meta["val"].dtype.is_floating_point]
    assert integer == []

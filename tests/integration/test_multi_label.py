"""Multi-label classifiers end to end: a transformers checkpoint whose config says problem_type
multi_label_classification (a sigmoid per label) is built as kind `multi_label`, with its label lists read as
multi-hot rows, and the gate and verification hold its label sets to fp32's (tests/unit/verify/test_label_sets.py
shows why argmax could not); an ONNX file a user brings is judged the same with model.kind=multi_label."""
import json
import subprocess

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.manifest import Manifest
from tests.fixtures import hf_checkpoints
from tests.reliability.helpers import assert_user_error, published


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi-label")
    checkpoint, data = hf_checkpoints.multi_label_classifier(folder)
    return {"folder": folder, "checkpoint": checkpoint, "data": data}


# A model trained for seconds: a near-tie label may flip on another CPU's int8 kernels (one flip in 48 texts is a
# label-set agreement of 0.979 here, and a subset-accuracy drop of 0.021). That the kind, the labels and the figures
# work is the point of these tests, not how close int8 stays.
LENIENT = ["verify.min_top1_agreement=0.9", "verify.max_accuracy_drop=0.2", "verify.max_macro_f1_drop=0.2"]


def hf_args(made, artifacts, *extra):
    return ["build", "model=hf", "model.name=topics", f"model.name_or_path={made['checkpoint']}",
            "model.task=text-classification", "calibration=files", f"calibration.data_files=[{made['data']}]",
            "calibration.text_column=sentence", "calibration.label_column=labels", "calibration.n_samples=32",
            "calibration.n_validation=48", "calibration.n_heldout=48", "target=avx2",
            f"artifacts_dir={artifacts}", *extra]


def test_a_multi_label_checkpoint_is_judged_by_its_label_sets_on_haswell_and_native(made, tmp_path):
    artifacts = tmp_path / "artifacts"
    assert main(hf_args(made, artifacts, "mode=static", "verify.profiles=[haswell,native]",
                        "verify.reference_cpu=native", "verify.emulated_max_samples=4", *LENIENT)) == 0
    manifest = Manifest.load(artifacts / "topics-static-avx2")
    assert manifest.model_kind == "multi_label"
    heldout = np.load(manifest.path(manifest.heldout_file))
    labels = heldout["labels"]
    # multi-hot rows: each sentence's topic, plus `long` for the long ones
    assert labels.shape == (48, len(hf_checkpoints.MULTI_LABELS)) and set(np.unique(labels)) <= {0, 1}
    assert (labels[:, :3].sum(1) == 1).all() and 0 < labels[:, 3].sum() < 48
    assert {"validation_label_set_agreement", "validation_accuracy", "validation_macro_f1"} <= set(
        manifest.int8_metrics)
    assert "validation_top1_agreement" not in manifest.int8_metrics
    report = json.loads(manifest.path("verify.json").read_text())
    assert report["status"] == "pass" and report["profiles"]["haswell"]["status"] == "pass"
    figures = report["profiles"]["native"]["fidelity"]
    assert figures["label_set_agreement"] >= 0.9 and "top1_agreement" not in figures
    # trained for seconds: whole label sets right well above chance (a topic in 3 and long or not: 1/6)
    assert figures["reference_accuracy"] > 0.5 and figures["reference_macro_f1"] > 0.6, figures


def test_an_onnx_file_of_kind_multi_label_is_judged_by_label_sets(made, tmp_path):
    """The reference of a first build, brought as a file with its held-out inputs and multi-hot labels (stratified
    by set of labels)."""
    first = tmp_path / "first"
    assert main(hf_args(made, first, "mode=dynamic", "verify.enabled=false", *LENIENT)) == 0
    built = Manifest.load(first / "topics-dynamic-avx2")
    artifacts = tmp_path / "artifacts"
    assert main(["build", "model=onnx", "model.name=brought", f"model.path={built.path(built.reference_file)}",
                 "model.kind=multi_label", "calibration=npz", f"calibration.path={built.path(built.heldout_file)}",
                 "calibration.n_samples=16", "calibration.n_validation=16", "calibration.n_heldout=16",
                 "calibration.strategy=stratified", "mode=dynamic", *LENIENT[1:], "verify.min_top1_agreement=0.85",
                 "target=avx2", "verify.profiles=[native]",
                 "verify.reference_cpu=native",
                 f"artifacts_dir={artifacts}"]) == 0
    report = json.loads((artifacts / "brought-dynamic-avx2" / "verify.json").read_text())
    figures = report["profiles"]["native"]["fidelity"]
    assert report["status"] == "pass" and figures["label_set_agreement"] >= 0.85 and "accuracy" in figures
    assert report["profiles"]["native"]["thresholds"]["min_top1_agreement"] == 0.85
    assert report["profiles"]["native"]["fidelity_by_output"]["logits"]["kind"] == "label_sets"


def test_a_label_outside_the_checkpoints_labels_is_refused_naming_the_row(made, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    rows = made["data"].read_text().splitlines()
    bad = json.loads(rows[2])
    bad["labels"] = bad["labels"] + ["toxic"]
    data.write_text("\n".join(rows[:2] + [json.dumps(bad)] + rows[3:]) + "\n")
    args = hf_args(made, tmp_path / "artifacts", "verify.enabled=false")
    args[args.index(f"calibration.data_files=[{made['data']}]")] = f"calibration.data_files=[{data}]"
    result = subprocess.CompletedProcess(args, main(args), "", capsys.readouterr().err)
    assert result.returncode == 2
    assert_user_error(result, "column labels, row 3", "'toxic' is outside the model's labels")
    assert published(tmp_path / "artifacts") == []

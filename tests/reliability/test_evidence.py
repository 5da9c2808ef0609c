"""READY and PASS only on the evidence they name (issue 35): a release whose matrix.json says nothing, whose floor
CPU never ran, whose folders were swapped, whose model stayed mostly fp32, or whose calibration report is damaged
does not sign off READY; two matrices or publishes of one release at once are refused, naming the first; inputs
that carry no evidence (constant, one sample repeated, labels that do not belong to them) never PASS; a key the
composed config does not read is refused, naming the group that reads it. Real commands, real onnxruntime."""
import json
import shutil

import numpy as np
import onnx
import pytest

from pipeline.release.lock import acquire
from tests.fixtures.matrix import combination, floor_waivers, write_matrix
from tests.fixtures.tiny_artifact import make_artifact_folder, make_standalone
from tests.reliability.helpers import assert_user_error, published, quantgate

AVX2, V2 = "tiny-dynamic-avx2", "tiny-dynamic-x86_64_v2"
NO_LATENCY = "release.max_latency_ratio=1000"  # a tiny MLP's latency is not what these tests are about


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """Two stamped tiny artifacts verified natively only (verify.profiles=[native]): avx2 and x86-64-v2."""
    root = tmp_path_factory.mktemp("verified")
    for name, target in ((AVX2, "avx2"), (V2, "x86_64_v2")):
        folder = make_artifact_folder(root / name, target=target)
        result = quantgate("verify", "--artifact-dir", str(folder), "verify.profiles=[native]",
                           "verify.reference_cpu=native", "verify.latency_repeats=2")
        assert (folder / "verify.json").is_file(), result.stderr[-2000:]
    return root


def release(verified, tmp_path, *names):
    folder = tmp_path / "artifacts" / "rc"
    for name in names:
        shutil.copytree(verified / name, folder / name)
    write_matrix(folder, *(combination(folder, name, ["model=tiny"]) for name in names))
    return folder


def signoff(folder, tmp_path, *extra):
    result = quantgate("signoff", "--release", "rc", "--artifacts-dir", str(folder), "--out",
                       str(tmp_path / "reports"), NO_LATENCY, *extra)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    report = tmp_path / "reports" / "signoff.json"
    return result, json.loads(report.read_text()) if report.is_file() else None


def rows(report, profile):
    return [r for r in report["rows"] if r["profile"] == profile]


# --- the release's record of what it was asked for -----------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    ("{}", "lacks the required key 'schema'"),
    ('{"schema": "quantgate.matrix/1", "finished_utc": "2026-01-01T00:00:00", "combinations": []}',
     "lists no combination"),
    ('{"schema": "quantgate.matrix/1", "finished_utc": "2026', "not valid JSON"),
    ('{"schema": "quantgate.matrix/1", "finished_utc": "x", "combinations": "all of them"}',
     "'combinations' must be a list"),
    ('{"schema": "quantgate.matrix/1", "finished_utc": "x", "combinations": [{"artifact": "a"}]}',
     "lacks the required key"),
])
def test_a_matrix_json_that_says_nothing_or_is_damaged_blocks(verified, tmp_path, content, words):
    folder = release(verified, tmp_path, AVX2)
    (folder / "matrix.json").write_text(content)
    everything = floor_waivers(tmp_path / "w.yaml", "  - {artifact: '*', profile: '*', reason: all, who: me, "
                                                    "expires: 2999-01-01}\n")
    result, report = signoff(folder, tmp_path, "--waivers", str(everything))
    assert result.returncode == 1 and report["verdict"] == "blocked", result.stdout
    (row,) = [r for r in rows(report, "matrix") if r["outcome"] == "failed"]
    assert words in row["reason"] and not row["waivable"], row["reason"]
    assert f"release / matrix: {row['status']}" in result.stdout


# --- the floor CPU is required evidence ----------------------------------------------------------------------
def test_a_release_verified_natively_only_is_blocked_until_its_floor_cpu_is_waived_by_name(verified, tmp_path):
    folder = release(verified, tmp_path, AVX2, V2)
    result, report = signoff(folder, tmp_path)
    assert result.returncode == 1 and report["verdict"] == "blocked"
    floors = {r["artifact"]: r for r in report["rows"] if r["status"] == "not_run"}
    assert set(floors) == {AVX2, V2} and floors[AVX2]["profile"] == "haswell" and floors[V2]["profile"] == "nehalem"
    assert "floor CPU haswell was not verified (verify.json ran: native)" in floors[AVX2]["reason"]
    assert f"waive artifact {AVX2}, profile haswell" in floors[AVX2]["reason"]
    waivers = tmp_path / "floor.yaml"
    waivers.write_text("waivers:\n" + "".join(f"  - {{artifact: '{name}', profile: {cpu}, reason: no emulator in "
                                              f"CI, who: Release Manager, expires: 2999-01-01}}\n"
                                              for name, cpu in ((AVX2, "haswell"), (V2, "nehalem"))))
    result, report = signoff(folder, tmp_path, "--waivers", str(waivers))
    assert result.returncode == 0 and report["verdict"] == "ready", result.stdout
    assert {a["verdict"] for a in report["artifacts"]} == {"ready (waived)"}  # says so, by name


# --- the folder name is bound to the signed manifest and the stamp ----------------------------------------------
def test_two_artifact_folders_swapped_by_name_block_and_cannot_be_waived(verified, tmp_path):
    folder = release(verified, tmp_path, AVX2, V2)
    (folder / AVX2).rename(folder / "swap")
    (folder / V2).rename(folder / AVX2)
    (folder / "swap").rename(folder / V2)
    everything = floor_waivers(tmp_path / "w.yaml", "  - {artifact: '*', profile: '*', reason: all, who: me, "
                                                    "expires: 2999-01-01}\n")
    result, report = signoff(folder, tmp_path, "--waivers", str(everything))
    assert result.returncode == 1 and report["verdict"] == "blocked"
    swapped = {r["artifact"]: r for r in rows(report, "identity")}
    assert set(swapped) == {AVX2, V2} and all(r["outcome"] == "failed" for r in swapped.values())
    assert f"the folder is named {AVX2} but its manifest.json was built as {V2}" in swapped[AVX2]["reason"]


def test_a_stamp_that_disagrees_with_the_manifest_blocks(verified, tmp_path):
    folder = release(verified, tmp_path, AVX2)
    manifest = json.loads((folder / AVX2 / "manifest.json").read_text())
    model = onnx.load(str(folder / AVX2 / "model.onnx"))
    for entry in model.metadata_props:
        if entry.key == "quantgate.target_isa":
            entry.value = "x86_64_v2"
    onnx.save(model, str(folder / AVX2 / "model.onnx"))
    _, report = signoff(folder, tmp_path)
    (row,) = rows(report, "identity")
    assert "stamp says target_isa=x86_64_v2 but manifest.json says avx2" in row["reason"] and not row["waivable"]
    assert manifest["target"] == "avx2"


# --- a model the gate left mostly fp32 is a finding ---------------------------------------------------------------
def test_a_model_left_mostly_fp32_is_a_finding_not_a_pass(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pipeline.manifest import Manifest
    from tests.fixtures.tiny_artifact import stamp
    folder = make_artifact_folder(tmp_path / "artifacts" / "rc" / AVX2, target="avx2")
    model = onnx.load(str(folder / "reference.onnx"))
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}"
    onnx.save(model, str(tmp_path / "named.onnx"))
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    quantize_dynamic(str(tmp_path / "named.onnx"), str(folder / "model.onnx"), weight_type=QuantType.QInt8,
                     nodes_to_exclude=matmuls[:1])  # one of the two MatMuls stays fp32: half, reported
    stamp(folder / "model.onnx", "avx2")
    manifest = Manifest.load(folder)
    manifest.record_files()
    manifest.save()
    write_matrix(folder.parent, combination(folder.parent, AVX2, ["model=tiny"]))
    _, report = signoff(folder.parent, tmp_path)
    (row,) = rows(report, "int8")
    assert row["status"] == "partly_fp32" and row["outcome"] == "info" and "1 of 2" in row["reason"]
    quantize_dynamic(str(tmp_path / "named.onnx"), str(folder / "model.onnx"), weight_type=QuantType.QInt8,
                     nodes_to_exclude=matmuls)  # both: an fp32 model stamped int8
    stamp(folder / "model.onnx", "avx2")
    manifest.record_files()
    manifest.save()
    result, report = signoff(folder.parent, tmp_path)
    (row,) = rows(report, "int8")
    assert row["status"] == "mostly_fp32" and row["outcome"] == "failed" and "2 of 2" in row["reason"]
    assert any(words.startswith(f"{AVX2} / int8: mostly_fp32") for words in report["blocking"])


# --- a calibration report that cannot be read blocks as tampered -----------------------------------------------
@pytest.mark.parametrize("content", ['{"tensors": [', '[1, 2]', '{"tensors": "none"}',
                                     '{"tensors": [{"tensor": "a", "fraction_outside": "lots"}]}'])
def test_a_malformed_calibration_report_blocks_as_tampered(verified, tmp_path, content):
    folder = release(verified, tmp_path, AVX2)
    (folder / AVX2 / "calibration_report.json").write_text(content)
    result, report = signoff(folder, tmp_path)
    assert result.returncode == 1 and report["verdict"] == "blocked"
    (row,) = [r for r in rows(report, "files") if r["status"] == "tampered"]
    assert "calibration_report.json" in row["reason"] and not row["waivable"]


# --- one matrix, one publish of a release at a time -----------------------------------------------------------
@pytest.mark.parametrize("holder, command", [
    ("matrix", ["matrix", "--release", "rc", "model=digits_cnn", "verify.enabled=false"]),
    ("publish", ["matrix", "--release", "rc", "model=digits_cnn", "verify.enabled=false"]),
    ("matrix", ["publish", "--release", "rc", "--registry", "localhost:9/x", "--public-key", "k.pub"]),
])
def test_a_second_matrix_or_publish_of_a_running_release_is_refused_naming_the_first(tmp_path, holder, command):
    folder = tmp_path / "artifacts" / "rc"
    before = [make_artifact_folder(folder / AVX2).name] if command[0] == "publish" else []  # a release to publish
    lock = acquire(folder, holder)  # the first run, still going
    try:
        result = quantgate(*command, "--artifacts-dir", str(folder)) if command[0] == "publish" else \
            quantgate(*command[:3], "--artifacts-dir", str(folder), *command[3:])
    finally:
        lock.close()
    assert_user_error(result, f"another quantgate {holder} (pid", "is writing the release", f"quantgate {command[0]}")
    assert result.returncode == 2 and published(folder) == before
    assert not (folder / "matrix.json").exists()


# --- verification inputs that carry no evidence ------------------------------------------------------------------
@pytest.fixture
def standalone(tmp_path):
    return make_standalone(tmp_path / "standalone", target="avx2")


def verify(standalone, inputs, tmp_path, *extra):
    artifact, reference, _ = standalone
    return quantgate("verify", "--artifact", str(artifact), "--reference", str(reference), "--inputs", str(inputs),
                     "--target", "avx2", "--out", str(tmp_path / "verify.json"), "verify.profiles=[native]",
                     "verify.reference_cpu=native", *extra)


@pytest.mark.parametrize("case, words", [
    ("zeros", "every value of every input is the same (x = 0.0)"),
    ("repeated", "of its 64 samples only 1 are distinct"),
    ("mostly_repeated", "of its 64 samples only 20 are distinct"),
])
def test_inputs_that_carry_no_evidence_are_refused(standalone, tmp_path, case, words):
    x = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    arrays = {"zeros": np.zeros((64, 16), np.float32), "repeated": np.repeat(x[:1], 64, axis=0),
              "mostly_repeated": np.concatenate([x[:20], np.repeat(x[:1], 44, axis=0)])}
    np.savez(tmp_path / "inputs.npz", x=arrays[case])
    result = verify(standalone, tmp_path / "inputs.npz", tmp_path)
    assert_user_error(result, words)
    assert result.returncode == 2 and not (tmp_path / "verify.json").exists()


def classifier_labels(standalone, n=64):
    """Inputs and the labels the fp32 model itself gives them (a classifier that is right on every one)."""
    import onnxruntime as ort
    x = np.random.default_rng(4).standard_normal((n, 16)).astype(np.float32)
    session = ort.InferenceSession(str(standalone[1]), providers=["CPUExecutionProvider"])
    return x, session.run(None, {"x": x})[0].argmax(-1).astype(np.int64)


def test_labels_that_do_not_belong_to_the_inputs_are_refused_and_real_ones_pass(standalone, tmp_path):
    x, labels = classifier_labels(standalone)
    np.savez(tmp_path / "good.npz", x=x, labels=labels)
    # (the tiny MLP is no trained classifier: int8 moves a few of its answers, so the budgets are not the point)
    loose = ["verify.min_top1_agreement=0.5", "verify.max_accuracy_drop=1", "verify.max_macro_f1_drop=1"]
    result = verify(standalone, tmp_path / "good.npz", tmp_path, "model.kind=classifier", *loose)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "verify.json").read_text())["profiles"]["native"]["fidelity"]["reference_accuracy"] == 1
    np.savez(tmp_path / "shifted.npz", x=x, labels=(labels + 1) % 8)  # every label one class off: another order
    result = verify(standalone, tmp_path / "shifted.npz", tmp_path / "s", "model.kind=classifier")
    assert_user_error(result, "the fp32 reference agrees with only 0% of its labels",
                      "do not belong to these inputs")
    assert result.returncode == 2


def test_labels_no_output_is_judged_against_are_named_not_silently_ignored(standalone, tmp_path):
    x, labels = classifier_labels(standalone)
    np.savez(tmp_path / "inputs.npz", x=x, labels=labels)
    result = verify(standalone, tmp_path / "inputs.npz", tmp_path)  # the MLP is an embedding model
    assert result.returncode == 0, result.stderr[-2000:]
    notes = json.loads((tmp_path / "verify.json").read_text())["notes"]
    assert any("labels in inputs.npz are not judged" in note and "model.kind=classifier" in note for note in notes)


# --- keys the composed config does not read -----------------------------------------------------------------------
@pytest.mark.parametrize("overrides, words", [
    (["calibration.data_files=[mine.csv]"], ["calibration.data_files=['mine.csv'] is read only with "
                                             "calibration=files", "calibration.source here is pydoc_topics"]),
    (["calibration.hub_name=glue"], ["calibration.hub_name='glue' is read only with calibration=hub"]),
    (["calibration.path=arrays.npz"], ["is read only with calibration=npz or calibration=images"]),
    (["model.path=model.onnx"], ["model.path='model.onnx' is read only with model=onnx",
                                 "model.family here is text_embedding"]),
    (["model.factory=pkg:make"], ["is read only with model=torch"]),
    (["mode.qat_steps=5"], ["mode.qat_steps=5 is read only with mode=qat", "mode.name here is dynamic"]),
    (["model=digits_cnn", "model.name_or_path=/models/bert"], ["model.name_or_path='/models/bert' is read only "
                                                                "with model=minilm or model=hf"]),
    (["model.train_steps=5"], ["model.train_steps=5 is read only with model=digits_cnn"]),
    (["model=digits_cnn", "calibration.text_column=body"], ["calibration.text_column='body' is read only with "
                                                            "calibration=files or calibration=hub"]),
])
def test_a_key_nothing_reads_is_refused_naming_the_group_that_would(tmp_path, overrides, words):
    result = quantgate(*overrides, f"artifacts_dir={tmp_path}", "verify.enabled=false")
    assert_user_error(result, *words, "nothing would read")
    assert result.returncode == 2 and published(tmp_path) == []


def test_the_same_key_is_read_under_the_group_that_reads_it():
    from pipeline.config import compose_config
    from pipeline.config.rules import unread_keys
    assert unread_keys(compose_config(["calibration=files", "calibration.data_files=[mine.csv]"])) == []
    assert unread_keys(compose_config(["mode=qat", "mode.qat_steps=5"])) == []
    assert unread_keys(compose_config([])) == []  # no default is refused
    for model in ("minilm", "digits_cnn", "hf", "onnx", "torch"):
        assert unread_keys(compose_config([f"model={model}"])) == [], model


def test_a_damaged_outcome_of_a_sweep_job_is_recorded_as_crashed_not_lost(tmp_path):
    """matrix.json is made from each job's outcome.json: one cut short or of the wrong shape is a `crashed`
    combination (which blocks the signoff), never a crash of the table or a combination left out."""
    from pipeline.release.matrix import collect
    for job, content in (("0", '{"artifact": '), ("1", "[]"), ("2", None)):
        (tmp_path / job).mkdir()
        if content is not None:
            (tmp_path / job / "outcome.json").write_text(content)
    outcomes = collect(tmp_path)
    assert [o["outcome"] for o in outcomes] == ["crashed"] * 3
    assert "outcome.json cannot be read" in outcomes[0]["reason"] and "lacks the outcome's keys" in outcomes[1]["reason"]
    assert "died without recording an outcome" in outcomes[2]["reason"]

"""Decoder language models (model=hf model.task=text-generation, mode=int4 | int8): a tiny Llama and a tiny Qwen2
trained offline on pydoc_data.topics (tests/fixtures/tiny_decoder.py), built through onnxruntime-genai's builder as a
user runs it, loaded by onnxruntime_genai.Model, verified natively and under QEMU Haswell, and a wrecked one failed
in words; HQQ and GPTQ (calibrated on the user's text, calibration=files) re-quantize the weights with onnxruntime's
MatMulNBitsQuantizer."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

DECODER = ["model=hf", "model.task=text-generation", "target=avx2", "verify.profiles=[haswell,native]",
           "verify.reference_cpu=native",
           "verify.emulated_max_samples=2", "calibration.n_heldout=8"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """family -> a trained tiny checkpoint of it (tests/fixtures/tiny_decoder.py FAMILIES), built once on first use."""
    from tests.fixtures.tiny_decoder import build
    made = {}

    def get(family: str):
        if family not in made:
            made[family] = build(tmp_path_factory.mktemp(f"tiny-{family}") / f"tiny-{family}", family=family)
        return made[family]
    return get


@pytest.fixture(scope="session")
def tiny_llama(checkpoint):
    return checkpoint("llama")


@pytest.fixture(scope="session")
def built(checkpoint, tmp_path_factory):
    """(family, mode) -> (exit code, artifact folder, output) of `quantgate build`, built once on first use."""
    artifacts, results = tmp_path_factory.mktemp("artifacts"), {}

    def get(family: str, mode: str):
        if (family, mode) not in results:
            done = run_cli("-m", "pipeline.cli", "build", *DECODER, f"mode={mode}",
                           f"model.name_or_path={checkpoint(family)}", f"artifacts_dir={artifacts}")
            results[family, mode] = (done.returncode, artifacts / f"tiny-{family}-{mode}-avx2",
                                     done.stdout + done.stderr)
        return results[family, mode]
    return get


def generate(folder, prompt: str) -> str:
    import onnxruntime_genai as og
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=24, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(prompt))
    while not generator.is_done():
        generator.generate_next_token()
    return tokenizer.decode(generator.get_sequence(0))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("mode,bits", [("int4", 4), ("int8", 8)])
def test_decoder_builds_generates_and_verifies_on_haswell_and_native(built, family, mode, bits):
    from pipeline.guard import read_stamp
    code, folder, output = built(family, mode)
    assert code == 0, output
    for name in ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "reference/model.onnx"):
        assert (folder / name).is_file(), name
    stamp = read_stamp(folder / "model.onnx")
    assert (stamp["bits"], stamp["block_size"], stamp["accuracy_level"]) == (str(bits), "32", "4")
    blockwise = json.loads(stamp["graph_counts"])["blockwise_weights"]
    assert blockwise[0]["op"] == "MatMulNBits" and blockwise[0]["bits"] == bits and blockwise[0]["weights"] == 11
    report = json.loads((folder / "verify.json").read_text())
    assert report["status"] == "pass" and report["model_kind"] == "language_model"
    for cpu in ("haswell", "native"):
        fidelity = report["profiles"][cpu]["fidelity"]
        assert report["profiles"][cpu]["status"] == "pass", report["profiles"][cpu]["reason"]
        assert fidelity["kl_divergence"] <= report["settings"]["max_kl_divergence"]
        assert fidelity["next_token_agreement"] >= report["settings"]["min_next_token_agreement"]
    haswell = report["profiles"]["haswell"]
    assert haswell["emulated"] and haswell["samples"] == 2
    # the same file natively, reported beside it: the AVX2 kernels' numerics are not the host's, but close
    assert haswell["cpu_comparison"]["reference_cpu"] == "native"
    assert 0 <= haswell["cpu_comparison"]["max_abs_logit_difference"] < 1
    text = generate(folder, "The import statement")  # the folder is what onnxruntime-genai loads
    assert text.startswith("The import statement") and len(text) > len("The import statement")


def two_bit_weights(folder) -> None:
    """Replace the artifact's weights by 2-bit ones (onnxruntime's MatMulNBitsQuantizer on the fp32 reference, blocks
    of 32; the manifest re-recorded): a file that loads and runs, and is materially worse than fp32 (measured on the
    tiny Qwen2: KL 0.106, next-token agreement 0.67)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    from pipeline.manifest import Manifest
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=2)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(folder / "reference" / "model.onnx")), algo_config=config)
    quantizer.process()
    stamped = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    stamp = {prop.key: prop.value for prop in stamped.metadata_props}
    for name in ("model.onnx", "model.onnx.data"):
        (folder / name).unlink()
    onnx.helper.set_model_props(quantizer.model.model, stamp)  # still stamped: the guard lets it run
    quantizer.model.save_model_to_file(str(folder / "model.onnx"), use_external_data_format=True)
    manifest = Manifest.load(folder)
    manifest.record_files()
    manifest.save()


def test_a_2_bit_decoder_fails_verification_in_words_with_the_figure(built, tmp_path):
    code, folder, _ = built("llama", "int4")
    assert code == 0
    broken = tmp_path / "tiny-llama-int4-avx2"
    shutil.copytree(folder, broken)
    two_bit_weights(broken)
    done = run_cli("-m", "pipeline.cli", "verify", "--artifact-dir", str(broken), "verify.profiles=[native]",
                   "verify.reference_cpu=native")
    assert done.returncode == 1, done.stdout + done.stderr  # a check ran and failed (pipeline/errors.py)
    report = json.loads((broken / "verify.json").read_text())
    native = report["profiles"]["native"]
    assert report["status"] == "fail" and native["failure"] == "fidelity"
    figures = native["fidelity"]
    assert f"next-token agreement with fp32 {figures['next_token_agreement']:.3f} < " in native["reason"] or \
        f"KL divergence to fp32 {figures['kl_divergence']:.4f}" in native["reason"], native["reason"]


def test_the_gate_refuses_a_decoder_over_budget_and_publishes_nothing(tiny_llama, tmp_path):
    done = run_cli("-m", "pipeline.cli", "build", *DECODER, "mode=int4", f"model.name_or_path={tiny_llama}",
                   f"artifacts_dir={tmp_path}", "verify.min_next_token_agreement=0.999")
    # Exit 2 as the int8 accuracy gate's (pipeline/errors.py: "a build that cannot meet its accuracy budget")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "materially worse than fp32" in done.stderr and "next-token agreement with fp32 0." in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "tiny-llama-int4-avx2").exists()


def test_the_same_checkpoint_builds_the_same_bytes_in_another_folder(built, tiny_llama, tmp_path):
    from pipeline.manifest import Manifest
    code, folder, _ = built("llama", "int4")
    assert code == 0
    done = run_cli("-m", "pipeline.cli", "build", *DECODER, "mode=int4", f"model.name_or_path={tiny_llama}",
                   f"artifacts_dir={tmp_path}", "verify.enabled=false")
    assert done.returncode == 0, done.stdout + done.stderr
    first, again = Manifest.load(folder), Manifest.load(tmp_path / "tiny-llama-int4-avx2")
    assert {f.path: f.sha256 for f in again.files} == {f.path: f.sha256 for f in first.files}


def test_the_signoff_reads_the_decoders_figures_and_blocks_nothing_of_it(built, tmp_path):
    code, folder, _ = built("llama", "int4")
    assert code == 0
    shutil.copytree(folder, tmp_path / "rc1" / folder.name)
    run_cli("-m", "pipeline.cli", "signoff", "--release", "rc1", "--artifacts-dir", str(tmp_path / "rc1"),
            "--out", str(tmp_path / "out"))
    rows = [row for row in json.loads((tmp_path / "out" / "signoff.json").read_text())["rows"]
            if row["artifact"] == folder.name]
    verified = json.loads((folder / "verify.json").read_text())["profiles"]
    assert rows and not [row["reason"] for row in rows if row["outcome"] == "failed"]
    for row in rows:
        if row["profile"] in ("haswell", "native"):
            assert row["figures"]["kl_divergence"] == verified[row["profile"]]["fidelity"]["kl_divergence"]


@pytest.mark.parametrize("algorithm", ["hqq", "gptq"])
def test_hqq_and_gptq_requantize_the_weights_with_onnxruntimes_quantizer(checkpoint, tmp_path, algorithm):
    from pipeline.guard import read_stamp
    from pipeline.manifest import Manifest
    from tests.fixtures.tiny_decoder import topics_text
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": text}) + "\n" for text in topics_text()))
    done = run_cli("-m", "pipeline.cli", "build", *DECODER, "mode=int4", f"mode.algorithm={algorithm}",
                   f"model.name_or_path={checkpoint('qwen2')}", f"artifacts_dir={tmp_path}", "verify.enabled=false",
                   "calibration=files", f"calibration.data_files=[{texts}]", "calibration.n_samples=16")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "tiny-qwen2-int4-avx2"
    stamp, manifest = read_stamp(folder / "model.onnx"), Manifest.load(folder)
    assert stamp["algorithm"] == algorithm and stamp["bits"] == "4" and stamp["min_onnxruntime"] == "1.23.0"
    assert json.loads(stamp["graph_counts"])["blockwise_weights"][0]["weights"] == 11
    assert manifest.quantization.calibration_method == algorithm
    if algorithm == "gptq":  # calibrated on the user's texts, none of them held out
        assert manifest.calibration.n == 16 and manifest.calibration.method == "gptq on 16 calibration texts"
        assert len(manifest.calibration.sha256) == 64
    else:
        assert manifest.calibration.n == 0
    assert manifest.int8_metrics["kl_divergence"] <= 0.1  # judged by the same gate as RTN's weights
    text = generate(folder, "The import statement")  # onnxruntime-genai still loads the folder
    assert text.startswith("The import statement") and len(text) > len("The import statement")


def test_hqq_for_8_bit_weights_is_refused_in_words(tmp_path):
    done = run_cli("-m", "pipeline.cli", "build", *DECODER, "mode=int8", "mode.algorithm=hqq",
                   f"model.name_or_path={tmp_path}", f"artifacts_dir={tmp_path}")
    assert done.returncode == 2 and "mode.algorithm=hqq quantizes 4-bit weights" in done.stderr, done.stderr


OPTIMUM_GREEDY = """
import json, sys
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import PreTrainedTokenizerFast
folder, prompt = sys.argv[1], sys.argv[2]
model = ORTModelForCausalLM.from_pretrained(folder, file_name="model.onnx")
# transformers 4.57 (Optimum's) cannot read the class a transformers 5 tokenizer_config.json names: the tokenizer alone
tokenizer = PreTrainedTokenizerFast(tokenizer_file=folder + "/tokenizer.json")
ids = tokenizer(prompt, return_tensors="pt")
out = model.generate(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], max_length=24, do_sample=False)
print(json.dumps({"text": tokenizer.decode(out[0], skip_special_tokens=True)}))
"""


def test_optimums_causal_lm_class_loads_the_folder_and_generates_the_same_text(built):
    """The builder's layout (GroupQueryAttention, no position_ids) loads in Optimum's legacy path once the
    checkpoint's config.json is beside it; its greedy text is onnxruntime-genai's."""
    from tests.fixtures.optimum_venv import run_in_optimum
    code, folder, _ = built("llama", "int4")
    assert code == 0 and (folder / "config.json").is_file()
    prompt = "The import statement"
    assert run_in_optimum(OPTIMUM_GREEDY, str(folder), prompt)["text"] == generate(folder, prompt)

"""model=hf model.task=text-generation: a decoder language model, weight-only int4 / int8 (mode=int4 | int8).

onnxruntime-genai's model builder (the tool made for decoders) exports the checkpoint with its KV cache twice: the
quantized artifact (MatMulNBits, mode.block_size, mode.symmetric, the target's accuracy_level) into the artifact
folder, loadable by `onnxruntime_genai.Model(folder)` (model.onnx, genai_config.json, tokenizer), and the fp32
export of the same checkpoint into reference/ as the reference. The gate judges the quantized file against it,
teacher-forced over held-out text (pipeline/verify/language_model.py), and fails the build in words when it is
over budget; the stamp writes the quantgate.* keys (bits, block size, accuracy level) into model.onnx.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline import kinds
from pipeline.builder.checkpoints import DataSplits, check_weight_files, dataset_identity, resolve_model_path, \
    weights_digest
from pipeline.errors import BuildFailed, QuantgateError
from pipeline.manifest import CalibrationRecord, Manifest, QuantizationRecord, sha256_file
from pipeline.progress import say

REFERENCE_DIR = "reference"
SEQUENCES_FILE = "heldout.npz"
BUILDER_FILES = ("model.onnx", "model.onnx.data", "genai_config.json")
# The oldest onnxruntime that loads what onnxruntime-genai 0.18's builder writes (stamped as min_onnxruntime, judged
# by the guard): its GroupQueryAttention takes inputs that 1.22 refuses ("This is an invalid model. In Node,
# GroupQueryAttention ..."), within com.microsoft opset 1, so no opset says it. Measured on the tiny int4 and int8
# Qwen2: 1.21.1 and 1.22.1 refuse them; 1.23.0, 1.23.2, 1.26.0, 1.29.0 and 1.32.0 load and run them.
RUNTIME_FLOOR = "1.23.0"


class DecoderFamily:
    """A transformers causal LM checkpoint (AutoModelForCausalLM) and the text it is judged on."""

    kind = "language_model"
    input_names = ["input_ids", "attention_mask"]
    output_names = ["logits"]
    fusable = False

    def __init__(self, cfg):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        self.cfg = cfg
        self.path = resolve_model_path(cfg.model.name_or_path)
        model_type = json.loads((self.path / "config.json").read_bytes()).get("model_type")
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise QuantgateError(f"{self.path.name}: architecture {model_type!r} is not a decoder language model "
                                 f"(transformers has no AutoModelForCausalLM for it); model.task=text-generation "
                                 f"needs a causal LM checkpoint such as llama, qwen2, phi3, gemma")
        check_weight_files(self.path)
        self._tokenizer = None

    @property
    def source_name(self) -> str:
        from pipeline.builder.reproducible import portable_path_value
        return portable_path_value(self.cfg.model.name_or_path)

    def weights_sha256(self) -> str:
        return weights_digest(self.path)

    def data(self) -> DataSplits:
        from calibration.sources import load_texts
        texts = load_texts(self.cfg.calibration)
        name = "pydoc_data.topics" if self.cfg.calibration.source == "pydoc_topics" else \
            dataset_identity(self.cfg.calibration)
        return DataSplits(texts, texts, texts, dataset_name=str(name), shared_pool=True)

    def sequences(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text, truncated to verify.decoder_max_tokens; texts under 8 tokens are left out."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        limit = int(self.cfg.verify.decoder_max_tokens)
        encoded = [np.asarray(self._tokenizer(text)["input_ids"][:limit], dtype=np.int64) for text in texts]
        return [ids for ids in encoded if len(ids) >= 8]


def builder_command(source: Path, out: Path, precision: str, cfg) -> list[str]:
    """onnxruntime-genai's model builder, CPU, offline, from the local checkpoint folder."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(out / ".cache")]
    if precision != "fp32":  # the weight-only kinds: the builder quantizes MatMul weights to `precision`
        options = [f"block_size={int(cfg.mode.block_size)}", f"is_symmetric={str(bool(cfg.mode.symmetric)).lower()}"]
        if cfg.target.accuracy_level is not None:
            options.append(f"accuracy_level={int(cfg.target.accuracy_level)}")
        command += ["--extra_options", *options]
    return command


# The checkpoint's transformers config beside the builder's files: with it, Optimum's ORTModelForCausalLM loads the
# folder too (its legacy path: no position_ids input; measured with optimum-onnx 0.1.0 on the tiny Llama and Qwen2,
# greedy text identical to onnxruntime-genai's). Without config.json it cannot tell the library and refuses.
TRANSFORMERS_FILES = ("config.json", "generation_config.json")


def copy_transformers_config(source: Path, folder: Path) -> None:
    for name in TRANSFORMERS_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)


def same_bytes(model: Path) -> None:
    """The builder writes a different producer_version into every file it writes (`0.18.0+<7 hex digits>`); keep
    the release alone, so the same inputs give the same bytes (the weights file is untouched)."""
    import onnx
    from pipeline.manifest import atomic_write_bytes
    proto = onnx.load(str(model), load_external_data=False)
    proto.producer_version = proto.producer_version.split("+")[0]
    atomic_write_bytes(model, proto.SerializeToString(deterministic=True))


def run_builder(source: Path, out: Path, precision: str, cfg) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = builder_command(source, out, precision, cfg)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    shutil.rmtree(out / ".cache", ignore_errors=True)
    if done.returncode != 0 or not (out / "model.onnx").is_file():
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-3:]
        raise BuildFailed(f"onnxruntime-genai's model builder could not build {precision} from {source.name} "
                          f"(exit {done.returncode}): {' | '.join(tail)}. Nothing was published")
    same_bytes(out / "model.onnx")


def text_order(cfg, texts: list[str]) -> np.ndarray:
    """The seeded order of the source's texts: held-out candidates first, GPTQ's calibration text after them."""
    return np.random.default_rng(int(cfg.calibration.seed)).permutation(len(texts))


def heldout_sequences(cfg, family: DecoderFamily) -> list[np.ndarray]:
    """The held-out texts (a seeded sample of the calibration source) as token sequences."""
    texts = family.data().heldout_pool
    order = text_order(cfg, texts)
    picked = family.sequences([texts[i] for i in order[: 4 * int(cfg.calibration.n_heldout)]])
    if not picked:
        raise QuantgateError("no held-out text of at least 8 tokens: give longer texts (calibration=files)")
    return picked[: int(cfg.calibration.n_heldout)]


def calibration_sequences(cfg, family: DecoderFamily) -> list[np.ndarray]:
    """GPTQ's calibration text: up to calibration.n_samples sequences from the texts after the held-out candidates
    (never one the gate judges on)."""
    texts = family.data().heldout_pool
    rest = text_order(cfg, texts)[4 * int(cfg.calibration.n_heldout):]
    picked = family.sequences([texts[i] for i in rest])[: int(cfg.calibration.n_samples)]
    if not picked:
        raise QuantgateError(f"mode.algorithm={cfg.mode.algorithm} needs calibration text beyond the held-out sample, "
                             f"and {len(texts)} texts leave none of at least 8 tokens: give more texts "
                             f"(calibration=files) or fewer held-out ones (calibration.n_heldout)")
    return picked


def requantized(cfg, family: DecoderFamily, folder: Path) -> list[np.ndarray]:
    """mode.algorithm other than rtn: the builder's weights replaced (pipeline/builder/weight_only.py); returns the
    calibration sequences it read ([] for the algorithms that read none)."""
    from pipeline.builder.weight_only import CALIBRATED, requantize
    algorithm = str(cfg.mode.algorithm)
    if algorithm == "rtn":
        return []
    calibration = calibration_sequences(cfg, family) if algorithm in CALIBRATED else []
    say(f"quantize: mode.algorithm={algorithm} with onnxruntime's MatMulNBitsQuantizer on the fp32 export"
        + (f", calibrated on {len(calibration)} texts" if calibration else ""))
    requantize(cfg, folder, folder / REFERENCE_DIR / "model.onnx", calibration)
    same_bytes(folder / "model.onnx")
    return calibration


def calibration_record(cfg, family: DecoderFamily, calibration: list[np.ndarray], heldout: int,
                       folder: Path) -> CalibrationRecord:
    import hashlib
    method = {"rtn": "none (round-to-nearest weights)", "hqq": "none (HQQ fits each block's weights)",
              "gptq": f"gptq on {len(calibration)} calibration texts"}[str(cfg.mode.algorithm)]
    digest = hashlib.sha256(b"".join(ids.astype("<i8").tobytes() + b"|" for ids in calibration)).hexdigest() \
        if calibration else ""
    return CalibrationRecord(dataset=family.data().dataset_name, split=cfg.calibration.split, n=len(calibration),
                             n_heldout=heldout, method=method, sha256=digest,
                             heldout_sha256=sha256_file(folder / SEQUENCES_FILE), seed=int(cfg.calibration.seed))


def save_sequences(path: Path, sequences: list[np.ndarray]) -> None:
    ids = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = sequence
    np.savez(path, input_ids=ids, lengths=np.asarray([len(s) for s in sequences], dtype=np.int64))


def export_run(cfg, manifest: Manifest) -> Manifest:
    """Stage: the quantized decoder into the folder, its fp32 reference into reference/, held-out sequences."""
    family = DecoderFamily(cfg)
    folder = manifest.folder
    say(f"export: onnxruntime-genai model builder, {cfg.mode.name} (block {cfg.mode.block_size}, "
        f"{'symmetric' if cfg.mode.symmetric else 'asymmetric'}, accuracy_level {cfg.target.accuracy_level})")
    run_builder(family.path, folder, str(cfg.mode.name), cfg)
    say("export: the fp32 reference from the same checkpoint")
    run_builder(family.path, folder / REFERENCE_DIR, "fp32", cfg)
    calibration = requantized(cfg, family, folder)
    copy_transformers_config(family.path, folder)
    sequences = heldout_sequences(cfg, family)
    save_sequences(folder / SEQUENCES_FILE, sequences)
    manifest.reference_file = f"{REFERENCE_DIR}/model.onnx"
    manifest.model_kind, manifest.input_names, manifest.output_names = family.kind, family.input_names, ["logits"]
    manifest.source_model, manifest.source_weights_sha256 = family.source_name, family.weights_sha256()
    manifest.reference_size_bytes = folder_model_bytes(folder / REFERENCE_DIR)
    manifest.calibration = calibration_record(cfg, family, calibration, len(sequences), folder)
    return manifest


def folder_model_bytes(folder: Path) -> int:
    return sum((folder / name).stat().st_size for name in ("model.onnx", "model.onnx.data") if (folder / name).exists())


def greedy_tokens(folder: Path, prompts: list[np.ndarray], new_tokens: int) -> list[list[int]]:
    """Greedy continuations through onnxruntime-genai, the runtime the folder is built for (its KV cache path)."""
    import onnxruntime_genai as og
    model, continuations = og.Model(str(folder)), []
    for ids in prompts:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        continuations.append([int(t) for t in generator.get_sequence(0)[len(ids):]])
    return continuations


GREEDY_PROMPTS, GREEDY_PROMPT_TOKENS, GREEDY_NEW_TOKENS = 4, 8, 16


def greedy_check(folder: Path, reference_folder: Path, sequences: list[np.ndarray]) -> float:
    """Greedy-generation agreement with fp32 on a few prompts (the held-out sequences' first tokens)."""
    from pipeline.verify import language_model
    prompts = [ids[:GREEDY_PROMPT_TOKENS] for ids in sequences[:GREEDY_PROMPTS]]
    return language_model.greedy_agreement(greedy_tokens(reference_folder, prompts, GREEDY_NEW_TOKENS),
                                           greedy_tokens(folder, prompts, GREEDY_NEW_TOKENS))


def gate_run(cfg, manifest: Manifest) -> Manifest:
    """Stage: teacher-forced fidelity to fp32 on the held-out text; over budget fails the build in words."""
    from pipeline.verify import child_decoder, language_model
    folder = manifest.folder
    sequences = child_decoder.load_sequences(str(folder / SEQUENCES_FILE))
    threads = min(2, os.cpu_count() or 1)
    reference = child_decoder.run(str(folder / manifest.reference_file), sequences, threads)
    quantized = child_decoder.run(str(folder / manifest.model_file), sequences, threads)
    found = language_model.figures(reference, quantized, sequences)
    manifest.fp32_metrics = {"perplexity": found["perplexity_fp32"]}
    manifest.int8_metrics = {key: found[key] for key in ("kl_divergence", "next_token_agreement", "perplexity",
                                                         "perplexity_increase")}
    manifest.int8_metrics["greedy_agreement"] = greedy_check(folder, folder / REFERENCE_DIR, sequences)
    say(f"gate: KL {found['kl_divergence']:.4f} nats/token, next-token agreement {found['next_token_agreement']:.3f}, "
        f"perplexity {found['perplexity']:.3f} vs fp32 {found['perplexity_fp32']:.3f} over {found['positions']} tokens; "
        f"greedy generation (onnxruntime-genai) matches fp32 for {manifest.int8_metrics['greedy_agreement']:.0%} of "
        f"{GREEDY_NEW_TOKENS} tokens on {min(GREEDY_PROMPTS, len(sequences))} prompts")
    wrong = language_model.problems(found, language_model.thresholds(cfg.verify))
    if wrong and cfg.verify.build_gate:  # exit 2, as the int8 gate's OverBudget (a build that cannot meet its budget)
        raise BuildFailed(f"the {cfg.mode.name} decoder is materially worse than fp32 on held-out text: "
                                 f"{'; '.join(wrong)}. Nothing was published. Try a smaller mode.block_size, "
                                 f"mode=int8, or allow more loss (verify.*)")
    return manifest


def weight_only_record(cfg, counts) -> QuantizationRecord:
    """What the graph holds, as the stamp's quantization fields: bits and scheme from the MatMulNBits nodes."""
    (_, bits, _, symmetric, level), _ = counts.blockwise_weights[0]
    activations = "int8 inside MatMulNBits (accuracy_level 4)" if level == 4 else f"float (accuracy_level {level})"
    return QuantizationRecord(mode=str(cfg.mode.name), quant_format=kinds.WEIGHT_ONLY_FORMAT,
                              weight_type=f"{'int' if symmetric else 'uint'}{bits}", activation_type=activations,
                              per_channel=False, reduce_range=False,
                              calibration_method=None if cfg.mode.algorithm == "rtn" else str(cfg.mode.algorithm),
                              graph_counts=counts.as_stamp())


def decoder_stamp_values(cfg, manifest: Manifest, counts) -> dict[str, str]:
    from importlib import metadata
    from pipeline.builder import stamp
    (_, bits, block_size, symmetric, level), _ = counts.blockwise_weights[0]
    extra = {"bits": str(bits), "block_size": str(block_size), "symmetric": str(symmetric).lower(),
             "accuracy_level": str(level), "exporter": f"onnxruntime-genai {metadata.version('onnxruntime-genai')}",
             "reference": manifest.reference_file, "min_onnxruntime": RUNTIME_FLOOR,
             "algorithm": str(cfg.mode.algorithm)}
    return stamp.stamp_values(cfg, manifest) | extra


def stamp_run(cfg, manifest: Manifest) -> Manifest:
    """Stage: quantgate.* keys into model.onnx (external weights untouched), checked against the graph."""
    import onnx
    from pipeline.builder import stamp
    from pipeline.builder.graph_counts import check_claims, count_graph
    from pipeline.guard import read_stamp
    from pipeline.isa.targets import runtime_floor
    model_path = manifest.path(manifest.model_file)
    # The runtime's floor and what the kernels use at the target's accuracy_level (target.decoder_features).
    manifest.required_cpu_features = runtime_floor(cfg.target.microarchitecture, [*cfg.target.extra_features,
                                                                                  *cfg.target.decoder_features])
    manifest.config_sha256 = stamp.config_sha256(cfg)
    counts = count_graph(onnx.load(str(model_path), load_external_data=False))
    if not counts.blockwise_weights:
        raise BuildFailed(f"{manifest.model_file} has no MatMulNBits weight: the builder left every MatMul float, so "
                          f"it would be an fp32 model stamped {cfg.mode.name}. Nothing was published")
    manifest.quantization = weight_only_record(cfg, counts)
    say(f"stamp: the {cfg.mode.name} graph holds {counts.describe()}")
    values = decoder_stamp_values(cfg, manifest, counts)
    stamp.write_stamp(model_path, values)
    if read_stamp(model_path) != values:
        raise RuntimeError("the stamp read back from model.onnx differs from the one written")
    check_claims(values, onnx.load(str(model_path), load_external_data=False), manifest.model_file)
    manifest.stamp = values
    return manifest

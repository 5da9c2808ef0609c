"""Typed Hydra configs: the only home of defaults. YAML under conf/ is the user's surface and only
overrides (a YAML value equal to the default here is refused by tests/config/test_schema.py).

Every group composes onto its dataclass (`defaults: [/schema/<group>@_here_]` in each option), so the
config a build sees is typed and validated once, when Hydra composes it: unknown keys, wrong types and
enum values that do not exist fail there. Enums are `StrEnum`s: a value reads as its string
(`cfg.mode.name == "static"`, f-strings), no `.value` needed. `MISSING` marks what each option must say.

Register with `register_configs()` (an explicit call, not an import side effect) before composing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from omegaconf import MISSING


class ModelKind(StrEnum):
    embedding = "embedding"  # fidelity: cosine similarity of output vectors
    classifier = "classifier"  # fidelity: top-1 agreement (and accuracy with labels)
    # independent yes/no labels (sigmoid, not softmax: transformers' problem_type multi_label_classification):
    # fidelity: the share of samples whose set of labels equals fp32's (and subset accuracy, macro-F1 with labels)
    multi_label = "multi_label"
    generic = "generic"  # fidelity: every output element-wise on its own scale and by cosine per sample
    # a detector of events (speech, a wake word), one score per chunk: fidelity also by the per-chunk decision,
    # score above verify.threshold, agreeing with fp32's (and accuracy against 0/1 labels)
    event = "event"
    # an object detector: fidelity as generic, plus its detections after score threshold and NMS matched to fp32's
    # (verify.detection: recall, precision, mean IoU; pipeline/verify/detection.py)
    detector = "detector"


class CalibrationSource(StrEnum):
    pydoc_topics = "pydoc_topics"  # English text shipped with Python itself: always offline
    digits = "digits"  # scikit-learn's bundled digits splits (for model=digits_cnn)
    files = "files"  # local csv / json / parquet / text files
    hub = "hub"  # a datasets hub name (needs the dataset in the local cache when offline)
    npz = "npz"  # model inputs as arrays: an .npz (or a folder of them) named after the inputs (calibration.path)
    images = "images"  # a folder of images, one subfolder per class (datasets' imagefolder): calibration.path


# model=hf's tasks (pipeline/builder/hf_family.py), by their transformers pipeline names:
# feature-extraction (AutoModel: a sentence embedding or last_hidden_state), text-classification
# (AutoModelForSequenceClassification: texts or sentence pairs), token-classification, image-classification.
# text-generation: a decoder language model (AutoModelForCausalLM) built with KV cache by onnxruntime-genai's model
# builder, weight-only int4 / int8 (mode=int4 | int8; pipeline/builder/decoder.py).
HF_TASKS = ("feature-extraction", "text-classification", "token-classification", "image-classification",
            "text-generation")


class SamplingStrategy(StrEnum):
    random = "random"
    stratified = "stratified"  # by label
    length_stratified = "length_stratified"  # by text length quartile


class CalibrationMethod(StrEnum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class ExportKind(StrEnum):
    onnx = "onnx"  # model.onnx for onnxruntime (the default)
    aoti = "aoti"  # model.pt2: torchao PT2E int8 compiled by AOTInductor for the target ISA (pipeline/builder/aoti.py)


class QuantMode(StrEnum):
    dynamic = "dynamic"
    static = "static"
    qat = "qat"
    # chosen per model (pipeline/builder/auto.py): from the graph where it tells (convolutions: static), else the
    # fastest candidate on this host within the accuracy budget; the default of the models users bring
    auto = "auto"
    # Weight-only (MatMulNBits) decoders, built by onnxruntime-genai's model builder (pipeline/builder/decoder.py).
    int4 = "int4"
    int8 = "int8"


WEIGHT_ONLY_MODES = ("int4", "int8")


class QuantFormat(StrEnum):
    QDQ = "QDQ"
    QOperator = "QOperator"


class WeightAlgorithm(StrEnum):
    """How an int4 decoder's MatMulNBits weights are chosen (pipeline/builder/weight_only.py)."""

    rtn = "rtn"  # round-to-nearest per block (onnxruntime-genai's builder)
    hqq = "hqq"  # Half-Quadratic Quantization: scales and zero points fitted per block, no data
    gptq = "gptq"  # rounding error compensated through the layer inputs' Hessian on calibration text


class IntType(StrEnum):
    int8 = "int8"
    uint8 = "uint8"


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = "text_embedding"  # text_embedding | digits_cnn | onnx | torch (see pipeline/builder/models.py)
    kind: ModelKind = ModelKind.embedding
    # A local transformers checkpoint folder; null = the embedded all-MiniLM-L6-v2 package.
    name_or_path: Optional[str] = None
    max_length: int = 64
    opset: int = 18
    # Transformer encoders: export a graph onnxruntime's transformer optimizer fuses (Attention,
    # EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) and quantize that; reference.onnx is the
    # fused fp32 graph, debug/reference.unfused.onnx the export before fusion (pipeline/builder/fuse.py).
    # Other model families ignore it.
    fuse: bool = True
    seed: int = 0
    train_steps: int = 0  # for models the pipeline trains itself (digits_cnn)
    # model=onnx: an fp32 ONNX file (external data beside it is read too).
    path: Optional[str] = None
    # model=onnx: the axis of each input that holds the examples, where the graph does not show it
    # (pipeline/layout.py finds it: the batch dimension the inputs share, a recurrent state's [directions, batch,
    # hidden], a scalar); `{state: 1}`, `{sr: null}` for an input given once and broadcast. docs/streaming.md.
    batch_axes: dict[str, Optional[int]] = field(default_factory=dict)
    # model=onnx: outputs that feed inputs at the next chunk of a stream (`{stateN: state}`); empty = found by
    # name and shape (stateN/state, hn/h0, present.*/past.*). Such a model is verified streamed. docs/streaming.md.
    state: dict[str, str] = field(default_factory=dict)
    # model=torch: `package.module:function` returning (module, example inputs: a tuple of tensors or a dict).
    factory: Optional[str] = None
    # A pretrained transformer needs a gentler QAT rate than a small CNN: null = mode.qat_learning_rate.
    qat_learning_rate: Optional[float] = None
    # model=hf: the transformers task whose head is exported (conf/model/hf.yaml requires it), and for
    # feature-extraction the output: `sentence_embedding` (pooled and normalised as the checkpoint's
    # sentence-transformers modules.json says; without one, the mean of the tokens, L2-normalised) or
    # `last_hidden_state`.
    task: Optional[str] = None  # one of HF_TASKS
    embedding_output: str = "sentence_embedding"
    # A sentence embedding's prompt, put before every calibration, validation and held-out text as
    # SentenceTransformer.encode does: a name from the checkpoint's config_sentence_transformers.json prompts;
    # null = its default_prompt_name (none when it sets none); '' = no prompt.
    prompt_name: Optional[str] = None


@dataclass
class CalibrationConfig:
    source: CalibrationSource = MISSING  # each option under conf/calibration/ names its source
    data_files: list[str] = field(default_factory=list)
    hub_name: Optional[str] = None
    hub_config_name: Optional[str] = None  # the dataset's configuration (glue's `sst2`), as datasets' `name=`
    hub_revision: Optional[str] = None  # a branch, tag or commit of the dataset repository
    split: str = "train"
    # calibration=images: the image folder (one subfolder per class); calibration=npz: an .npz of arrays named
    # after the model's inputs (first axis = examples, optional `labels`), or a folder of them.
    path: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None  # sentence pairs (text-classification): the second text's column
    label_column: Optional[str] = None  # class labels (names or ids of the model's id2label); null = none
    image_column: str = "image"  # calibration=images: imagefolder's image column
    n_samples: int = 64  # calibration examples the quantizer sees (at least min_samples)
    n_validation: int = 32  # the build-time accuracy gate's sample
    n_heldout: int = 16  # saved as heldout.npz for verification
    min_samples: int = 16  # fewer calibration examples than this is refused
    strategy: SamplingStrategy = SamplingStrategy.length_stratified
    seed: int = 0
    method: CalibrationMethod = CalibrationMethod.minmax
    batch_size: int = 8
    min_chars: int = 24  # shorter fragments are headings and code, not traffic
    deduplicate: bool = True
    # Coverage: the share of held-out activation values outside the calibration range (clipped
    # at int8), worst tensor. Above warn: the build warns; above fail: it fails (static and QAT).
    # Measured on digits_cnn: a stratified sample leaves 0.03-0.12% outside, one class only 0.3-1.2%.
    coverage_warn: float = 0.005
    coverage_fail: float = 0.05


@dataclass
class QuantExtraOptions:
    """A typed subset of onnxruntime.quantization's `extra_options`, named as onnxruntime names them
    (`mode.extra_options.WeightSymmetric=false`); null = onnxruntime's default (quantgate sets
    CalibTensorRangeSymmetric=false for static builds itself)."""

    WeightSymmetric: Optional[bool] = None  # dynamic and static
    ActivationSymmetric: Optional[bool] = None  # dynamic and static
    CalibMovingAverage: Optional[bool] = None  # static, minmax only
    CalibMovingAverageConstant: Optional[float] = None  # static, with CalibMovingAverage; 0..1
    SmoothQuant: Optional[bool] = None  # static; needs the neural-compressor package
    SmoothQuantAlpha: Optional[float] = None  # static, with SmoothQuant; 0..1


@dataclass
class ModeConfig:
    name: QuantMode = MISSING
    quant_format: QuantFormat = QuantFormat.QDQ
    # Static: quantizing Add/Softmax/LayerNorm outputs of a transformer with per-tensor ranges
    # wrecks it (MiniLM cosine 0.40 vs 0.93 with MatMul/Gemm only), so only these op types
    # (Gather: the embedding table, weight-only in effect). Attention and EmbedLayerNormalization are
    # the fused transformer operators (model.fuse): dynamic int8 makes them QAttention and
    # QEmbedLayerNormalization, in static builds too (QDQ has no rule for them; pipeline/builder/quantize.py).
    op_types_to_quantize: list[str] = field(default_factory=lambda: [
        "MatMul", "Gemm", "Conv", "Gather", "Attention", "EmbedLayerNormalization"])
    # Static int8 of a graph with convolutions also quantizes these, which onnxruntime runs in int8 (NHWC)
    # between its QLinearConvs: no Q/DQ pair or layout Transpose around a pooling, an activation or a residual Add
    # (a 7.5 M-MAC test CNN, batch 1 on a VNNI host: 0.81x -> 0.61x fp32). [] = op_types_to_quantize only.
    conv_graph_op_types: list[str] = field(default_factory=lambda: [
        "Relu", "Clip", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Concat", "Flatten",
        "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Resize"])
    # In such a graph, a (non-grouped) convolution whose reduction (input channels x kernel area) is below this stays
    # fp32: onnxruntime's int8 kernel is slower than fp32 there (an RGB 3x3 stem, K=27: 12 vs 18 GMAC/s at batch 1
    # on a VNNI host, `quantgate bench`'s convolution floor), if it does at least conv_fp32_min_macs multiply-adds
    # per sample: below that, the fp32 -> int8 layout change after it costs more than its kernel (digits_cnn's 9 k-MAC
    # stem: 0.88x fp32 int8, 1.05x fp32). 0 = quantize every convolution.
    conv_min_reduction: int = 32
    conv_fp32_min_macs: int = 100_000
    # onnxruntime's own knobs (dynamic and static; names as in reference.onnx: `quantgate inspect ... --nodes`).
    nodes_to_exclude: list[str] = field(default_factory=list)  # kept fp32
    nodes_to_quantize: list[str] = field(default_factory=list)  # empty = every node of the op types above
    extra_options: QuantExtraOptions = field(default_factory=QuantExtraOptions)
    # QAT (torchao PT2E): fine-tuning steps, learning rate and batch size.
    qat_steps: int = 100
    qat_learning_rate: float = 1e-4
    qat_batch_size: int = 16
    # Weight-only modes (int4, int8): weights quantized in blocks of this many input channels along K, one scale
    # (and zero point when asymmetric) per block, round-to-nearest (onnxruntime-genai's builder: block_size,
    # is_symmetric). Smaller blocks: closer to fp32, a larger file.
    block_size: int = 32
    symmetric: bool = True
    # int4 only: rtn, or hqq / gptq from onnxruntime's MatMulNBitsQuantizer on the fp32 export (gptq calibrates on
    # calibration.n_samples texts of the calibration source, disjoint from the held-out text). Measured on the tiny
    # Qwen2 (docs/guides/language-models.md): against RTN, HQQ's KL to fp32 0.75x, GPTQ's 5-6x (worse).
    algorithm: WeightAlgorithm = WeightAlgorithm.rtn


@dataclass
class TargetConfig:
    name: str = MISSING
    family: str = "x86_64"
    # archspec microarchitecture whose features the artifact may use, plus named extras.
    microarchitecture: str = MISSING
    extra_features: list[str] = field(default_factory=list)
    # The quantization policy: every target states it (docs/guides/targets.md, "Targets and the quantization policy").
    per_channel: bool = MISSING
    reduce_range: bool = MISSING  # u8s8 without VNNI saturates (VPMADDUBSW): 7-bit weights
    activation_type: IntType = MISSING
    weight_type: IntType = MISSING
    floor_profile: Optional[str] = None  # the emulated lowest CPU; null = no emulator can model it
    below_floor_profiles: list[str] = field(default_factory=list)  # must be refused by the guard
    # Weight-only decoders (mode=int4 | int8): MatMulNBits' accuracy_level, the precision its activations are
    # computed in (1 fp32, 2 fp16, 3 bf16, 4 int8: activations quantized to int8 inside the kernel, the fastest
    # CPU kernels, whose numerics differ by ISA). null = the builder's default (4 on CPU). Each target says why.
    accuracy_level: Optional[int] = None
    # Decoders: CPU features MatMulNBits' and GroupQueryAttention's kernels use at that accuracy_level on this ISA,
    # required by the decoder's stamp (with the runtime floor) so the guard refuses a CPU that would run other kernels
    # than the ones verified. Each target says which and why; names from pipeline/isa/targets.py RUNTIME_FEATURES.
    decoder_features: list[str] = field(default_factory=list)


@dataclass
class OutputGroup:
    """A slice of one output judged on its own scale (pipeline/verify/groups.py), e.g. a detector head's class
    scores: `{output: output0, start: 4, stop: 84, label: scores}` is judged and named `output0[4:84] (scores)`."""

    output: str = MISSING
    start: int = MISSING
    stop: int = MISSING
    axis: int = 1  # counted with the batch axis as 0
    kind: Optional[str] = None  # vector | token_states | score | logits | label_sets; null = as the output's kind
    label: Optional[str] = None  # a name shown after the slice


class DetectionLayout(StrEnum):
    auto = "auto"  # packed when the feature axis (the shorter) comes first, packed_last otherwise
    packed = "packed"  # [batch, 4 + classes, anchors]: cx, cy, w, h, then one score per class (YOLOv8 style)
    packed_last = "packed_last"  # [batch, anchors, 4 + classes]
    boxes = "boxes"  # [batch, detections, 6]: x1, y1, x2, y2, score, class (NMS already done)


@dataclass
class DetectionConfig:
    """How a detector's detections are read and judged (model.kind=detector; pipeline/verify/detection.py)."""

    output: Optional[str] = None  # the output holding the detections; null = the first
    layout: DetectionLayout = DetectionLayout.auto
    score_threshold: float = 0.25
    nms_iou: float = 0.45  # class-wise NMS: a box overlapping a better one of its class by more is dropped
    match_iou: float = 0.5  # an int8 detection matches fp32's of the same class at this IoU or more
    max_detections: int = 300  # per sample, after NMS
    # Budgets, over every held-out sample (not on the few emulated ones): the share of fp32's detections int8
    # finds, the share of int8's detections fp32 has, the mean IoU of the matched pairs.
    min_recall: float = 0.9
    min_precision: float = 0.9
    min_mean_iou: float = 0.85


@dataclass
class VerifyConfig:
    """Verification on the target's CPU profiles. Emulated runs use one intra-op thread and a few held-out
    samples (QEMU is ~100x slower); latency is measured natively."""

    enabled: bool = True
    profiles: Optional[list[str]] = None  # null = what the target lists; names from conf/cpu/ (`haswell@ort116`)
    extra_profiles: list[str] = field(default_factory=list)  # added to the profiles above, e.g. lab hosts over SSH
    cpu_profile_dirs: list[str] = field(default_factory=list)  # more folders of CPU profile YAMLs beside conf/cpu/
    max_parallel_hosts: int = 4  # lab hosts (kind: ssh) verified at the same time; local profiles run one by one
    # Per child process; null = sized to the work: the first native run gets first_run_timeout_seconds, every later
    # child startup_timeout_seconds plus the first native run's wall time times emulation_slowdown (under QEMU) or
    # native_slowdown (natively, or on a lab host). A child past it is `not_verified`, naming the emulator or runtime.
    timeout_seconds: Optional[float] = None
    first_run_timeout_seconds: float = 600.0
    startup_timeout_seconds: float = 120.0
    emulation_slowdown: float = 100.0
    native_slowdown: float = 10.0
    memory_limit_mb: int = 8192  # per child process (RLIMIT_AS)
    emulated_max_samples: int = 3
    native_max_samples: int = 64
    latency_repeats: int = 20
    min_cosine_mean: float = 0.98
    min_cosine_worst: float = 0.95
    min_top1_agreement: float = 0.97
    max_abs_error: Optional[float] = None
    # Element-wise error to fp32 in units of the output's scale (RMS over non-padding positions); null = not bounded.
    max_scaled_error: Optional[float] = None
    # Token models: hidden states are judged per non-padding token, and also after pooling when asked.
    pooling: str = "none"  # none | mean | cls
    # Parts of one output on different scales, judged each on its own (pipeline/verify/groups.py): slices named
    # here; outputs not named are split automatically where indices of a feature axis have an fp32 RMS under
    # 1/group_scale_ratio of the output's (null = no automatic split).
    output_groups: list[OutputGroup] = field(default_factory=list)
    group_scale_ratio: Optional[float] = 30.0
    # Near-empty samples (pipeline/verify/fidelity/): an fp32 sample (token) whose RMS is under near_empty_ratio
    # times the output's scale is judged by magnitude, not by cosine; the scale (the RMS over every sample) is never
    # below near_zero, an absolute value in the output's units (an output near zero on every input, ~1e-7).
    near_empty_ratio: float = 0.1
    near_zero: float = 1e-4
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    # Per-CPU numerics: every profile's outputs against the same artifact's on the reference CPU, element-wise
    # on each output's scale. `auto`: this host when it has VNNI (exact int8 kernels); otherwise sandybridge
    # (emulated; SSE/AVX kernels widen int8 products to 16 bits and never saturate). A profile fails when its
    # largest error to fp32 exceeds the reference CPU's by both bounds. Measured kernel noise and why these
    # bounds: docs/verification.md.
    reference_cpu: str = "auto"
    max_cpu_excess_error: float = 0.5  # in units of the output's scale (RMS of fp32 over non-padding values)
    max_cpu_error_ratio: float = 2.0
    # Custom-operator libraries the artifact needs (onnxruntime's register_custom_ops_library), for every run.
    custom_op_libraries: list[str] = field(default_factory=list)
    max_accuracy_drop: float = 0.02  # classifiers: fp32 accuracy minus int8 accuracy
    max_macro_f1_drop: float = 0.05  # classifiers with labels: fp32 macro-F1 minus int8 macro-F1
    # The same budget gates the build on the validation split; over it, the most sensitive nodes
    # stay fp32, a few per step, up to this many, then the build fails with the numbers.
    build_gate: bool = True
    fallback_max_excluded_nodes: int = 8
    fallback_nodes_per_step: int = 2
    # Pretend the native host has exactly these CPU features (tests, what-if runs); null = CPUID.
    assume_host_features: Optional[list[str]] = None
    # Padding invariance (models with input_ids): each held-out sequence alone vs inside a batch
    # padded `padding_extra_tokens` past the longest; compared like fidelity, with these bounds. Dynamic
    # int8 takes activation ranges over padded positions too, so this is a tolerance (MiniLM int8: cosine
    # ~0.98-0.99), not equality; an ignored mask gives ~0.2-0.4.
    padding_check: bool = True
    padding_extra_tokens: int = 16
    padding_min_cosine_mean: float = 0.98
    padding_min_cosine_worst: float = 0.95
    padding_min_top1_agreement: float = 0.97
    padding_max_abs_error: Optional[float] = None
    # Stateful models (model.state, or found): the held-out chunks run as sequences of this many steps, the state
    # carried from each step to the next, per-step outputs compared with fp32's streamed run; emulated profiles run
    # emulated_max_samples such sequences. The state's drift (RMS of its error to fp32's over the RMS of fp32's
    # state, per step) is held to max_state_drift at every step. docs/streaming.md.
    stream_steps: int = 8
    max_state_drift: float = 0.25
    # model.kind=event: a chunk is an event where its score is above this (in the output's own units: a
    # probability's 0.5, a logit's 0), held to min_top1_agreement with fp32's decisions.
    threshold: float = 0.5
    # Decoders (model.task=text-generation), teacher-forced over held-out text against the fp32 export of the same
    # checkpoint: mean KL divergence of the next-token distributions (fp32 || quantized, nats per token), the share
    # of positions whose top-1 next token agrees, and perplexity's relative increase. The build gate and
    # verify.json judge with these same budgets.
    # Measured on a tiny trained Llama (hidden 64, block 32): int4 KL 0.005-0.013, agreement 0.89-0.93, perplexity
    # within 0.5%; int8 KL 0.0001, agreement 0.99 (docs/guides/language-models.md).
    max_kl_divergence: float = 0.1
    min_next_token_agreement: float = 0.8
    max_perplexity_increase: float = 0.1
    decoder_max_tokens: int = 64  # tokens per held-out sequence (context the check runs over)
    # Per-CPU numerics of a decoder: the mean KL between the same file's next-token distributions on a profile and on
    # the reference CPU (verify.reference_cpu). Measured on the tiny int4 Qwen2 (accuracy level 4) against an
    # AVX512-VNNI host: Haswell (AVX2 kernels) and qemu-aarch64 cortex-a72 / neoverse-n1 2e-5 to 9e-5, a hundredth of
    # int4's own KL to fp32 (0.005); the budget leaves 100x room and still catches a kernel that computes wrong.
    max_cpu_kl_divergence: float = 0.01


@dataclass
class SpeedConfig:
    """What int8 bought, measured at build time on the build host (pipeline/builder/speed.py): int8 and the fp32
    reference timed interleaved in one process at each batch; their size ratio. int8 slower than fp32 beyond the
    noise of the rounds is a build warning naming its cause."""

    enabled: bool = True
    batches: list[int] = field(default_factory=lambda: [1, 8])  # the first is the one judged
    # Wall seconds of timed rounds per batch (after session loads and warm-up): MiniLM about 3 s in all.
    seconds_per_batch: float = 0.5
    min_rounds: int = 10  # interleaved rounds at least, whatever the seconds: enough to state the noise
    # fp32 faster than this at the judged batch is too small to time against the load of a shared host: the ratio
    # is recorded, not judged.
    min_timeable_ms: float = 0.1


@dataclass
class RuntimeConfig:
    """The runtime stack a build targets and verifies in: pip requirement lines (conf/runtime/)."""

    name: str = MISSING
    # Empty = this project's own venv (pinned); otherwise a cached venv built from these lines.
    requirements: list[str] = field(default_factory=list)


@dataclass
class QuantgateConfig:
    model: ModelConfig = MISSING
    calibration: CalibrationConfig = MISSING
    mode: ModeConfig = MISSING
    target: TargetConfig = MISSING
    verify: VerifyConfig = MISSING
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    # null = build for this venv's runtime; verify in the runtime the artifact was stamped for.
    runtime: Optional[RuntimeConfig] = None
    # onnx: model.onnx for onnxruntime; aoti: model.pt2, a torch AOTInductor package compiled for the
    # target (make EXPORT=aoti)
    export: ExportKind = ExportKind.onnx
    artifacts_dir: str = "artifacts"
    # An explicit artifact folder; null = <artifacts_dir>/<model>-<mode>-<target>. Only a folder quantgate
    # built itself (or a new or empty one) is ever replaced.
    out: Optional[str] = None
    # A rebuild that fails verification never replaces a verified artifact, unless this is true.
    replace_verified: bool = False
    # A build never replaces an artifact built from another model (another file, checkpoint or weights) in its
    # folder, unless this is true.
    replace: bool = False
    # Reuse the fp32 reference exported earlier from the same checkpoint, config, package versions and export
    # code (pipeline/builder/reference_cache.py; $QUANTGATE_REFERENCE_CACHE, default ~/.cache/quantgate/references).
    reference_cache: bool = True
    experiment: Any = None


@dataclass
class ReleaseConfig:
    """What `quantgate signoff` holds a release to, beyond each artifact's own verification (overrides after the
    options: `quantgate signoff --release rc1 release.max_latency_ratio=1.2`)."""

    # int8 p50 latency over fp32 (batch 1, measured natively by verification) above this blocks (waivable as
    # profile `latency`); 1.0 = int8 must not be slower than fp32.
    max_latency_ratio: float = 1.0
    # int8 model file size over the fp32 reference's above this blocks (waivable as profile `size`); 1.0 = int8
    # must not be larger than fp32. A size budget: e.g. 0.3 (MiniLM dynamic int8 is 0.25x).
    max_size_ratio: float = 1.0


# Each config group and the dataclass its options compose onto (conf/<group>/*.yaml).
GROUP_SCHEMAS = {"model": ModelConfig, "calibration": CalibrationConfig, "mode": ModeConfig,
                 "target": TargetConfig, "verify": VerifyConfig, "runtime": RuntimeConfig}

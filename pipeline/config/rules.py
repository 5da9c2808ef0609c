"""Every rule between config values, in one place, checked once before any work (`pipeline.builder.task.validate`).

A rule here needs the composed config only: no model, no data. Types and enum values are checked by the
schema when Hydra composes; keys added with `+key=value` (which Hydra lets through) are checked here against
the schema, and so is what no single field can say.
Each refusal is a `UsageError` naming the values and the fix.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from pipeline.errors import UsageError


def check(cfg) -> None:
    _no_unknown_keys(cfg)
    _no_missing_values(cfg)
    _no_unread_keys(cfg)
    _numbers_in_range(cfg)
    _target(cfg)
    _model(cfg)
    _calibration(cfg)
    _own_model(cfg)
    _mode(cfg)
    _export(cfg)
    _verify(cfg)
    _speed(cfg)


def _no_missing_values(cfg) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg)) if OmegaConf.is_config(cfg) else []
    if missing:
        raise UsageError(f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no value (??? in conf/): "
                         f"give " + " ".join(f"{key}=VALUE" for key in missing))


def _target(cfg) -> None:
    from pipeline.isa.targets import UnknownFeatureError, required_cpu_features
    try:
        required_cpu_features(cfg.target.microarchitecture, list(cfg.target.extra_features))
    except UnknownFeatureError as error:
        raise UsageError(f"target {cfg.target.name}: {error}") from None


def _model(cfg) -> None:
    model = cfg.model
    sentence_embedding = model.family == "text_embedding" or (
        model.family == "hf" and model.task == "feature-extraction" and model.embedding_output == "sentence_embedding")
    if model.prompt_name is not None and not sentence_embedding:
        raise UsageError(f"model.prompt_name={model.prompt_name!r} applies to sentence embeddings only (model=minilm, "
                         f"or model=hf model.task=feature-extraction with model.embedding_output=sentence_embedding); "
                         f"put the prompt in your calibration texts instead, or leave model.prompt_name out")
    if model.family != "hf":
        return
    from pipeline.config.schema import HF_TASKS
    missing = [f"model.{key}={hint}" for key, hint in (("name_or_path", "DIR_OR_HUB_ID"), ("task", "TASK"))
               if model[key] is None]
    if missing:
        raise UsageError(f"model=hf needs {' and '.join(missing)}: a local transformers checkpoint folder (or a hub "
                         f"id in the local hub cache) and one of the tasks {', '.join(HF_TASKS)}")
    if model.task not in HF_TASKS:
        raise UsageError(f"model.task={model.task!r} is not a task model=hf exports; valid: {', '.join(HF_TASKS)}")


# What each calibration source cannot do without, and the words that say how to give it.
SOURCE_NEEDS = {
    "files": ("data_files", "calibration=files needs the files: 'calibration.data_files=[traffic.jsonl]' (csv, json, "
                            "jsonl, parquet or txt)"),
    "hub": ("hub_name", "calibration=hub needs the dataset's name: calibration.hub_name=NAME (offline: a dataset "
                        "in the local datasets cache)"),
    "npz": ("path", "calibration=npz needs the arrays: calibration.path=FILE.npz (arrays named after the model's "
                    "inputs, first axis = examples, optional `labels`) or a folder of .npz files"),
    "images": ("path", "calibration=images needs the folder: calibration.path=DIR (one subfolder of images per "
                       "class, datasets' imagefolder)"),
}


def _calibration(cfg) -> None:
    calibration = cfg.calibration
    key, words = SOURCE_NEEDS.get(str(calibration.source), (None, ""))
    if key is not None and not calibration[key]:
        raise UsageError(words)
    image_task = cfg.model.task == "image-classification"
    if cfg.model.family == "hf" and image_task != (calibration.source in ("images", "hub")) and \
            (image_task or calibration.source == "images"):
        raise UsageError(f"model.task={cfg.model.task} cannot calibrate on calibration={calibration.source}: "
                         + ("images come from calibration=images calibration.path=DIR or calibration=hub" if image_task
                            else "text comes from calibration=files, hub or pydoc_topics"))
    if calibration.n_samples <= 0 or calibration.n_heldout <= 0:
        raise UsageError(f"calibration.n_samples={calibration.n_samples} and calibration.n_heldout="
                         f"{calibration.n_heldout} must both be positive integers")
    if calibration.n_samples < calibration.min_samples:
        raise UsageError(f"calibration.n_samples={calibration.n_samples} is fewer than calibration.min_samples="
                         f"{calibration.min_samples}: too few examples to calibrate on; raise calibration.n_samples")
    if cfg.mode.name == "dynamic" and calibration.method != "minmax":
        raise UsageError(f"calibration.method={calibration.method} only applies to mode=static (dynamic "
                         f"quantization computes ranges at run time); drop the override or use mode=static")


def _own_model(cfg) -> None:
    """model=onnx and model=torch: the file or factory, and data shaped like the model's inputs."""
    model, source = cfg.model, cfg.calibration.source
    if model.family == "onnx" and not model.path:
        raise UsageError("model=onnx needs the file: model.path=/models/model.onnx (an fp32 ONNX model)")
    if model.family == "torch" and not model.factory:
        raise UsageError("model=torch needs your code: model.factory=package.module:function, a function returning "
                         "(module, example_inputs)")
    if model.family in ("onnx", "torch") and source in ("pydoc_topics", "digits", "files", "hub"):
        raise UsageError(f"model={model.family} calibrates on arrays named after its inputs: use calibration=npz "
                         f"calibration.path=FILE.npz (got calibration={source})")
    if model.family in ("text_embedding", "digits_cnn") and source == "npz":
        raise UsageError(f"calibration=npz is for model=onnx or model=torch; model={model.name} takes its own data "
                         f"(drop calibration=npz)")
    if model.family == "onnx" and cfg.mode.name == "qat":
        raise UsageError("model=onnx has no torch module to fine-tune: mode=qat needs model=torch (or a built-in "
                         "model); use mode=static or mode=dynamic")
    if model.family == "onnx" and cfg.export == "aoti":
        raise UsageError("export=aoti compiles a torch module: model=onnx has none; use export=onnx (the default)")
    for key in ("batch_axes", "state"):
        if model.family != "onnx" and model[key]:
            raise UsageError(f"model.{key} is for model=onnx (an ONNX file's own layout); model={model.name} feeds "
                             f"its examples on axis 0: drop model.{key}")


def _mode(cfg) -> None:
    mode = cfg.mode
    if mode.name == "dynamic" and mode.quant_format != "QDQ":
        raise UsageError("mode=dynamic has no quant_format choice; leave mode.quant_format at QDQ")
    if mode.name == "qat" and mode.quant_format != "QDQ":
        raise UsageError("mode=qat exports QuantizeLinear/DequantizeLinear pairs: mode.quant_format must be QDQ")
    if mode.name == "qat" and mode.qat_steps <= 0:
        raise UsageError(f"mode.qat_steps={mode.qat_steps} must be a positive number of training steps")
    _weight_only(cfg)
    _quantizer_knobs(cfg)


def _weight_only(cfg) -> None:
    """Weight-only modes build decoders, and decoders build only in them (pipeline/builder/decoder.py)."""
    from pipeline.config.schema import WEIGHT_ONLY_MODES
    decoder = cfg.model.family == "hf" and cfg.model.task == "text-generation"
    weight_only = cfg.mode.name in WEIGHT_ONLY_MODES
    if decoder and not weight_only:
        raise UsageError(f"model.task=text-generation builds weight-only decoders: use MODE=int4 or MODE=int8 "
                         f"(mode={cfg.mode.name} quantizes activations of encoders)")
    if weight_only and not decoder:
        raise UsageError(f"mode={cfg.mode.name} is weight-only for decoder language models: give model=hf "
                         f"model.task=text-generation model.name_or_path=DIR, or use mode=dynamic|static|qat")
    if weight_only and cfg.export != "onnx":
        raise UsageError(f"mode={cfg.mode.name} exports ONNX through onnxruntime-genai's builder: leave export=onnx")
    if weight_only and (cfg.mode.block_size < 16 or cfg.mode.block_size & (cfg.mode.block_size - 1)):
        raise UsageError(f"mode.block_size={cfg.mode.block_size}: MatMulNBits takes a power of two from 16 "
                         f"(16, 32, 64, 128, 256)")
    level = cfg.target.accuracy_level
    if level is not None and level not in (0, 1, 2, 3, 4):
        raise UsageError(f"target.accuracy_level={level}: MatMulNBits takes 0-4 (1 fp32, 2 fp16, 3 bf16, 4 int8)")
    if weight_only and cfg.mode.algorithm != "rtn" and cfg.mode.name != "int4":
        raise UsageError(f"mode.algorithm={cfg.mode.algorithm} quantizes 4-bit weights (onnxruntime's "
                         f"MatMulNBitsQuantizer): use mode=int4, or mode.algorithm=rtn for mode={cfg.mode.name}")
    from pipeline.isa.targets import RUNTIME_FEATURES
    known = RUNTIME_FEATURES.get(cfg.target.family, frozenset())
    unknown = sorted(set(cfg.target.decoder_features) - known)
    if unknown:
        raise UsageError(f"target.decoder_features names {', '.join(unknown)}, which no {cfg.target.family} kernel of "
                         f"onnxruntime dispatches on: use {', '.join(sorted(known))}")


# onnxruntime's extra_options that only static quantization reads, and the option each one needs.
STATIC_ONLY_OPTIONS = {"CalibMovingAverage": None, "CalibMovingAverageConstant": "CalibMovingAverage",
                       "SmoothQuant": None, "SmoothQuantAlpha": "SmoothQuant"}


def _quantizer_knobs(cfg) -> None:
    """onnxruntime's knobs: op types it knows, extra options the mode uses. Node names are checked against
    the exported graph by the quantize stage (they exist only after export)."""
    mode = cfg.mode
    options = {key: value for key, value in mode.extra_options.items() if value is not None}
    if mode.name == "qat" and (mode.nodes_to_exclude or mode.nodes_to_quantize or options):
        raise UsageError("mode=qat fine-tunes and exports in torch: mode.nodes_to_exclude, mode.nodes_to_quantize "
                         "and mode.extra_options are onnxruntime's (mode=dynamic or mode=static)")
    for key in ("op_types_to_quantize", "conv_graph_op_types"):
        unknown = [op for op in mode[key] if op not in quantizable_op_types()]
        if unknown:
            raise UsageError(f"mode.{key}: {', '.join(_with_close_matches(unknown, quantizable_op_types()))} "
                             f"{'is' if len(unknown) == 1 else 'are'} not an operator type onnxruntime quantizes")
    overlap = sorted(set(mode.nodes_to_exclude) & set(mode.nodes_to_quantize))
    if overlap:
        raise UsageError(f"mode.nodes_to_exclude and mode.nodes_to_quantize both name {overlap}: a node is either kept "
                         f"fp32 or quantized; drop it from one list")
    for key, needs in STATIC_ONLY_OPTIONS.items():
        if key in options and mode.name != "static":
            raise UsageError(f"mode.extra_options.{key} applies to static calibration only (mode=static); "
                             f"drop it for mode={mode.name}")
        if key in options and needs and not options.get(needs):
            raise UsageError(f"mode.extra_options.{key} takes effect only with mode.extra_options.{needs}=true")
    for key in ("CalibMovingAverageConstant", "SmoothQuantAlpha"):
        if key in options and not 0 <= options[key] <= 1:
            raise UsageError(f"mode.extra_options.{key}={options[key]} is out of range: it must be between 0 and 1")
    if options.get("CalibMovingAverage") and cfg.calibration.method != "minmax":
        raise UsageError(f"mode.extra_options.CalibMovingAverage applies to calibration.method=minmax only "
                         f"(got {cfg.calibration.method})")
    if options.get("SmoothQuant"):
        import importlib.util
        if importlib.util.find_spec("neural_compressor") is None:
            raise UsageError("mode.extra_options.SmoothQuant=true needs Intel Neural Compressor, which onnxruntime "
                             "calls for it: pip install neural-compressor (into .venv), or drop the option")


def quantizable_op_types() -> set[str]:
    """Operator types onnxruntime's quantizers have a handler for, plus any standard ONNX operator (QDQ
    quantization wraps any op's inputs)."""
    import onnx
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry
    return {*IntegerOpsRegistry, *QLinearOpsRegistry, *QDQRegistry, *(s.name for s in onnx.defs.get_all_schemas())}


def _with_close_matches(names: list[str], valid) -> list[str]:
    import difflib
    out = []
    for name in names:
        close = difflib.get_close_matches(name, list(valid), n=3)
        out.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return out


def _no_unknown_keys(cfg) -> None:
    """`+mode.foo=1` composes (Hydra opens the config for `+`); nothing would read it. Refused, naming close keys."""
    from pipeline.config.schema import GROUP_SCHEMAS, QuantgateConfig
    if not OmegaConf.is_config(cfg):
        return
    unknown: list[tuple[str, list[str]]] = []
    _unknown_keys(cfg, QuantgateConfig, "", GROUP_SCHEMAS, unknown)
    if unknown:
        described = [f"{key}" + (f" (did you mean {', '.join(close)}?)" if close else "") for key, close in unknown]
        raise UsageError(f"unknown config key(s): {'; '.join(described)}. Nothing reads them, so they are refused; "
                         f"`quantgate build --cfg job` prints every key")


def _unknown_keys(node, schema, prefix: str, group_schemas: dict, found: list) -> None:
    import dataclasses
    import difflib
    import typing

    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        if key == "hydra":
            continue
        if key not in names:
            found.append((f"{prefix}{key}", [f"{prefix}{c}" for c in difflib.get_close_matches(str(key), names, n=2)]))
            continue
        kind = group_schemas.get(key) if not prefix else None
        if kind is None:
            kind = hints[key]
            kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)  # Optional[X] -> X
        value = node._get_node(key)
        if dataclasses.is_dataclass(kind) and OmegaConf.is_dict(value) and not value._is_missing() and not value._is_none():
            _unknown_keys(value, kind, f"{prefix}{key}.", group_schemas, found)


def _speed(cfg) -> None:
    """speed.*: batches to time, and a budget that times at least one round."""
    speed = cfg.speed
    if not speed.batches or any(batch < 1 for batch in speed.batches):
        raise UsageError(f"speed.batches={list(speed.batches)}: give one or more batch sizes of at least 1 (the first "
                         f"is judged), e.g. speed.batches=[1,8]; speed.enabled=false measures nothing")
    if speed.min_rounds < 3 or speed.seconds_per_batch < 0 or speed.min_timeable_ms < 0:
        raise UsageError(f"speed.min_rounds={speed.min_rounds} (at least 3 to state the noise), "
                         f"speed.seconds_per_batch={speed.seconds_per_batch} and speed.min_timeable_ms="
                         f"{speed.min_timeable_ms} (not negative): one of them is out of range")


def _export(cfg) -> None:
    if cfg.export != "aoti":
        return
    if cfg.mode.name in ("dynamic", "auto"):
        raise UsageError(f"export=aoti quantizes with torchao PT2E: use mode=static or mode=qat "
                         f"(mode={cfg.mode.name} chooses among onnxruntime's modes, for export=onnx)")
    if cfg.target.family != "x86_64":
        raise UsageError(f"export=aoti compiles x86-64 code only (inductor builds for the build host's "
                         f"architecture, no cross-compiler); target {cfg.target.name} is {cfg.target.family}")
    if cfg.model.family != "digits_cnn":
        from pipeline.progress import say
        say(f"export=aoti: {cfg.model.name} is untested with AOTInductor here (tested: digits_cnn)")


# verify.* numbers and the values that make sense for them: (low, high, inclusive low). A negative memory
# limit or timeout would silently switch the limit off; a cosine bound above 1 could never pass.
VERIFY_RANGES = {
    "timeout_seconds": (0, None, False), "memory_limit_mb": (0, None, False), "max_parallel_hosts": (0, None, False),
    "first_run_timeout_seconds": (0, None, False), "startup_timeout_seconds": (0, None, False),
    "emulation_slowdown": (0, None, False), "native_slowdown": (0, None, False),
    "emulated_max_samples": (0, None, False), "native_max_samples": (0, None, False),
    "latency_repeats": (0, None, True), "max_cpu_error_ratio": (0, None, False),
    "max_cpu_excess_error": (0, None, True), "max_abs_error": (0, None, True), "max_scaled_error": (0, None, True),
    "max_accuracy_drop": (-1, 1, True), "max_macro_f1_drop": (-1, 1, True),
    "fallback_max_excluded_nodes": (0, None, True),
    "fallback_nodes_per_step": (0, None, False), "padding_extra_tokens": (0, None, False),
    "min_cosine_mean": (-1, 1, True), "min_cosine_worst": (-1, 1, True), "min_top1_agreement": (0, 1, True),
    "padding_min_cosine_mean": (-1, 1, True), "padding_min_cosine_worst": (-1, 1, True),
    "padding_min_top1_agreement": (0, 1, True), "padding_max_abs_error": (0, None, True),
    "stream_steps": (0, None, False), "max_state_drift": (0, None, False),
    "group_scale_ratio": (1, None, False), "near_empty_ratio": (0, 1, True), "near_zero": (0, None, True),
    "detection.score_threshold": (0, None, True), "detection.nms_iou": (0, 1, True),
    "detection.match_iou": (0, 1, False), "detection.max_detections": (0, None, False),
    "detection.min_recall": (0, 1, True), "detection.min_precision": (0, 1, True), "detection.min_mean_iou": (0, 1, True),
}


def _in_range(value, low, high, inclusive_low: bool) -> bool:
    return (value >= low if inclusive_low else value > low) and (high is None or value <= high)


def check_verify(cfg) -> None:
    """The verify.* rules alone (`quantgate verify` composes a config but builds nothing)."""
    _verify(cfg)


def _verify(cfg) -> None:
    from pipeline.isa.targets import PROFILES, CpuProfileError
    for key, (low, high, inclusive_low) in VERIFY_RANGES.items():
        value = OmegaConf.select(cfg.verify, key)
        if value is not None and not _in_range(value, low, high, inclusive_low):
            bound = f"{'at least' if inclusive_low else 'more than'} {low}" + (f" and at most {high}" if high is not None else "")
            raise UsageError(f"verify.{key}={value} is out of range: it must be {bound}")
    if cfg.verify.profiles is not None and not list(cfg.verify.profiles) and not list(cfg.verify.extra_profiles):
        raise UsageError("verify.profiles=[] names no CPU profile: nothing would be verified. Leave verify.profiles "
                         "out (the target's floor CPU, this host and the CPUs below the floor), name profiles "
                         "(verify.profiles=[haswell,native]), or skip verification with verify.enabled=false")
    try:
        PROFILES.use_extra_folders(cfg.verify.cpu_profile_dirs)
        # A profile may name a runtime after `@` (haswell@ort116); the CPU is the part before it.
        for key in ("profiles", "extra_profiles"):
            unknown = [name for name in (cfg.verify[key] or []) if name.partition("@")[0] not in PROFILES]
            if unknown:
                raise UsageError(f"verify.{key}: unknown profile(s) {unknown}; valid profiles: {', '.join(PROFILES)}")
    except CpuProfileError as error:
        raise UsageError(str(error)) from None


# Keys that only some choices read: key -> (the key whose value chooses, the values that read it). A key set away
# from its default under a choice that does not read it would be ignored without a word (data_files without
# calibration=files calibrated on the default text): refused, naming the choice that reads it.
READ_ONLY_UNDER = {
    "calibration.data_files": ("calibration.source", ("files",)),
    "calibration.hub_name": ("calibration.source", ("hub",)),
    "calibration.hub_config_name": ("calibration.source", ("hub",)),
    "calibration.hub_revision": ("calibration.source", ("hub",)),
    "calibration.path": ("calibration.source", ("npz", "images")),
    "calibration.image_column": ("calibration.source", ("images", "hub")),
    "calibration.text_column": ("calibration.source", ("files", "hub")),
    "calibration.text_pair_column": ("calibration.source", ("files", "hub")),
    "calibration.label_column": ("calibration.source", ("files", "hub", "images")),
    "model.name_or_path": ("model.family", ("text_embedding", "hf")),
    "model.max_length": ("model.family", ("text_embedding", "hf")),
    "model.train_steps": ("model.family", ("digits_cnn",)),
    "model.path": ("model.family", ("onnx",)),
    "model.factory": ("model.family", ("torch",)),
    "model.task": ("model.family", ("hf",)),
    "model.embedding_output": ("model.family", ("hf",)),
    "mode.qat_steps": ("mode.name", ("qat",)),
    "mode.qat_learning_rate": ("mode.name", ("qat",)),
    "mode.qat_batch_size": ("mode.name", ("qat",)),
}
# The config group that chooses each `chooser` key, and how its choices are spelled on the command line.
CHOOSER_GROUPS = {"calibration.source": "calibration", "model.family": "model", "mode.name": "mode"}
MODEL_CHOICES = {"text_embedding": "minilm"}  # model families whose conf/model/ option has another name


def _schema_default(key: str):
    import dataclasses
    from pipeline.config.schema import GROUP_SCHEMAS
    group, _, leaf = key.partition(".")
    field = next(f for f in dataclasses.fields(GROUP_SCHEMAS[group]) if f.name == leaf)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else getattr(value, "value", value)


def unread_keys(cfg) -> list[str]:
    """Every key of READ_ONLY_UNDER set away from its default where the composed config does not read it, in words."""
    found = []
    for key, (chooser, readers) in READ_ONLY_UNDER.items():
        value, chosen = OmegaConf.select(cfg, key), _plain(OmegaConf.select(cfg, chooser))
        if chosen in readers or _plain(value) == _schema_default(key):
            continue
        group = CHOOSER_GROUPS[chooser]
        choices = " or ".join(f"{group}={MODEL_CHOICES.get(reader, reader) if group == 'model' else reader}"
                              for reader in readers)
        found.append(f"{key}={_plain(value)!r} is read only with {choices} ({chooser} here is {chosen})")
    return found


def _no_unread_keys(cfg) -> None:
    if not OmegaConf.is_config(cfg):
        return
    found = unread_keys(cfg)
    if found:
        raise UsageError(f"{'; '.join(found)}: nothing would read {'it' if len(found) == 1 else 'them'}, so the build "
                         f"would silently use something else. Choose that group (e.g. calibration=files) or drop the "
                         f"key{'s' if len(found) > 1 else ''}")


# Numbers outside verify.* that make no sense below a bound: (low, inclusive). A negative seed or batch size
# reaches numpy or torch as a traceback; zero steps train nothing.
NUMBER_RANGES = {
    "calibration.seed": (0, True), "calibration.batch_size": (0, False), "calibration.n_validation": (0, False),
    "calibration.min_samples": (0, False), "calibration.min_chars": (0, True),
    "calibration.coverage_warn": (0, True), "calibration.coverage_fail": (0, True),
    "model.seed": (0, True), "model.max_length": (0, False), "model.opset": (0, False), "model.train_steps": (0, True),
    "mode.qat_learning_rate": (0, False), "mode.qat_batch_size": (0, False),
}


def _numbers_in_range(cfg) -> None:
    if not OmegaConf.is_config(cfg):
        return
    for key, (low, inclusive) in NUMBER_RANGES.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not _in_range(value, low, None, inclusive):
            raise UsageError(f"{key}={value} is out of range: it must be {'at least' if inclusive else 'more than'} "
                             f"{low}")
    for key in ("calibration.coverage_warn", "calibration.coverage_fail"):
        if OmegaConf.select(cfg, key) > 1:
            raise UsageError(f"{key}={OmegaConf.select(cfg, key)} is out of range: it is a share, at most 1")

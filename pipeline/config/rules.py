"""Every rule between config values, in one place, checked once before any work (`pipeline.build.task.validate`).

A rule here needs the composed config only: no model, no data. Types, enum values and unknown keys are
already checked by the schema when Hydra composes; what is left is what no single field can say.
Each refusal is a `UsageError` naming the values and the fix.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from pipeline.errors import UsageError


def check(cfg) -> None:
    _no_missing_values(cfg)
    _target(cfg)
    _calibration(cfg)
    _own_model(cfg)
    _mode(cfg)
    _export(cfg)
    _verify(cfg)


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


def _calibration(cfg) -> None:
    calibration = cfg.calibration
    if calibration.source == "files" and not calibration.data_files:
        raise UsageError("calibration=files needs the files: 'calibration.data_files=[traffic.jsonl]' (csv, json, "
                         "jsonl, parquet or txt)")
    if calibration.source == "hub" and not calibration.hub_name:
        raise UsageError("calibration=hub needs the dataset's name: calibration.hub_name=NAME (offline: a dataset "
                         "in the local datasets cache)")
    if calibration.source == "npz" and not calibration.path:
        raise UsageError("calibration=npz needs the arrays: calibration.path=FILE.npz (arrays named after the model's "
                         "inputs, first axis = examples, optional `labels`) or a folder of .npz files")
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


def _mode(cfg) -> None:
    mode = cfg.mode
    if mode.name == "dynamic" and mode.quant_format != "QDQ":
        raise UsageError("mode=dynamic has no quant_format choice; leave mode.quant_format at QDQ")
    if mode.name == "qat" and mode.quant_format != "QDQ":
        raise UsageError("mode=qat exports QuantizeLinear/DequantizeLinear pairs: mode.quant_format must be QDQ")
    if mode.name == "qat" and mode.qat_steps <= 0:
        raise UsageError(f"mode.qat_steps={mode.qat_steps} must be a positive number of training steps")


def _export(cfg) -> None:
    if cfg.export != "aoti":
        return
    if cfg.mode.name == "dynamic":
        raise UsageError("export=aoti quantizes with torchao PT2E: use mode=static or mode=qat "
                         "(mode=dynamic is onnxruntime's run-time quantization)")
    if cfg.target.family != "x86_64":
        raise UsageError(f"export=aoti compiles x86-64 code only (inductor builds for the build host's "
                         f"architecture, no cross-compiler); target {cfg.target.name} is {cfg.target.family}")
    if cfg.model.family != "digits_cnn":
        from pipeline.progress import say
        say(f"export=aoti: {cfg.model.name} is untested with AOTInductor here (tested: digits_cnn)")


# verify.* numbers and the values that make sense for them: (low, high, inclusive low). A negative memory
# limit or timeout would silently switch the limit off; a cosine bound above 1 could never pass.
VERIFY_RANGES = {
    "timeout_seconds": (0, None, False), "memory_limit_mb": (0, None, False),
    "emulated_max_samples": (0, None, False), "native_max_samples": (0, None, False),
    "latency_repeats": (0, None, True), "max_cpu_error_ratio": (0, None, False),
    "max_cpu_excess_error": (0, None, True), "max_abs_error": (0, None, True), "max_scaled_error": (0, None, True),
    "max_accuracy_drop": (-1, 1, True), "fallback_max_excluded_nodes": (0, None, True),
    "fallback_nodes_per_step": (0, None, False), "padding_extra_tokens": (0, None, False),
    "min_cosine_mean": (-1, 1, True), "min_cosine_worst": (-1, 1, True), "min_top1_agreement": (0, 1, True),
    "padding_min_cosine_mean": (-1, 1, True), "padding_min_cosine_worst": (-1, 1, True),
    "padding_min_top1_agreement": (0, 1, True), "padding_max_abs_error": (0, None, True),
}


def _in_range(value, low, high, inclusive_low: bool) -> bool:
    return (value >= low if inclusive_low else value > low) and (high is None or value <= high)


def check_verify(cfg) -> None:
    """The verify.* rules alone (`quantgate verify` composes a config but builds nothing)."""
    _verify(cfg)


def _verify(cfg) -> None:
    from pipeline.isa.targets import PROFILES, CpuProfileError
    for key, (low, high, inclusive_low) in VERIFY_RANGES.items():
        value = cfg.verify[key]
        if value is not None and not _in_range(value, low, high, inclusive_low):
            bound = f"{'at least' if inclusive_low else 'more than'} {low}" + (f" and at most {high}" if high is not None else "")
            raise UsageError(f"verify.{key}={value} is out of range: it must be {bound}")
    try:
        PROFILES.use_extra_folders(cfg.verify.cpu_profile_dirs)
        # A profile may name a runtime after `@` (haswell@ort116); the CPU is the part before it.
        for key in ("profiles", "extra_profiles"):
            unknown = [name for name in (cfg.verify[key] or []) if name.partition("@")[0] not in PROFILES]
            if unknown:
                raise UsageError(f"verify.{key}: unknown profile(s) {unknown}; valid profiles: {', '.join(PROFILES)}")
    except CpuProfileError as error:
        raise UsageError(str(error)) from None

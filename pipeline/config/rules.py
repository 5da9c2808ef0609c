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
    _model(cfg)
    _calibration(cfg)
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


def _model(cfg) -> None:
    model = cfg.model
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


def _calibration(cfg) -> None:
    calibration = cfg.calibration
    if calibration.source == "files" and not calibration.data_files:
        raise UsageError("calibration=files needs the files: 'calibration.data_files=[traffic.jsonl]' (csv, json, "
                         "jsonl, parquet or txt)")
    if calibration.source == "hub" and not calibration.hub_name:
        raise UsageError("calibration=hub needs the dataset's name: calibration.hub_name=NAME (offline: a dataset "
                         "in the local datasets cache)")
    if calibration.source == "images" and not calibration.path:
        raise UsageError("calibration=images needs the folder: calibration.path=DIR (one subfolder of images per "
                         "class, datasets' imagefolder)")
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
    "max_accuracy_drop": (-1, 1, True), "max_macro_f1_drop": (-1, 1, True),
    "fallback_max_excluded_nodes": (0, None, True),
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

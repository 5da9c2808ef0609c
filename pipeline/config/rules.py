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


def _verify(cfg) -> None:
    from pipeline.isa.targets import PROFILES
    # A profile may name a runtime after `@` (haswell@ort116); the CPU is the part before it.
    unknown = [name for name in (cfg.verify.profiles or []) if name.partition("@")[0] not in PROFILES]
    if unknown:
        raise UsageError(f"verify.profiles: unknown profile(s) {unknown}; valid profiles: {', '.join(PROFILES)}")

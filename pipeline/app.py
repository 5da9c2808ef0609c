"""The Hydra app: builds (and verifies) one artifact per run of `quantize`, or, under --multirun, one combination of
a sweep each. Its command lines (`quantgate build`, `python -m pipeline`, `quantgate matrix`) are parsed and checked
in pipeline/commands/build.py and matrix.py; `run_app` runs the app on arguments they have checked. The task stays
here, in a module named app: Hydra names the job (and its log file, <job name>.log) after the task's module."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.builder.leftovers import kept_build
from pipeline.builder.task import artifact_folder, quantize_task
from pipeline.config.compose import hydra_raises, register_configs
from pipeline.errors import ExitCode, QuantgateError, error_for, translate
from pipeline.paths import CONF_DIR
from pipeline.progress import route_third_party_logs
from pipeline.release.matrix import run_combination

# A single run's error (a refusal, or a verification that did not pass), for run_app to raise: Hydra drops
# a task's return value, and an exception out of the task gets an extra "Error executing job" line.
_outcome: list[QuantgateError] = []


# An absolute path: a relative one would resolve against the importing module's package when the
# app is started through `quantgate` (pipeline.cli) instead of `python -m pipeline`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def quantize(cfg: DictConfig) -> int:
    route_third_party_logs()
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One failed (or crashed) combination must not stop the others: record its outcome for the
        # table at the end of the sweep (pipeline/release/matrix.py) and return, never exit or raise.
        return run_combination(cfg, overrides)
    try:
        code = quantize_task(cfg, overrides)
    except Exception as error:  # noqa: BLE001 - a library's input error (the calibration library's) too
        refusal = error if isinstance(error, QuantgateError) else translate(error)
        if refusal is None:
            raise
        _outcome.append(refusal)
        return refusal.exit_code
    if code != ExitCode.OK:
        status = "failed" if code == ExitCode.FAILED else "could not be completed (not verified)"
        folder = artifact_folder(cfg)
        kept = kept_build(folder)  # task._publish kept the rejected build beside a verified one
        _outcome.append(error_for(code, f"verification {status}: see {(kept or folder) / 'verify.json'}"))
    return code


def run_app(args: list[str]) -> int:
    """The Hydra app on these command-line arguments (options and overrides, already checked); a run's refusal or
    failed verification leaves as its exception."""
    register_configs()
    saved = sys.argv
    sys.argv = [saved[0], *args]
    _outcome.clear()
    try:
        with hydra_raises():
            quantize()
    finally:
        sys.argv = saved
    if _outcome:
        raise _outcome.pop()
    return ExitCode.OK

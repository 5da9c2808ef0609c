"""`quantgate build [options] [key=value ...]` (= `python -m pipeline ...`): build (and verify) one artifact;
--multirun for a sweep. A Hydra app: Hydra's --help (with quantgate's text), --cfg, --info, --multirun work."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.config import CONF_DIR
from pipeline.config.compose import hydra_raises
from pipeline.config.schema import register_configs
from pipeline.errors import ExitCode, QuantgateError, UsageError, error_for

PROG = "quantgate"  # build is quantgate's default command: `quantgate target=avx2` builds
# A single run's error (a refusal, or a verification that did not pass), for run_hydra to raise: Hydra drops
# a task's return value, and an exception out of the task gets an extra "Error executing job" line.
_outcome: list[QuantgateError] = []


# An absolute path: a relative one would resolve against the importing module's package when the
# app is started through `quantgate` (pipeline.cli) instead of `python -m pipeline`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def quantize(cfg: DictConfig) -> int:
    from pipeline.app import artifact_folder, quantize_task

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One failed (or crashed) combination must not stop the others: record its outcome for the
        # table at the end of the sweep (pipeline/matrix.py) and return, never exit or raise.
        from pipeline.matrix import run_combination
        return run_combination(cfg, overrides)
    try:
        code = quantize_task(cfg, overrides)
    except QuantgateError as error:
        _outcome.append(error)
        return error.exit_code
    if code != ExitCode.OK:
        import os
        status = "failed" if code == ExitCode.FAILED else "could not be completed (not verified)"
        folder = artifact_folder(cfg)
        kept = folder.parent / f".{folder.name}.rejected-{os.getpid()}"  # app._publish kept a verified build
        _outcome.append(error_for(code, f"verification {status}: see {(kept if kept.is_dir() else folder) / 'verify.json'}"))
    return code


def _hydra_options() -> dict[str, bool]:
    """Hydra's command-line options -> whether each takes a value (`--cfg job`, `--multirun`)."""
    from hydra._internal.utils import get_args_parser
    return {option: action.nargs != 0 for action in get_args_parser()._actions for option in action.option_strings}


def check_options(args: list[str]) -> None:
    """Refuse, with a hint, an option Hydra does not know (`--avx2`: an Optimum habit for target=avx2)."""
    from pipeline.cli import unknown_option
    options = _hydra_options()
    i = 0
    while i < len(args):
        token = args[i]
        name = token.partition("=")[0]
        if token.startswith("-") and name not in options:
            raise UsageError(unknown_option(token, args[i + 1] if i + 1 < len(args) else None))
        i += 2 if token.startswith("-") and options.get(name) and "=" not in token else 1
    modes = {"--run", "-r", "--multirun", "-m", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
    chosen = [token.partition("=")[0] for token in args if token.partition("=")[0] in modes]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)}: only one of --run, --multirun, --cfg, --info and "
                         f"--shell-completion at a time")


def run_hydra(args: list[str]) -> int:
    """The Hydra app on these arguments, after quantgate's own checks; errors leave as exceptions."""
    if "--version" in args:
        from pipeline.cli import version
        print(f"quantgate {version()}")
        return ExitCode.OK
    check_options(args)
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


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import run_command
    return run_command(PROG, run_hydra, argv)


if __name__ == "__main__":
    raise SystemExit(main())

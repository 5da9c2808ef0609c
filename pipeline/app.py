"""The Hydra app: `quantgate build [options] [key=value ...]` (= `python -m pipeline ...`) builds (and verifies)
one artifact; `quantgate matrix` (--multirun over conf/experiment/release.yaml) every combination of a release. A Hydra app: Hydra's --help (with quantgate's text), --cfg, --info, --multirun work."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.commandline import command_parser, run_command, unknown_option, version
from pipeline.paths import CONF_DIR
from pipeline.config.compose import hydra_raises
from pipeline.config.compose import register_configs
from pipeline.errors import ExitCode, QuantgateError, UsageError, error_for, translate

PROG = "quantgate"  # build is quantgate's default command: `quantgate target=avx2` builds
# A single run's error (a refusal, or a verification that did not pass), for run_hydra to raise: Hydra drops
# a task's return value, and an exception out of the task gets an extra "Error executing job" line.
_outcome: list[QuantgateError] = []


# An absolute path: a relative one would resolve against the importing module's package when the
# app is started through `quantgate` (pipeline.cli) instead of `python -m pipeline`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def quantize(cfg: DictConfig) -> int:
    from pipeline.builder.task import artifact_folder, quantize_task
    from pipeline.progress import route_third_party_logs

    route_third_party_logs()
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One failed (or crashed) combination must not stop the others: record its outcome for the
        # table at the end of the sweep (pipeline/release/matrix.py) and return, never exit or raise.
        from pipeline.release.matrix import run_combination
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
        from pipeline.builder.leftovers import kept_build
        status = "failed" if code == ExitCode.FAILED else "could not be completed (not verified)"
        folder = artifact_folder(cfg)
        kept = kept_build(folder)  # task._publish kept the rejected build beside a verified one
        _outcome.append(error_for(code, f"verification {status}: see {(kept or folder) / 'verify.json'}"))
    return code


def _hydra_options() -> dict[str, bool]:
    """Hydra's command-line options -> whether each takes a value (`--cfg job`, `--multirun`)."""
    from hydra._internal.utils import get_args_parser
    return {option: action.nargs != 0 for action in get_args_parser()._actions for option in action.option_strings}


def _no_split_values(args: list[str]) -> None:
    """`out=/my models/x` unquoted reaches us as `out=/my` and `models/x`: name the split and how to quote it."""
    for before, arg in zip(args, args[1:]):
        if "=" in before and not before.startswith("-") and "=" not in arg and not arg.startswith("-"):
            joined = f"{before} {arg}"
            raise UsageError(f"{arg!r} is not an override (key=value): the shell split {joined!r} at a space. Quote a "
                             f"value with spaces as one argument: '{joined}' (in make: ARGS=\"'{joined}'\")")


def check_options(args: list[str]) -> None:
    """Refuse, with a hint, an option Hydra does not know (`--avx2`: an Optimum habit for target=avx2), and a
    required config group set to null (`target=null`)."""
    from pipeline.config.compose import refuse_empty_choices
    refuse_empty_choices([arg for arg in args if not arg.startswith("-")])
    _no_split_values(args)
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
        print(f"quantgate {version()}")
        return ExitCode.OK
    if "--artifact-folder" in args:  # where this build would land (the Makefile's default ARTIFACT_DIR)
        from pipeline.builder.task import artifact_folder
        from pipeline.config.compose import compose_config
        print(artifact_folder(compose_config([a for a in args if a != "--artifact-folder"])))
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
    return run_command(PROG, run_hydra, argv)


MATRIX_DOC = """Build and verify every combination of a release in parallel (conf/experiment/release.yaml),
as a Hydra multirun; one failed combination does not stop the others. Ends with a table, also written to
<artifacts-dir>/matrix.json for the signoff. Overrides narrow or widen the sweep: target=avx2,avx512 mode=static."""


def matrix_main(argv: list[str] | None = None) -> int:
    return run_command("quantgate matrix", _matrix_command, argv)


def _matrix_command(argv: list[str]) -> int:
    from pipeline.config.compose import config_groups
    parser = command_parser("quantgate matrix", MATRIX_DOC, overrides=True)
    parser.add_argument("--release", default="candidate", help="the release's name (default candidate)")
    parser.add_argument("--artifacts-dir", help="where its artifacts go; default artifacts/<release>")
    parser.add_argument("--launcher", default="joblib", choices=config_groups()["hydra/launcher"],
                        help="Hydra launcher (conf/hydra/launcher/; default joblib)")
    parser.add_argument("--jobs", type=int, default=2, help="combinations at a time with joblib (default 2)")
    args = parser.parse_args(argv)
    from pipeline.release.lock import release_lock
    release_dir = args.artifacts_dir or f"artifacts/{args.release}"
    release_dir = next((o.partition("=")[2] for o in reversed(args.overrides) if o.startswith("artifacts_dir=")),
                       release_dir)
    # One matrix of a release at a time: two would each write its matrix.json, one record lost (Hydra's callbacks
    # swallow exceptions, so the lock is taken here, around the whole sweep).
    with release_lock(Path(release_dir), "matrix"):
        return run_hydra(["--multirun", "experiment=release", f"hydra/launcher={args.launcher}",
                          *([f"hydra.launcher.n_jobs={args.jobs}"] if args.launcher == "joblib" else []),
                          f"artifacts_dir={release_dir}", *args.overrides])

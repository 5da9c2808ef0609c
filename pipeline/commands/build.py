"""`quantgate build [options] [key=value ...]` (= `quantgate [key=value ...]`, `python -m pipeline`, also `python -m
pipeline.commands.build`): build and verify one artifact; --multirun for a sweep. A Hydra app (pipeline/app.py): its
options are Hydra's (--help with quantgate's text, --cfg, --info, --multirun) plus quantgate's --version and
--artifact-folder; the options are checked here first, so that a habit (`--avx2`) gets a hint, not Hydra's usage."""
from __future__ import annotations

import argparse

from hydra._internal.utils import get_args_parser

from pipeline.app import run_app
from pipeline.builder.task import artifact_folder
from pipeline.commandline import run_command, unknown_option, version
from pipeline.config.compose import compose_config, refuse_empty_choices
from pipeline.errors import ExitCode, UsageError

PROG = "quantgate"  # build is quantgate's default command: `quantgate target=avx2` builds
# Hydra's modes of a run: one at a time.
MODES = {"--run", "-r", "--multirun", "-m", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}


def build_parser() -> argparse.ArgumentParser:
    """Hydra's own parser of the app's command line (its --help is Hydra's, with conf/'s help text)."""
    return get_args_parser()


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run_hydra, argv)


def run_hydra(args: list[str]) -> int:
    """The Hydra app on these arguments, after quantgate's own options and checks; errors leave as exceptions."""
    if "--version" in args:
        print(f"quantgate {version()}")
        return ExitCode.OK
    if "--artifact-folder" in args:  # where this build would land (the Makefile's default ARTIFACT_DIR)
        print(artifact_folder(compose_config([a for a in args if a != "--artifact-folder"])))
        return ExitCode.OK
    check_options(args)
    return run_app(args)


def _hydra_options() -> dict[str, bool]:
    """Hydra's command-line options -> whether each takes a value (`--cfg job`, `--multirun`)."""
    return {option: action.nargs != 0 for action in build_parser()._actions for option in action.option_strings}


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
    chosen = [token.partition("=")[0] for token in args if token.partition("=")[0] in MODES]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)}: only one of --run, --multirun, --cfg, --info and "
                         f"--shell-completion at a time")


if __name__ == "__main__":
    raise SystemExit(main())

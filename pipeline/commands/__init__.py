"""Every command's argument parsing, apart from the work it starts.

One module per command, `pipeline/commands/<command>.py` (`quantgate <command>`, also `python -m
pipeline.commands.<command>`), with:

- `build_parser() -> argparse.ArgumentParser`: the command's options, made with `pipeline.commandline.command_parser`
  (docs/hooks/reference.py renders every parser into the reference pages); `build`'s is Hydra's own (the build is
  a Hydra app, pipeline/app.py);
- `main(argv=None) -> int`: `run_command(prog, _command, argv)`, where `_command` parses, turns the options into the
  typed values the domain function takes (paths, configs, dataclasses) and returns the exit code.

Domain modules (`pipeline/builder`, `verify`, `release`, `isa`, `runtimes`, ...) take typed arguments, never see
argparse and never import this package; `pipeline/cli.py` dispatches `quantgate COMMAND` to these modules
(tests/unit/commands/test_commands.py checks both). A command's description is the first paragraph of the
docstring it passes to `command_parser`: its own, or its domain module's where that module is the command's subject
(`quantgate keys` shows pipeline/release/keys.py's).

Two kinds of command line stay where they are: the verifier's child processes (pipeline/verify/child_*.py, run by
the verifier, not by users) and the guard's, `python -m pipeline.guard` (pipeline/guard/cli.py): the guard is its
own standard-library-only wheel, which cannot import this package.

Imports are at module level; a command imports lazily only where its startup time matters (Hydra, torch) and says
so where it does.
"""

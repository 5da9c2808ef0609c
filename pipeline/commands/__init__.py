"""Every command's argument parsing, apart from the work it starts.

One module per command, `pipeline/commands/<command>.py` (`quantgate <command>`, also `python -m
pipeline.commands.<command>`), with:

- `build_parser() -> argparse.ArgumentParser`: the command's options, made with `pipeline.commandline.command_parser`
  (docs/hooks/reference.py renders every parser into the reference pages);
- `main(argv=None) -> int`: `run_command(prog, _command, argv)`, where `_command` parses, turns the options into the
  typed values the domain function takes (paths, configs, dataclasses) and returns the exit code.

Domain modules (`pipeline/builder`, `verify`, `release`, `isa`, `runtimes`, ...) take typed arguments, never see
argparse and never import this package; `pipeline/cli.py` dispatches `quantgate COMMAND` to these modules.
"""

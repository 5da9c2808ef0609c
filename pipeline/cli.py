"""The `quantgate` command line: one entry for every command, one place where errors become exit codes.

    quantgate build|verify|inspect|audit|matrix|signoff|bench|arm [options] [key=value ...]
    quantgate keys|sign|provenance|publish|pull|registry [options]        (release trust)
    quantgate [options] [key=value ...]                                   (= quantgate build)

Each command is a module of pipeline/commands/ (pipeline/commands/__init__.py: its `build_parser()` and
`main(argv) -> int`, also run as `python -m pipeline.commands.<command>`): it parses its options with
`command_parser` and does its work inside `run_command`, which turns a QuantgateError into one line,
`quantgate <command>: error: <message>`, and its exit code (pipeline/errors.py holds the table). Config
values are Hydra overrides (`key=value` after the options) wherever a command composes the config.

`quantgate inspect PATH --nodes` / `--node NAME`: the source files each node came from (debug/ beside it).
"""
from __future__ import annotations

import atexit
import difflib
import importlib
import logging
import os
import sys
import threading
from typing import Callable, NoReturn

from pipeline.commandline import EXIT_CODES_HELP, run_command, version
from pipeline.errors import ExitCode, UsageError

# command -> (the module whose main(argv) -> int runs it, one line for `quantgate --help`)
COMMANDS = {
    "build": ("pipeline.commands.build", "build and verify one artifact (Hydra overrides; --multirun for a sweep)"),
    "verify": ("pipeline.commands.verify", "verify an artifact on every CPU profile of its target"),
    "inspect": ("pipeline.commands.inspect", "print an artifact's stamp and whether this host can run it"),
    "audit": ("pipeline.commands.audit", "list the CPU features the machine code inside an artifact needs"),
    "matrix": ("pipeline.commands.matrix", "build and verify every combination of a release, in parallel"),
    "signoff": ("pipeline.commands.signoff", "judge a release: ready (exit 0) or blocked (exit 1), with a report"),
    "bench": ("pipeline.commands.bench", "measure what quantization buys on this host against fp32"),
    "arm": ("pipeline.commands.arm", "prepare (once) the arm64 sysroot and wheels for the Arm CPU profiles"),
}
# Release trust (pipeline/release/, docs/guides/releases.md).
RELEASE_COMMANDS = {name: (f"pipeline.commands.{name}", summary) for name, summary in (
    ("keys", "make a development signing key pair"),
    ("sign", "sign every artifact folder of a ready release (or --verify folders)"),
    ("provenance", "print an artifact's SLSA provenance and check it against the files"),
    ("publish", "push a ready, signed release to an OCI registry"),
    ("pull", "download an artifact, checking every sha256 and its signature first"),
    ("registry", "start or stop a local OCI registry"))}
ALL_COMMANDS = {**COMMANDS, **RELEASE_COMMANDS}
# --- `quantgate COMMAND ...` -----------------------------------------------------------------------------
def top_help() -> str:
    lines = ["usage: quantgate COMMAND [options] [key=value ...]", "",
             "Build int8 model artifacts for a CPU target, verify them on that target's CPUs, sign off releases.",
             "Config values are Hydra overrides after the options, key=value (target=avx512_vnni mode=static),",
             "not --options. `quantgate [key=value ...]` is `quantgate build`; so is `python -m pipeline`.", "",
             "commands:"]
    lines += [f"  {name:<11} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["release trust (docs/guides/releases.md):"]
    lines += [f"  {name:<11} {summary}" for name, (_, summary) in RELEASE_COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this help; quantgate COMMAND --help lists that command's options",
              "  --version   print quantgate's version", "", EXIT_CODES_HELP]
    return "\n".join(lines)


def _entry(command: str) -> Callable[[list[str]], int]:
    return importlib.import_module(ALL_COMMANDS[command][0]).main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ALL_COMMANDS:
        try:
            command = _entry(args[0])  # importing it takes a while (Hydra, torch): Ctrl-C may come first
        except KeyboardInterrupt:
            return run_command(f"quantgate {args[0]}", _interrupted, [])
        return command(args[1:])
    return run_command("quantgate", _no_command, args)


def _interrupted(args: list[str]) -> int:
    raise KeyboardInterrupt


def _no_command(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(top_help())
        return ExitCode.OK
    if args[0] == "--version":
        print(f"quantgate {version()}")
        return ExitCode.OK
    first = args[0]
    if first.startswith(("-", "+", "~")) or "=" in first:  # overrides or options: the build
        from pipeline.commands.build import run_hydra  # Hydra and the build: imported when a build is asked for
        return run_hydra(args)
    close = difflib.get_close_matches(first, ALL_COMMANDS, n=1)
    raise UsageError(f"unknown command {first!r}" + (f" (did you mean {close[0]}?)" if close else "")
                     + f"; commands: {', '.join(ALL_COMMANDS)} (quantgate --help)")


def one_build(args: list[str]) -> bool:
    """Whether `quantgate ARGS` builds one artifact: `build` or bare overrides, without --multirun (whose launchers
    keep worker processes and threads that the interpreter's normal exit shuts down)."""
    if args and args[0] in ALL_COMMANDS and args[0] != "build":
        return False
    if not args or (args[0] not in ALL_COMMANDS and not (args[0].startswith(("-", "+", "~")) or "=" in args[0])):
        return False
    return not any(arg in ("-m", "--multirun") or arg.startswith("hydra/launcher=") for arg in args)


def exit_without_teardown(code: int) -> NoReturn:
    """End the process with `code` once what the build leaves behind is settled: atexit handlers run, logs and
    standard streams flushed. The interpreter's own teardown is skipped: after a build, freeing torch's and
    transformers' modules takes about 1.5 s and writes nothing. A non-daemon thread still running gets the normal
    exit, which waits for it, and so does a process under a profiler or tracer (cProfile, coverage), which write
    their results at the normal exit."""
    others_running = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if others_running or sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(code)


def console_main() -> NoReturn:
    """The `quantgate` executable and `python -m pipeline.cli`: main(); after one build, exit_without_teardown.
    In-process callers (tests) call main()."""
    code = main()
    if one_build(sys.argv[1:]):
        exit_without_teardown(int(code or 0))
    raise SystemExit(code)


if __name__ == "__main__":
    console_main()

"""What every quantgate command shares: its option parser, and the one place where errors become exit codes.

Each command is a module's `main(argv) -> int` (also run as `python -m <module>`): it parses its options
with `command_parser` and does its work inside `run_command`, which turns a QuantgateError into one line,
`quantgate <command>: error: <message>`, and its exit code (pipeline/errors.py holds the table). Config
values are Hydra overrides (`key=value` after the options) wherever a command composes the config.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import Callable

from pipeline.errors import MEANING, ExitCode, QuantgateError, UsageError, translate

EXIT_CODES_HELP = "exit codes (the same for every command):\n" + "\n".join(
    f"  {code.value:<3} {words}" for code, words in MEANING.items())


def version() -> str:
    from importlib import metadata
    try:
        return metadata.version("quantgate")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


# --- the one place where errors become exit codes ----------------------------------------------------
def run_command(prog: str, command: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run `command(argv)` and return the process exit code: its own, or the code of what it raised.

    A QuantgateError (and Hydra's or OmegaConf's errors about the command line or config) is printed as
    `<prog>: error: <message>`, without a traceback; Ctrl-C as "interrupted" (130); anything else is a bug:
    its traceback is printed and the code is 70, so that 1 only ever means "a check failed"."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        working_folder()
        return int(command(args))
    except QuantgateError as error:
        return _report(prog, error)
    except KeyboardInterrupt:
        # Once: a second Ctrl-C (or one a library re-delivers while the interpreter shuts down) must not turn
        # this clean exit into a death by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"{prog}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except SystemExit as stop:  # argparse's and Hydra's --help and --cfg end this way
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or ExitCode.OK
        print(f"{prog}: error: {stop.code}", file=sys.stderr)
        return ExitCode.USAGE
    except BrokenPipeError:  # `quantgate ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as error:  # noqa: BLE001 - translated below, or reported as a bug
        translated = _translate(error)
        if translated is not None:
            return _report(prog, translated)
        traceback.print_exc()
        print(f"{prog}: internal error (a bug in quantgate, see the traceback above): {type(error).__name__}: "
              f"{error}", file=sys.stderr)
        return ExitCode.INTERNAL


# A message longer than this is cut in the middle: an error echoing a 99 KB value buries what it says.
MAX_MESSAGE_CHARS = 2000


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` as it is, or past `limit` characters on one line: its head and tail, with how much was cut."""
    if len(str(message)) <= limit:
        return str(message)
    text = " ".join(str(message).split())
    keep = (limit - 40) // 2
    return f"{text[:keep]} [... {len(text) - 2 * keep} characters cut ...] {text[-keep:]}"


def working_folder() -> None:
    """The folder the command runs in must exist: relative paths and the config are resolved from it."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current folder was deleted (or moved) while this shell was in it: `cd` to an existing "
                         "folder (the quantgate checkout) and run again") from None


def _report(prog: str, error: QuantgateError) -> int:
    print(f"{prog}: error: {one_line(str(error))}", file=sys.stderr, flush=True)
    return error.exit_code


def _translate(error: Exception) -> QuantgateError | None:
    """Hydra's and OmegaConf's errors about overrides and the config, as UsageErrors; the calibration
    library's as InputErrors (pipeline.errors.translate)."""
    if type(error).__module__.split(".")[0] not in ("hydra", "omegaconf", "yaml"):
        return translate(error)
    from pipeline.config.compose import usage_error  # Hydra (0.1 s): every command's --help imports this module
    return usage_error(error)


# --- options ---------------------------------------------------------------------------------------------
class CommandParser(argparse.ArgumentParser):
    """argparse for a quantgate command: a usage error is a UsageError (one line, exit 2), with a hint when an
    unknown option looks like a Hydra override (`--avx2` -> `target=avx2`)."""

    def __init__(self, prog: str, description: str | None, overrides: bool = False, **kwargs):
        super().__init__(prog=prog, description=description, epilog=EXIT_CODES_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self.takes_overrides, self._overrides_added = overrides, False

    def _add_overrides(self) -> None:
        """The overrides come last, after any positional argument the command adds (audit's ARTIFACT)."""
        if self.takes_overrides and not self._overrides_added:
            self._overrides_added = True
            self.add_argument("overrides", nargs="*", metavar="key=value",
                              help="config overrides (Hydra), after the options, e.g. verify.emulated_max_samples=2")

    def format_help(self) -> str:
        self._add_overrides()
        return super().format_help()

    def parse_args(self, args=None, namespace=None):
        self._add_overrides()
        self._argv = list(sys.argv[1:] if args is None else args)
        parsed = super().parse_args(args, namespace)
        stray = [o for o in getattr(parsed, "overrides", []) if "=" not in o and not o.startswith("~")]
        if stray:
            self.error(f"unrecognized arguments: {' '.join(stray)}")
        return parsed

    def error(self, message: str):
        raise UsageError(self._explain(message))

    def _explain(self, message: str) -> str:
        if not message.startswith("unrecognized arguments: "):
            return f"{message} (see {self.prog} --help)"
        argv = getattr(self, "_argv", [])
        for token in message.removeprefix("unrecognized arguments: ").split():
            following = argv[argv.index(token) + 1] if token in argv[:-1] else None
            if token.startswith("-"):
                return unknown_option(token, following, self)
            if "=" in token and not self.takes_overrides:
                return f"{self.prog} takes no config overrides ({token}); see {self.prog} --help"
        return f"{message} (see {self.prog} --help)"


def command_parser(prog: str, doc: str | None, overrides: bool = False) -> CommandParser:
    """The parser of a command whose module docstring is `doc` (its first paragraph is the description)."""
    return CommandParser(prog, (doc or "").strip().split("\n\n")[0] or None, overrides=overrides)


def unknown_option(option: str, following: str | None = None, parser: argparse.ArgumentParser | None = None) -> str:
    """`unknown option --avx2: quantgate takes Hydra overrides: target=avx2`, or the command's own option."""
    from pipeline.config.compose import override_hint  # Hydra: only when an option is unknown
    hint = override_hint(option, following)
    if hint is not None:
        key, _, value = hint.partition("=")
        own = f"--{key.replace('_', '-')}"
        if parser is not None and own in parser._option_string_actions and own != option.partition("=")[0]:
            return f"unknown option {option}: use {own} {value}"
        if parser is None or getattr(parser, "takes_overrides", False):
            return f"unknown option {option}: quantgate takes Hydra overrides: {hint}"
    return f"unknown option {option}; see {parser.prog if parser else 'quantgate build'} --help"

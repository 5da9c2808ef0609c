"""The `quantgate` command line: one entry for every command, one place where errors become exit codes.

    quantgate build|verify|inspect|audit|matrix|signoff|bench|arm [options] [key=value ...]
    quantgate keys|sign|provenance|publish|pull|registry [options]        (release trust)
    quantgate [options] [key=value ...]                                   (= quantgate build)

Each command is a module's `main(argv) -> int` (also run as `python -m <module>`): it parses its options
with `command_parser` and does its work inside `run_command`, which turns a QuantgateError into one line,
`quantgate <command>: error: <message>`, and its exit code (pipeline/errors.py holds the table). Config
values are Hydra overrides (`key=value` after the options) wherever a command composes the config.

`quantgate inspect PATH --nodes` / `--node NAME`: the source files each node came from (debug/ beside it).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from pipeline.errors import MEANING, ExitCode, QuantgateError, UsageError

# command -> (module[:function] whose (argv) -> int runs it, one line for `quantgate --help`)
COMMANDS = {
    "build": ("pipeline.__main__", "build and verify one artifact (Hydra overrides; --multirun for a sweep)"),
    "verify": ("pipeline.stages.verify", "verify an artifact on every CPU profile of its target"),
    "inspect": ("pipeline.cli:inspect_main", "print an artifact's stamp and whether this host can run it"),
    "audit": ("pipeline.audit", "list the CPU features the machine code inside an artifact needs"),
    "matrix": ("pipeline.cli:matrix_main", "build and verify every combination of a release, in parallel"),
    "signoff": ("pipeline.signoff", "judge a release: ready (exit 0) or blocked (exit 1), with a report"),
    "bench": ("pipeline.bench", "measure what int8 buys on this host against fp32"),
    "arm": ("pipeline.arm", "prepare (once) the arm64 sysroot and wheels for the Arm CPU profiles"),
}
# Release trust (pipeline/release/, README "Release trust").
RELEASE_COMMANDS = {name: (f"pipeline.release.{name}", summary) for name, summary in (
    ("keys", "make a development signing key pair"),
    ("sign", "sign every artifact folder of a ready release (or --verify folders)"),
    ("provenance", "print an artifact's SLSA provenance and check it against the files"),
    ("publish", "push a ready, signed release to an OCI registry"),
    ("pull", "download an artifact, checking every sha256 and its signature first"),
    ("registry", "start or stop a local OCI registry"))}
ALL_COMMANDS = {**COMMANDS, **RELEASE_COMMANDS}
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
        return int(command(args))
    except QuantgateError as error:
        return _report(prog, error)
    except KeyboardInterrupt:
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


def _report(prog: str, error: QuantgateError) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    return error.exit_code


def _translate(error: Exception) -> QuantgateError | None:
    """Hydra's and OmegaConf's errors about overrides and the config, as UsageErrors."""
    if type(error).__module__.split(".")[0] not in ("hydra", "omegaconf"):
        return None
    from pipeline.config.compose import usage_error
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
    from pipeline.config.compose import override_hint
    hint = override_hint(option, following)
    if hint is not None:
        key, _, value = hint.partition("=")
        own = f"--{key.replace('_', '-')}"
        if parser is not None and own in parser._option_string_actions and own != option.partition("=")[0]:
            return f"unknown option {option}: use {own} {value}"
        if parser is None or getattr(parser, "takes_overrides", False):
            return f"unknown option {option}: quantgate takes Hydra overrides: {hint}"
    return f"unknown option {option}; see {parser.prog if parser else 'quantgate build'} --help"


def inspect(path: str) -> int:
    """Print an artifact's stamp and whether this host can run it."""
    from pipeline.guard import ArtifactRefused, StampError, check_stamp, read_onnx_versions, read_stamp

    try:
        if path.endswith(".pt2"):  # a torch AOTInductor package
            from pipeline.guard_torch import ensure_can_run, read_package_stamp
            stamp = read_package_stamp(path)
            try:
                verdict = ensure_can_run(path)
            except ArtifactRefused:
                verdict = check_stamp(stamp)
        else:
            stamp = read_stamp(path)
            verdict = check_stamp(stamp)
        if verdict.can_run and not path.endswith(".pt2"):  # ask the installed onnxruntime whether it loads it
            from pipeline.runtime_probe import installed_limits
            verdict = check_stamp(stamp, model=read_onnx_versions(path), runtime=installed_limits())
    except StampError as error:
        print(f"quantgate: error: {error}", file=sys.stderr)
        return 2
    for key in sorted(stamp):
        value = stamp[key]
        if value.startswith(("{", "[")):
            value = json.dumps(json.loads(value), sort_keys=True)
        print(f"quantgate.{key:<22} {value}")
    from pipeline import reproducible
    if reproducible.load_sidecar(path) is not None:
        print(f"\nnode sources   {reproducible.debug_file_for(Path(path).name)} beside it: "
              f"quantgate inspect {path} --nodes | --node NAME")
    print(f"\nthis host: {'CAN run it' if verdict.can_run else 'must NOT run it'}: {verdict.message()}")
    return 0 if verdict.can_run else 3


def inspect_nodes(path: str, node: str | None = None) -> int:
    """Which source files the nodes of an ONNX artifact came from, from the debug file beside it
    (debug/<file>.nodes.json: the exporter's per-node metadata, kept out of the artifact itself)."""

    from pipeline import reproducible

    sidecar = reproducible.load_sidecar(path)
    if sidecar is None:
        print(f"quantgate: error: no {reproducible.debug_file_for(Path(path).name)} beside {path}: node sources are "
              f"recorded for ONNX files built by this quantgate, in the artifact folder's debug/ (not shipped with "
              f"the artifact everywhere)", file=sys.stderr)
        return 2
    nodes = sidecar["nodes"]
    if node is None:
        print(f"{len(nodes)} node(s) of {sidecar['file']} with recorded sources (paths {sidecar['paths']})")
        width = max((len(name) for name in nodes), default=4)
        for name, entry in nodes.items():
            via = f"  (from {entry['derived_from']})" if entry.get("derived_from", name) != name else ""
            print(f"{name:<{width}}  {entry['op_type']:<22} {entry.get('origin') or '-'}{via}")
        return 0
    if node not in nodes:
        close = difflib.get_close_matches(node, list(nodes), n=5)
        print(f"quantgate: error: {sidecar['file']} has no recorded node {node!r}"
              + (f"; close: {', '.join(close)}" if close else "") + " (`--nodes` lists them)", file=sys.stderr)
        return 2
    entry = nodes[node]
    metadata = entry.get("metadata")
    print(f"node           {node} ({entry['op_type']}) in {sidecar['file']}")
    if entry.get("derived_from") and entry["derived_from"] != node:
        print(f"derived from   {entry['derived_from']} (the node of the fp32 export it replaces)")
        reference = reproducible.load_sidecar(Path(path).with_name("reference.onnx"))
        metadata = ((reference or {}).get("nodes", {}).get(entry["derived_from"]) or {}).get("metadata")
    metadata = metadata or {}
    if metadata.get("namespace"):
        print(f"module         {metadata['namespace']}")
    print(f"origin         {entry.get('origin') or '-'}")
    print("source files   " + ("\n               ".join(entry.get("source_files") or ["-"])))
    frames = reproducible.frames(metadata)
    if frames:
        print("stack (outermost first):")
        for frame in frames:
            print(f"  {frame['file']}:{frame['line']} in {frame['function']}")
    return 0


def inspect_main(argv: list[str] | None = None) -> int:
    return run_command("quantgate inspect", _inspect_command, argv)


def _inspect_command(argv: list[str]) -> int:
    parser = command_parser("quantgate inspect", "Print an artifact's quantgate stamp and whether this host can "
                            "run it (exit 3 when it must not: the guard's verdict).")
    parser.add_argument("path", metavar="MODEL.onnx|MODEL.pt2", help="an artifact (ONNX model or AOTInductor package)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--nodes", action="store_true",
                       help="list the ONNX nodes with recorded source files (debug/<file>.nodes.json beside it)")
    which.add_argument("--node", metavar="NAME", help="the source files and stack one ONNX node came from")
    args = parser.parse_args(argv)
    if args.nodes or args.node is not None:
        return inspect_nodes(args.path, args.node)
    return inspect(args.path)


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
    from pipeline.__main__ import run_hydra
    return run_hydra(["--multirun", "experiment=release", f"hydra/launcher={args.launcher}",
                      *([f"hydra.launcher.n_jobs={args.jobs}"] if args.launcher == "joblib" else []),
                      f"artifacts_dir={args.artifacts_dir or f'artifacts/{args.release}'}", *args.overrides])


# --- `quantgate COMMAND ...` -----------------------------------------------------------------------------
def top_help() -> str:
    lines = ["usage: quantgate COMMAND [options] [key=value ...]", "",
             "Build int8 model artifacts for a CPU target, verify them on that target's CPUs, sign off releases.",
             "Config values are Hydra overrides after the options, key=value (target=avx512_vnni mode=static),",
             "not --options. `quantgate [key=value ...]` is `quantgate build`; so is `python -m pipeline`.", "",
             "commands:"]
    lines += [f"  {name:<11} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["release trust (README \"Release trust\"):"]
    lines += [f"  {name:<11} {summary}" for name, (_, summary) in RELEASE_COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this help; quantgate COMMAND --help lists that command's options",
              "  --version   print quantgate's version", "", EXIT_CODES_HELP]
    return "\n".join(lines)


def _entry(command: str) -> Callable[[list[str]], int]:
    module, _, function = ALL_COMMANDS[command][0].partition(":")
    return getattr(importlib.import_module(module), function or "main")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ALL_COMMANDS:
        return _entry(args[0])(args[1:])
    return run_command("quantgate", _no_command, args)


def _no_command(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(top_help())
        return ExitCode.OK
    if args[0] == "--version":
        print(f"quantgate {version()}")
        return ExitCode.OK
    first = args[0]
    if first.startswith(("-", "+", "~")) or "=" in first:  # overrides or options: the build
        from pipeline.__main__ import run_hydra
        return run_hydra(args)
    close = difflib.get_close_matches(first, ALL_COMMANDS, n=1)
    raise UsageError(f"unknown command {first!r}" + (f" (did you mean {close[0]}?)" if close else "")
                     + f"; commands: {', '.join(ALL_COMMANDS)} (quantgate --help)")


if __name__ == "__main__":
    raise SystemExit(main())

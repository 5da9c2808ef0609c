"""Commands apart from the work (pipeline/commands/__init__.py): argument parsing lives in pipeline/commands/, one
module per command with build_parser() and main(); the domain modules take typed arguments and never parse a
command line (no argparse, no pipeline.commandline parser) nor import the commands."""
import argparse
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import ALL_COMMANDS
from tests.conftest import REPO
from tests.unit.project.test_architecture import GRAPH, MODULES

# Where a command line may be parsed: the commands, the dispatcher and what they share, the child processes (each a
# small command line of its own, run by the verifier), and the guard (its own stdlib-only wheel with its own CLI).
PARSING = ("pipeline.commands", "pipeline.cli", "pipeline.commandline", "pipeline.guard")
CHILDREN = ("pipeline.verify.child_decoder", "pipeline.verify.child_onnx", "pipeline.verify.child_pt2")


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def argparse_importers() -> set[str]:
    """The modules of pipeline/ and calibration/ that import argparse anywhere in their source."""
    found = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "argparse" or (n or "").startswith("argparse.") for n in names):
                found.add(name)
    return found


def parsing_outside_commands() -> list[str]:
    """Modules outside the places allowed to parse a command line that import argparse, the shared command parser
    (pipeline.commandline) or a command module."""
    allowed = set(PARSING) | set(CHILDREN)
    wrong = [f"{name} imports argparse" for name in argparse_importers() if not _within(name, tuple(allowed))]
    for name, targets in GRAPH.items():
        if _within(name, tuple(allowed)) or name == "pipeline.__main__":
            continue
        wrong += [f"{name} imports {t}" for t in sorted(targets) if _within(t, ("pipeline.commandline", "pipeline.commands"))]
    return sorted(wrong)


def test_no_module_outside_the_commands_parses_a_command_line():
    assert parsing_outside_commands() == []


def test_the_check_finds_a_domain_module_that_parses(monkeypatch, tmp_path):
    """The check above can fail: a domain module importing argparse, or the shared parser, is named."""
    module = tmp_path / "parsing.py"
    module.write_text("import argparse\nfrom pipeline.commandline import command_parser\n")
    monkeypatch.setitem(MODULES, "pipeline.release.parsing", module)
    monkeypatch.setitem(GRAPH, "pipeline.release.parsing", {"pipeline.commandline"})
    assert parsing_outside_commands() == ["pipeline.release.parsing imports argparse",
                                          "pipeline.release.parsing imports pipeline.commandline"]


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_command_is_a_module_of_the_commands_package_with_a_parser_and_main(command):
    module = ALL_COMMANDS[command][0]
    assert module == f"pipeline.commands.{command}"
    loaded = importlib.import_module(module)
    assert isinstance(loaded.build_parser(), argparse.ArgumentParser)
    assert callable(loaded.main)


def test_every_command_module_is_in_the_table():
    """No orphan: each module of pipeline/commands/ is a command `quantgate` dispatches to."""
    modules = {p.stem for p in (REPO / "pipeline" / "commands").glob("*.py") if p.stem != "__init__"}
    assert modules == {name for name, (module, _) in ALL_COMMANDS.items() if module.startswith("pipeline.commands.")}


@pytest.mark.parametrize("command", ["keys", "registry", "inspect"])
def test_a_command_runs_as_its_module(command, tmp_path):
    """`python -m pipeline.commands.<command>` is the command: the same --help as `quantgate <command> --help`."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", *args, "--help"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env={"PYTHONPATH": str(REPO), "COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    alone, through_cli = run(f"pipeline.commands.{command}"), run("pipeline.cli", command)
    assert alone.returncode == 0 and alone.stdout.startswith(f"usage: quantgate {command}"), alone.stderr
    assert alone.stdout == through_cli.stdout


"""The documentation site builds strictly, and every shell command in the docs runs as written or is checked.

The site (mkdocs.yml, docs/) is built with `mkdocs build --strict` into a temporary folder: a broken link, a
link to a missing heading or a page outside the navigation fails, and so does a reference page that cannot be
generated from the code (docs/hooks/reference.py).

The commands are the `console` blocks of README.md and the docs pages (docs/contributing.md says how they are
written): `$ COMMAND` lines, each followed by the output it must print (doctest's ELLIPSIS and
NORMALIZE_WHITESPACE). A page's blocks run in order in one temporary folder, with this venv's `quantgate` first
on PATH. A block after `<!-- not run: REASON -->` is not run; each `make` command in it is checked with `make -n`
(the target and its variables exist), and each `quantgate` command (written, or run by make) without running it:
a build's overrides by composing the config (`--cfg job`), another command's options against its `--help`.
"""
from __future__ import annotations

import dataclasses
import doctest
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# README and the guides; the contributors' pages on design and tests (architecture, testing, verification,
# reliability) hold no commands to run.
PAGES = sorted([REPO / "README.md", REPO / "docs" / "index.md", REPO / "docs" / "contributing.md",
                *(REPO / "docs" / "guides").glob("*.md")])
LANGUAGES = {"console", "text", "yaml", "python", "json"}
FENCE = re.compile(r"(?:<!-- (?P<marker>[a-z ]+): (?P<value>.*?) -->\n)?^```(?P<lang>[^\n]*)\n(?P<body>.*?)^```$",
                   re.M | re.S)
PYTHON = Path(sys.executable)


@dataclasses.dataclass
class Command:
    line: str
    want: str  # the output shown under it ('' = not compared)


@dataclasses.dataclass
class Block:
    page: Path
    lang: str
    marker: str | None
    value: str | None
    commands: list[Command]


def blocks(page: Path) -> list[Block]:
    found = []
    for match in FENCE.finditer(page.read_text()):
        commands: list[Command] = []
        for line in match["body"].splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:], ""))
            elif commands:
                commands[-1].want += line + "\n"
        found.append(Block(page, match["lang"].strip(), match["marker"], match["value"], commands))
    return found


def console_blocks(page: Path, run: bool) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "console" and (b.marker == "not run") != run]


def environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", NO_MKDOCS_2_WARNING="1")
    env["PATH"] = f"{PYTHON.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


# --- the site -------------------------------------------------------------------------------------------------
def test_the_site_builds_strictly_with_the_generated_reference(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(site)],
                          capture_output=True, text=True, env=environment(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from pipeline.cli import ALL_COMMANDS
    from pipeline.config import schema
    commands = (site / "reference" / "commands" / "index.html").read_text()
    for name in ALL_COMMANDS:
        assert f"usage: quantgate {name}" in commands, name
    config = (site / "reference" / "config" / "index.html").read_text()
    for group, cls in {**schema.GROUP_SCHEMAS, "release": schema.ReleaseConfig}.items():
        for field in dataclasses.fields(cls):
            assert f"<code>{group}.{field.name}</code>" in config, f"{group}.{field.name}"
    assert "<code>verify.min_cosine_mean</code></td>\n<td><code>float</code></td>\n<td><code>0.98</code>" in config


def test_the_readme_is_one_short_page_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 10_500, "README.md is the one-page start: move the rest into docs/"
    # CI and users run these exactly (.ci/run runs `make test`).
    for command in ("make quantize TARGET=avx2", "make test"):
        assert re.search(rf"^\$ {command}( |$)", readme, re.M), command
    # Its links into docs/ (mkdocs checks the site's own; README is not a page of it).
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / target).exists(), target


# --- the blocks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_fenced_block_says_its_language_and_every_command_block_is_console(page):
    for block in blocks(page):
        assert block.lang in LANGUAGES, f"{page_id(page)}: a ``` block marked {block.lang!r}; use one of {LANGUAGES}"
        if block.lang != "console":
            assert not block.commands, f"{page_id(page)}: `$ ` commands in a {block.lang} block"
        else:
            assert block.commands, f"{page_id(page)}: a console block without `$ ` commands"
        if block.marker is not None:
            assert block.marker in ("not run", "exit") and block.value.strip(), (page_id(page), block.marker)


def test_the_guides_have_commands_that_run_and_commands_that_are_only_checked():
    # A floor, so that a change to the block syntax cannot quietly leave this file testing nothing.
    assert sum(len(b.commands) for p in PAGES for b in console_blocks(p, run=True)) >= 9
    assert sum(len(b.commands) for p in PAGES for b in console_blocks(p, run=False)) >= 30


def _slow(page: Path):
    builds = any(re.match(r"quantgate (build )?(model|target)=", c.line) and "--cfg" not in c.line
                 for b in console_blocks(page, run=True) for c in b.commands)
    return pytest.param(page, id=page_id(page), marks=[pytest.mark.slow] if builds else [])


@pytest.mark.parametrize("page", [_slow(p) for p in PAGES if console_blocks(p, run=True)])
def test_the_commands_run_as_written(page, tmp_path):
    checker = doctest.OutputChecker()
    for block in console_blocks(page, run=True):
        expected = int(block.value) if block.marker == "exit" else 0
        for command in block.commands:
            done = subprocess.run(command.line, shell=True, cwd=tmp_path, env=environment(), capture_output=True,
                                  text=True, timeout=600)
            got = done.stdout if expected == 0 else done.stdout + done.stderr  # logs go to stderr
            where = f"{page_id(page)}: $ {command.line}"
            assert done.returncode == expected, f"{where}\nexit {done.returncode}, expected {expected}\n{got[-3000:]}"
            if command.want.strip():
                assert checker.check_output(command.want, got, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE), (
                    f"{where}\nexpected:\n{command.want}\ngot:\n{got[-3000:]}")


@pytest.mark.parametrize("page", [p for p in PAGES if console_blocks(p, run=False)], ids=page_id)
def test_the_commands_not_run_are_accepted(page):
    for block in console_blocks(page, run=False):
        for command in block.commands:
            check_accepted(shlex.split(command.line, comments=True), f"{page_id(page)}: $ {command.line}")


# --- checking a command without running it -----------------------------------------------------------------
def check_accepted(words: list[str], where: str) -> None:
    if words[0] == "make":
        return check_make(words[1:], where)
    if Path(words[0]).name == "quantgate":
        return check_quantgate(words[1:], where)
    if Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "pipeline"]:
        return check_quantgate(["build", *words[3:]], where)
    # pip, python -m quantgate_guard / pipeline.guard, mkdocs: nothing of quantgate's command line to check.


def check_make(args: list[str], where: str) -> None:
    done = subprocess.run(["make", "-n", "--no-print-directory", f"PY={PYTHON}", *args], cwd=REPO,
                          env=environment(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{where}\nmake -n: {done.stderr[-2000:]}"
    for line in done.stdout.replace("\\\n", " ").splitlines():  # a recipe's continued lines are one command
        if f"{PYTHON} -m pipeline.cli " in line:
            words = shlex.split(line.split(f"{PYTHON} -m pipeline.cli ", 1)[1])
            check_quantgate(words, f"{where}\n(make runs: quantgate {' '.join(words)})")


def check_quantgate(args: list[str], where: str) -> None:
    from pipeline.cli import ALL_COMMANDS
    if not args or args[0] not in ALL_COMMANDS:
        args = ["build", *args]
    command, rest = args[0], args[1:]
    overrides = [a for a in rest if "=" in a and not a.startswith("-")]
    options = [a.split("=", 1)[0] for a in rest if a.startswith("-")]
    if command != "build":
        for option in options:
            assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", command_help(command), re.M), (
                f"{where}\nquantgate {command} has no option {option}")
    check_overrides([o for o in overrides if not o.startswith("release.")], where)
    from pipeline.config.schema import ReleaseConfig
    for override in (o for o in overrides if o.startswith("release.")):
        key = override.split("=", 1)[0].removeprefix("release.")
        assert key in {f.name for f in dataclasses.fields(ReleaseConfig)}, f"{where}\nno release key {key}"


@functools.cache
def command_help(command: str) -> str:
    done = subprocess.run([str(PYTHON), "-m", "pipeline.cli", command, "--help"], env=environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_overrides(overrides: list[str], where: str) -> None:
    """Compose the config with the overrides (`quantgate build --cfg job`); a sweep (`target=avx2,avx512`) once
    per value, with the other overrides as given."""
    sweeps = {i: values for i, o in enumerate(overrides) if len(values := sweep_values(o)) > 1}
    first = [o.split("=", 1)[0] + "=" + sweeps[i][0] if i in sweeps else o for i, o in enumerate(overrides)]
    runs = [first] + [first[:i] + [overrides[i].split("=", 1)[0] + "=" + v] + first[i + 1:]
                      for i, values in sweeps.items() for v in values[1:]]
    for run in runs:
        error = compose_error(tuple(run))
        assert error is None, f"{where}\nquantgate build --cfg job {' '.join(run)}: {error}"


@functools.cache
def compose_error(overrides: tuple[str, ...]) -> str | None:
    """None when `quantgate build --cfg job OVERRIDES` composes the config, else its error."""
    done = subprocess.run([str(PYTHON), "-m", "pipeline.cli", "build", "--cfg", "job", "-p", "export", *overrides],
                          env=environment(), capture_output=True, text=True, timeout=120)
    return None if done.returncode == 0 else done.stderr[-2000:]


def sweep_values(override: str) -> list[str]:
    """`key=a,b` -> [a, b]; a list value (`key=[a,b]`) or a quoted one is one value."""
    values, depth, current = [], 0, ""
    for char in override.split("=", 1)[1]:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    return values + [current]

"""MkDocs hook: the reference pages, generated from the code at every build so they cannot fall behind it.

- reference/commands.md: `quantgate --help` and every command's `--help` (its argument parser, run in-process
  through pipeline.cli.main), with the exit codes of pipeline/errors.py;
- reference/config.md: every config key of the typed schema (pipeline/config/schema.py): type, default and the
  comment the schema writes beside or above it, group by group, with the options under conf/<group>/.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import enum
import html
import io
import os
import sys
import typing
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]


def on_files(files, config):
    """Add the generated pages (mkdocs 1.6 `File.generated`: no file is written into docs/)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for uri, text in (("reference/commands.md", commands_page()), ("reference/config.md", config_page())):
        files.append(File.generated(config, uri, content=text))
    return files


# --- commands -----------------------------------------------------------------------------------------------
def help_text(args: list[str]) -> str:
    """What `quantgate ARGS` prints (stdout and stderr), run in-process: the command's own parser answers."""
    from pipeline.cli import main
    out, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps at the terminal's width: the same page from any terminal
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(args)
    finally:
        os.environ.pop("COLUMNS") if columns is None else os.environ.update(COLUMNS=columns)
    if code not in (0, None):
        raise RuntimeError(f"quantgate {' '.join(args)} exited {code}: {out.getvalue()}")
    return out.getvalue().rstrip()


def commands_page() -> str:
    from pipeline.cli import ALL_COMMANDS
    from pipeline.commandline import EXIT_CODES_HELP
    parts = ["# Commands", "",
             "Generated from the argument parsers at build time: what `quantgate --help` and "
             "`quantgate COMMAND --help` print (each also ends with the exit codes, shown once here). How to use "
             "them: the [guides](../guides/building.md).", "",
             "## Exit codes", "", "```text", EXIT_CODES_HELP, "```", "",
             "## quantgate", "", "```text", _without(help_text(["--help"]), EXIT_CODES_HELP), "```", ""]
    for name in ALL_COMMANDS:
        parts += [f"## {name}", "", "```text", _without(help_text([name, "--help"]), EXIT_CODES_HELP), "```", ""]
    return "\n".join(parts)


def _without(text: str, epilog: str) -> str:
    return text.replace(epilog, "").rstrip()


# --- config --------------------------------------------------------------------------------------------------
def field_comments(path: Path) -> dict[str, dict[str, str]]:
    """class name -> field name -> its comment: the `#` comment on the field's line, after the comment lines
    right above it (a comment block above a group of fields goes with the first of them)."""
    lines = path.read_text().splitlines()
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                found.setdefault(node.name, {})[statement.target.id] = _comment(lines, statement.lineno - 1)
    return found


def _comment(lines: list[str], index: int) -> str:
    above = []
    row = index - 1
    while row >= 0 and lines[row].strip().startswith("#"):
        above.insert(0, lines[row].strip().lstrip("#").strip())
        row -= 1
    code, hash_, trailing = lines[index].partition("  # ")
    return " ".join(above + ([trailing.strip()] if hash_ else []))


def _type(annotation) -> str:
    """`str`, `list[str]`, `int or null`, an enum by its name, a group by its dataclass."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union:
        return " or ".join(_type(arg) for arg in args if arg is not type(None)) + " or null"
    if args:
        return f"{typing.get_origin(annotation).__name__}[{', '.join(_type(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(f: dataclasses.Field, hint) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(see its table)" if dataclasses.is_dataclass(value) else repr(value)
    value = f.default
    if value == "???" and dataclasses.is_dataclass(hint):
        return "its group's option"
    if value == "???":
        return "required: each option sets it"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    return "null" if value is None else f"`{value}`"


def _choices(annotation) -> str:
    args = typing.get_args(annotation) or (annotation,)
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return ", ".join(f"`{member.value}`" for member in arg)
    return ""


def _table(cls, prefix: str, comments: dict[str, dict[str, str]]) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        choices = _choices(hints[f.name])
        meaning = comments.get(cls.__name__, {}).get(f.name, "")
        if dataclasses.is_dataclass(hints[f.name]) and not prefix:
            meaning = f"the `{f.name}` group: [below](#{f.name}) {meaning}"
        meaning = (meaning + (f" Choices: {choices}." if choices else "")).strip()
        meaning = html.escape(meaning, quote=False).replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | `{_type(hints[f.name])}` | {_default(f, hints[f.name])} | {meaning} |")
    return rows


def _doc(cls) -> str:
    """The class's own docstring; not the signature dataclasses writes when there is none."""
    doc = (cls.__doc__ or "").strip()
    return "" if doc.startswith(cls.__name__ + "(") else " ".join(doc.split())


def config_page() -> str:
    from pipeline.config import schema
    path = REPO / "pipeline" / "config" / "schema.py"
    comments = field_comments(path)
    parts = ["# Configuration", "",
             "Generated at build time from the typed schema, `pipeline/config/schema.py`, the only home of "
             "defaults: each key with its type, default and the schema's comment. Set any key as a Hydra override, "
             "`key=value` (`quantgate build calibration.n_samples=256`); `quantgate build --cfg job` prints the "
             "composed config. A group's options (`conf/<group>/*.yaml`) choose and override; the rules between "
             "keys are in `pipeline/config/rules.py`.", "",
             "## Top level", ""] + _table(schema.QuantgateConfig, "", comments) + [""]
    for group, cls in schema.GROUP_SCHEMAS.items():
        options = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
        parts += [f"## {group}", "", _doc(cls), "",
                  f"Options (`{group}=NAME`): " + ", ".join(f"`{o}`" for o in options) + ".", ""]
        parts += _table(cls, f"{group}.", comments) + [""]
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory()):
                nested = f.default_factory()
                parts += [f"### {group}.{f.name}", "", _doc(type(nested)), ""]
                parts += _table(type(nested), f"{group}.{f.name}.", comments) + [""]
    hints = typing.get_type_hints(schema.QuantgateConfig)
    for f in dataclasses.fields(schema.QuantgateConfig):  # top-level sections that are not config groups
        if f.name not in schema.GROUP_SCHEMAS and dataclasses.is_dataclass(hints[f.name]):
            parts += [f"## {f.name}", "", _doc(hints[f.name]), ""]
            parts += _table(hints[f.name], f"{f.name}.", comments) + [""]
    parts += ["## release", "", _doc(schema.ReleaseConfig), ""]  # the signoff's keys (release.*), not the build's
    parts += _table(schema.ReleaseConfig, "release.", comments) + [""]
    return "\n".join(parts)

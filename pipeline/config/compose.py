"""Composing the build's config, and what the command line says about it: the config groups and their
choices (`--help`), the override an `--option` habit meant (`--avx2` -> `target=avx2`), and Hydra's and
OmegaConf's errors as one line naming the valid choices.

`compose_config` composes outside a Hydra app (verify, audit, provenance, tests) and raises Hydra's own
exceptions; `usage_error` turns those into a `UsageError` where a command meets them (pipeline.cli).
"""
from __future__ import annotations

import dataclasses
import os
import re
from contextlib import contextmanager
from enum import Enum

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pipeline.config.schema import GROUP_SCHEMAS, QuantgateConfig
from pipeline.errors import UsageError
from pipeline.paths import CONF_DIR

# Folders under conf/ that are not config groups of the build (Hydra lists them as groups all the same).
NOT_GROUPS = {"hydra": "Hydra's own groups; hydra/launcher is listed on its own",
              "waivers": "a release's waivers, read by quantgate signoff",
              "cpu": "CPU profiles, read by pipeline.isa.targets (verify.profiles=[...])"}
HYDRA_GROUPS = ("hydra/launcher",)  # Hydra's groups with options under conf/ that users choose


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="base_config", node=QuantgateConfig)
    # Schemas live in their own group so `target=...` lists only real choices; each YAML option
    # starts with `defaults: [/schema/<group>@_here_]`.
    for group, node in GROUP_SCHEMAS.items():
        store.store(group="schema", name=group, node=node)
    # `python -m pipeline --help` and `quantgate build --help`: Hydra's own --help, with quantgate's text
    # (the real config groups and their choices) instead of Hydra's generic one (conf/config.yaml selects it).
    store.store(group="hydra/help", name="quantgate",
                node={"app_name": "quantgate build", "header": "", "footer": "", "template": build_help()})


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    refuse_empty_choices(list(overrides or []))
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides or []))
    finally:
        GlobalHydra.instance().clear()


@contextmanager
def hydra_raises():
    """Let errors out of a Hydra app as exceptions: Hydra would print them its own way and exit 1."""
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


# --- the config groups and their choices -------------------------------------------------------------
def default_choices() -> dict[str, str | None]:
    """The primary config's defaults list (conf/config.yaml): group -> default choice (None: nothing)."""
    import yaml
    entries = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    return {key: value for entry in entries if isinstance(entry, dict) for key, value in entry.items()}


def refuse_empty_choices(args: list[str]) -> None:
    """`target=null` (or `target=`) for a group the build cannot do without: Hydra raises a ValueError (a
    traceback) or composes nothing; refused naming the choices. Optional groups (runtime, experiment) may be null."""
    required = [group for group, default in default_choices().items() if default is not None]
    for arg in args:
        key, equals, value = arg.lstrip("+~").partition("=")
        if equals and key in required and value.strip().lower() in ("", "null", "~", "none"):
            default = default_choices()[key]
            default = "the model's own" if "${" in str(default) else default
            raise UsageError(f"{arg}: the build needs a {key}; choose one of {', '.join(config_groups()[key])} "
                             f"(or leave {key} out for the default, {default})")


def config_groups() -> dict[str, list[str]]:
    """Every config group a user chooses from, in the defaults list's order, with its choices (YAML stems)."""
    defaults = list(default_choices())
    folders = [p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS]
    ordered = sorted(folders, key=lambda name: (defaults.index(name) if name in defaults else len(defaults), name))
    return {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) for group in (*ordered, *HYDRA_GROUPS)}


def enum_choices() -> dict[str, list[str]]:
    """Top-level keys whose value is one of a few words (export=onnx|aoti)."""
    return {name: [member.value for member in kind] for name, kind, _ in _fields(QuantgateConfig)
            if isinstance(kind, type) and issubclass(kind, Enum)}


def build_help() -> str:
    """`quantgate build --help` (also `python -m pipeline --help`, through Hydra's help)."""
    defaults = default_choices()
    lines = ["usage: quantgate build [options] [key=value ...]",
             "       (the same: quantgate [key=value ...], python -m pipeline [options] [key=value ...])", "",
             "Build an int8 artifact for a CPU target, then verify it on the target's CPUs (verify.enabled=false",
             "skips that). Everything is chosen by Hydra overrides, key=value, not by --options:",
             "  quantgate build target=avx512_vnni mode=static calibration.n_samples=256", "",
             "config groups (group=choice, * marks the default):"]
    groups = config_groups()
    width = max(map(len, [*groups, *enum_choices()])) + 2
    for group, choices in groups.items():
        default = defaults.get(group)
        marked = [f"{c}*" if c == default else c for c in choices]
        note = ""
        if group not in defaults and group.startswith("hydra/"):
            note = "  (with --multirun)"
        elif default is None:
            note = "  (default: none)"
        elif default not in choices:
            note = "  (default: the model's own, conf/calibration/<model>.yaml)"
        lines.append(f"  {group:<{width}}{', '.join(marked)}{note}")
    defaults_by_key = {name: default for name, _, default in _fields(QuantgateConfig)}
    for key, choices in enum_choices().items():
        lines.append(f"  {key:<{width}}" + ", ".join(f"{c}*" if c == defaults_by_key.get(key) else c for c in choices))
    lines += ["any key of the config: model.name_or_path=PATH calibration.n_samples=N verify.enabled=false",
              "  verify.profiles=[haswell,native] artifacts_dir=PATH out=PATH ... (--cfg job prints them all)", "",
              "options:",
              "  -h, --help               show this help and exit",
              "  --version                print quantgate's version and exit",
              "  --artifact-folder        print the folder this build would write, and exit",
              "  -m, --multirun           build every combination of comma-separated choices (target=avx2,avx512)",
              "  -c, --cfg job|hydra|all  print the composed config instead of building",
              "  -p, --package PACKAGE    with --cfg: only this part of the config (e.g. verify)",
              "  --resolve                with --cfg: resolve interpolations",
              "  -i, --info               Hydra's information: config search path, defaults tree",
              "  --hydra-help             Hydra's own options and groups", "",
              "exit codes: 0 verified (pass), 1 verification failed, 2 refused (bad override, config or input;",
              "  nothing published), 4 not verified (e.g. no AVX-512 host here): README \"Command line\""]
    return "\n".join(lines) + "\n"


def _fields(schema) -> list[tuple[str, object, object]]:
    """(name, type, default) of a schema's fields, annotations evaluated (schema.py postpones them)."""
    import typing
    hints = typing.get_type_hints(schema)
    return [(f.name, hints[f.name], f.default) for f in dataclasses.fields(schema)]


def schema_keys(path: str = "") -> list[str] | None:
    """The keys a config node has by the schema: "" -> top level, "verify" -> VerifyConfig's fields."""
    schema = QuantgateConfig if not path else GROUP_SCHEMAS.get(path)
    return None if schema is None else [f.name for f in dataclasses.fields(schema)]


# --- `--avx2` meant `target=avx2` ----------------------------------------------------------------------
def _resolve_key(key: str) -> str | None:
    """A config key from what was typed as an option name: target, n_samples -> calibration.n_samples."""
    group, _, leaf = key.partition(".")
    if not leaf:
        if key in schema_keys() or key in config_groups():
            return key
        owners = [g for g in GROUP_SCHEMAS if key in schema_keys(g)]
        return f"{owners[0]}.{key}" if len(owners) == 1 else None
    return key if group in GROUP_SCHEMAS and leaf in schema_keys(group) else None


def override_hint(option: str, value: str | None = None) -> str | None:
    """The Hydra override an unknown `--option` most likely meant, or None."""
    name, equals, given = option.lstrip("-").partition("=")
    key = name.replace("-", "_")
    if not equals:
        for group, choices in {**config_groups(), **enum_choices()}.items():
            for choice in (name, key):
                if choice in choices:
                    return f"{group}={choice}"
    resolved = _resolve_key(key)
    if resolved is None:
        return None
    if equals:
        return f"{resolved}={given}"
    if value is not None and not value.startswith("-") and "=" not in value:
        return f"{resolved}={value}"
    return f"{resolved}=VALUE"


# --- Hydra's and OmegaConf's errors in one line --------------------------------------------------------
def _first_line(error: BaseException | None) -> str:
    """The message's first line; with the next one when it only announces it ("... while composing config:")."""
    lines = [line.strip() for line in str(error or "").strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}".rstrip(".")
    return lines[0].rstrip(".")


def _yaml_problem(error) -> str:
    """A YAML syntax error in a config file: which file, where, and what."""
    mark = getattr(error, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    what = getattr(error, "problem", None) or _first_line(error)
    return f"{where} is not valid YAML ({what}); fix the file (YAML syntax: https://yaml.org/spec/1.2.2/)"


def _full_key(error: BaseException | None) -> str | None:
    match = re.search(r"full_key: (\S+)", str(error or ""))
    return match.group(1) if match else None


def _noun(group: str) -> str:
    return f"{group}s" if group in ("target", "mode", "model", "runtime", "experiment") else f"{group} choices"


def _value_problem(override: str, cause: BaseException) -> str:
    reason = _first_line(cause)
    if match := re.search(r"Invalid value '(.*)', expected one of \[(.*)\]", reason):
        return f"{override}: {match.group(1)!r} is not one of the choices; valid: {match.group(2)}"
    if match := re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", reason):
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(match.group(2),
                                                                                           match.group(2))
        return f"{override}: {match.group(1)!r} is not {kind}"
    if match := re.search(r"Value '(.*)' is not a valid bool", reason):
        return f"{override}: {match.group(1)!r} is not true or false"
    return f"{override}: {reason}"


def usage_error(error: BaseException) -> UsageError | None:
    """A Hydra or OmegaConf error about the command line or the config, as a one-line UsageError; else None."""
    from hydra.errors import (ConfigCompositionException, HydraException, MissingConfigException,
                              OverrideParseException)
    from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, MissingMandatoryValue,
                                  OmegaConfBaseException)

    import yaml

    text, cause = str(error), error.__cause__
    if isinstance(error, yaml.YAMLError):
        return UsageError(_yaml_problem(error))
    if isinstance(cause, yaml.YAMLError):
        return UsageError(_yaml_problem(cause))
    if isinstance(error, MissingConfigException):
        match = re.search(r"Could not find '([^']*)'", text)
        if not match:
            return UsageError(_first_line(error))
        group, _, name = match.group(1).rpartition("/")
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        if not group:
            return UsageError(f"there is no config {name!r} in {CONF_DIR}")
        return UsageError(f"unknown {group}={name} (there is no conf/{group}/{name}.yaml); valid {_noun(group)}: "
                          + ", ".join(options))
    if isinstance(error, OverrideParseException):
        return UsageError(f"cannot read an override: {_first_line(error)} (the grammar: key=value, group=choice, "
                          f"key=[a,b]; https://hydra.cc/docs/advanced/override_grammar/basic/)")
    if isinstance(error, ConfigCompositionException):
        override = re.search(r"override (\S+)", _first_line(error))
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
            key = _full_key(cause) or ""
            parent = key.rpartition(".")[0]
            keys = schema_keys(parent)
            where = f"of {parent}" if parent else "at the top level"
            return UsageError(f"unknown key {key}" + (f"; valid keys {where}: {', '.join(keys)}" if keys else ""))
        if isinstance(cause, OmegaConfBaseException) and override:
            return UsageError(_value_problem(override.group(1), cause))
        if match := re.search(r"Could not override '([^']+)'\. No match in the defaults list", text):
            return UsageError(f"{match.group(1)} is not a config group of the build; config groups: "
                              + ", ".join(config_groups()))
        return UsageError(_first_line(error) + (f": {_first_line(cause)}" if cause else ""))
    if isinstance(error, MissingMandatoryValue):
        key = _full_key(error) or _first_line(error).rpartition(": ")[2]
        return UsageError(f"{key} has no value (??? in conf/): give {key}=VALUE")
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        return UsageError(_first_line(error) + (f": {_first_line(cause)}" if cause else ""))
    return None

"""Defaults live in one place, the schema (pipeline/config/schema.py): code reads only keys the schema
has, never with a fallback of its own, and YAML under conf/ only overrides."""
import dataclasses
import re
import typing
from enum import Enum

import pytest
import yaml

from pipeline.config import CONF_DIR
from pipeline.config.schema import GROUP_SCHEMAS, QuantgateConfig

REPO = CONF_DIR.parent
# The config package is the schema's home; everything else reads the config through it.
SOURCES = sorted(p for p in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "calibration").rglob("*.py")]
                 if (REPO / "pipeline" / "config") not in p.parents)
GROUP = "|".join(GROUP_SCHEMAS)
GROUP_KEY = re.compile(rf"\b(?:self\.)?cfg\.({GROUP})\.(\w+)")  # cfg.verify.min_cosine_mean
GROUP_CFG_KEY = re.compile(rf"\b({GROUP})_cfg\.(\w+)")  # calibration_cfg.n_samples (a group passed alone)
TOP_KEY = re.compile(r"\b(?:self\.)?cfg\.(\w+)")  # cfg.artifacts_dir
ALIAS = re.compile(rf"^\s*(\w+(?:\s*,\s*\w+)*)\s*=\s*((?:self\.)?cfg\.(?:{GROUP})(?:\s*,\s*(?:self\.)?cfg\.(?:{GROUP}))*)\s*$",
                   re.M)  # v = cfg.verify / target, v = cfg.target, cfg.verify
FALLBACK = re.compile(rf"getattr\(\s*(?:self\.)?cfg(?:\.(?:{GROUP}))?\s*,|\b(?:self\.)?cfg(?:\.(?:{GROUP}))?\.get\(|\b(?:{GROUP})_cfg\.get\(")


def fields(schema) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


def config_reads(source: str) -> set[tuple[str, str]]:
    """(group or "", key) for every config read in a module's source."""
    reads = {(g, k) for g, k in GROUP_KEY.findall(source)} | {(g, k) for g, k in GROUP_CFG_KEY.findall(source)}
    reads |= {("", k) for k in TOP_KEY.findall(source)}
    for names, targets in ALIAS.findall(source):
        for name, target in zip(re.split(r"\s*,\s*", names), re.split(r"\s*,\s*", targets)):
            group = target.rsplit(".", 1)[1]
            reads |= {(group, key) for key in re.findall(rf"\b{name}\.(\w+)", source)}
    return reads


def test_the_scan_finds_what_it_should():
    source = "v = cfg.verify\nx = v.min_cosine_mean + cfg.model.opset\ntarget, w = cfg.target, cfg.verify\n" \
             "calibration_cfg.n_samples; w.nope; target.name; cfg.out"
    assert config_reads(source) == {("verify", "min_cosine_mean"), ("model", "opset"), ("verify", "nope"),
                                    ("target", "name"), ("calibration", "n_samples"), ("", "out"),
                                    ("", "verify"), ("", "model"), ("", "target")}
    assert FALLBACK.search('getattr(cfg, "export", "onnx")') and FALLBACK.search("cfg.verify.get('x', 1)")


def test_code_reads_only_keys_the_schema_has():
    assert len(SOURCES) > 30
    unknown = []
    for path in SOURCES:
        for group, key in sorted(config_reads(path.read_text())):
            schema = GROUP_SCHEMAS[group] if group else QuantgateConfig
            if key not in fields(schema):
                unknown.append(f"{path.relative_to(REPO)}: cfg.{group + '.' if group else ''}{key}")
    assert unknown == [], "keys read that the schema does not define (add them to pipeline/config/schema.py)"


def test_no_code_reads_the_config_with_a_default_of_its_own():
    fallbacks = [f"{path.relative_to(REPO)}:{source.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
                 for path in SOURCES for source in [path.read_text()] for match in FALLBACK.finditer(source)]
    assert fallbacks == [], "a default belongs in the schema, not at the call site"


def _options() -> list:
    return [*(pytest.param(path, schema, id=f"{group}/{path.stem}") for group, schema in GROUP_SCHEMAS.items()
              for path in sorted((CONF_DIR / group).glob("*.yaml"))),
            pytest.param(CONF_DIR / "config.yaml", QuantgateConfig, id="config")]


@pytest.mark.parametrize("path, schema", _options())
def test_yaml_only_overrides_the_schema(path, schema):
    values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ("defaults", "hydra")}
    hints = typing.get_type_hints(schema)
    repeated, required = [], []
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        value = values[f.name]
        if value == "???":
            required.append(f.name)  # merged onto a schema default, ??? is silently dropped by OmegaConf
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], Enum) and isinstance(default, Enum):
            default = default.value
        if default is not dataclasses.MISSING and value == default:
            repeated.append(f"{f.name}: {value!r}")
    assert repeated == [], f"{path.name} repeats schema defaults (pipeline/config/schema.py): delete them"
    assert required == [], "make the field MISSING in the schema, or check it in pipeline/config/rules.py"


@pytest.mark.parametrize("enum", sorted({t for s in [QuantgateConfig, *GROUP_SCHEMAS.values()]
                                         for t in typing.get_type_hints(s).values()
                                         if isinstance(t, type) and issubclass(t, Enum)}, key=lambda t: t.__name__),
                         ids=lambda t: t.__name__)
def test_enum_values_read_as_their_strings(enum):
    # StrEnum with names equal to values: `mode=static` on the command line, `cfg.mode.name == "static"` in code.
    assert all(isinstance(m, str) and m.name == m.value == f"{m}" for m in enum)


def test_no_copies_of_a_value_helper():
    helpers = [str(p.relative_to(REPO)) for p in SOURCES if re.search(r"^def _value\(", p.read_text(), re.M)]
    assert helpers == []

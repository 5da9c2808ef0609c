"""Reading quantgate's JSON files against their published schemas (docs/schemas/<name>.schema.json).

Each format has one typed reader (`Manifest.load`, `VerifyReport.load`, `signoff.load_signoff`) that calls
`read_json(path, name, fix)`: a missing file, malformed JSON, a wrong type, a missing or an unknown key is
one line naming the file, the key and the fix, raised as an InputError (exit 2) or the reader's subclass of
it. The same schema files let CI tools validate these files (`check-jsonschema --schemafile ...`).
The artifact stamp is read by the guard, which has the standard library only (pipeline/guard/stamp.py).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from pipeline.errors import InputError
from pipeline.paths import SCHEMAS_DIR


def schema_path(name: str) -> Path:
    return SCHEMAS_DIR / f"{name}.schema.json"


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_path(name).read_text())
    kind = jsonschema.validators.validator_for(schema)
    kind.check_schema(schema)
    return kind(schema)


def read_json(path: str | Path, name: str, fix: str, error: type[InputError] = InputError) -> Any:
    """The JSON value in `path`, valid against schema `name`, or `error` saying what is wrong and `fix`."""
    payload = load_json(path, fix, error)
    validate(payload, name, str(path), fix, error)
    return payload


def load_json(path: str | Path, fix: str, error: type[InputError] = InputError) -> Any:
    """The JSON value in `path` (not validated yet), or `error` saying why it cannot be read and `fix`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path} does not exist: {fix}") from None
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"{path} cannot be read ({getattr(problem, 'strerror', None) or problem}): {fix}") from None
    except json.JSONDecodeError as problem:
        raise error(f"{path} is not valid JSON ({problem.msg} at line {problem.lineno} column {problem.colno}): "
                    f"{fix}") from None


def validate(payload: Any, name: str, where: str, fix: str, error: type[InputError] = InputError) -> None:
    """Raise `error` with the most relevant schema violation in words, naming the key: `<where>: <what>; <fix>`."""
    worst = jsonschema.exceptions.best_match(validator(name).iter_errors(payload))
    if worst is not None:
        raise error(f"{where}: {describe(worst)}; {fix}")


def describe(problem: jsonschema.ValidationError) -> str:
    """One schema violation as one line: which key, and what is wrong with it."""
    where = "/".join(str(part) for part in problem.absolute_path)
    key = f"key {where!r}" if where else "the top level"
    if problem.validator == "additionalProperties":
        known = set(problem.schema.get("properties", {}))
        unknown = sorted(set(problem.instance) - known) if isinstance(problem.instance, dict) else []
        inside = f" in {where!r}" if where else ""
        return f"unknown key(s) {', '.join(map(repr, unknown))}{inside} (written by another quantgate version?)"
    if problem.validator == "required":
        missing = problem.message.split("'")[1] if "'" in problem.message else problem.message
        return f"lacks the required key {'/'.join(filter(None, [where, missing]))!r}"
    if problem.validator == "type":
        wanted = [problem.validator_value] if isinstance(problem.validator_value, str) else problem.validator_value
        return f"{key} must be {' or '.join(_TYPE_WORDS[name] for name in wanted)}, not {_json_type(problem.instance)}"
    if problem.validator in ("enum", "const"):
        allowed = problem.validator_value if problem.validator == "enum" else [problem.validator_value]
        return f"{key} is {_short(problem.instance)}, not one of {', '.join(map(repr, allowed))}"
    return f"{key}: {_short(problem.message)}"


_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({_short(value)})"


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(json.dumps(value).split()) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""The published schemas (docs/schemas/): valid JSON Schemas, met by the files the code really writes, in step
with the typed records, and the guard's stdlib stamp check agreeing with the stamp schema."""
import dataclasses
import json

import jsonschema
import pytest

from pipeline.guard import REQUIRED_STAMP_KEYS, StampError, decode_stamp
from pipeline.guard.stamp import FEATURE_LIST_KEYS, JSON_OBJECT_KEYS
from pipeline.jsonfiles import SCHEMAS_DIR, validator
from pipeline.manifest import Manifest
from pipeline.commands.signoff import main as signoff_main
from pipeline.verify.report import VerifyReport
from pipeline.commands.verify import main as verify_main
from tests.fixtures.tiny_artifact import make_artifact_folder

SCHEMAS = sorted(SCHEMAS_DIR.glob("*.schema.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda path: path.name)
def test_every_published_schema_is_a_valid_json_schema(path):
    schema = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["description"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A real release: a stamped tiny artifact with manifest.json, verified natively, signed off."""
    root = tmp_path_factory.mktemp("release")
    folder = make_artifact_folder(root / "rc" / "tiny-dynamic-avx2", target="avx2")
    assert verify_main(["--artifact-dir", str(folder), "verify.profiles=[native]", "verify.reference_cpu=native"]) \
        in (0, 1, 4)
    signoff_main(["--release", "rc", "--artifacts-dir", str(root / "rc"), "--out", str(root / "reports")])
    return root


@pytest.mark.parametrize("name, relative", [("manifest", "rc/tiny-dynamic-avx2/manifest.json"),
                                            ("verify", "rc/tiny-dynamic-avx2/verify.json"),
                                            ("signoff", "reports/signoff.json")])
def test_files_the_code_writes_meet_their_schema(release, name, relative):
    validator(name).validate(json.loads((release / relative).read_text()))


def test_the_schemas_name_every_field_of_the_typed_records():
    manifest = json.loads((SCHEMAS_DIR / "manifest.schema.json").read_text())
    written = {f.name for f in dataclasses.fields(Manifest)} - {"artifact_dir", "verify_status"}
    assert set(manifest["properties"]) == written
    verify = json.loads((SCHEMAS_DIR / "verify.schema.json").read_text())
    assert set(verify["properties"]) == {f.name for f in dataclasses.fields(VerifyReport)} | {"passed"}


# --- the guard's hand-written stamp check and docs/schemas/stamp.schema.json agree -----------------------------
VALID = {key: "text" for key in REQUIRED_STAMP_KEYS} | {
    "schema": "1", "required_cpu_features": '["sse4_2", "avx2"]', "versions": '{"onnxruntime": "1.32.0"}'}
STAMPS = {
    "valid": VALID,
    "valid, with keys of a newer quantgate": VALID | {"runtime": '{"name": "ort120"}', "compiler": "g++ 12"},
    "valid .pt2, with audited features": VALID | {"artifact_kind": "aoti", "audited_cpu_features": '["avx2"]'},
    "no features needed": VALID | {"required_cpu_features": "[]"},
    "no stamp at all": {},
    "a required key missing": {key: value for key, value in VALID.items() if key != "opset"},
    "another schema": VALID | {"schema": "2"},
    "schema as a number": VALID | {"schema": 1},
    "features as a JSON string": VALID | {"required_cpu_features": '"avx2"'},
    "features not JSON": VALID | {"required_cpu_features": "[avx2"},
    "features not names": VALID | {"required_cpu_features": "[1, 2]"},
    "an empty feature name": VALID | {"required_cpu_features": '[""]'},
    "features as an object": VALID | {"required_cpu_features": '{"avx2": true}'},
    "audited features as a JSON string": VALID | {"audited_cpu_features": '"avx2"'},
    "versions a list": VALID | {"versions": '["1.32.0"]'},
    "versions not JSON": VALID | {"versions": "onnxruntime 1.32"},
    "a value that is no string": VALID | {"mode": 1},
}


def schema_view(stamp: dict) -> dict:
    """What the schema describes: the judged values decoded from their JSON text, where they are JSON."""
    view = dict(stamp)
    for key in set(json.loads((SCHEMAS_DIR / "stamp.schema.json").read_text())["properties"]) - {"schema"}:
        try:
            view[key] = json.loads(view[key]) if isinstance(view.get(key), str) else view[key]
        except (KeyError, ValueError):
            pass
    return view


def test_the_stamp_schema_decodes_the_keys_the_guard_decodes():
    assert set(json.loads((SCHEMAS_DIR / "stamp.schema.json").read_text())["properties"]) - {"schema"} == \
        set(FEATURE_LIST_KEYS + JSON_OBJECT_KEYS)


@pytest.mark.parametrize("case", STAMPS)
def test_the_guard_and_the_stamp_schema_agree(case):
    stamp = STAMPS[case]
    try:
        decode_stamp(stamp)
        guard_accepts = True
    except StampError:
        guard_accepts = False
    schema_accepts = validator("stamp").is_valid(schema_view(stamp))
    assert guard_accepts == schema_accepts == case.startswith(("valid", "no features"))
    if guard_accepts:
        assert decode_stamp(stamp) == schema_view(stamp)

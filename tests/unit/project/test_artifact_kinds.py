"""One registry of artifact kinds (pipeline/kinds.py): every stage asks it, every kind has a handler in every layer,
and a new kind is one module plus its registration. The toy kind below is that module: its own file format (a JSON
stamp, read by a container registered with the guard), its build stage, verifier and inspect verdict; the build,
verify, inspect, guard, audit and OCI lookups of the pipeline find it without a line changed anywhere else."""
import json
import types

import pytest
from omegaconf import OmegaConf

from pipeline import inspect as inspect_command, kinds
from pipeline.builder import task
from pipeline.builder.graph_counts import GraphCounts
from pipeline.guard import REQUIRED_STAMP_KEYS, STAMP_PREFIX, ArtifactRefused, check_stamp, ensure_can_run, read_stamp
from pipeline.guard import artifact as guard_artifact
from pipeline.guard.stamp import unprefixed
from pipeline.isa.audit import audit_path
from pipeline.manifest import Manifest
from pipeline.release.evidence import artifact_stamp
from pipeline.release.oci import media_type
from pipeline.verify import stage as verify_stage

BUILT_IN = {"onnx-int8-qdq", "onnx-int8-qoperator", "aoti-int8-pt2", "onnx-int4-weight-only", "onnx-int8-weight-only"}
LAYERS = {"build", "verify", "inspect"}  # the modules imported above register theirs


# --- the toy kind: one module's worth -------------------------------------------------------------------------------

def read_toy_stamp(path) -> dict[str, str]:
    """A .toy file is a JSON object of quantgate.* keys."""
    return unprefixed(json.loads(path.read_text())) if path.is_file() else {}


def ensure_toy(path, host_features, runtime, check_runtime, public_key):
    verdict = check_stamp(read_toy_stamp(path), host_features, artifact=path.name)
    if not verdict.can_run:
        raise ArtifactRefused(f"{path.name}: {verdict.message()}")
    return verdict


TOY_CONTAINER = guard_artifact.Container("toy", "model.toy", ".toy", read_toy_stamp, ensure_toy)
TOY = kinds.ArtifactKind("toy-int2", "toy", kinds.WEIGHT_ONLY, 2, "toy", ("static",), "TOY2",
                         "application/vnd.quantgate.toy", "blockwise_weights", ("ToyMatMul",))


def write_toy(cfg, manifest: Manifest) -> Manifest:
    """The toy's one build stage: a model file carrying its stamp."""
    manifest.model_file = TOY.model_file
    manifest.stamp = {key: "text" for key in REQUIRED_STAMP_KEYS} | {
        "schema": "1", "target_isa": cfg.target.name, "mode": cfg.mode.name, "versions": "{}",
        "required_cpu_features": json.dumps(list(cfg.target.features)), "quant_format": TOY.quant_format}
    manifest.path(TOY.model_file).write_text(json.dumps({STAMP_PREFIX + k: v for k, v in manifest.stamp.items()}))
    return manifest


TOY_HANDLERS = {
    "build": lambda cfg: (types.SimpleNamespace(__name__="toy", run=write_toy),),
    "verify": lambda cfg, manifest, out, shown_folder: {
        "status": "pass" if ensure_can_run(manifest.folder, frozenset()).can_run else "fail"},
    "inspect": lambda path, stamp: check_stamp(stamp, frozenset()),
}


@pytest.fixture
def registries():
    """The registries as they were, restored after the test (a toy kind must not outlive its test)."""
    saved = (dict(kinds.KINDS), {layer: dict(h) for layer, h in kinds._HANDLERS.items()},
             dict(guard_artifact.CONTAINERS), dict(guard_artifact.MODEL_FILES))
    yield
    for registry, before in zip((kinds.KINDS, kinds._HANDLERS, guard_artifact.CONTAINERS, guard_artifact.MODEL_FILES),
                                saved):
        registry.clear()
        registry.update(before)


def toy_config(features=()):
    return OmegaConf.create({"export": "toy", "mode": {"name": "static", "quant_format": "QDQ"},
                             "target": {"name": "toy_target", "features": list(features)}})


# --- the tests ------------------------------------------------------------------------------------------------------

def test_every_kind_has_a_handler_in_every_layer_and_its_data():
    assert set(kinds.KINDS) == BUILT_IN and LAYERS <= set(kinds._HANDLERS)
    for layer in LAYERS:
        assert set(kinds._HANDLERS[layer]) == BUILT_IN, layer
    fields = set(GraphCounts.__dataclass_fields__)
    for kind in kinds.KINDS.values():
        assert kind.proven_by in fields | {""} and kind.bits in (4, 8) and kind.suffix == "." + kind.container
    assert {k.name: k.bits for k in kinds.KINDS.values() if k.scheme == kinds.WEIGHT_ONLY} == {
        "onnx-int4-weight-only": 4, "onnx-int8-weight-only": 8}


@pytest.mark.parametrize("overrides, expected", [
    ([], "onnx-int8-qoperator"), (["mode=static"], "onnx-int8-qdq"),
    (["mode=static", "mode.quant_format=QOperator"], "onnx-int8-qoperator"), (["mode=qat"], "onnx-int8-qdq"),
    (["mode=auto"], "onnx-int8-qdq"), (["model=digits_cnn", "mode=static", "export=aoti"], "aoti-int8-pt2"),
    (["mode=int4"], "onnx-int4-weight-only"), (["mode=int8"], "onnx-int8-weight-only")])
def test_a_config_names_the_kind_it_builds_and_its_stages(overrides, expected):
    from pipeline.config import compose_config
    cfg = compose_config(overrides)
    kind = kinds.kind_for_config(cfg)
    assert kind.name == expected
    stages = [getattr(stage, "__name__", "").rsplit(".", 1)[-1] for stage in task.build_stages(cfg)]
    assert stages[-1] == {"aoti-int8-pt2": "aoti", "onnx-int4-weight-only": "stamp",
                          "onnx-int8-weight-only": "stamp"}.get(expected, "hub_files")
    assert task.artifact_name(cfg).endswith(kind.folder_suffix)


@pytest.mark.parametrize("stamp, container, expected", [
    ({"quant_format": "QDQ"}, "onnx", "onnx-int8-qdq"), ({"quant_format": "QOperator"}, "onnx", "onnx-int8-qoperator"),
    ({"quant_format": kinds.WEIGHT_ONLY_FORMAT, "bits": "4"}, "onnx", "onnx-int4-weight-only"),
    ({"quant_format": kinds.WEIGHT_ONLY_FORMAT, "bits": "8"}, "onnx", "onnx-int8-weight-only"),
    ({"quant_format": "PT2E", "artifact_kind": "aoti"}, "pt2", "aoti-int8-pt2"),
    ({"quant_format": "PT2E"}, "pt2", None),  # the package guard requires artifact_kind=aoti
    ({"quant_format": "QDQ"}, "pt2", None), ({}, "onnx", None)])
def test_a_stamp_names_its_kind(stamp, container, expected):
    kind = kinds.kind_of_stamp(stamp, container)
    assert (kind.name if kind else None) == expected


def test_a_weight_only_folder_is_verified_by_the_decoder_verifier(tmp_path):
    from pipeline.verify import decoder
    manifest = Manifest("d", "hf", "int8", "avx2", str(tmp_path),
                        stamp={"quant_format": kinds.WEIGHT_ONLY_FORMAT, "bits": "8", "mode": "int8"})
    kind = kinds.kind_of_manifest(manifest)
    assert kind is kinds.ONNX_INT8_WEIGHT_ONLY and kinds.handler("verify", kind) is decoder.verify_decoder
    unstamped = Manifest("d", "hf", "int4", "avx2", str(tmp_path))  # no stamp recorded: its mode tells
    assert kinds.kind_of_manifest(unstamped) is kinds.ONNX_INT4_WEIGHT_ONLY


def test_a_layer_that_leaves_a_kind_without_a_handler_is_named_at_registration(registries):
    # a layer new to the registry (as signoff would be) must cover every kind there is
    with pytest.raises(kinds.KindError, match="'signoff' handlers .* no handler for onnx-int8-qdq"):
        kinds.register_handlers("signoff", {name: None for name in BUILT_IN - {"onnx-int8-qdq"}})
    with pytest.raises(kinds.KindError, match="no such kind onnx-int3"):
        kinds.register_handlers("verify", {name: None for name in BUILT_IN | {"onnx-int3"}})
    assert "signoff" not in kinds._HANDLERS
    guard_artifact.register_container(TOY_CONTAINER)
    with pytest.raises(kinds.KindError, match="'toy-int2' has no handler for build, inspect, verify"):
        kinds.register_kind(TOY)
    assert "toy-int2" not in kinds.KINDS
    with pytest.raises(kinds.KindError, match="no artifact kind is built by export=toy"):
        kinds.kind_for_config(toy_config())


def test_a_kind_needs_a_container_the_guard_reads(registries):
    with pytest.raises(kinds.KindError, match="the guard has no container 'toy'"):
        kinds.register_kind(TOY, TOY_HANDLERS)


def test_a_new_kind_is_found_by_build_verify_inspect_guard_audit_and_publish(registries, tmp_path, capsys):
    guard_artifact.register_container(TOY_CONTAINER)
    kinds.register_kind(TOY, TOY_HANDLERS)
    cfg = toy_config()
    assert kinds.kind_for_config(cfg) is TOY and kinds.folder_suffix("toy") == ""
    manifest = Manifest("toy", "toy", "static", "toy_target", str(tmp_path))
    for stage in task.build_stages(cfg):  # build
        manifest = stage.run(cfg, manifest)
    manifest.record_files()
    manifest.save()
    model = tmp_path / "model.toy"
    assert kinds.kind_of_manifest(manifest) is TOY
    assert verify_stage.verify_folder(cfg, manifest) == {"status": "pass"}  # verify
    assert read_stamp(tmp_path) == manifest.stamp == artifact_stamp(manifest)  # the guard, by folder; evidence
    assert ensure_can_run(model, frozenset()).can_run
    assert inspect_command.inspect(str(model)) == 0  # inspect
    assert "quantgate.quant_format" in capsys.readouterr().out
    assert audit_path(model).kind == "toy" and media_type("model.toy") == "application/vnd.quantgate.toy"
    # The guard judges the toy's stamp: a CPU that lacks what it names is refused, before anything loads it.
    needs = tmp_path / "needs"
    needs.mkdir()
    write_toy(toy_config(["avx2"]), Manifest("n", "toy", "static", "toy_target", str(needs)))
    with pytest.raises(ArtifactRefused, match="lacks: avx2"):
        ensure_can_run(needs, frozenset({"sse2"}))


def test_the_config_words_and_the_kinds_agree():
    """Every export and mode the schema accepts is built by some kind, and the weight-only modes are the kinds'."""
    from pipeline.config.schema import WEIGHT_ONLY_MODES, ExportKind, QuantMode
    assert {kind.export for kind in kinds.KINDS.values()} == {export.value for export in ExportKind}
    assert {mode for kind in kinds.KINDS.values() for mode in kind.modes} == {mode.value for mode in QuantMode}
    assert {mode for kind in kinds.KINDS.values() if kind.scheme == kinds.WEIGHT_ONLY
            for mode in kind.modes} == set(WEIGHT_ONLY_MODES)

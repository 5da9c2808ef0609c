"""The guard as one stdlib-only package (pipeline/guard/): what it imports, its command's exit codes for
either artifact kind, one exception tree behind every old import path, and the protobuf it reads and writes."""
import ast
import json
import subprocess
import sys
import zipfile

import pytest

from pipeline.isa.targets import microarchitecture_features, required_cpu_features
from tests.conftest import REPO
from tests.unit.guard.test_guard import stamp_for, write_stamped_model

GUARD_DIR = REPO / "pipeline" / "guard"
HEAVY = {"numpy", "onnx", "onnxruntime", "torch", "hydra", "omegaconf"}
# Imported only inside the function that needs them, only when asked: open_session, load_package, the runtime
# probe, and the optional signature check.
LAZY = {"onnxruntime", "torch", "model_signing"}
ARM = json.dumps(required_cpu_features("cortex_a72"))  # asimd, fp, ...: no x86-64 host has them


def stamped_package(folder, **overrides):
    """A .pt2 as far as the guard is concerned: a zip holding extra/quantgate_stamp.json."""
    stamp = stamp_for(artifact_kind="aoti", versions=json.dumps({"torch": "2.13.0"})) | overrides
    package = folder / "model.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("model/extra/quantgate_stamp.json", json.dumps({f"quantgate.{k}": v for k, v in stamp.items()}))
    return package


def guard_command(*args, module="pipeline.guard"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def assert_one_line(result, code, *words):
    output = result.stdout if code == 0 else result.stderr
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(output.strip().splitlines()) == 1, output
    for word in words:
        assert word in output, output


def test_guard_modules_import_only_the_standard_library_and_each_other():
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(GUARD_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # a sibling module of the guard
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                root = name.split(".")[0]
                lazy = root in LAZY and id(node) not in top_level
                assert root in stdlib or root == "__future__" or lazy, f"{path.name} imports {name}"


@pytest.mark.parametrize("module", ["pipeline.guard", "pipeline.guard.pt2", "pipeline.guard.cpuid", "pipeline.guard.onnx",
                                    "pipeline.guard.probe", "pipeline.verify.child_onnx", "pipeline.verify.child_pt2"])
def test_the_guard_and_the_child_runners_import_no_heavy_package(module):
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in result.stdout.split()}
    assert not loaded & HEAVY, f"importing {module} loads {sorted(loaded & HEAVY)}"


def test_one_exception_tree_behind_every_import_path():
    import pipeline.guard as guard
    import pipeline.guard.onnx as guard_onnx
    import pipeline.guard.pt2 as guard_pt2
    from pipeline.guard import errors
    assert guard.ArtifactRefused is guard_pt2.ArtifactRefused is errors.ArtifactRefused
    assert guard.StampError is guard_pt2.StampError is errors.StampError
    assert issubclass(guard_onnx.UnsafeModelError, guard.ArtifactRefused)
    assert issubclass(guard.UnreadableArtifact, guard.StampError)
    assert issubclass(guard.SignatureCheckUnavailable, guard.ArtifactRefused)


def test_the_command_refuses_onnx_and_pt2_with_exit_3(tmp_path):
    write_stamped_model(tmp_path / "arm.onnx", stamp_for("arm64", required_cpu_features=ARM))
    (tmp_path / "pt2").mkdir()
    package = stamped_package(tmp_path / "pt2", target_isa="arm64", required_cpu_features=ARM)
    for path in (tmp_path / "arm.onnx", package, package.parent):
        assert_one_line(guard_command(path), 3, "quantgate guard: refused: ",
                        "artifact built for arm64 needs", "this CPU lacks: asimd")


def test_the_command_accepts_and_says_why_not_in_one_line(tmp_path):
    write_stamped_model(tmp_path / "ok.onnx", stamp_for("x86_64", required_cpu_features='["sse", "sse2"]'))
    assert_one_line(guard_command(tmp_path / "ok.onnx"), 0, "quantgate guard: ok: ")
    assert_one_line(guard_command(tmp_path / "ok.onnx", "--cpu-only"), 0, "built for x86_64")
    unstamped = tmp_path / "unstamped.onnx"
    write_stamped_model(unstamped, {})
    assert_one_line(guard_command(unstamped), 3, "carries no quantgate stamp")
    assert_one_line(guard_command(tmp_path / "missing.onnx"), 2, "quantgate guard: error: ", "does not exist")
    (tmp_path / "noise.onnx").write_bytes(bytes(range(256)) * 4)
    assert_one_line(guard_command(tmp_path / "noise.onnx"), 2, "not a readable ONNX model")
    (tmp_path / "noise.pt2").write_bytes(b"not a zip")
    assert_one_line(guard_command(tmp_path / "noise.pt2"), 2, "not a zip archive")
    assert_one_line(guard_command(), 2, "quantgate guard: error: ", "usage: python -m pipeline.guard")
    assert_one_line(guard_command(tmp_path / "ok.onnx", "extra"), 2, "unrecognized arguments: extra")


def test_ensure_can_run_takes_either_kind_or_a_folder(tmp_path):
    from pipeline.guard import StampError, UnreadableArtifact, artifact_kind, ensure_can_run, read_stamp
    haswell, sandybridge = microarchitecture_features("haswell"), microarchitecture_features("sandybridge")
    package = stamped_package(tmp_path)
    assert artifact_kind(tmp_path) == ("pt2", package)
    assert ensure_can_run(tmp_path, haswell, check_runtime=False).can_run
    assert read_stamp(package) == read_stamp(tmp_path) and read_stamp(package)["artifact_kind"] == "aoti"
    with pytest.raises(Exception, match="this CPU lacks: .*avx2"):
        ensure_can_run(package, sandybridge)
    with pytest.raises(UnreadableArtifact, match="does not exist"):
        ensure_can_run(tmp_path / "empty-folder")
    write_stamped_model(tmp_path / "model.onnx", stamp_for())
    assert artifact_kind(tmp_path) == ("onnx", tmp_path / "model.onnx")  # a folder means its model.onnx first
    with pytest.raises(StampError, match="stamp value required_cpu_features is not JSON"):
        ensure_can_run(stamped_package(tmp_path, required_cpu_features="avx2"), haswell)


def test_open_session_opens_only_what_the_guard_accepts(tmp_path):
    from pipeline.guard import ArtifactRefused, UnsafeModelError, open_session
    write_stamped_model(tmp_path / "m.onnx", stamp_for())
    session = open_session(tmp_path / "m.onnx", host_features=microarchitecture_features("haswell"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    with pytest.raises(ArtifactRefused, match="this CPU lacks"):
        open_session(tmp_path / "m.onnx", host_features=microarchitecture_features("nehalem"))
    import onnx
    model = onnx.load(str(tmp_path / "m.onnx"))
    model.graph.initializer.add(name="w", data_type=onnx.TensorProto.FLOAT, dims=[1], data_location=1)
    model.graph.initializer[0].external_data.add(key="location", value="../../etc/passwd")
    onnx.save(model, str(tmp_path / "outside.onnx"))
    with pytest.raises(UnsafeModelError, match="outside its folder"):
        open_session(tmp_path / "outside.onnx", host_features=microarchitecture_features("haswell"))


def test_protobuf_writer_and_reader_agree_with_onnx(tmp_path):
    import onnx
    from pipeline.guard.onnx import read_header
    from pipeline.guard.probe import tiny_model
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_model(9, {"": 17, "ai.onnx.ml": 3}))
    model = onnx.load(str(path))
    assert model.ir_version == 9 and model.graph.node[0].op_type == "Identity"
    assert {o.domain: o.version for o in model.opset_import} == {"": 17, "ai.onnx.ml": 3}
    versions, props = read_header(path)
    assert (versions.ir_version, versions.opsets, props) == (9, {"": 17, "ai.onnx.ml": 3}, {})

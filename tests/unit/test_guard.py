"""The guard refuses, in words, an artifact whose stamp needs features this CPU lacks."""
import json

import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.cpuid import READABLE_FEATURES, host_features
from pipeline.guard import (REQUIRED_STAMP_KEYS, ArtifactRefused, StampError, check_stamp, ensure_can_run,
                            read_onnx_header, read_stamp)
from pipeline.targets import microarchitecture_features, required_cpu_features

RUNTIME = {"onnxruntime": "1.32.0", "numpy": "2.4.6"}


def stamp_for(target="avx2", microarchitecture="x86_64_v3", **changes):
    stamp = {key: "x" for key in REQUIRED_STAMP_KEYS}
    stamp.update(schema="1", target_isa=target,
                 required_cpu_features=json.dumps(required_cpu_features(microarchitecture)),
                 versions=json.dumps({"onnxruntime": "1.32.0"}))
    stamp.update(changes)
    return stamp


def write_stamped_model(path, stamp):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in stamp.items():
        model.metadata_props.add(key=f"quantgate.{key}", value=value)
    onnx.save(model, path)


def test_refuses_host_without_avx2_naming_the_missing_features():
    haswell_less = microarchitecture_features("sandybridge")
    verdict = check_stamp(stamp_for(), host_features=haswell_less, runtime_versions=RUNTIME)
    assert not verdict.can_run
    assert {"avx2", "fma"} <= set(verdict.missing_cpu_features)
    message = verdict.message()
    assert "artifact built for avx2 needs" in message and "this CPU lacks: " in message
    assert "avx2" in message.split("lacks:")[1] and "fma" in message.split("lacks:")[1]


def test_accepts_a_host_with_the_features():
    verdict = check_stamp(stamp_for(), host_features=microarchitecture_features("haswell"), runtime_versions=RUNTIME)
    assert verdict.can_run, verdict.message()


def test_refuses_older_runtime_than_the_build():
    verdict = check_stamp(stamp_for(), host_features=microarchitecture_features("haswell"),
                          runtime_versions={"onnxruntime": "1.16.3"})
    assert not verdict.can_run and "1.16.3" in verdict.message()


def test_newer_schema_and_missing_keys_are_stamp_errors():
    with pytest.raises(StampError, match="schema"):
        check_stamp(stamp_for(schema="2"), host_features=set(), runtime_versions=RUNTIME)
    incomplete = stamp_for()
    del incomplete["required_cpu_features"]
    with pytest.raises(StampError, match="required_cpu_features"):
        check_stamp(incomplete, host_features=set(), runtime_versions=RUNTIME)


def test_reads_stamp_from_onnx_without_onnx(tmp_path):
    path = tmp_path / "m.onnx"
    write_stamped_model(path, stamp_for())
    assert read_stamp(path) == stamp_for()
    ir_version, _ = read_onnx_header(path)
    assert ir_version == onnx.load(path).ir_version
    with pytest.raises(ArtifactRefused, match="this CPU lacks: .*avx2"):
        ensure_can_run(path, host_features=microarchitecture_features("nehalem"), runtime_versions=RUNTIME)


def test_truncated_or_random_files_are_stamp_errors(tmp_path):
    path = tmp_path / "m.onnx"
    write_stamped_model(path, stamp_for())
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(StampError):
        read_stamp(truncated)
    noise = tmp_path / "n.onnx"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(StampError):
        read_stamp(noise)


def test_cpuid_reads_this_host_consistently_with_numpy():
    import numpy._core._multiarray_umath as umath
    features = host_features()
    numpy_view = umath.__cpu_features__
    for ours, numpys in [("avx2", "AVX2"), ("fma", "FMA3"), ("avx512f", "AVX512F"), ("sse4_2", "SSE42"),
                         ("avx512_vnni", "AVX512VNNI")]:
        assert (ours in features) == bool(numpy_view[numpys]), ours
    assert features <= READABLE_FEATURES

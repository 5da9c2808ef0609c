"""The guard refuses, in words, an artifact whose stamp needs features this CPU lacks."""
import json

import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.guard.cpuid import READABLE_FEATURES, host_features
from pipeline.guard import (REQUIRED_STAMP_KEYS, ArtifactRefused, ModelVersions, StampError, check_stamp,
                            ensure_can_run, predict_load, read_onnx_header, read_onnx_versions, read_stamp)
from pipeline.isa.targets import microarchitecture_features, required_cpu_features

# What pipeline.guard.probe reports for onnxruntime 1.16.3 (measured) and 1.32.0.
ORT116 = {"versions": {"onnxruntime": "1.16.3"}, "max_ir_version": 9, "max_opsets": {"": 19, "ai.onnx.ml": 3, "com.microsoft": 1}}
RUNTIME = {"versions": {"onnxruntime": "1.32.0"}, "max_ir_version": 14, "max_opsets": {"": 28, "ai.onnx.ml": 5}}


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
    verdict = check_stamp(stamp_for(), host_features=haswell_less)
    assert not verdict.can_run
    assert {"avx2", "fma"} <= set(verdict.missing_cpu_features)
    message = verdict.message()
    assert "artifact built for avx2 needs" in message and "this CPU lacks: " in message
    assert "avx2" in message.split("lacks:")[1] and "fma" in message.split("lacks:")[1]


def test_accepts_a_host_with_the_features():
    verdict = check_stamp(stamp_for(), host_features=microarchitecture_features("haswell"),
                          model=ModelVersions(10, {"": 18}), runtime=RUNTIME)
    assert verdict.can_run, verdict.message()


def test_predicts_in_words_that_an_older_runtime_will_not_load_it():
    verdict = check_stamp(stamp_for(), host_features=microarchitecture_features("haswell"),
                          model=ModelVersions(10, {"": 20, "ai.onnx.ml": 3}), runtime=ORT116)
    assert not verdict.can_run
    assert verdict.problems == [
        "artifact has IR version 10; onnxruntime 1.16.3 loads at most 9; rebuild with "
        "RUNTIME=onnxruntime==1.16.3 or upgrade the runtime",
        "artifact imports opset 20 of ai.onnx; onnxruntime 1.16.3 loads at most 19; rebuild with "
        "RUNTIME=onnxruntime==1.16.3 or upgrade the runtime"]
    assert predict_load(ModelVersions(9, {"": 18, "custom.ops": 99}), ORT116) == []  # unknown domains: no guess
    assert "not installed" in predict_load(ModelVersions(9, {"": 18}), {"versions": {}})[0]


def test_newer_schema_and_missing_keys_are_stamp_errors():
    with pytest.raises(StampError, match="schema"):
        check_stamp(stamp_for(schema="2"), host_features=set())
    incomplete = stamp_for()
    del incomplete["required_cpu_features"]
    with pytest.raises(StampError, match="required_cpu_features"):
        check_stamp(incomplete, host_features=set())


def test_reads_stamp_from_onnx_without_onnx(tmp_path):
    path = tmp_path / "m.onnx"
    write_stamped_model(path, stamp_for())
    assert read_stamp(path) == stamp_for()
    ir_version, _ = read_onnx_header(path)
    assert ir_version == onnx.load(path).ir_version
    assert read_onnx_versions(path) == ModelVersions(ir_version, {"": 18})
    with pytest.raises(ArtifactRefused, match="this CPU lacks: .*avx2"):
        ensure_can_run(path, host_features=microarchitecture_features("nehalem"))
    haswell = microarchitecture_features("haswell")
    with pytest.raises(ArtifactRefused, match=f"IR version {ir_version}; onnxruntime 1.16.3 loads at most 9"):
        ensure_can_run(path, host_features=haswell, runtime=ORT116)
    assert ensure_can_run(path, host_features=haswell).can_run  # asks the installed onnxruntime itself


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


def test_a_feature_list_written_as_a_json_string_is_a_stamp_error_not_read_letter_by_letter():
    with pytest.raises(StampError, match=r"required_cpu_features must be a JSON list of CPU feature names") as error:
        check_stamp(stamp_for(required_cpu_features='"avx512f"'), host_features=set())
    assert "a, v, x" not in str(error.value)


def test_features_no_cpu_has_are_refused_as_unknown_not_as_missing_on_this_host():
    verdict = check_stamp(stamp_for(required_cpu_features='["sse2", "avx1024"]'),
                          host_features=microarchitecture_features("sapphirerapids"))
    assert not verdict.can_run
    assert "no CPU has" in verdict.message() and "avx1024" in verdict.message() and "rebuild" in verdict.message()
    assert "deploy on a CPU" not in verdict.message() and "sse2" not in verdict.message()

"""A decoder's stamp: the runtime floor (min_onnxruntime) the guard judges, and the kernel features each target adds."""
import pytest
from tests.unit.guard.test_guard import RUNTIME, stamp_for, write_stamped_model

from pipeline.guard import ArtifactRefused, StampError, check_stamp, ensure_can_run
from pipeline.isa.targets import microarchitecture_features

HASWELL = microarchitecture_features("haswell")
# What pipeline.guard.probe reports for onnxruntime 1.22.1, which refuses onnxruntime-genai 0.18's
# GroupQueryAttention although it loads opset 22 (measured).
ORT122 = {"versions": {"onnxruntime": "1.22.1"}, "max_ir_version": 11, "max_opsets": {"": 23, "com.microsoft": 1}}


def test_a_runtime_older_than_the_stamps_floor_is_refused_in_words(tmp_path):
    stamp = stamp_for(min_onnxruntime="1.23.0")
    assert check_stamp(stamp, HASWELL, runtime=RUNTIME).can_run
    assert check_stamp(stamp, HASWELL, runtime={"versions": {"onnxruntime": "1.23.0+cpu"}}).can_run
    verdict = check_stamp(stamp, HASWELL, runtime=ORT122)
    assert not verdict.can_run
    assert "needs onnxruntime >= 1.23.0" in verdict.message() and "onnxruntime 1.22.1" in verdict.message()
    write_stamped_model(tmp_path / "model.onnx", stamp)
    refused = r"artifact needs onnxruntime >= 1\.23\.0 .*this runtime is onnxruntime 1\.22\.1"
    with pytest.raises(ArtifactRefused, match=refused):
        ensure_can_run(tmp_path / "model.onnx", HASWELL, runtime=ORT122)
    assert check_stamp(stamp, HASWELL).can_run  # no runtime at hand: the CPU alone is judged


@pytest.mark.parametrize("value", ["1", "1.x", "1.23.0.5", "latest", ""])
def test_a_malformed_runtime_floor_is_a_stamp_error(value):
    with pytest.raises(StampError, match="min_onnxruntime must be a release"):
        check_stamp(stamp_for(min_onnxruntime=value), HASWELL)


@pytest.mark.parametrize("target,features", [
    ("avx2", {"avx2", "fma"}), ("avx512_vnni", {"avx512_vnni", "avx512bw"}), ("arm64", {"asimd"}),
    ("x86_64_v2", set())])
def test_each_target_names_the_kernel_features_a_decoders_stamp_requires(compose, target, features):
    from pipeline.isa.targets import runtime_floor
    cfg = compose(["model=hf", "model.task=text-generation", "model.name_or_path=x", "mode=int4", f"target={target}"])
    assert features <= set(cfg.target.decoder_features)
    required = runtime_floor(cfg.target.microarchitecture, [*cfg.target.extra_features, *cfg.target.decoder_features])
    assert features <= set(required)
    assert "asimddp" not in required  # arm64: the cortex-a72 floor (Raspberry Pi 4) is verified, never refused

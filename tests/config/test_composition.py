"""Every target x mode composes into a typed config; bad values fail listing the valid ones."""
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from pipeline.targets import required_cpu_features

TARGETS = ["x86_64_v2", "avx2", "avx512", "avx512_vnni", "arm64"]
MODES = ["dynamic", "static"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", MODES)
def test_every_target_and_mode_composes(compose, target, mode):
    cfg = compose([f"target={target}", f"mode={mode}"])
    assert cfg.target.name == target
    assert cfg.mode.name.value == mode
    assert cfg.model.name == "minilm"
    features = required_cpu_features(cfg.target.microarchitecture, list(cfg.target.extra_features))
    assert features, "a target must require some CPU features"


def test_target_policy_follows_onnxruntime_guidance(compose):
    policy = {t: compose([f"target={t}"]).target for t in TARGETS}
    assert policy["avx2"].reduce_range and policy["avx512"].reduce_range  # u8s8 saturates without VNNI
    assert not policy["avx512_vnni"].reduce_range
    assert policy["arm64"].activation_type.value == "int8" and policy["arm64"].weight_type.value == "int8"


def test_target_features_come_from_archspec(compose):
    import archspec.cpu
    avx2 = compose(["target=avx2"]).target
    features = set(required_cpu_features(avx2.microarchitecture, list(avx2.extra_features)))
    assert features == set(archspec.cpu.TARGETS["x86_64_v3"].features)
    assert {"avx2", "fma"} <= features and "avx512f" not in features
    vnni = compose(["target=avx512_vnni"]).target
    assert "avx512_vnni" in required_cpu_features(vnni.microarchitecture, list(vnni.extra_features))


def test_unknown_target_lists_valid_choices(compose):
    with pytest.raises(MissingConfigException) as error:
        compose(["target=avx3"])
    message = str(error.value)
    for target in TARGETS:
        assert target in message
    assert "schema" not in message.split("Available options")[1].split("Config search path")[0]


def test_unknown_mode_lists_valid_choices(compose):
    with pytest.raises(MissingConfigException) as error:
        compose(["mode=int4"])
    assert "dynamic" in str(error.value) and "static" in str(error.value)


def test_bad_enum_value_names_the_choices(compose):
    with pytest.raises(ConfigCompositionException) as error:
        compose(["calibration.method=foo"])
    assert "minmax, entropy, percentile" in str(error.value.__cause__)


def test_overrides_reach_typed_fields(compose):
    cfg = compose(["calibration.n_samples=256", "mode=static", "calibration.method=entropy"])
    assert cfg.calibration.n_samples == 256
    assert cfg.calibration.method.value == "entropy"

"""Every YAML file under conf/ composes (or loads) into its typed schema; bad values fail listing the valid ones.

The files are found by globbing conf/, not listed here: a new option is tested the moment it exists, and
a YAML file no test knows how to load fails `test_every_yaml_file_under_conf_is_covered`.
"""
import dataclasses

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from pipeline.config import CONF_DIR
from pipeline.config.compose import NOT_GROUPS, config_groups
from pipeline.config.schema import GROUP_SCHEMAS, QuantgateConfig
from pipeline.isa.targets import PROFILES, load_profile, required_cpu_features


GROUPS = {group: choices for group, choices in config_groups().items() if not group.startswith("hydra/")}
TARGETS = GROUPS["target"]
MODES = GROUPS["mode"]
# What an option needs besides itself to be complete (values the schema cannot default).
COMPLETE = {("calibration", "files"): ["calibration.data_files=[data.csv]"],
            ("calibration", "hub"): ["calibration.hub_name=glue"],
            ("runtime", "custom"): ['runtime.requirements=["onnxruntime==1.16.3"]']}


def test_every_yaml_file_under_conf_is_covered():
    covered = {CONF_DIR / "config.yaml"}
    covered |= {CONF_DIR / group / f"{choice}.yaml" for group, choices in config_groups().items() for choice in choices}
    covered |= set((CONF_DIR / "cpu").glob("*.yaml")) | set((CONF_DIR / "waivers").glob("*.yaml"))
    covered |= set((CONF_DIR / "hydra" / "job_logging").glob("*.yaml"))  # tests/unit/project/test_run_logging.py
    assert set(CONF_DIR.rglob("*.yaml")) - covered == set()
    assert {p.name for p in CONF_DIR.iterdir() if p.is_dir()} <= {*GROUPS, *NOT_GROUPS}


@pytest.mark.parametrize("group, choice", [(g, c) for g, choices in GROUPS.items() for c in choices])
def test_every_option_composes_into_its_schema(compose, group, choice):
    cfg = compose([f"{group}={choice}", *COMPLETE.get((group, choice), [])])
    assert OmegaConf.missing_keys(cfg) == set()
    if group in GROUP_SCHEMAS:
        assert OmegaConf.get_type(cfg, group) is GROUP_SCHEMAS[group]
    typed = OmegaConf.to_object(cfg)  # every value converts into the dataclasses
    assert isinstance(typed, QuantgateConfig) and dataclasses.is_dataclass(typed.verify)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", MODES)
def test_every_target_and_mode_composes(compose, target, mode):
    from pipeline.config import rules
    from pipeline.config.schema import WEIGHT_ONLY_MODES
    # weight-only modes build decoders (model=hf model.task=text-generation); the others default to minilm
    decoder = ["model=hf", "model.task=text-generation", "model.name_or_path=some/decoder"] \
        if mode in WEIGHT_ONLY_MODES else []
    cfg = compose([f"target={target}", f"mode={mode}", *decoder])
    assert cfg.target.name == target
    assert cfg.mode.name.value == mode
    assert cfg.model.name == ("hf" if decoder else "minilm")
    features = required_cpu_features(cfg.target.microarchitecture, list(cfg.target.extra_features))
    assert features, "a target must require some CPU features"
    rules.check(cfg)  # no shipped combination breaks a cross-field rule


@pytest.mark.parametrize("target", TARGETS)
def test_every_profile_a_target_names_exists(compose, target):
    cfg = compose([f"target={target}"]).target
    for name in [cfg.floor_profile, *cfg.below_floor_profiles]:
        if name is not None:
            assert name in PROFILES and PROFILES[name].family == cfg.family


@pytest.mark.parametrize("path", sorted((CONF_DIR / "cpu").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_cpu_profile_loads_with_archspec_features(path):
    profile = load_profile(path)
    assert profile.name == path.stem and PROFILES[path.stem] == profile
    assert profile.family in ("x86_64", "aarch64")
    assert (profile.features() is None) == (profile.microarchitecture is None)


def test_a_cpu_profile_with_an_unknown_key_is_refused(tmp_path):
    from pipeline.isa.targets import CpuProfileError
    (tmp_path / "p.yaml").write_text("family: x86_64\nqemu_cpu: Haswell\nmicroarchitecture: haswell\ncores: 4\n")
    with pytest.raises(CpuProfileError, match=r"unknown key\(s\) \['cores'\]"):
        load_profile(tmp_path / "p.yaml")


def test_an_ssh_profile_loads_and_one_without_a_host_is_refused(tmp_path):
    from pipeline.isa.targets import CpuProfileError
    (tmp_path / "lab.yaml").write_text("kind: ssh\nhost: 10.0.0.17\nuser: qa\nport: 2222\n"
                                       "python: qemu-x86_64 -cpu Nehalem /usr/bin/python3\n")
    lab = load_profile(tmp_path / "lab.yaml")
    assert (lab.kind, lab.remote, lab.emulated, lab.port, lab.family) == ("ssh", True, False, 2222, "x86_64")
    assert lab.features() is None and lab.known_hosts == "~/.ssh/known_hosts"
    assert load_profile(CONF_DIR / "cpu" / "haswell.yaml").kind == "qemu"
    (tmp_path / "nohost.yaml").write_text("kind: ssh\nuser: qa\n")
    with pytest.raises(CpuProfileError, match=r"missing \['host'\]"):
        load_profile(tmp_path / "nohost.yaml")


def test_profiles_from_cpu_profile_dirs_are_known_to_verify(tmp_path, compose):
    from pipeline.config import rules
    from pipeline.errors import UsageError
    (tmp_path / "lab.yaml").write_text("kind: ssh\nhost: 10.0.0.17\n")
    rules.check_verify(compose(["target=avx2", f"verify.cpu_profile_dirs=['{tmp_path}']", "verify.extra_profiles=[lab]"]))
    assert PROFILES["lab"].host == "10.0.0.17"
    with pytest.raises(UsageError, match=r"verify.extra_profiles: unknown profile\(s\) \['lab'\]"):
        rules.check_verify(compose(["target=avx2", "verify.extra_profiles=[lab]"]))
    with pytest.raises(UsageError, match="no such folder"):
        rules.check_verify(compose(["target=avx2", f"verify.cpu_profile_dirs=['{tmp_path / 'absent'}']"]))


@pytest.mark.parametrize("path", sorted((CONF_DIR / "waivers").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_waivers_file_loads(path):
    from pipeline.release.signoff import load_waivers
    load_waivers(path)


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
        compose(["mode=int3"])
    assert "dynamic" in str(error.value) and "static" in str(error.value)


def test_bad_enum_value_names_the_choices(compose):
    with pytest.raises(ConfigCompositionException) as error:
        compose(["calibration.method=foo"])
    assert "minmax, entropy, percentile" in str(error.value.__cause__)


def test_overrides_reach_typed_fields(compose):
    cfg = compose(["calibration.n_samples=256", "mode=static", "calibration.method=entropy"])
    assert cfg.calibration.n_samples == 256
    assert cfg.calibration.method.value == "entropy"

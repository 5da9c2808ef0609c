"""The release experiment and every launcher config compose, and Hydra finds every launcher's plugin: joblib's and
submitit's installed, quantgate's Ray launcher from the checkout (hydra_plugins/quantgate_ray_launcher/)."""
import importlib.util
import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.config import CONF_DIR
from pipeline.config.compose import register_configs
from tests.conftest import REPO


LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "hydra_plugins.hydra_joblib_launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                       "hydra_plugins.hydra_submitit_launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                       "hydra_plugins.hydra_submitit_launcher"),
    # quantgate's own, on Ray's API: hydra-ray-launcher 1.2.2 does not install beside joblib and cannot join a
    # running Ray 2.x cluster (docs/guides/releases.md "Launchers: local, Slurm, Ray").
    "ray": ("hydra_plugins.quantgate_ray_launcher.ray_launcher.RayLauncher", "hydra_plugins.quantgate_ray_launcher"),
}


@pytest.fixture
def compose_hydra():
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda overrides: compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()


def test_every_launcher_file_is_tested():
    # LAUNCHERS holds what each file must compose to; every conf/hydra/launcher/*.yaml needs an entry.
    assert sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")) == sorted(LAUNCHERS)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_each_launcher_composes_with_the_release(compose_hydra, launcher):
    cfg = compose_hydra(["experiment=release", f"hydra/launcher={launcher}"])
    target, _ = LAUNCHERS[launcher]
    assert cfg.hydra.launcher._target_ == target
    assert set(cfg.hydra.sweeper.params) == {"model", "mode", "target"}
    assert cfg.artifacts_dir == "artifacts/candidate"
    if launcher.startswith("submitit"):
        assert str(cfg.hydra.launcher.submitit_folder).endswith("/.submitit/%j")
    if launcher == "ray":
        assert cfg.hydra.launcher.ray.init.address is None  # a local Ray unless told to join a cluster
        assert cfg.hydra.launcher.ray.remote.num_cpus == 2 and cfg.hydra.launcher.ray.remote.max_retries == 0
        assert "HF_HUB_OFFLINE" in cfg.hydra.launcher.env
        assert cfg.hydra.launcher.record_lost_tasks is True  # a dead worker is a `crashed` row, not a lost table


def test_installed_launcher_plugins_are_importable():
    # joblib and submitit are dependencies; ray comes with the test extra (and alone with `.[ray]`).
    for launcher in ("joblib", "submitit_local", "ray"):
        assert importlib.util.find_spec(LAUNCHERS[launcher][1]) is not None
    assert importlib.util.find_spec("ray") is not None


def test_hydra_discovers_the_ray_launcher_in_the_checkout(compose_hydra):
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert LAUNCHERS["ray"][0] in found and LAUNCHERS["joblib"][0] in found


def test_a_misspelt_ray_launcher_key_fails_against_its_schema(compose_hydra):
    from hydra.errors import ConfigCompositionException
    with pytest.raises(ConfigCompositionException):
        compose_hydra(["experiment=release", "hydra/launcher=ray", "hydra.launcher.ray.remot.num_cpus=1"])


def test_ray_tasks_get_this_checkout_and_the_drivers_environment(monkeypatch):
    from omegaconf import OmegaConf
    from hydra_plugins.quantgate_ray_launcher import _core
    from hydra_plugins.quantgate_ray_launcher.ray_launcher import RayLauncher
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    launcher = RayLauncher(ray=OmegaConf.create({"init": {"address": None}, "remote": {
        "num_cpus": 2, "memory": None, "runtime_env": {"env_vars": {"PYTHONPATH": "/opt/extra", "A": 1}}}}),
        env=["HF_HUB_OFFLINE", "HF_HOME"])
    options = _core.launch_options(launcher)
    assert options["num_cpus"] == 2 and "memory" not in options  # null options are Ray's defaults
    env_vars = options["runtime_env"]["env_vars"]
    assert env_vars["PYTHONPATH"].split(os.pathsep) == [str(_core.CHECKOUT), "/opt/extra"]
    assert _core.CHECKOUT == REPO  # the checkout the driver runs, whichever the venv points at
    assert env_vars["HF_HUB_OFFLINE"] == "1" and env_vars["A"] == "1" and "HF_HOME" not in env_vars


def test_release_defaults_to_joblib_and_a_small_matrix(compose_hydra):
    cfg = compose_hydra(["experiment=release"])
    assert cfg.hydra.launcher._target_ == LAUNCHERS["joblib"][0] and cfg.hydra.launcher.n_jobs == 2
    params = cfg.hydra.sweeper.params
    combinations = 1
    for key in ("model", "mode", "target"):
        combinations *= len(str(params[key]).split(","))
    assert combinations <= 8
    assert [c.get("_target_") for c in cfg.hydra.callbacks.values()] == ["pipeline.release.matrix.MatrixTable"]


def test_command_line_overrides_still_win_over_the_experiment(compose_hydra):
    cfg = compose_hydra(["experiment=release", "artifacts_dir=artifacts/rc7", "model=digits_cnn"])
    assert cfg.artifacts_dir == "artifacts/rc7" and cfg.model.name == "digits_cnn"

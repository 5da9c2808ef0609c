"""The release experiment and every launcher config compose, whether or not the launcher's plugin is installed."""
import importlib.util

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.config import CONF_DIR
from pipeline.config.compose import register_configs

# Our launcher files share the plugins' names, so Hydra validates them against the plugins' schemas
# and warns that this is deprecated (pipeline/__init__.py silences it; pytest resets filters per test).
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/\w+' is validated:UserWarning")

LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "hydra_plugins.hydra_joblib_launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                       "hydra_plugins.hydra_submitit_launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                       "hydra_plugins.hydra_submitit_launcher"),
    "ray": ("hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "hydra_plugins.hydra_ray_launcher"),
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
        assert "address" in cfg.hydra.launcher.ray.init


def test_installed_launcher_plugins_are_importable():
    # joblib and submitit are dependencies; Ray is an optional extra (`pip install -e '.[ray]'`).
    for launcher in ("joblib", "submitit_local"):
        assert importlib.util.find_spec(LAUNCHERS[launcher][1]) is not None


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

"""Composing the build's config outside a Hydra app (verify, audit, provenance, tests), and the config
groups a user chooses from (the folders of conf/ and their YAML options)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pipeline.config.schema import register_configs

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Folders under conf/ that are not config groups of the build (Hydra lists them as groups all the same).
NOT_GROUPS = {"hydra": "Hydra's own groups; hydra/launcher is listed on its own",
              "waivers": "a release's waivers, read by quantgate signoff",
              "cpu": "CPU profiles, read by pipeline.targets (verify.profiles=[...])"}
HYDRA_GROUPS = ("hydra/launcher",)  # Hydra's groups with options under conf/ that users choose


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides or []))
    finally:
        GlobalHydra.instance().clear()


# --- the config groups and their choices -------------------------------------------------------------
def default_choices() -> dict[str, str | None]:
    """The primary config's defaults list (conf/config.yaml): group -> default choice (None: nothing)."""
    import yaml
    entries = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    return {key: value for entry in entries if isinstance(entry, dict) for key, value in entry.items()}


def config_groups() -> dict[str, list[str]]:
    """Every config group a user chooses from, in the defaults list's order, with its choices (YAML stems)."""
    defaults = list(default_choices())
    folders = [p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS]
    ordered = sorted(folders, key=lambda name: (defaults.index(name) if name in defaults else len(defaults), name))
    return {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) for group in (*ordered, *HYDRA_GROUPS)}

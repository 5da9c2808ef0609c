"""Compose the Hydra config outside a Hydra app (the CLI's verify/inspect commands and the tests)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pipeline.schema import register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class QuantgateError(Exception):
    """A user error: printed as one clear message with a non-zero exit, never a traceback."""

    exit_code = 2


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides or []))
    finally:
        GlobalHydra.instance().clear()

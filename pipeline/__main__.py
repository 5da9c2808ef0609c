"""`python -m pipeline [hydra overrides]`: build (and verify) one artifact; --multirun for a sweep."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.config import CONF_DIR
from pipeline.config.schema import register_configs


# An absolute path: a relative one would resolve against the importing module's package when the
# app is started through `quantgate` (pipeline.cli) instead of `python -m pipeline`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def quantize(cfg: DictConfig) -> int:
    from pipeline.app import quantize_task

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One failed (or crashed) combination must not stop the others: record its outcome for the
        # table at the end of the sweep (pipeline/matrix.py) and return, never exit or raise.
        from pipeline.matrix import run_combination
        return run_combination(cfg, overrides)
    exit_code = quantize_task(cfg, overrides)
    if exit_code:
        sys.exit(exit_code)
    return exit_code


def main() -> None:
    register_configs()
    quantize()


if __name__ == "__main__":
    main()

"""`python -m pipeline [hydra overrides]`: build (and verify) one artifact; --multirun for a sweep."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.schema import register_configs


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def quantize(cfg: DictConfig) -> int:
    from pipeline.app import quantize_task

    hydra_cfg = HydraConfig.get()
    exit_code = quantize_task(cfg, list(hydra_cfg.overrides.task))
    # In a sweep one failed combination must not stop the others: report, do not exit.
    if exit_code and hydra_cfg.mode != RunMode.MULTIRUN:
        sys.exit(exit_code)
    return exit_code


def main() -> None:
    register_configs()
    quantize()


if __name__ == "__main__":
    main()

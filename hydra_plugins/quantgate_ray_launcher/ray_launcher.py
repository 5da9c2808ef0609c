"""The launcher class Hydra instantiates; Ray itself is imported only when a sweep is launched (_core.py)."""
from typing import List, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig, env: Optional[List[str]] = None, record_lost_tasks: bool = False) -> None:
        self.ray = ray
        self.env = list(env or [])
        self.record_lost_tasks = record_lost_tasks
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core
        return _core.launch(self, job_overrides, initial_job_idx)

"""The launcher's schema, registered as hydra/launcher `ray`: conf/hydra/launcher/ray.yaml of the same name is
validated against it when Hydra composes it (a misspelt key fails), as the joblib and submitit files are."""
from dataclasses import dataclass, field
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore


@dataclass
class RayConf:
    # Keyword arguments of ray.init() (null values are left out). address: null = Ray's default (RAY_ADDRESS,
    # else a cluster `ray start` started on this machine, else a new local one for the sweep); `auto` or
    # HOST:PORT = join that running cluster.
    init: Dict[str, Any] = field(default_factory=lambda: {"address": None})
    # Keyword arguments of @ray.remote for each combination's task (num_cpus, memory, max_retries, resources,
    # runtime_env, ...).
    remote: Dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1})


@dataclass
class QuantgateRayLauncherConf:
    _target_: str = "hydra_plugins.quantgate_ray_launcher.ray_launcher.RayLauncher"
    ray: RayConf = field(default_factory=RayConf)
    # Environment variables the tasks get from the process that started the sweep, where set there: the
    # workers of a cluster started elsewhere have the environment of its `ray start`, not the driver's.
    env: List[str] = field(default_factory=list)
    # A task Ray could not run to its end (its worker died: a segfault, an out-of-memory kill; a node lost):
    # false = the sweep fails once every other task has finished (Hydra's way); true = recorded in the job's
    # folder (ray_task_error.txt) and the sweep goes on to its end, its callbacks included.
    record_lost_tasks: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=QuantgateRayLauncherConf,
                             provider="quantgate_ray_launcher")

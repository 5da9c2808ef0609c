"""Launch a batch of combinations as Ray tasks, the way hydra-joblib-launcher and hydra-ray-launcher do: each
task sets up Hydra's globals from the driver's, composes its combination's config and runs Hydra's `run_job`.

What the workers need from the driver, given to them explicitly:
- the code: this checkout first on PYTHONPATH (runtime_env), so a worker imports the task function and this
  module from the same checkout as the driver, not from whatever the cluster's venv points at;
- the working directory: each task runs in the driver's, so relative paths (artifacts_dir, hydra.sweep.dir)
  land where they land with joblib; on a cluster it must exist on every node (a shared filesystem);
- the environment variables named in `env` (HF_HUB_OFFLINE, ...), where the driver has them.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from .ray_launcher import RayLauncher

log = logging.getLogger(__name__)

# The checkout this launcher (and the app) runs from: hydra_plugins/quantgate_ray_launcher/_core.py -> ../..
CHECKOUT = Path(__file__).resolve().parents[2]
TASK_FILE = "ray_task.json"  # in each job's output folder: which Ray task, node and process ran it
LOST_TASK_FILE = "ray_task_error.txt"  # instead, where Ray could not run the task to its end (record_lost_tasks)


def execute_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                task_function: TaskFunction, singleton_state: Dict[Any, Any], cwd: str) -> Tuple[JobReturn, dict]:
    """One combination, in a Ray worker: the body of hydra-joblib-launcher's execute_job, in the driver's cwd."""
    import ray

    context = ray.get_runtime_context()
    where = {"task_id": context.get_task_id(), "job_id": context.get_job_id(), "node_id": context.get_node_id(),
             "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(), "cwd": cwd}
    previous = os.getcwd()
    try:
        os.chdir(cwd)
    except OSError as error:
        raise RuntimeError(f"the sweep's working directory {cwd} is not on node {where['node_ip']}: a Ray cluster "
                           f"needs the checkout and the output folders on a filesystem its nodes share") from error
    try:
        setup_globals()
        Singleton.set_state(singleton_state)
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            # Like SLURM_JOB_ID with submitit: the id of what ran this combination, here the Ray task.
            sweep_config.hydra.job.id = where["task_id"]
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        if ret.hydra_cfg is not None:
            output_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
            (output_dir / TASK_FILE).write_text(json.dumps(where, indent=2) + "\n")
        return ret, where
    finally:
        os.chdir(previous)


def launch_options(launcher: RayLauncher) -> Dict[str, Any]:
    """@ray.remote's options for every combination: the configured ones, with the checkout on PYTHONPATH and
    the forwarded environment variables added to their runtime_env."""
    options = OmegaConf.to_container(launcher.ray.remote, resolve=True) or {}
    assert isinstance(options, dict)
    runtime_env = dict(options.pop("runtime_env", None) or {})
    env_vars = {name: os.environ[name] for name in launcher.env if name in os.environ}
    env_vars.update(runtime_env.get("env_vars") or {})
    env_vars["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env_vars.get("PYTHONPATH")) if p)
    runtime_env["env_vars"] = {name: str(value) for name, value in env_vars.items()}
    return {**{k: v for k, v in options.items() if v is not None}, "runtime_env": runtime_env}


def record_lost_task(launcher: RayLauncher, idx: int, overrides: Sequence[str], task_id: str,
                     error: Exception) -> JobReturn:
    """The job's output folder with LOST_TASK_FILE saying what Ray reported, and a completed JobReturn without a
    return value: what the app's task would have written there (quantgate's outcome.json) is missing, which is
    how the sweep's end tells (quantgate's matrix table: `crashed`, "died without recording an outcome")."""
    assert launcher.config is not None and launcher.hydra_context is not None
    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = task_id
        sweep_config.hydra.job.num = idx
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)  # hydra.sweep.subdir may interpolate hydra.job.*
    try:
        output_dir = Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir")),
                          str(OmegaConf.select(sweep_config, "hydra.sweep.subdir")))
    finally:
        HydraConfig.instance().cfg = saved
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / LOST_TASK_FILE).write_text(f"Ray task {task_id} (job {idx}: {' '.join(overrides)}) did not run "
                                             f"to its end:\n{type(error).__name__}: {error}\n")
    ret = JobReturn(overrides=list(overrides), working_dir=str(output_dir), status=JobStatus.COMPLETED)
    ret.return_value = None
    return ret


def launch(launcher: RayLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    import ray

    setup_globals()
    assert launcher.config is not None and launcher.task_function is not None and launcher.hydra_context is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    if ray.is_initialized():
        log.info("Ray is already initialized in this process: using it")
    else:
        init = OmegaConf.to_container(launcher.ray.init, resolve=True) or {}
        assert isinstance(init, dict)
        init = {key: value for key, value in init.items() if value is not None}
        # A Ray started here reports no usage statistics (quantgate needs no network), unless asked to.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        log.info(f"ray.init({', '.join(f'{k}={v!r}' for k, v in init.items())})")
        ray.init(**init)
    options = launch_options(launcher)
    log.info(f"Ray launcher: {len(job_overrides)} job(s), one Ray task each "
             f"({', '.join(f'{k}={v}' for k, v in options.items() if k != 'runtime_env')}); sweep output dir: {sweep_dir}")
    task = ray.remote(execute_job)
    # What every job shares goes to Ray's object store once, not once per task.
    shared = [ray.put(value) for value in (launcher.hydra_context, launcher.config, launcher.task_function,
                                           Singleton.get_state())]
    refs = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        # The task's name prefixes the lines its worker prints here: "(job 3 pid=...)".
        refs.append(task.options(**options, name=f"job {idx}").remote(idx, list(overrides), *shared, os.getcwd()))

    # Every task runs to its end whatever the others do. A task that Ray could not run to its end (a worker that
    # died, a node lost, a missing working directory) fails the sweep once all are done, or with
    # record_lost_tasks is recorded in its job's folder and the sweep goes on to its end (callbacks included).
    results = []
    try:
        for offset, (overrides, ref) in enumerate(zip(job_overrides, refs)):
            idx = initial_job_idx + offset
            try:
                ret, where = ray.get(ref)
            except ray.exceptions.RayError as error:
                log.error(f"#{idx} ({' '.join(filter_overrides(overrides))}) did not run to its end in Ray: "
                          f"{type(error).__name__}: {error}")
                if launcher.record_lost_tasks:
                    ret = record_lost_task(launcher, idx, overrides, ref.task_id().hex(), error)
                else:
                    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                    ret.return_value = error
            else:
                log.info(f"#{idx} ran as Ray task {where['task_id']} on {where['node_ip']} (pid {where['pid']})")
            results.append(ret)
    except BaseException:  # Ctrl-C or the like: do not leave the cluster busy with a sweep nobody waits for
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    return results

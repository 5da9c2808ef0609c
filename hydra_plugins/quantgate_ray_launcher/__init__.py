"""quantgate's Hydra launcher on Ray's own API (`hydra/launcher=ray`): one Ray task per combination of a
--multirun, each running Hydra's `run_job` for its combination, on this machine or on a running Ray cluster.

Why not hydra-ray-launcher 1.2.2, the latest: docs/guides/releases.md "Launchers: local, Slurm, Ray" and conf/hydra/launcher/ray.yaml.
A folder of the checkout, not an installed package: `hydra_plugins` is a namespace package (no __init__.py),
so Hydra's plugin scan finds this next to the installed joblib and submitit launchers.
"""

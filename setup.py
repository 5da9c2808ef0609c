"""quantgate's packages for setuptools (the rest of the metadata is pyproject.toml's [project]).

The wheel holds pipeline/, calibration/ and the Ray launcher (hydra_plugins/quantgate_ray_launcher/), and as
package data the two folders the code reads at run time: conf/ as pipeline/_conf/ and docs/schemas/ as
pipeline/_schemas/ (pipeline/paths.py finds them there when no checkout is around). A package_dir mapping,
not a copy at build time, so the folders stay where the checkout keeps them and nothing is generated into it;
here rather than in pyproject.toml because its [tool.setuptools] cannot add mapped packages to the ones found.
"""
from setuptools import find_namespace_packages, find_packages, setup

DATA_FOLDERS = {"pipeline._conf": "conf", "pipeline._schemas": "docs/schemas"}
# Every folder below them too (conf/cpu/, conf/hydra/launcher/, ...): setuptools ships the data files of the
# packages it is told about, and warns about each folder it is not.
DATA_PACKAGES = [f"{package}.{sub}" if sub else package for package, folder in DATA_FOLDERS.items()
                 for sub in ["", *find_namespace_packages(where=folder)]]

setup(
    packages=[*find_packages(include=["pipeline", "pipeline.*", "calibration", "calibration.*"]),
              *find_namespace_packages(include=["hydra_plugins.*", "pipeline.release.templates"]), *DATA_PACKAGES],
    package_dir=DATA_FOLDERS,
    package_data={"": ["*.yaml", "*.schema.json", "*.j2"]},
)

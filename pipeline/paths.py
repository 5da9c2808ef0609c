"""Where quantgate finds its own files: in a checkout (the Makefile's .venv) or installed from its wheel.

- `SOURCE_ROOT`: the folder holding the `pipeline` package (the checkout, or site-packages); code files by
  their relative names (`pipeline/builder/export.py`) lie under it either way.
- `CHECKOUT`: the git checkout quantgate runs from, or None when installed (provenance then records the package
  version instead of a commit).
- `CONF_DIR`, `SCHEMAS_DIR`: Hydra's config groups (conf/; conf/cpu/ holds the CPU profiles) and the JSON schemas
  (docs/schemas/): in a checkout those folders, in a wheel the same files as package data (pipeline/_conf/,
  pipeline/_schemas/: setup.py maps them there).
- `code_root()`: a folder holding quantgate's packages and nothing else, for children that run another
  interpreter (a runtime venv, the Arm guest) with it as working folder or PYTHONPATH: in a checkout the checkout,
  installed a folder of symlinks (site-packages itself would shadow that interpreter's own onnxruntime).
The guard (pipeline/guard/) is installed on its own and uses none of these."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
CODE_PACKAGES = ("pipeline", "calibration")  # what children import; hydra_plugins only the Hydra app


def _checkout(root: Path) -> Path | None:
    return root if (root / "pyproject.toml").is_file() and (root / "conf" / "config.yaml").is_file() else None


CHECKOUT = _checkout(SOURCE_ROOT)
PROJECT_ROOT = SOURCE_ROOT  # the checkout's name for SOURCE_ROOT (tests and older callers)
CONF_DIR = CHECKOUT / "conf" if CHECKOUT else PACKAGE_DIR / "_conf"
SCHEMAS_DIR = CHECKOUT / "docs" / "schemas" if CHECKOUT else PACKAGE_DIR / "_schemas"


@functools.cache
def code_root() -> Path:
    """The checkout, or (installed) ~/.cache/quantgate/code/<hash of SOURCE_ROOT>/ with a symlink per package."""
    if CHECKOUT:
        return CHECKOUT
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "quantgate" / "code" / hashlib.sha256(str(SOURCE_ROOT).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    for name in CODE_PACKAGES:
        link = folder / name
        if not link.is_symlink():
            try:
                link.symlink_to(SOURCE_ROOT / name, target_is_directory=True)
            except FileExistsError:  # another process made it meanwhile
                pass
    return folder

"""The fp32 reference of a transformers checkpoint, exported and fused once and reused by every later build of it.

Another target, mode or rebuild of the same checkpoint gets the same reference.onnx: the export (importing the
model's transformers code, loading the weights, TorchScript export, fusion) is about 8 s of a 20 s MiniLM build.
An entry is keyed by everything its bytes depend on: the checkpoint's files (sha256), its sentence head (the
pooling, from a subfolder), the model config, the runtime the graph is fitted to, the versions of torch,
transformers, onnx and onnxruntime, and quantgate's export code. So a reused reference is byte for byte the one
a fresh export writes.

Entries live in $QUANTGATE_REFERENCE_CACHE (default ~/.cache/quantgate/references); `reference_cache=false`
or QUANTGATE_REFERENCE_CACHE=off turns the cache off. An entry holds reference.onnx, its sidecar, the unfused
export and install.json (what the manifest takes, each file's sha256); every file's sha256 is checked before
each reuse, and a damaged entry is rebuilt.
The KEEP most recently used entries stay; older ones are removed when a new one is stored.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from pipeline.builder.checkpoints import weight_files
from pipeline.manifest import Manifest, sha256_file
from pipeline.paths import SOURCE_ROOT
from pipeline.runtimes.cache import COMPLETE, INSTALL_RECORD, build_once

ENV = "QUANTGATE_REFERENCE_CACHE"
KEEP = 8
# What a reference's bytes depend on besides the checkpoint and config: these packages and this code.
PACKAGES = ("torch", "transformers", "onnx", "onnxruntime")
EXPORT_CODE = ("pipeline/builder/export.py", "pipeline/builder/fuse.py", "pipeline/builder/family.py",
               "pipeline/builder/text_embedding_family.py", "pipeline/builder/hf_family.py",
               "pipeline/builder/checkpoints.py", "pipeline/builder/reproducible.py",
               "pipeline/builder/sentence_head.py", "pipeline/runtimes/venvs.py")
KEY_SCHEMA = "quantgate.reference-cache/1"


def cache_root() -> Path | None:
    """The cache folder, or None when QUANTGATE_REFERENCE_CACHE=off."""
    configured = os.environ.get(ENV, "")
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quantgate" / "references"


def usable_root(cfg, family, progress: Callable[[str], None]) -> Path | None:
    """The cache folder for this build, or None: off (reference_cache=false, QUANTGATE_REFERENCE_CACHE=off),
    not a reference quantgate exports from a checkpoint folder (a user's ONNX file is the reference already; a
    module from user code (model=torch) or a model the build trains (digits_cnn) is not identified by files),
    or a folder that cannot be written (said, and the build exports without it)."""
    root = cache_root()
    if root is None or not cfg.reference_cache or family.checkpoint_folder is None:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {root}")
    except OSError as error:
        progress(f"export: the reference cache {root} is unusable ({error}); exporting without it "
                 f"(set {ENV} to a writable folder, or reference_cache=false)")
        return None
    return root


def entry_key(cfg, family, runtime: dict) -> str:
    folder = Path(family.checkpoint_folder)
    weights = family.weights_sha256()
    weight_paths = set(weight_files(folder))  # in `weights`
    other_files = {path.name: sha256_file(path) for path in sorted(folder.iterdir())
                   if path.is_file() and path not in weight_paths}
    code = {name: sha256_file(SOURCE_ROOT / name) for name in EXPORT_CODE}
    described = {"schema": KEY_SCHEMA, "family": type(family).__name__,
                 "model": OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True),
                 "weights_sha256": weights, "checkpoint_files": other_files,
                 # the Pooling module's config lies in a subfolder (1_Pooling/config.json), outside checkpoint_files
                 "sentence_head": repr(family.sentence_head),
                 "runtime": {key: runtime.get(key) for key in ("name", "requirements", "versions", "max_opsets",
                                                               "max_ir_version")},
                 "packages": {name: _version(name) for name in PACKAGES}, "code": code}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _damage(folder: Path) -> str | None:
    """What makes a complete entry unusable, in words, or None."""
    try:
        record = json.loads((folder / INSTALL_RECORD).read_text())
        for name, digest in record["files"].items():
            if not (folder / name).is_file():
                return f"{name} is missing"
            if sha256_file(folder / name) != digest:
                return f"{name} does not match its sha256"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {INSTALL_RECORD} is unreadable ({error})"
    return None


class _NotStored(Exception):
    """The export succeeded but its files could not be written into the cache."""

    def __init__(self, record: dict, error: OSError):
        super().__init__(str(error))
        self.record, self.error = record, error


def reference(root: Path, cfg, manifest: Manifest, family, files: list[str], export: Callable[[], dict],
              progress: Callable[[str], None]) -> dict:
    """`files` (the reference and its debug files, relative to `manifest`'s folder) from the cache at `root`, or
    from `export()`, which writes them there and returns what the manifest needs (fusion, opset); that record,
    with "status": "reused", "built" (exported and stored), or "off" (exported; storing it failed, as said)."""
    key = entry_key(cfg, family, manifest.runtime)
    folder = root / key

    def build(work: Path) -> dict:
        record = export()
        try:
            work.mkdir(parents=True)
            for name in files:
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(manifest.path(name), work / name)
        except OSError as error:  # a full or read-only cache disk: the artifact's own disk may be fine
            raise _NotStored(record, error) from error
        return {**record, "files": {name: sha256_file(work / name) for name in files}}

    try:
        record = build_once(folder, build, f"reference cache {key[:12]}", progress, check=_damage)
    except _NotStored as failed:
        progress(f"export: could not store the reference in the cache {root} ({failed.error}); the build goes on "
                 f"without it (free space there, set {ENV} to another folder, or reference_cache=false)")
        return {**failed.record, "status": "off"}
    if record["status"] == "reused":
        for name in files:
            manifest.path(name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, manifest.path(name))
        os.utime(folder / COMPLETE)  # most recently used
    else:
        _prune(folder.parent, keep=KEEP)
    return record


def _prune(root: Path, keep: int) -> None:
    """Remove all but the `keep` most recently used complete entries (skipping one another process holds)."""
    entries = sorted((p for p in root.iterdir() if (p / COMPLETE).is_file()),
                     key=lambda p: (p / COMPLETE).stat().st_mtime, reverse=True)
    for stale in entries[keep:]:
        with open(root / f"{stale.name}.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(stale, ignore_errors=True)  # its lock file stays: a process may be waiting on it

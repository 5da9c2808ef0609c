"""The guard's table of artifact containers: what file a kind of artifact is, and how the guard reads and judges it.

A path names an ONNX model, a .pt2 package, or a folder holding one. Each container is a row of data (its model
file, suffix, stamp reader, guard and the `artifact_kind` its stamp must carry); the pipeline's registry of artifact
kinds (pipeline/kinds.py) builds on it, so this module stays the standard library only.

    ensure_can_run(path)    the container's guard (onnx.py or pt2.py): signature if asked, CPU, runtime
    read_stamp(path)        the quantgate.* keys, prefix removed ({} when the artifact carries none)
    container_of(path)      the row that reads `path` (a folder: the first model file it holds)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import onnx, pt2
from .stamp import GuardVerdict

ONNX, PT2 = "onnx", "pt2"


@dataclass(frozen=True)
class Container:
    """A file format the guard reads: its stamp and whether this host may run it."""

    name: str  # verify.json's artifact.kind: "onnx", "pt2"
    model_file: str  # in an artifact folder: model.onnx, model.pt2
    suffix: str
    read_stamp: Callable[[Path], dict]  # the quantgate.* keys, prefix removed
    # ensure(path, host_features, runtime, check_runtime, public_key) -> GuardVerdict, or ArtifactRefused/StampError
    ensure: Callable[..., GuardVerdict]
    stamp_kind: Optional[str] = None  # the stamp's `artifact_kind` it requires (None: the key is not written)


def _ensure_package(path, host_features, runtime, check_runtime, public_key) -> GuardVerdict:
    return pt2.ensure_can_run(path, host_features, check_runtime=check_runtime, public_key=public_key)


# The first row is the default: a file of no known suffix is read as ONNX.
CONTAINERS: dict[str, Container] = {
    ONNX: Container(ONNX, "model.onnx", ".onnx", onnx.read_onnx_stamp, onnx.ensure_can_run),
    PT2: Container(PT2, "model.pt2", ".pt2", pt2.read_package_stamp, _ensure_package,
                   stamp_kind=pt2.STAMP_KIND),
}
MODEL_FILES = {name: container.model_file for name, container in CONTAINERS.items()}


def register_container(container: Container) -> Container:
    """Add a container (a new file format) to the table; its name and suffix must be new."""
    taken = [c.name for c in CONTAINERS.values() if container.suffix == c.suffix or container.name == c.name]
    if taken:
        raise ValueError(f"container {container.name!r} ({container.suffix}) clashes with {taken[0]!r}")
    CONTAINERS[container.name] = container
    MODEL_FILES[container.name] = container.model_file
    return container


def container_of(path: str | Path) -> tuple[Container, Path]:
    """(container, file): a file by its suffix, anything unknown read as ONNX; a folder means its first model file
    (model.onnx, else model.pt2, as quantgate's artifact folders hold one of them)."""
    path = Path(path)
    rows = list(CONTAINERS.values())
    if path.is_dir():
        for container in rows:
            if (path / container.model_file).is_file():
                return container, path / container.model_file
        return rows[0], path / rows[0].model_file  # does not exist: its guard says so
    return next((c for c in rows if path.suffix == c.suffix), rows[0]), path


def artifact_kind(path: str | Path) -> tuple[str, Path]:
    """(container name, file) of `path` (container_of)."""
    container, path = container_of(path)
    return container.name, path


def ensure_can_run(path: str | Path, host_features: frozenset[str] | set[str] | None = None,
                   runtime: dict | None = None, check_runtime: bool = True,
                   public_key: str | Path | None = None) -> GuardVerdict:
    """Raise ArtifactRefused (or StampError) unless this host can run the artifact at `path`.

    With `public_key`, the artifact's folder must first carry a valid signature by that key over all
    its files. The CPU is checked next, with the standard library only; then, unless `check_runtime` is
    false, the runtime: the installed onnxruntime is asked what it loads (`runtime`: limits already
    probed, ONNX only), or the installed torch's version is compared with the package's."""
    container, path = container_of(path)
    return container.ensure(path, host_features, runtime, check_runtime, public_key)


def read_stamp(path: str | Path) -> dict[str, str]:
    """The quantgate.* keys of an artifact, prefix removed."""
    container, path = container_of(path)
    return container.read_stamp(path)

"""One entry for both artifact kinds: a path names an ONNX model, a .pt2 package, or a folder holding one.

    ensure_can_run(path)    the kind's guard (onnx.py or pt2.py): signature if asked, CPU, runtime
    read_stamp(path)        the quantgate.* keys, prefix removed ({} when the artifact carries none)
"""
from __future__ import annotations

from pathlib import Path

from . import onnx, pt2
from .stamp import GuardVerdict

ONNX, PT2 = "onnx", "pt2"
MODEL_FILES = {ONNX: "model.onnx", PT2: "model.pt2"}


def artifact_kind(path: str | Path) -> tuple[str, Path]:
    """(kind, file): a .pt2 file is a torch AOTInductor package, anything else is read as ONNX; a folder
    means its model.onnx, else its model.pt2 (as quantgate's artifact folders hold one of them)."""
    path = Path(path)
    if path.is_dir():
        for kind in (ONNX, PT2):
            if (path / MODEL_FILES[kind]).is_file():
                return kind, path / MODEL_FILES[kind]
        return ONNX, path / MODEL_FILES[ONNX]  # does not exist: its guard says so
    return (PT2 if path.suffix == ".pt2" else ONNX), path


def ensure_can_run(path: str | Path, host_features: frozenset[str] | set[str] | None = None,
                   runtime: dict | None = None, check_runtime: bool = True,
                   public_key: str | Path | None = None) -> GuardVerdict:
    """Raise ArtifactRefused (or StampError) unless this host can run the artifact at `path`.

    With `public_key`, the artifact's folder must first carry a valid signature by that key over all
    its files. The CPU is checked next, with the standard library only; then, unless `check_runtime` is
    false, the runtime: the installed onnxruntime is asked what it loads (`runtime`: limits already
    probed, ONNX only), or the installed torch's version is compared with the package's."""
    kind, path = artifact_kind(path)
    if kind == PT2:
        return pt2.ensure_can_run(path, host_features, check_runtime=check_runtime, public_key=public_key)
    return onnx.ensure_can_run(path, host_features, runtime, check_runtime, public_key)


def read_stamp(path: str | Path) -> dict[str, str]:
    """The quantgate.* keys of an artifact, prefix removed."""
    kind, path = artifact_kind(path)
    return pt2.read_package_stamp(path) if kind == PT2 else onnx.read_onnx_stamp(path)

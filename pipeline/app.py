"""The build task: stages in order into a staging folder, published by one rename when complete.

A folder `artifacts/<model>-<mode>-<target>/` either holds a complete build (manifest.json is
written last, and the folder appears by rename) or does not exist; a build killed half-way leaves
only a hidden `.<name>.staging-*` folder that the next build of that name removes.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pipeline.config import QuantgateError
from pipeline.manifest import BuildRecord, Manifest, _umask, sha256_file
from pipeline.targets import UnknownFeatureError, required_cpu_features

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_USER_ERROR = 0, 1, 2


def _value(item) -> str:
    return str(getattr(item, "value", item))


def artifact_name(cfg) -> str:
    # export=aoti builds sit beside the ONNX build of the same model, mode and target.
    suffix = "-aoti" if _value(getattr(cfg, "export", "onnx")) == "aoti" else ""
    return f"{cfg.model.name}-{_value(cfg.mode.name)}-{cfg.target.name}{suffix}"


def artifact_folder(cfg) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.artifacts_dir) / artifact_name(cfg)


def validate(cfg) -> None:
    """Every check that needs no model or data, so a bad config fails before any work."""
    from pipeline.stages.quantize import policy

    try:
        required_cpu_features(cfg.target.microarchitecture, list(cfg.target.extra_features))
    except UnknownFeatureError as error:
        raise QuantgateError(f"target {cfg.target.name}: {error}") from None
    if cfg.calibration.n_samples <= 0 or cfg.calibration.n_heldout <= 0:
        raise QuantgateError(f"calibration.n_samples={cfg.calibration.n_samples} and calibration.n_heldout="
                             f"{cfg.calibration.n_heldout} must both be positive integers")
    if _value(cfg.mode.name) == "dynamic" and _value(cfg.calibration.method) != "minmax":
        raise QuantgateError(f"calibration.method={_value(cfg.calibration.method)} only applies to mode=static "
                             f"(dynamic quantization computes ranges at run time); drop the override or use "
                             f"mode=static")
    policy(cfg)
    from pipeline import aoti
    aoti.validate(cfg)
    from pipeline.targets import PROFILES
    unknown = [name for name in (cfg.verify.profiles or []) if name not in PROFILES]
    if unknown:
        raise QuantgateError(f"verify.profiles: unknown profile(s) {unknown}; valid profiles: {', '.join(PROFILES)}")
    if cfg.model.name_or_path is not None:
        from pipeline.models import resolve_model_path
        resolve_model_path(cfg.model.name_or_path)
    _check_calibration_source(cfg)


def _check_calibration_source(cfg) -> None:
    """Read the calibration source before any export or training, so bad data fails in seconds."""
    from pipeline.models import model_family
    from pipeline.stages.calibrate import check_source_values
    check_source_values(model_family(cfg).data().calibration_pool)


@contextmanager
def build_lock(folder: Path):
    """One build per artifact folder at a time; a second one fails at once, naming the first."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise QuantgateError(f"another build (pid {holder}) is writing {folder}; wait for it to finish "
                                 f"or build elsewhere with out=PATH") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _remove_stale_staging(folder: Path) -> None:
    for stale in folder.parent.glob(f".{folder.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.parent.glob(f".{folder.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _publish(staging: Path, folder: Path) -> None:
    previous = None
    if folder.exists():
        previous = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.rename(folder, previous)
    os.rename(staging, folder)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _build_record(started: float, overrides: list[str]) -> BuildRecord:
    import archspec.cpu

    from pipeline.cpuid import host_features
    return BuildRecord(time_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       host=socket.gethostname(), host_microarchitecture=archspec.cpu.host().name,
                       host_cpu_features=sorted(host_features()), seconds=round(time.perf_counter() - started, 1),
                       config_overrides=list(overrides))


def _check_no_host_paths(staging: Path, folder: Path) -> None:
    """Same inputs, same bytes, in any folder: no published file may name a folder of this machine
    (the checkout, the venv, home, temp, the artifacts folder). manifest.json and verify.json may."""
    from pipeline import reproducible
    parents = (str(folder.parent.absolute()), os.path.realpath(folder.parent))
    found = reproducible.host_paths_in_folder(staging, extra_roots=parents)
    if found:
        raise RuntimeError("the build wrote absolute paths of this machine into the artifact, so it would differ "
                           "when built in another folder: " + "; ".join(f"{name}: {', '.join(roots)}"
                                                                       for name, roots in found.items()))


def build(cfg, overrides: list[str] | None = None) -> Manifest:
    """Run load, calibrate, quantize and stamp; return the manifest of the published folder."""
    from pipeline.stages import calibrate, export, gate, quantize, stamp

    validate(cfg)
    started = time.perf_counter()
    folder = artifact_folder(cfg)
    with build_lock(folder):
        _remove_stale_staging(folder)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.staging-"))
        staging.chmod(0o777 & ~_umask())
        try:
            manifest = Manifest(name=folder.name, model=cfg.model.name, mode=_value(cfg.mode.name),
                                target=cfg.target.name, artifact_dir=str(staging))
            from pipeline import aoti
            # export=aoti: quantize, compile, audit, gate and stamp a model.pt2 (pipeline/aoti.py).
            stages = (export, calibrate, aoti) if aoti.export_kind(cfg) == "aoti" else \
                (export, calibrate, quantize, gate, stamp)
            for stage in stages:
                manifest = stage.run(cfg, manifest)
            _check_no_host_paths(staging, folder)
            manifest.model_size_bytes = manifest.path(manifest.model_file).stat().st_size
            manifest.model_sha256 = sha256_file(manifest.path(manifest.model_file))
            manifest.build = _build_record(started, overrides or [])
            manifest.record_files()
            manifest.save()  # last: a folder with manifest.json is complete
            _publish(staging, folder)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise QuantgateError(f"could not write the artifact under {folder.parent}: {error.strerror} "
                                     f"(disk full or file size limit). Nothing was published; free space and "
                                     f"rebuild") from None
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    manifest.artifact_dir = str(folder)
    return manifest


def _headline_features(features: list[str]) -> list[str]:
    """The few features that tell CPUs apart (x86 vector extensions; every Arm feature)."""
    x86 = [f for f in features if f.startswith(("avx", "fma", "sse4"))]
    return x86 or features


def print_summary(manifest: Manifest) -> None:
    ratio = manifest.model_size_bytes / max(manifest.reference_size_bytes, 1)
    lines = [
        f"artifact   {manifest.folder}/{manifest.model_file}",
        f"target     {manifest.target} (needs {', '.join(_headline_features(manifest.required_cpu_features))})",
        f"size       {manifest.model_size_bytes / 1e6:.1f} MB int8 vs {manifest.reference_size_bytes / 1e6:.1f} MB fp32 ({ratio:.2f}x)",
        f"sha256     {manifest.model_sha256}",
        f"calibration {manifest.calibration.n} examples, sha256 {manifest.calibration.sha256[:16]}...",
    ]
    if manifest.verify_status:
        lines.append(f"verify     {manifest.verify_status} (details in {manifest.folder}/verify.json)")
    print("\n".join(lines), flush=True)


def quantize_task(cfg, overrides: list[str] | None = None) -> int:
    """Build, then verify unless verify.enabled=false. Returns the process exit code."""
    try:
        manifest = build(cfg, overrides)
        if cfg.verify.enabled:
            from pipeline import aoti, aoti_verify
            from pipeline.stages import verify
            manifest = (aoti_verify if aoti.export_kind(cfg) == "aoti" else verify).run(cfg, manifest)
    except QuantgateError as error:
        print(f"quantgate: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    print_summary(manifest)
    from pipeline.stages.verify import exit_code
    return exit_code(manifest.verify_status) if manifest.verify_status else EXIT_OK

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
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pipeline.errors import BuildFailed, ExitCode
from pipeline.manifest import BuildRecord, Manifest, _umask, sha256_file


def artifact_name(cfg) -> str:
    # export=aoti builds sit beside the ONNX build of the same model, mode and target.
    suffix = "-aoti" if cfg.export == "aoti" else ""
    return f"{cfg.model.name}-{cfg.mode.name}-{cfg.target.name}{suffix}"


def artifact_folder(cfg) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.artifacts_dir) / artifact_name(cfg)


def validate(cfg) -> None:
    """Every check that needs no model or data, so a bad config fails before any work."""
    from pipeline.config import rules
    rules.check(cfg)
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
            raise BuildFailed(f"another build (pid {holder}) is writing {folder}; wait for it to finish "
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
            manifest = Manifest(name=folder.name, model=cfg.model.name, mode=cfg.mode.name,
                                target=cfg.target.name, artifact_dir=str(staging))
            from pipeline import aoti
            # export=aoti: quantize, compile, audit, gate and stamp a model.pt2 (pipeline/aoti.py).
            stages = (export, calibrate, aoti) if cfg.export == "aoti" else \
                (export, calibrate, quantize, gate, stamp)
            for stage in stages:
                manifest = stage.run(cfg, manifest)
            manifest.model_size_bytes = manifest.path(manifest.model_file).stat().st_size
            manifest.model_sha256 = sha256_file(manifest.path(manifest.model_file))
            manifest.build = _build_record(started, overrides or [])
            manifest.record_files()
            manifest.save()  # last: a folder with manifest.json is complete
            _publish(staging, folder)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise BuildFailed(f"could not write the artifact under {folder.parent}: {error.strerror} "
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
    """Build, then verify unless verify.enabled=false. Returns the exit code of the verification's outcome
    (0 pass or skipped, 1 fail, 4 not verified); a refused build raises a QuantgateError."""
    manifest = build(cfg, overrides)
    if cfg.verify.enabled:
        from pipeline import aoti_verify
        from pipeline.stages import verify
        manifest = (aoti_verify if cfg.export == "aoti" else verify).run(cfg, manifest)
    print_summary(manifest)
    from pipeline.stages.verify import exit_code
    return exit_code(manifest.verify_status) if manifest.verify_status else ExitCode.OK

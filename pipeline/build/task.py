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

from pipeline.errors import BuildFailed, ExitCode, InputError, UsageError
from pipeline.manifest import BuildRecord, Manifest, _umask, sha256_file


def artifact_name(cfg) -> str:
    """<model>-<mode>-<target>, then `-<runtime>` for a build with RUNTIME= and `-aoti` for export=aoti:
    each sits beside the default build of the same model, mode and target, never over it."""
    from pipeline.runtimes.venvs import resolve
    runtime = resolve(cfg.runtime).folder_suffix
    suffix = "-aoti" if cfg.export == "aoti" else ""
    return f"{cfg.model.name}-{cfg.mode.name}-{cfg.target.name}{runtime}{suffix}"


def artifact_folder(cfg) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.artifacts_dir) / artifact_name(cfg)


def validate(cfg) -> None:
    """Every check that needs no model or data, so a bad config fails before any work."""
    from pipeline.config import rules
    rules.check(cfg)
    if cfg.model.name_or_path is not None:
        from pipeline.build.models import resolve_model_path
        resolve_model_path(cfg.model.name_or_path)
    _check_calibration_source(cfg)


def _check_calibration_source(cfg) -> None:
    """Read the calibration source before any export or training, so bad data fails in seconds."""
    from pipeline.build.models import model_family
    from pipeline.build.calibrate import check_source_values
    check_source_values(model_family(cfg).data())


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
    for pattern in (f".{folder.name}.old-*", f".{folder.name}.rejected-*"):
        for stale in folder.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def ours(folder: Path) -> bool:
    """Whether `folder` is provably a quantgate artifact folder: the only kind of folder a build replaces."""
    try:
        manifest = Manifest.load(folder)
    except InputError:
        return False
    return bool(manifest.model_file) and manifest.path(manifest.model_file).is_file()


def check_destination(folder: Path) -> None:
    """Refuse, before any work, to build over anything that is not one of quantgate's own artifact folders."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UsageError(f"{folder} exists and is not a folder; quantgate replaces only artifact folders it "
                             f"built itself: choose another out=PATH")
    if folder.is_dir() and any(folder.iterdir()) and not ours(folder):
        raise UsageError(f"{folder} is an existing folder that is not a quantgate artifact folder (no readable "
                             f"manifest.json beside its model); quantgate will not replace it: choose a new or empty "
                             f"out=PATH")


def verified(folder: Path) -> bool:
    """Whether `folder` holds an artifact whose verification passed."""
    from pipeline.verify.report import VERIFY_FILE, VerifyReport, VerifyReportError
    try:
        return ours(folder) and VerifyReport.load(folder / VERIFY_FILE).status == "pass"
    except VerifyReportError:
        return False


def _publish(staging: Path, folder: Path, manifest: Manifest, replace_verified: bool) -> Manifest:
    """Rename the staging folder into place. A verified artifact is never replaced by a build that failed
    or could not be verified unless `replace_verified`: that build is kept beside it, hidden, to inspect."""
    check_destination(folder)  # again: something may have appeared there during the build
    if manifest.verify_status not in ("", "skipped", "pass") and verified(folder) and not replace_verified:
        kept = folder.parent / f".{folder.name}.rejected-{os.getpid()}"
        os.rename(staging, kept)
        manifest.artifact_dir = str(kept)
        manifest.kept_previous = str(folder)
        return manifest
    previous = None
    if folder.exists():
        previous = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.rename(folder, previous)
    os.rename(staging, folder)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    manifest.artifact_dir = str(folder)
    return manifest


@contextmanager
def temporary_files_under(staging: Path):
    """Every temporary file of the build (ours and the libraries', through `tempfile`) goes under the staging
    folder: removed with it on every exit path, and by the next build after a kill."""
    scratch = staging / ".tmp"
    scratch.mkdir()
    previous = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)


def _build_record(started: float, overrides: list[str], stage_seconds: dict[str, float]) -> BuildRecord:
    import archspec.cpu

    from pipeline.guard.cpuid import host_features
    return BuildRecord(time_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       host=socket.gethostname(), host_microarchitecture=archspec.cpu.host().name,
                       host_cpu_features=sorted(host_features()), seconds=round(time.perf_counter() - started, 1),
                       config_overrides=list(overrides), stage_seconds=stage_seconds)


def _check_no_host_paths(staging: Path, folder: Path) -> None:
    """Same inputs, same bytes, in any folder: no published file may name a folder of this machine
    (the checkout, the venv, home, temp, the artifacts folder). manifest.json and verify.json may."""
    from pipeline.build import reproducible
    parents = (str(folder.parent.absolute()), os.path.realpath(folder.parent))
    found = reproducible.host_paths_in_folder(staging, extra_roots=parents)
    if found:
        raise RuntimeError("the build wrote absolute paths of this machine into the artifact, so it would differ "
                           "when built in another folder: " + "; ".join(f"{name}: {', '.join(roots)}"
                                                                       for name, roots in found.items()))


class _Stage:
    """A stage given as a function (`run(cfg, manifest) -> manifest`), named for stage_seconds."""

    def __init__(self, name: str, run):
        self.__name__, self.run = name, run


def build_stages(cfg) -> tuple:
    """The stages, each `run(cfg, manifest) -> manifest`, that build an artifact of this kind (cfg.export; weight-only
    decoders: mode=int4 | int8)."""
    from pipeline.build import aoti, calibrate, decoder, export as export_stage, gate, hub_files, quantize, stamp
    from pipeline.config.schema import WEIGHT_ONLY_MODES
    if cfg.mode.name in WEIGHT_ONLY_MODES:  # onnxruntime-genai's builder, the language-model gate, the stamp
        return (_Stage("export", decoder.export_run), _Stage("gate", decoder.gate_run),
                _Stage("stamp", decoder.stamp_run))
    return {
        # model.onnx, and for transformers checkpoints what Optimum and transformers load beside it
        "onnx": (export_stage, calibrate, quantize, gate, stamp, hub_files),
        # quantize, compile, audit, gate and stamp a model.pt2 (pipeline/build/aoti.py)
        "aoti": (export_stage, calibrate, aoti),
    }[cfg.export]


def build(cfg, overrides: list[str] | None = None, verify=None) -> Manifest:
    """Run load, calibrate, quantize and stamp, then `verify(manifest) -> manifest` (if given) on the staging
    folder, before anything is published; return the manifest of the published folder."""
    validate(cfg)
    started = time.perf_counter()
    folder = artifact_folder(cfg)
    check_destination(folder)
    with build_lock(folder):
        _remove_stale_staging(folder)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.staging-"))
        staging.chmod(0o777 & ~_umask())
        try:
            manifest = Manifest(name=folder.name, model=cfg.model.name, mode=cfg.mode.name,
                                target=cfg.target.name, artifact_dir=str(staging))
            stages = build_stages(cfg)
            stage_seconds: dict[str, float] = {}
            with temporary_files_under(staging):  # onnxruntime's quantizer writes ~90 MB of temporary models
                for stage in stages:
                    stage_started = time.perf_counter()
                    manifest = stage.run(cfg, manifest)
                    stage_seconds[stage.__name__.rsplit(".", 1)[-1]] = round(time.perf_counter() - stage_started, 2)
            _check_no_host_paths(staging, folder)
            manifest.model_size_bytes = model_bytes(manifest.path(manifest.model_file))
            manifest.model_sha256 = sha256_file(manifest.path(manifest.model_file))
            manifest.build = _build_record(started, overrides or [], stage_seconds)
            manifest.record_files()
            manifest.save()  # last: a folder with manifest.json is complete
            if verify is not None:
                # Its time is verify.json's wall_seconds: saving the manifest again would break the report's
                # binding to it (verify.json records manifest.json's sha256).
                manifest = verify(manifest, folder)
            manifest = _publish(staging, folder, manifest, bool(cfg.replace_verified))
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
    return manifest


def model_bytes(model: Path) -> int:
    """The model file's size with its external weights beside it (`<name>.data`, as onnxruntime-genai writes)."""
    data = model.with_name(model.name + ".data")
    return model.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _headline_features(features: list[str]) -> list[str]:
    """The few features that tell CPUs apart (x86 vector extensions; every Arm feature)."""
    x86 = [f for f in features if f.startswith(("avx", "fma", "sse4"))]
    return x86 or features


def print_summary(manifest: Manifest) -> None:
    ratio = manifest.model_size_bytes / max(manifest.reference_size_bytes, 1)
    lines = [
        f"artifact   {manifest.folder}/{manifest.model_file}",
        f"target     {manifest.target} (needs {', '.join(_headline_features(manifest.required_cpu_features))})",
        f"size       {manifest.model_size_bytes / 1e6:.1f} MB {manifest.mode} vs {manifest.reference_size_bytes / 1e6:.1f} MB fp32 ({ratio:.2f}x)",
        f"sha256     {manifest.model_sha256}",
        f"calibration {manifest.calibration.n} examples, sha256 {manifest.calibration.sha256[:16]}...",
    ]
    if manifest.verify_status:
        lines.append(f"verify     {manifest.verify_status} (details in {manifest.folder}/verify.json)")
    print("\n".join(lines), flush=True)


def quantize_task(cfg, overrides: list[str] | None = None) -> int:
    """Build, verify (unless verify.enabled=false) on the staging folder, then publish. Returns the exit code of
    the verification's outcome (0 pass or skipped, 1 fail, 4 not verified); a refused build raises a
    QuantgateError (pipeline.cli.run_command prints it and exits with its code)."""
    from pipeline.verify import stage as verify_stage

    def verify(manifest: Manifest, published_as: Path) -> Manifest:
        return verify_stage.run(cfg, manifest, shown_folder=published_as)

    manifest = build(cfg, overrides, verify if cfg.verify.enabled else None)
    if not cfg.verify.enabled:
        manifest.verify_status = "skipped"
        print("[quantgate] verify: skipped (verify.enabled=false)", file=sys.stderr, flush=True)
    print_summary(manifest)
    if getattr(manifest, "kept_previous", None):
        print(f"quantgate: verification {manifest.verify_status}: {manifest.kept_previous} still holds the previously "
              f"verified build, unchanged; the new build is kept at {manifest.artifact_dir} to inspect (replaced by "
              f"the next build). To publish it over the verified one anyway: replace_verified=true",
              file=sys.stderr, flush=True)
    return verify_stage.exit_code(manifest.verify_status) if manifest.verify_status not in ("", "skipped") else ExitCode.OK

"""The build task: stages in order into a staging folder, published by one rename when complete.

A folder `artifacts/<model>-<mode>-<target>/` either holds a complete build (manifest.json is
written last, and the folder appears by rename) or does not exist; a build killed half-way leaves
only a hidden `.<name>.staging-*` folder, announced by a marker file beside it, that the next build of
that name removes (it removes nothing it has no marker for).
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pipeline import kinds
from pipeline.errors import BuildFailed, ExitCode, InputError, UsageError
from pipeline.builder.leftovers import forget_leftover, leftover_path, remove_leftover, remove_leftovers
from pipeline.manifest import BuildRecord, Manifest, _umask, sha256_file


# A user's model (model=onnx, hf, torch) is named after itself, so two of one kind built one after the other land
# in two folders: the .onnx file's stem, the checkpoint folder's (or hub id's) last part, the factory's function.
USER_MODEL_NAMES = {
    "onnx": lambda model: Path(str(model.path or "")).stem,
    "hf": lambda model: Path(str(model.name_or_path or "").rstrip("/")).name,
    "torch": lambda model: str(model.factory or "").rpartition(":")[2],
}


def model_label(cfg) -> str:
    """The model's part of the folder name: a built-in model's name (a contract: `minilm`, `digits_cnn`), or a user
    model's own name."""
    name = str(cfg.model.name)
    label = USER_MODEL_NAMES[name](cfg.model) if name in USER_MODEL_NAMES else name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._-") or name


def artifact_name(cfg) -> str:
    """<model>-<mode>-<target>, then `-<runtime>` for a build with RUNTIME= and the kind's suffix (`-aoti`):
    each sits beside the default build of the same model, mode and target, never over it."""
    from pipeline.runtimes.venvs import resolve
    runtime = resolve(cfg.runtime).folder_suffix
    return f"{model_label(cfg)}-{cfg.mode.name}-{cfg.target.name}{runtime}{kinds.folder_suffix(cfg.export)}"


def artifact_folder(cfg) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.artifacts_dir) / artifact_name(cfg)


def validate(cfg) -> None:
    """Every check that needs no model or data, so a bad config fails before any work."""
    from pipeline.config import rules
    rules.check(cfg)
    if cfg.model.name_or_path is not None:
        from pipeline.builder.models import resolve_model_path
        resolve_model_path(cfg.model.name_or_path)
    _check_calibration_source(cfg)


def _check_calibration_source(cfg) -> None:
    """Read the calibration source before any export or training, so bad data fails in seconds."""
    from pipeline.builder.models import model_family
    from pipeline.builder.calibrate import check_source_values
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
        held = handle.read().strip()
        if held and not held.isdigit():  # not a lock quantgate wrote (it holds a pid): the user's file
            raise UsageError(f"{lock_path} exists and is not quantgate's lock file (it holds no pid); quantgate will "
                             f"not overwrite it: move it away, or build elsewhere with out=PATH")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


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


# Families whose weights are the user's files: a change of weights is another model. A torch factory (which may
# initialise at random) and a model quantgate trains are told apart by their source's name alone.
WEIGHED_FAMILIES = ("hf", "onnx", "text_embedding")


def _identity(cfg, source_name: str, weights_sha256: str) -> tuple[str, str]:
    return source_name, weights_sha256 if cfg.model.family in WEIGHED_FAMILIES else ""


def check_same_inputs(cfg, folder: Path, source: tuple[str, str]) -> None:
    """Refuse to replace an artifact built from another model (another file, checkpoint or weights) unless
    replace=true: two models of one name must not silently take each other's folder."""
    if cfg.replace or not ours(folder):
        return
    built = Manifest.load(folder)
    previous = _identity(cfg, built.source_model, built.source_weights_sha256)
    if previous[0] and previous != source:
        def words(identity):
            return identity[0] + (f", weights sha256 {identity[1][:16]}..." if identity[1] else "")
        raise UsageError(f"{folder} holds an artifact built from another model ({words(previous)}; this build: "
                         f"{words(source)}); quantgate will not replace it: build into another folder with out=PATH, "
                         f"or replace it with replace=true")


def check_verified_kept(folder: Path, verifying: bool, replace_verified: bool) -> None:
    """A build that will not be verified (verify.enabled=false) never replaces a verified artifact."""
    if not verifying and not replace_verified and verified(folder):
        raise UsageError(f"{folder} holds a verified artifact and this build would not be verified "
                         f"(verify.enabled=false), so it is not replaced: build with verification, into another "
                         f"folder (out=PATH), or replace it anyway with replace_verified=true")


def early_source(cfg) -> tuple[str, str] | None:
    """The model's identity (source name, weights sha256) before any work, for the families that read it from the
    user's files or module (a built-in model that trains has it only after training)."""
    if cfg.model.family not in ("hf", "onnx", "torch", "text_embedding"):
        return None
    from pipeline.builder.models import model_family
    family = model_family(cfg)
    return _identity(cfg, family.source_name, family.weights_sha256() if cfg.model.family in WEIGHED_FAMILIES else "")


def _publish(staging: Path, folder: Path, manifest: Manifest, replace_verified: bool) -> Manifest:
    """Rename the staging folder into place. A verified artifact is never replaced by a build that failed
    or could not be verified unless `replace_verified`: that build is kept beside it, hidden, to inspect."""
    check_destination(folder)  # again: something may have appeared there during the build
    if manifest.verify_status != "pass" and verified(folder) and not replace_verified:
        kept = leftover_path(folder, "rejected")
        os.rename(staging, kept)
        forget_leftover(staging)
        manifest.artifact_dir = str(kept)
        manifest.kept_previous = str(folder)
        return manifest
    previous = None
    if folder.exists():
        previous = leftover_path(folder, "old")
        os.rename(folder, previous)
    os.rename(staging, folder)
    forget_leftover(staging)
    if previous is not None:
        remove_leftover(previous)
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
    from pipeline.builder import reproducible
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


def _onnx_stages(cfg) -> tuple:
    """model.onnx, and for transformers checkpoints what Optimum and transformers load beside it; mode=auto
    quantizes, gates and times each candidate mode in one stage (pipeline/builder/auto.py)."""
    from pipeline.builder import auto, calibrate, export as export_stage, gate, hub_files, quantize, speed, stamp
    return (export_stage, calibrate, *((auto,) if cfg.mode.name == "auto" else (quantize, gate, speed)), stamp,
            hub_files)


def _aoti_stages(cfg) -> tuple:
    """Quantize, compile, audit, gate and stamp a model.pt2 (pipeline/builder/aoti.py)."""
    from pipeline.builder import aoti, calibrate, export as export_stage
    return export_stage, calibrate, aoti


def _decoder_stages(cfg) -> tuple:
    """onnxruntime-genai's builder, the language-model gate, the stamp (pipeline/builder/decoder.py)."""
    from pipeline.builder import decoder
    return _Stage("export", decoder.export_run), _Stage("gate", decoder.gate_run), _Stage("stamp", decoder.stamp_run)


# artifact kind -> stages(cfg) -> the stages, each `run(cfg, manifest) -> manifest`, that build it
kinds.register_handlers("build", {
    kinds.ONNX_QDQ.name: _onnx_stages, kinds.ONNX_QOPERATOR.name: _onnx_stages, kinds.AOTI_PT2.name: _aoti_stages,
    kinds.ONNX_INT4_WEIGHT_ONLY.name: _decoder_stages, kinds.ONNX_INT8_WEIGHT_ONLY.name: _decoder_stages})


def build_stages(cfg) -> tuple:
    """The stages that build an artifact of this config's kind (pipeline/kinds.py kind_for_config)."""
    return kinds.handler("build", kinds.kind_for_config(cfg))(cfg)


def build(cfg, overrides: list[str] | None = None, verify=None) -> Manifest:
    """Run load, calibrate, quantize and stamp, then `verify(manifest) -> manifest` (if given) on the staging
    folder, before anything is published; return the manifest of the published folder."""
    validate(cfg)
    started = time.perf_counter()
    folder = artifact_folder(cfg)
    check_destination(folder)
    check_verified_kept(folder, verify is not None, bool(cfg.replace_verified))
    source = early_source(cfg)
    if source is not None:
        check_same_inputs(cfg, folder, source)
    with build_lock(folder):
        remove_leftovers(folder)
        staging = leftover_path(folder, "staging")
        staging.mkdir(mode=0o777 & ~_umask())
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
            # again: it may have been built meanwhile
            check_same_inputs(cfg, folder, _identity(cfg, manifest.source_model, manifest.source_weights_sha256))
            manifest = _publish(staging, folder, manifest, bool(cfg.replace_verified))
        except OSError as error:
            remove_leftover(staging)
            if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise BuildFailed(f"could not write the artifact under {folder.parent}: {error.strerror} "
                                     f"(disk full or file size limit). Nothing was published; free space and "
                                     f"rebuild") from None
            raise
        except BaseException:
            remove_leftover(staging)
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
    if manifest.speed is not None:
        from pipeline.builder.speed import summary_line
        lines.append(f"speed      {summary_line(manifest.speed)}")
        lines += [f"WARNING    {warning}" for warning in manifest.speed.warnings.values()]
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
    if not cfg.verify.enabled and getattr(manifest, "kept_previous", None):  # it became verified during the build
        raise UsageError(f"{manifest.kept_previous} was verified while this build ran, and this build was not "
                         f"(verify.enabled=false), so it is not replaced; the new build is kept at "
                         f"{manifest.artifact_dir}. Build with verification, or with replace_verified=true")
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

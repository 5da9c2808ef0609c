"""The guard for torch AOTInductor packages (`model.pt2`): refuse before the library is mapped.

A .pt2 is a zip; quantgate stores its stamp as `<archive>/extra/quantgate_stamp.json` (the same
`quantgate.*` keys as an ONNX artifact's metadata_props, plus `artifact_kind` and
`audited_cpu_features`: what the machine code was measured to need). This reads it with zipfile and
compares it with CPUID, using the standard library only: on a CPU that lacks a feature even
`import numpy` or `import torch` may die, and `aoti_load_package` maps the package's library, whose
static initialisers already run the target's instructions.

    runner = load_package("model.pt2")      # ArtifactRefused on this CPU, else the loaded model
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .errors import ArtifactRefused, StampError, UnreadableArtifact
from .stamp import GuardVerdict, check_stamp, decode_stamp, unprefixed

STAMP_MEMBER = "quantgate_stamp.json"
STAMP_KIND = "aoti"  # the stamp's `artifact_kind`: an AOTInductor package
AUDITED_KEY = "audited_cpu_features"


def package_path(path: str | Path) -> Path:
    """An artifact folder means its model.pt2."""
    path = Path(path)
    return path / "model.pt2" if path.is_dir() else path


def read_package_stamp(path: str | Path) -> dict[str, str]:
    """The quantgate.* keys of a .pt2 package, prefix removed; {} when it carries none (or is no zip)."""
    path = package_path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.endswith(f"/extra/{STAMP_MEMBER}")]
            if not members:
                return {}
            data = archive.read(members[0])
    except (zipfile.BadZipFile, OSError) as error:
        raise UnreadableArtifact(f"{path} is not a readable .pt2 package ({error}); check the file") from None
    try:
        stamp = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise StampError(f"{path}: {members[0]} is not readable JSON ({error}); rebuild the package") from None
    if not isinstance(stamp, dict):
        raise StampError(f"{path}: {members[0]} is not a JSON object; rebuild the package")
    return unprefixed(stamp)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def check_package(stamp: dict[str, str], host_features=None, torch_version: str | None = "installed",
                  check_runtime: bool = True, artifact: str = "the package") -> GuardVerdict:
    """The ONNX guard's CPU check on the declared features, then the measured ones, then torch's version
    (`torch_version`: "installed" asks importlib.metadata, None means no torch; skipped without check_runtime)."""
    if host_features is None:
        from .cpuid import host_features as read_host_features
        host_features = read_host_features()
    verdict = check_stamp(stamp, host_features, artifact=artifact)
    values = decode_stamp(stamp, artifact)
    if AUDITED_KEY in values and verdict.can_run:
        # The declared set covers the measured one (the build fails otherwise); check the measured
        # set anyway: it is what the machine code will actually execute.
        missing = sorted(set(values[AUDITED_KEY]) - set(host_features))
        if missing:
            verdict.missing_cpu_features = missing
            verdict.problems.append(f"the package's machine code was audited to need {', '.join(missing)}, "
                                    f"which this CPU lacks")
    if check_runtime:
        if torch_version == "installed":
            from importlib import metadata  # 40 ms to import: only when asked (children start under QEMU)
            try:
                torch_version = metadata.version("torch")
            except metadata.PackageNotFoundError:
                torch_version = None
        built_with = values["versions"].get("torch", "")
        if torch_version is None:
            verdict.problems.append("torch is not installed; an AOTInductor package runs inside libtorch "
                                    f"(built with torch {built_with})")
        elif built_with and _version_tuple(torch_version) < _version_tuple(built_with):
            # The package calls libtorch's C shim; an older libtorch may lack functions it uses.
            verdict.problems.append(f"package built with torch {built_with}; this torch is {torch_version}, older; "
                                    f"upgrade torch or rebuild the package with this version")
    verdict.can_run = not verdict.problems
    return verdict


def ensure_can_run(path: str | Path, host_features=None, check_runtime: bool = True,
                   public_key: str | Path | None = None) -> GuardVerdict:
    """Raise ArtifactRefused (or StampError) unless this host can run the package at `path` (or a
    folder's model.pt2): its folder's signature with `public_key`, then the CPU, then the installed torch."""
    path = package_path(path)
    if not path.is_file():
        raise UnreadableArtifact(f"{path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise UnreadableArtifact(f"{path} is not a .pt2 package (not a zip archive); check the file")
    if public_key is not None:
        from .signature import check_signature
        check_signature(path, public_key)
    stamp = read_package_stamp(path)
    if not stamp:
        raise StampError(f"{path} carries no quantgate stamp (no extra/{STAMP_MEMBER} inside); "
                         f"build it with quantgate (export=aoti) or audit it with `make audit ARTIFACT={path}`")
    if stamp.get("artifact_kind") != STAMP_KIND:
        raise StampError(f"{path}: the stamp is not for an AOTInductor package (artifact_kind="
                         f"{stamp.get('artifact_kind')!r})")
    verdict = check_package(stamp, host_features, check_runtime=check_runtime, artifact=path.name)
    if not verdict.can_run:
        raise ArtifactRefused(f"{path.name}: {verdict.message()}")
    return verdict


def load_package(path: str | Path, host_features=None, public_key: str | Path | None = None):
    """The guard, then torch's loader: a refused package is never mapped."""
    ensure_can_run(path, host_features, public_key=public_key)
    import torch
    return torch._inductor.aoti_load_package(str(package_path(path)))

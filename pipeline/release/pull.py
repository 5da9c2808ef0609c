"""Pull one published artifact and verify it before anything is written where the user asked.

    quantgate pull REF --out DIR [--public-key keys/quantgate.pub] [--force]

(`make pull REF=localhost:5000/quantgate/minilm-dynamic-avx2:rc1 OUT=deploy/`) downloads every blob of
REF into a hidden staging folder inside DIR, checks each blob's sha256 against the OCI manifest, checks
the folder's model-signing signature with the public key (over every file) and its provenance, and only
then renames the folder to DIR/<artifact>/. Anything that does not verify leaves DIR as it was.
Exit codes: 0 pulled and verified, 2 refused (unreachable registry, no such tag, a digest or signature
that does not match, the folder already there without --force).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from pipeline.manifest import MANIFEST_FILE, Manifest, _umask
from pipeline.release import TrustError
from pipeline.release.oci import ANNOTATION, CONFIG_MEDIA_TYPE, TITLE, Registry, check_repository, split_reference
from pipeline.release.trust import Trust, verify_folder


def _safe_relative(title: str, reference: str) -> Path:
    path = PurePosixPath(title)
    if not title or path.is_absolute() or ".." in path.parts or "\\" in title:
        raise TrustError(f"{reference} names a file {title!r} outside its folder: refusing to write it")
    return Path(*path.parts)


def pull(reference: str, out: Path, public_key: Path, force: bool = False, progress=print) -> Path:
    """Download, verify, then place REF at `out/<artifact>/`; returns that folder."""
    host, repository, tag = split_reference(reference)
    trust = Trust.of(public_key)  # a public key, or a CA's certificate for certificate-signed artifacts
    trust.check()  # a missing or wrong key fails before any download
    client = Registry(host)
    client.ping()
    manifest = client.manifest(repository, tag)
    if manifest is None:
        raise TrustError(f"{reference} does not exist in the registry (no such repository or tag): check REF, or "
                         f"publish the release (`make publish`)")
    if (manifest.get("config") or {}).get("mediaType") != CONFIG_MEDIA_TYPE:
        raise TrustError(f"{reference} is not a quantgate artifact (config media type "
                         f"{(manifest.get('config') or {}).get('mediaType')!r}, expected {CONFIG_MEDIA_TYPE})")
    name = (manifest.get("annotations") or {}).get(f"{ANNOTATION}artifact") or repository.rsplit("/", 1)[-1]
    check_repository(name)
    destination = Path(out) / name
    if destination.exists() and not force:
        raise TrustError(f"{destination} already exists: pull into another OUT=, remove it, or replace it with "
                         f"--force (`make pull FORCE=1`)")
    Path(out).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.pull-"))  # hidden, beside the destination
    staging = scratch / name  # named as the artifact: messages name it, not the scratch folder
    try:
        staging.mkdir(mode=0o777 & ~_umask())
        config_path = scratch / "config.json"
        blobs = [(manifest["config"], config_path)]
        for layer in manifest.get("layers", []):
            relative = _safe_relative((layer.get("annotations") or {}).get(TITLE, ""), reference)
            blobs.append((layer, staging / relative))
        for descriptor, path in blobs:
            path.parent.mkdir(parents=True, exist_ok=True)
            received = client.download(repository, descriptor["digest"], path)
            expected = descriptor["digest"].removeprefix("sha256:")
            if received != expected or path.stat().st_size != descriptor["size"]:
                raise TrustError(f"{path.name if path != config_path else 'the config'} from {reference} has sha256 "
                                 f"{received[:16]}... ({path.stat().st_size} bytes) but the manifest says "
                                 f"{expected[:16]}... ({descriptor['size']} bytes): the registry's copy is damaged or "
                                 f"was tampered with; nothing was written to {out}")
        config_path.unlink()
        if not (staging / MANIFEST_FILE).is_file():
            raise TrustError(f"{reference} has no {MANIFEST_FILE}: not a complete quantgate artifact folder")
        result = verify_folder(staging, trust)
        changed = Manifest.load(staging).tampered_files()
        if changed:  # cannot happen with a valid signature over these files; kept as a second check
            raise TrustError(f"{reference}: {', '.join(changed)} differ from the artifact's manifest.json")
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    progress(f"pulled {reference} into {destination}: {result['files']} files, every sha256 and the signature "
             f"verified ({result['signer']}), provenance matches")
    return destination

"""Publish a ready, signed release to an OCI registry with ORAS: one OCI artifact per artifact folder.

    quantgate publish --release NAME --registry HOST[:PORT][/NAMESPACE]
        [--artifacts-dir artifacts/NAME] [--report reports/NAME] [--public-key keys/quantgate.pub] [--force]

(`make publish RELEASE=rc1 REGISTRY=localhost:5000/quantgate`) pushes `artifacts/NAME/<artifact>/` to
`<registry>/<artifact>:NAME`. Only a `ready` release publishes, and only signed: the release is judged
again with signatures required and checked with the public key. Before anything is pushed, every tag is
looked up: a tag that already holds other content is refused unless --force (the same content is
fine: publishing is idempotent). Then every blob of every artifact is uploaded, and only then the
manifests, which create the tags: a push interrupted half-way leaves blobs nobody names, never a tag
pointing at half an artifact; publishing again reuses the blobs already there.
Exit codes: 0 published, 2 refused (blocked or unsigned release, registry down or refusing, tag conflict).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.manifest import Manifest
from pipeline.release import PROVENANCE_FILE, SIGNATURE_FILE, TrustError
from pipeline.release.evidence import artifact_stamp
from pipeline.release.lock import release_lock
from pipeline.release.oci import (ANNOTATION, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, TITLE, Registry,
                                  check_tag, media_type, split_registry)
from pipeline.release.sign import judge
from pipeline.release.trust import Trust

# Stamp keys copied into the manifest's annotations (values are strings already; JSON where nested).
STAMP_ANNOTATIONS = ("target_isa", "required_cpu_features", "mode", "quant_format", "weight_type",
                     "activation_type", "per_channel", "reduce_range", "opset", "versions", "source_model",
                     "calibration", "config_sha256", "runtime")


@dataclasses.dataclass
class Blob:
    path: Path
    descriptor: dict[str, Any]


@dataclasses.dataclass
class Artifact:
    """One artifact folder, ready to push: its blobs, config and manifest."""

    name: str
    repository: str
    tag: str
    config: Blob
    layers: list[Blob]
    manifest: dict[str, Any]

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def _descriptor(path: Path, media: str, title: str | None = None) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    descriptor = {"mediaType": media, "digest": f"sha256:{digest}", "size": path.stat().st_size}
    if title:
        descriptor["annotations"] = {TITLE: title}
    return descriptor


def annotations(manifest: Manifest, release: str) -> dict[str, str]:
    """The stamp and the release, as OCI annotations (strings only; deterministic: no push time)."""
    values = {"org.opencontainers.image.title": manifest.name, "org.opencontainers.image.version": release,
              f"{ANNOTATION}release": release, f"{ANNOTATION}artifact": manifest.name,
              f"{ANNOTATION}model": manifest.model, f"{ANNOTATION}model_file": manifest.model_file,
              f"{ANNOTATION}model_sha256": manifest.model_sha256, f"{ANNOTATION}verdict": "ready",
              f"{ANNOTATION}signature": SIGNATURE_FILE, f"{ANNOTATION}provenance": PROVENANCE_FILE}
    if manifest.build is not None:
        values["org.opencontainers.image.created"] = manifest.build.time_utc
    stamp = artifact_stamp(manifest)
    for key in STAMP_ANNOTATIONS:
        if key in stamp:
            values[f"{ANNOTATION}{key}"] = stamp[key]
    if f"{ANNOTATION}target_isa" not in values:
        values[f"{ANNOTATION}target_isa"] = manifest.target
    if f"{ANNOTATION}required_cpu_features" not in values:
        values[f"{ANNOTATION}required_cpu_features"] = json.dumps(manifest.required_cpu_features)
    return values


def prepare(folder: Path, release: str, namespace: str, scratch: Path) -> Artifact:
    """Descriptors of every file in the folder, the config blob (written to `scratch`) and the manifest."""
    manifest = Manifest.load(folder)
    labels = annotations(manifest, release)
    files = sorted(p for p in folder.rglob("*") if p.is_file())  # every file: the signature covers them all
    layers = [Blob(p, _descriptor(p, media_type(p.relative_to(folder).as_posix()), p.relative_to(folder).as_posix()))
              for p in files]
    config_path = scratch / f"{folder.name}.config.json"
    config = {"schema": "quantgate.oci-config/1", "artifact": manifest.name, "release": release,
              "annotations": labels, "files": {b.descriptor["annotations"][TITLE]: b.descriptor["digest"]
                                               for b in layers}}
    config_path.write_bytes(json.dumps(config, indent=2, sort_keys=True).encode())
    config_blob = Blob(config_path, _descriptor(config_path, CONFIG_MEDIA_TYPE))
    oci_manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ARTIFACT_TYPE,
                    "config": config_blob.descriptor, "layers": [b.descriptor for b in layers],
                    "annotations": labels}
    repository = f"{namespace}/{folder.name}" if namespace else folder.name
    return Artifact(folder.name, repository, check_tag(release), config_blob, layers, oci_manifest)


def publish_release(release: str, release_dir: Path, report_dir: Path, registry: str, public_key: Path,
                    force: bool = False, waivers: Path | None = None, progress=print) -> list[dict[str, Any]]:
    """Push every artifact of a ready, signed release; returns one record per artifact. One publish of a release
    at a time (pipeline/release/lock.py): a second is refused, naming the first."""
    with release_lock(release_dir, "publish"):
        return _publish(release, release_dir, report_dir, registry, public_key, force, waivers, progress)


def _publish(release: str, release_dir: Path, report_dir: Path, registry: str, public_key: Path, force: bool,
             waivers: Path | None, progress) -> list[dict[str, Any]]:
    host, namespace = split_registry(registry)
    check_tag(release)
    Trust.of(public_key).check()  # a clear error for a missing or wrong key, before judging
    report = judge(release, release_dir, report_dir, waivers, public_key=public_key, require_signatures=True)
    client = Registry(host)
    client.ping()
    with tempfile.TemporaryDirectory(prefix="quantgate-publish-") as scratch:
        artifacts = [prepare(Path(facts["folder"]), release, namespace, Path(scratch)) for facts in report["artifacts"]]
        # 1. Every tag first: refuse a conflict before anything is pushed.
        same, conflicts = set(), []
        for artifact in artifacts:
            existing = client.manifest(artifact.repository, artifact.tag)
            if existing is None:
                continue
            if existing == artifact.manifest:
                same.add(artifact.name)
            elif not force:
                conflicts.append(f"{host}/{artifact.reference}")
        if conflicts:
            raise TrustError(f"tag(s) already published with other content: {', '.join(conflicts)}; nothing was "
                             f"pushed. Publish under a new release name, or replace them with --force (`make publish "
                             f"FORCE=1`)")
        # 2. Every blob of every artifact, then 3. the manifests (the tags), last.
        for artifact in artifacts:
            if artifact.name in same:
                continue
            for blob in [*artifact.layers, artifact.config]:
                uploaded = client.upload(artifact.repository, blob.path, blob.descriptor)
                title = (blob.descriptor.get("annotations") or {}).get(TITLE, "config")
                progress(f"  {'uploaded' if uploaded else 'present '} {artifact.repository} {title} "
                         f"({blob.descriptor['size']} bytes)")
        records = []
        for artifact in artifacts:
            digest = None if artifact.name in same else \
                client.put_manifest(artifact.repository, artifact.tag, artifact.manifest)
            records.append({"artifact": artifact.name, "reference": f"{host}/{artifact.reference}",
                            "files": len(artifact.layers), "unchanged": artifact.name in same,
                            "manifest_digest": digest})
            progress(f"published {host}/{artifact.reference}" + (" (already there, same content)"
                                                                   if artifact.name in same else ""))
    return records

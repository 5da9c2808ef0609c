"""Build provenance: an in-toto statement with a SLSA provenance v1 predicate per artifact folder, DSSE-signed.

    quantgate provenance PATH [--public-key keys/quantgate.pub] [--json]

prints the statement of the artifact folder at PATH (or the folder of PATH, a file in it) and checks it
against the files: every subject's sha256 must match, and no file may be there that it does not name.
With --public-key it also checks the DSSE signature. Exit 0 when everything matches, 1 when not, 2 on a
usage error (no such folder, no provenance, an unreadable key).

The statement is made with the in-toto attestation library (`in_toto_attestation.v1` Statement and
ResourceDescriptor, the SLSA `provenance.v1` protobuf messages) and signed with securesystemslib's DSSE
envelope, by the same key that signs the folder (`make sign` writes it before the folder signature, which
therefore covers it too). What it records:

- subjects: every file of the artifact folder (model, reference, inputs, manifest, verify.json, the
  signoff) with its sha256;
- buildDefinition: quantgate's build type, the external parameters (the Hydra overrides the build was
  run with and the full composed config, checked against the manifest's config_sha256, the target, mode,
  model and release), and the resolved dependencies: quantgate's source (git commit), the source model's
  weights (sha256), the calibration sample and the held-out split (sha256), and every installed Python
  package with its version;
- runDetails: the builder (quantgate's version, the build host's CPU microarchitecture and features, the
  OS), and when the build started and finished.
"""
from __future__ import annotations

import json
import platform
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.builder.stamp import config_sha256
from pipeline.config import compose_config
from pipeline.manifest import Manifest, atomic_write_bytes, sha256_file
from pipeline.paths import CHECKOUT
from pipeline.release import PROVENANCE_FILE, SIGNATURE_FILE, TrustError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "urn:quantgate:build-type:artifact-folder:v1"
BUILDER_ID = "urn:quantgate:builder:local"
# Verifying the folder needs these left out: they are written after (provenance) or over (signature) it.
NOT_SUBJECTS = (PROVENANCE_FILE, SIGNATURE_FILE)


def subject_files(folder: Path) -> list[str]:
    """Every regular file of the folder (relative paths, sorted) that the statement names."""
    names = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative not in NOT_SUBJECTS and not any(p.startswith(".") for p in path.parts[len(folder.parts):]):
            names.append(relative)
    return names


def installed_packages() -> list[tuple[str, str]]:
    packages = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            packages[name.lower().replace("_", "-")] = distribution.version
    return sorted(packages.items())


def quantgate_source() -> dict[str, Any]:
    """The git commit of this quantgate checkout, and whether its tracked files differ from it. An installed
    quantgate has no commit (a git repository around its site-packages is another project's): its version says."""
    if CHECKOUT is None:
        return {"commit": None, "dirty": None, "note": "not a git checkout (an installed quantgate)"}

    def git(*args):
        return subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None, "note": "git is not available"}
    if head.returncode != 0:
        return {"commit": None, "dirty": None, "note": "not a git checkout (an installed quantgate)"}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def build_config(manifest: Manifest) -> tuple[dict | None, str]:
    """The full config the build composed, recomposed from its overrides and checked against config_sha256."""
    if manifest.build is None or not manifest.config_sha256:
        return None, "the manifest records no build overrides or config_sha256 (not built by `quantgate build`)"
    from omegaconf import OmegaConf
    try:
        cfg = compose_config(manifest.build.config_overrides)
    except Exception as error:  # noqa: BLE001 - any composition failure means: cannot reproduce
        raise TrustError(f"cannot recompose the build's config from its overrides {manifest.build.config_overrides} "
                         f"({type(error).__name__}: {error}): make provenance from the quantgate commit that built "
                         f"it, or rebuild") from None
    if config_sha256(cfg) != manifest.config_sha256:
        raise TrustError(f"the config recomposed from the build's overrides has another sha256 than the one the "
                         f"build recorded ({manifest.config_sha256[:12]}...): conf/ or the code changed since the "
                         f"build; make provenance from the quantgate commit that built it, or rebuild")
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "recomposed from the overrides; its " \
        "sha256 (artifact-relevant keys) matches the build's config_sha256"


def _check_environment(manifest: Manifest) -> None:
    """The packages named must be the ones that built it: the stamp's versions against what is installed."""
    stamped = json.loads(manifest.stamp.get("versions", "{}")) if manifest.stamp else {}
    drift = []
    for package, version in stamped.items():
        if package == "python":
            installed = platform.python_version()
        else:
            try:
                installed = metadata.version(package)
            except metadata.PackageNotFoundError:
                installed = "not installed"
        if version != installed and version != "not installed":
            drift.append(f"{package} {version} at build, {installed} now")
    if drift:
        raise TrustError(f"this environment is not the one that built {manifest.folder.name} ({'; '.join(drift)}): "
                         f"the provenance would name the wrong packages; sign in the environment that built it, "
                         f"or rebuild")


def _descriptor(**fields):
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    return ResourceDescriptor(**fields).pb


def build_statement(folder: Path, release: str | None = None):
    """The in-toto Statement (in_toto_attestation.v1.statement.Statement) for an artifact folder."""
    from google.protobuf import json_format
    from google.protobuf.timestamp_pb2 import Timestamp
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1.statement import Statement

    folder = Path(folder)
    manifest = Manifest.load(folder)
    changed = manifest.tampered_files()
    if changed:
        raise TrustError(f"{folder.name}: {', '.join(changed)} changed after the build (sha256 differs from "
                         f"manifest.json): provenance cannot vouch for it; rebuild")
    _check_environment(manifest)
    config, config_note = build_config(manifest)

    subjects = [_descriptor(name=name, digest={"sha256": sha256_file(folder / name)}) for name in subject_files(folder)]
    source = quantgate_source()
    dependencies = []
    if source["commit"]:
        dependencies.append(_descriptor(name="quantgate", uri=f"git+file://{CHECKOUT}",
                                        digest={"gitCommit": source["commit"]},
                                        annotations={"dirty": source["dirty"], "recorded": "when the provenance "
                                                     "was written (the build's own commit is not in the manifest)"}))
    else:  # an installed quantgate: its version is all there is
        dependencies.append(_descriptor(name="quantgate", uri=f"pkg:pypi/quantgate@{_version('quantgate')}",
                                        annotations={"note": source["note"]}))
    if manifest.source_weights_sha256 or manifest.source_model:
        dependencies.append(_descriptor(name=f"source-model:{manifest.source_model or manifest.model}",
                                        digest={"sha256": manifest.source_weights_sha256} if
                                        manifest.source_weights_sha256 else None,
                                        annotations={"role": "the source model's weights"}))
    if manifest.calibration is not None:
        calibration = manifest.calibration
        common = {"dataset": calibration.dataset, "split": calibration.split, "seed": calibration.seed}
        dependencies.append(_descriptor(name=f"calibration-sample:{calibration.dataset}",
                                        digest={"sha256": calibration.sha256},
                                        annotations=common | {"role": "calibration sample", "n": calibration.n,
                                                              "method": calibration.method}))
        dependencies.append(_descriptor(name=f"heldout-split:{calibration.dataset}",
                                        digest={"sha256": calibration.heldout_sha256},
                                        annotations=common | {"role": "held-out split (verification)",
                                                              "n": calibration.n_heldout}))
    dependencies += [_descriptor(name=f"pypi:{name}", uri=f"pkg:pypi/{name}@{version}",
                                 annotations={"version": version}) for name, version in installed_packages()]

    build = manifest.build
    external = {"artifact": manifest.name, "model": manifest.model, "mode": manifest.mode,
                "target": manifest.target, "release": release, "config_overrides": build.config_overrides if build else [],
                "config": config, "config_sha256": manifest.config_sha256, "config_note": config_note}
    definition = provenance_pb2.BuildDefinition(build_type=BUILD_TYPE, resolved_dependencies=dependencies)
    definition.external_parameters.update(json.loads(json.dumps(external)))
    definition.internal_parameters.update({"stamp": {k: v for k, v in sorted((manifest.stamp or {}).items())},
                                           "required_cpu_features": manifest.required_cpu_features})
    versions = json.loads((manifest.stamp or {}).get("versions", "{}"))
    builder = provenance_pb2.Builder(id=BUILDER_ID, version={
        "quantgate": versions.get("quantgate") or _version("quantgate"),
        "python": versions.get("python") or platform.python_version(),
        "os": platform.platform(),
        "host": build.host if build else "",
        "cpu_microarchitecture": build.host_microarchitecture if build else "",
        "cpu_features": " ".join(build.host_cpu_features) if build else "",
        "provenance_written_on": socket.gethostname(),
    })
    metadata_pb = provenance_pb2.BuildMetadata(invocation_id=f"{manifest.name}@{build.time_utc if build else ''}")
    if build:
        finished = datetime.fromisoformat(build.time_utc)
        metadata_pb.finished_on.CopyFrom(_timestamp(Timestamp, finished))
        metadata_pb.started_on.CopyFrom(_timestamp(Timestamp, finished - timedelta(seconds=build.seconds)))
    predicate = provenance_pb2.Provenance(build_definition=definition,
                                          run_details=provenance_pb2.RunDetails(builder=builder, metadata=metadata_pb))
    statement = Statement(subjects, PREDICATE_TYPE, json_format.MessageToDict(predicate))
    statement.validate()
    return statement


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _timestamp(kind, moment: datetime):
    stamp = kind()
    stamp.FromDatetime(moment.astimezone(timezone.utc))
    return stamp


def statement_json(statement) -> dict[str, Any]:
    from google.protobuf import json_format
    return json_format.MessageToDict(statement.pb)


def write_provenance(folder: Path, signing_key, release: str | None = None) -> Path:
    """Write `provenance.intoto.json`: the DSSE envelope (signed by `signing_key`) of the statement."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    statement = build_statement(folder, release)
    payload = json.dumps(statement_json(statement), sort_keys=True, separators=(",", ":")).encode()
    envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(CryptoSigner(signing_key.private_key))
    path = Path(folder) / PROVENANCE_FILE
    atomic_write_bytes(path, (json.dumps(envelope.to_dict(), indent=2) + "\n").encode())
    return path


def read_provenance(folder: Path):
    """(DSSE envelope, statement dict) of a folder; TrustError when absent or unreadable."""
    from securesystemslib.dsse import Envelope
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        raise TrustError(f"{Path(folder).name} has no {PROVENANCE_FILE}: sign the release (`make sign`), which "
                         f"writes it")
    try:
        envelope = Envelope.from_dict(json.loads(path.read_text()))
        statement = json.loads(envelope.payload)
    except (ValueError, KeyError, TypeError) as error:
        raise TrustError(f"{path} is not a DSSE envelope of an in-toto statement ({error}): sign again") from None
    if envelope.payload_type != PAYLOAD_TYPE or statement.get("_type") != STATEMENT_TYPE \
            or statement.get("predicateType") != PREDICATE_TYPE:
        raise TrustError(f"{path} is not an in-toto statement with a SLSA provenance v1 predicate "
                         f"(payloadType {envelope.payload_type}, predicateType {statement.get('predicateType')})")
    return envelope, statement


def check_files(folder: Path, statement: dict[str, Any]) -> list[str]:
    """What differs between the statement's subjects and the files of the folder, in words ([] = match)."""
    folder = Path(folder)
    problems = []
    named = {}
    for subject in statement.get("subject", []):
        named[subject.get("name", "")] = (subject.get("digest") or {}).get("sha256", "")
    for name, digest in sorted(named.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is named by the provenance but missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} changed after the provenance was written (sha256 differs)")
    extra = sorted(set(subject_files(folder)) - set(named))
    if extra:
        problems.append(f"{', '.join(extra)} not named by the provenance (added after it was written)")
    return problems


def verify_envelope(envelope, public_key, where: str) -> None:
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey
    try:
        envelope.verify([SSlibKey.from_crypto(public_key)], 1)
    except (VerificationError, ValueError):
        raise TrustError(f"{where}: the provenance's DSSE signature does not verify with this public key (another "
                         f"key signed it, or the statement was changed): give the key the release was signed with, "
                         f"or sign again") from None


def verify_provenance(folder: Path, public_key=None) -> dict[str, Any]:
    """Raise TrustError unless the provenance matches the files (and, given a key, its signature verifies)."""
    folder = Path(folder)
    envelope, statement = read_provenance(folder)
    if public_key is not None:
        verify_envelope(envelope, public_key, folder.name)
    problems = check_files(folder, statement)
    if problems:
        raise TrustError(f"{folder.name}: the provenance does not match the files: {'; '.join(problems)}")
    return statement


def summary(statement: dict[str, Any]) -> str:
    """A few lines a person reads: subjects, what it was built from, by what."""
    predicate = statement["predicate"]
    definition, run = predicate["buildDefinition"], predicate["runDetails"]
    external = definition.get("externalParameters", {})
    lines = [f"artifact {external.get('artifact')} (release {external.get('release')}): "
             f"{len(statement['subject'])} subject(s)"]
    lines += [f"  subject   {s['digest']['sha256']}  {s['name']}" for s in statement["subject"]]
    lines.append(f"  overrides {' '.join(external.get('config_overrides') or []) or '(none recorded)'}")
    lines.append(f"  config    sha256 {external.get('config_sha256') or '-'}: {external.get('config_note')}")
    packages = 0
    for dependency in definition.get("resolvedDependencies", []):
        if dependency.get("name", "").startswith("pypi:"):
            packages += 1
            continue
        digest = ", ".join(f"{k} {v}" for k, v in (dependency.get("digest") or {}).items()) \
            or dependency.get("uri") or "no digest"  # an installed quantgate: pkg:pypi/quantgate@VERSION
        lines.append(f"  from      {dependency['name']}: {digest}")
    lines.append(f"  packages  {packages} installed packages with versions (resolvedDependencies pypi:*)")
    builder = run["builder"]
    version = builder.get("version", {})
    lines.append(f"  builder   {builder['id']}: quantgate {version.get('quantgate')} on {version.get('host')} "
                 f"({version.get('cpu_microarchitecture')}), {version.get('os')}")
    return "\n".join(lines)

"""The guard's optional signature check: the artifact's folder carries `model.sig`, an OpenSSF
model-signing bundle over every other file of the folder, and it verifies with the given key.

The one part of the guard beyond the standard library: model-signing is imported only when a public
key is given (installed with quantgate, or `pip install 'quantgate-guard[signing]'`), and its absence is
a SignatureCheckUnavailable naming what to install. `pipeline.release.sign` signs folders and verifies
them through verify_signature below, adding the provenance check; there is no second verifier.

A public-key file holding PEM certificates (`-----BEGIN CERTIFICATE-----`) means a CA's chain: the
folder must then have been signed with a certificate that chains to it.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from .errors import ArtifactRefused, SignatureCheckUnavailable

SIGNATURE_FILE = "model.sig"
SIGNING_REQUIREMENTS = "model-signing==1.1.1 pyopenssl==26.4.0"  # pyopenssl: imported by model-signing, undeclared


class SignatureInvalid(ArtifactRefused):
    """The folder is unsigned, altered since signing, or signed with another key; the message says which."""


def model_signing():
    """The model_signing package with its signing and verifying parts, or SignatureCheckUnavailable."""
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as error:
        raise SignatureCheckUnavailable(
            f"signature checks need the model-signing package, which is not installed: `pip install "
            f"{SIGNING_REQUIREMENTS}` (or `pip install 'quantgate-guard[signing]'`) ({error})") from None
    return model_signing


def hashing_config():
    """Every file of the folder, sha256 per file; only the signature itself is left out."""
    return model_signing().hashing.Config().use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(
        paths=[SIGNATURE_FILE], ignore_git_paths=False)


def is_certificate_chain(path: str | Path) -> bool:
    """Whether a trust file holds PEM certificates (a CA's chain) rather than a public key."""
    path = Path(path)
    return path.is_file() and b"-----BEGIN CERTIFICATE-----" in path.read_bytes()


def _describe(public_key: Path | None, certificate_chain: tuple[Path, ...]) -> str:
    return f"public key {public_key}" if public_key else \
        f"certificate chain {', '.join(map(str, certificate_chain))}"


def bundle_kind(folder: Path) -> str:
    """`key` or `certificate`: how the bundle in model.sig says it was signed."""
    try:
        material = json.loads((folder / SIGNATURE_FILE).read_text())["verificationMaterial"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SignatureInvalid(f"{folder.name}: {SIGNATURE_FILE} is not a model-signing bundle (unreadable, or "
                               f"altered): sign the release again") from None
    return "certificate" if "x509CertificateChain" in material else "key"


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (also the project's own: pipeline.manifest re-exports it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_differences(folder: Path) -> str:
    """Which files changed, appeared or vanished since signing, from the signed payload's list of resources."""
    bundle = json.loads((folder / SIGNATURE_FILE).read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    signed = {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {SIGNATURE_FILE}
    changed = sorted(n for n in signed.keys() & present if sha256_file(folder / n) != signed[n])
    parts = [f"{', '.join(names)} {what}" for names, what in ((changed, "changed"), (sorted(present - signed.keys()),
             "appeared"), (sorted(signed.keys() - present), "vanished")) if names]
    return "; ".join(parts) or "the signed list and the folder disagree"


def _signature_words(error: Exception, folder: Path, trusted: str) -> str:
    text = " ".join(str(error).split())
    if text.startswith("Signature mismatch"):  # the signature is valid; the files are not the signed ones
        return (f"{folder.name}: files differ from what was signed ({file_differences(folder)} since signing): "
                f"rebuild or restore the signed files, then sign again")
    if "Key mismatch" in text or type(error).__name__ == "InvalidSignature":
        return (f"{folder.name}: the signature does not verify with {trusted} (signed with another key, "
                f"or {SIGNATURE_FILE} was altered): give the public key the release was signed with")
    if "certificate" in text.lower() or type(error).__name__ == "X509StoreContextError":
        return f"{folder.name}: the signing certificate does not chain to {trusted} ({text})"
    return f"{folder.name}: {SIGNATURE_FILE} is not a valid model-signing bundle ({type(error).__name__}: {text})"


def verify_signature(folder: str | Path, public_key: str | Path | None = None,
                     certificate_chain: tuple[str | Path, ...] = ()) -> str:
    """Raise SignatureInvalid unless `folder` carries a model-signing signature over exactly its files by
    `public_key` (an EC public key, PEM) or by a certificate chaining to `certificate_chain`. Returns the
    words naming what it was verified with."""
    folder = Path(folder)
    public_key = Path(public_key) if public_key is not None else None
    chain = tuple(Path(p) for p in certificate_chain)
    trusted = _describe(public_key, chain)
    if not folder.is_dir():
        raise SignatureInvalid(f"{folder} is not a folder: give an artifact folder")
    if not (folder / SIGNATURE_FILE).is_file():
        raise SignatureInvalid(f"{folder.name} is not signed (no {SIGNATURE_FILE}): sign the release (`make sign "
                               f"RELEASE=...`) or get the signed artifact")
    kind = bundle_kind(folder)
    if kind == "certificate" and public_key is not None:
        raise SignatureInvalid(f"{folder.name} was signed with a certificate: verify it with your CA's certificate "
                               f"(PUBLIC_KEY=ca.pem), not with the public key {public_key}")
    if kind == "key" and chain:
        raise SignatureInvalid(f"{folder.name} was signed with a plain key, not a certificate: verify it with that "
                               f"key's public key (PUBLIC_KEY=keys/quantgate.pub)")
    if public_key is not None and not public_key.is_file():
        raise SignatureInvalid(f"no public key at {public_key}: give the public key the release was signed with "
                               f"(PUBLIC_KEY=keys/quantgate.pub, made by `make keys`)")
    missing = [str(p) for p in chain if not p.is_file()]
    if missing:
        raise SignatureInvalid(f"no certificate at {', '.join(missing)}: give your CA's PEM certificates")
    config = model_signing().verifying.Config()
    try:
        if public_key is not None:
            config.use_elliptic_key_verifier(public_key=public_key)
        else:
            config.use_certificate_verifier(certificate_chain=list(chain))
    except Exception as error:  # noqa: BLE001 - cryptography's ValueError and friends
        raise SignatureInvalid(f"{trusted} cannot verify signatures ({type(error).__name__}: "
                               f"{' '.join(str(error).split())}): give a PEM EC public key (the `.pub` file, not the "
                               f"private key) or your CA's PEM certificates") from None
    try:
        config.verify(folder, folder / SIGNATURE_FILE)
    except Exception as error:  # noqa: BLE001 - model-signing raises ValueError, crypto and OpenSSL errors
        raise SignatureInvalid(_signature_words(error, folder, trusted)) from None
    return trusted


def check_signature(path: str | Path, public_key: str | Path) -> str:
    """Refuse an artifact whose folder is unsigned, altered after signing, or signed with another key.
    `public_key` is a PEM public key, or PEM CA certificates for certificate-signed folders."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        model_signing()
    except SignatureCheckUnavailable as error:
        raise SignatureCheckUnavailable(f"{path.name}: a public key was given, but {error} (or drop the public "
                                        f"key)") from None
    if is_certificate_chain(public_key):
        return verify_signature(folder, certificate_chain=(public_key,))
    return verify_signature(folder, public_key=public_key)

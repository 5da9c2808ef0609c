"""What a verifier trusts (a public key or a CA's certificates), and checking a signed artifact folder
against it: the model-signing signature over every file (the guard's verifier) and the signed provenance."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.guard import ArtifactRefused, signature
from pipeline.release import SIGNATURE_FILE, TrustError
from pipeline.release.keys import load_certificate, load_public_key


@dataclasses.dataclass(frozen=True)
class Trust:
    """What a verifier trusts: a public key, or a CA's certificates (for certificate-signed folders)."""

    public_key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()

    def __post_init__(self):
        if (self.public_key is None) == (not self.certificate_chain):
            raise TrustError("give either a public key (PUBLIC_KEY=keys/quantgate.pub) or a CA certificate chain "
                             "to verify signatures with, not both and not neither")

    @classmethod
    def of(cls, path: Path | str) -> "Trust":
        """What a PUBLIC_KEY file holds: a PEM public key, or PEM CA certificate(s) for certificate-signed folders."""
        path = Path(path)
        if path.is_file() and b"-----BEGIN CERTIFICATE-----" in path.read_bytes():
            return cls(certificate_chain=(path,))
        return cls(public_key=path)

    def check(self) -> None:
        """A clear error now for a missing or unreadable key or certificate, before any work."""
        if self.public_key is not None:
            load_public_key(self.public_key)
        else:
            for path in self.certificate_chain:
                load_certificate(Path(path))

    def describe(self) -> str:
        return f"public key {self.public_key}" if self.public_key else \
            f"certificate chain {', '.join(map(str, self.certificate_chain))}"


def model_signing_module():
    try:
        return signature.model_signing()
    except signature.SignatureCheckUnavailable as error:
        raise TrustError(f"{error}; in this checkout: `.venv/bin/pip install -e .`") from None


def hashing_config():
    """Every file of the folder, sha256 per file; only the signature itself is left out (the guard's)."""
    model_signing_module()
    return signature.hashing_config()


def _bundle_public_key(folder: Path):
    """The public key of the leaf certificate in a certificate-signed bundle (checked by model-signing first)."""
    import base64

    from cryptography import x509
    bundle = json.loads((folder / SIGNATURE_FILE).read_text())
    chain = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    return x509.load_der_x509_certificate(base64.b64decode(chain[0]["rawBytes"])).public_key()


def verify_folder(folder: Path, trust: Trust) -> dict[str, Any]:
    """Raise TrustError unless `folder` carries a signature by `trust` over exactly its files, and a provenance
    signed by the same key that matches them. Returns {"files": n, "signer": words}."""
    folder = Path(folder)
    try:  # the guard's verifier: there is no second one
        signature.verify_signature(folder, trust.public_key, trust.certificate_chain)
    except ArtifactRefused as error:
        raise TrustError(str(error)) from None
    if trust.public_key is not None:
        public_key = load_public_key(trust.public_key)
    if trust.public_key is None:
        public_key = _bundle_public_key(folder)
    # Hydra and the builder's stamp (0.3 s) come with provenance.py: not for `quantgate pull --help`
    from pipeline.release.provenance import verify_provenance
    verify_provenance(folder, public_key)
    signed = len([p for p in folder.rglob("*") if p.is_file()]) - 1
    return {"files": signed, "signer": trust.describe()}

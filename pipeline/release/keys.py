"""Signing keys: a local development key pair, loading and checking keys before anything is signed.

    quantgate keys [--out keys] [--days 365] [--force]       (`make keys`)

writes `keys/quantgate.key` (EC P-256 private key, PKCS#8 PEM, mode 0600), `keys/quantgate.pub` (its
public key: what deployments verify with) and `keys/quantgate.crt`, a self-signed certificate for the
same key whose validity period is the key's lifetime: `make sign` refuses a key whose certificate has
expired or is not yet valid. CI brings its own key (KEY=..., optionally CERT=... and CHAIN=... for a
certificate issued by your CA).
"""
from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.manifest import atomic_write_bytes
from pipeline.release import TrustError

DEFAULT_DIR = Path("keys")
KEY_NAME = "quantgate"
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts


@dataclasses.dataclass
class SigningKey:
    path: Path
    private_key: object  # cryptography EllipticCurvePrivateKey
    certificate: Path | None = None
    not_after: datetime | None = None

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        return self.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def key_paths(folder: Path, name: str = KEY_NAME) -> tuple[Path, Path, Path]:
    return folder / f"{name}.key", folder / f"{name}.pub", folder / f"{name}.crt"


def generate_keys(folder: Path, days: float = 365, name: str = KEY_NAME, force: bool = False,
                  not_before: datetime | None = None) -> tuple[Path, Path, Path]:
    """(private key, public key, certificate) in `folder`; refuses to overwrite unless `force`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key_path, pub_path, cert_path = key_paths(folder, name)
    existing = [p for p in (key_path, pub_path, cert_path) if p.exists()]
    if existing and len(existing) < 3 and not force:
        missing = [str(p) for p in (key_path, pub_path, cert_path) if p not in existing]
        raise TrustError(f"the key set in {folder} is incomplete ({', '.join(missing)} missing: an interrupted `make "
                         f"keys`, or files removed); make a new one with --force (`make keys FORCE=1`)")
    if existing and not force:
        raise TrustError(f"{', '.join(map(str, existing))} already exist(s): keep them, or replace them with "
                         f"--force (`make keys FORCE=1`); artifacts signed with the old key then no longer verify "
                         f"with the new public key")
    folder.mkdir(parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(timezone.utc) - timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} development signing key"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "quantgate")])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    private_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    public_pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    # Each file written aside and renamed into place, the private key last: a kill leaves an incomplete set (refused
    # above, naming --force), never a private key without its public key and certificate.
    atomic_write_bytes(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(pub_path, public_pem)
    atomic_write_bytes(key_path, private_pem, mode=0o600)
    return key_path, pub_path, cert_path


def _check_curve(key, path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    public = key.public_key() if hasattr(key, "public_key") else key
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in SUPPORTED_CURVES:
        kind = public.curve.name if isinstance(public, ec.EllipticCurvePublicKey) else type(public).__name__
        raise TrustError(f"{path} is a {kind} key; model-signing signs with elliptic-curve keys "
                         f"({', '.join(SUPPORTED_CURVES)}): make one with `make keys`")


def load_certificate(path: Path):
    from cryptography import x509
    if not path.is_file():
        raise TrustError(f"no certificate at {path}: give the signing key's certificate (CERT=path) or none")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as error:
        raise TrustError(f"{path} is not a PEM certificate ({error})") from None


def check_validity(certificate, path: Path, key_path: Path, now: datetime | None = None) -> datetime:
    """The certificate's not-after; raises TrustError when it is expired or not yet valid."""
    now = now or datetime.now(timezone.utc)
    if now > certificate.not_valid_after_utc:
        raise TrustError(f"the signing key {key_path} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                         f"(its certificate {path}): make a new key pair (`make keys FORCE=1`) or bring a valid "
                         f"certificate, then sign again")
    if now < certificate.not_valid_before_utc:
        raise TrustError(f"the signing key {key_path} is not valid before "
                         f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (its certificate {path}); check the "
                         f"clock or the certificate")
    return certificate.not_valid_after_utc


def load_signing_key(path: Path, certificate: Path | None = None, now: datetime | None = None) -> SigningKey:
    """The private key at `path`, checked: it exists, is an EC key model-signing accepts, and, when it has a
    certificate (given, or `<stem>.crt` beside it), matches it and is within its validity period."""
    from cryptography.hazmat.primitives import serialization
    path = Path(path)
    if not path.is_file():
        raise TrustError(f"no signing key at {path}: run `make keys` for a development key pair, or give KEY=path "
                         f"to the key CI brings")
    password = os.environ.get("QUANTGATE_KEY_PASSWORD")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except TypeError:
        if password:  # cryptography: "Password was given but private key is not encrypted."
            raise TrustError(f"QUANTGATE_KEY_PASSWORD is set, but {path} is not encrypted: unset it "
                             f"(`unset QUANTGATE_KEY_PASSWORD`) or give the encrypted key it is for") from None
        raise TrustError(f"{path} is encrypted: set QUANTGATE_KEY_PASSWORD to its password") from None
    except ValueError as error:
        raise TrustError(f"{path} is not a PEM private key, or the password is wrong ({error}): give the private "
                         f"key (`keys/quantgate.key`), not the public one") from None
    _check_curve(key, path)
    signing_key = SigningKey(path, key)
    beside = path.with_suffix(".crt")
    cert_path = Path(certificate) if certificate else beside if beside.is_file() else None
    if cert_path is not None:
        cert = load_certificate(cert_path)
        if cert.public_key() != key.public_key():
            raise TrustError(f"the certificate {cert_path} is for another key than {path}: give the matching pair")
        signing_key.certificate = cert_path
        signing_key.not_after = check_validity(cert, cert_path, path, now)
    return signing_key


def load_public_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    path = Path(path)
    if not path.is_file():
        raise TrustError(f"no public key at {path}: give the public key the release was signed with "
                         f"(PUBLIC_KEY=keys/quantgate.pub, made by `make keys`)")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as error:
        raise TrustError(f"{path} is not a PEM public key ({error}): give the `.pub` file, not the private key "
                         f"or a certificate") from None
    _check_curve(key, path)
    return key

"""Sign every artifact folder of a ready release with OpenSSF model-signing; verify a signed folder.

    quantgate sign --release NAME [--artifacts-dir artifacts/NAME] [--report reports/NAME]
        [--key keys/quantgate.key] [--certificate CERT --chain CA.pem ...] [--waivers FILE]     (`make sign`)
    quantgate sign --verify FOLDER [FOLDER ...] --public-key keys/quantgate.pub

Signing refuses a release whose signoff (reports/NAME/signoff.json) is missing or `blocked`, and judges
the release again first (a file changed since the report blocks it too). Then, per artifact folder:
`signoff.json` (the signoff's verdict and rows for this artifact), `provenance.intoto.json` (pipeline.
release.provenance, DSSE-signed with the same key) and, last, `model.sig`: a model-signing bundle whose
payload lists the sha256 of every other file in the folder. If anything fails, the files this run
wrote are taken back: no release is left half-signed; a run killed half-way (SIGKILL) is rolled back by the
next `sign` or `signoff` from its journal (pipeline/release/journal.py).

Key-based signing works offline: an EC private key (`make keys`), verified with its public key. With
--certificate (and --chain, your CA's certificates) the bundle carries the certificate chain and is
verified against the CA instead (`--certificate-chain`). Exit codes: 0 signed / verified, 1 a signature
that does not verify, 2 a usage error (no key, no signoff, a blocked release).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.config.schema import ReleaseConfig
from pipeline.manifest import _umask, artifact_folders, atomic_write_json
from pipeline.release import PROVENANCE_FILE, SIGNATURE_FILE, SIGNOFF_FILE, TrustError, journal
from pipeline.release.lock import release_lock
from pipeline.release.provenance import write_provenance
from pipeline.release.signoff import READY, WAIVERS_DIR, SignoffError, load_signoff, signoff
from pipeline.release.trust import hashing_config, model_signing_module

ARTIFACT_SIGNOFF_SCHEMA = "quantgate.artifact-signoff/1"


def sign_folder(folder: Path, signing_key, certificate_chain: tuple[Path, ...] = ()) -> Path:
    """Write `model.sig` over every other file of `folder` (atomically: a temp file, then rename)."""
    model_signing = model_signing_module()
    config = model_signing.signing.Config().set_hashing_config(hashing_config())
    if signing_key.certificate is not None and certificate_chain:
        config.use_certificate_signer(private_key=signing_key.path, signing_certificate=signing_key.certificate,
                                      certificate_chain=list(certificate_chain))
    else:
        password = os.environ.get("QUANTGATE_KEY_PASSWORD")  # as keys.load_signing_key read it
        config.use_elliptic_key_signer(private_key=signing_key.path, password=password.encode() if password else None)
    folder = Path(folder)
    handle, temp = tempfile.mkstemp(dir=folder.parent, prefix=f".{folder.name}.sig.", suffix=".tmp")
    os.close(handle)
    try:
        config.sign(folder, temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a signature is an ordinary file
        Path(temp).replace(folder / SIGNATURE_FILE)
    finally:
        Path(temp).unlink(missing_ok=True)
    return folder / SIGNATURE_FILE


# --- signing a release ------------------------------------------------------------------------------
def artifact_signoff(report: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The release signoff, cut down to one artifact: what travels with it."""
    name = facts["name"]
    rows = [{k: r[k] for k in ("profile", "expected", "status", "outcome", "reason", "fidelity", "waiver")}
            for r in report["rows"] if r["artifact"] == name]
    return {"schema": ARTIFACT_SIGNOFF_SCHEMA, "release": report["release"], "release_verdict": report["verdict"],
            "artifact": name, "verdict": facts["verdict"], "generated_utc": report["generated_utc"],
            "waived": [w for w in report["waived"] if w.startswith(f"{name} / ")], "rows": rows,
            "versions": facts["versions"], "files": facts["files"], "model_sha256": facts["model_sha256"],
            "target": facts["target"], "mode": facts["mode"], "model": facts["model"]}


def judge(release: str, release_dir: Path, report_dir: Path, waivers: Path | None,
          public_key: Path | None = None, require_signatures: bool = False, signing: bool = False) -> dict[str, Any]:
    """The release's signoff, judged now; TrustError unless it is ready (the saved report must agree). `signing`:
    judged for `sign`, which replaces every signature: signature rows (a half-signed release) do not block it."""
    saved = Path(report_dir) / SIGNOFF_FILE
    if not saved.is_file():
        raise TrustError(f"release {release} has no signoff ({saved} is missing): run `make signoff "
                         f"RELEASE={release}` first")
    previous = load_signoff(saved, release)
    # A release blocked only by its signatures (half-signed, a signature removed) is what signing fixes.
    blocking = [words for words in previous["blocking"]
                if not (signing and re.match(r"[^/]+ / signature: ", words))]
    if previous["verdict"] != READY and blocking:
        raise TrustError(f"release {release} is blocked ({saved}): " + "; ".join(blocking[:5]))
    settings = ReleaseConfig(**(previous.get("settings") or {}).get("release", {}))  # the limits it was held to
    try:
        report = signoff(release, Path(release_dir), waivers or WAIVERS_DIR / f"{release}.yaml",
                         public_key=public_key, require_signatures=require_signatures, settings=settings, signing=signing)
    except SignoffError as error:
        raise TrustError(str(error)) from None
    if report["verdict"] != READY:
        raise TrustError(f"release {release} is blocked now, although {saved} said ready (something changed since "
                         f"the signoff): " + "; ".join(report["blocking"][:5]))
    return report


def check_built(release: str, release_dir: Path) -> None:
    """TrustError unless `release_dir` holds the release's artifact folders: signing or publishing needs a built one."""
    if not release_dir.is_dir() or not artifact_folders(release_dir):
        raise TrustError(f"{release_dir} holds no artifact folders: build the release first (`make matrix "
                         f"RELEASE={release}`)")


def sign_release(release: str, release_dir: Path, report_dir: Path, signing_key, certificate_chain=(),
                 waivers: Path | None = None, progress=print) -> list[Path]:
    """Sign every artifact folder of a ready release; all or nothing; one writer of the release at a time (a second
    `sign`, `publish` or `matrix` is refused naming the first: pipeline/release/lock.py)."""
    with release_lock(release_dir, "sign"):
        return _sign_release(release, release_dir, report_dir, signing_key, certificate_chain, waivers, progress)


def _sign_release(release: str, release_dir: Path, report_dir: Path, signing_key, certificate_chain,
                  waivers: Path | None, progress) -> list[Path]:
    journal.recover(release_dir)  # a run killed half-way is rolled back before the release is judged
    report = judge(release, release_dir, report_dir, waivers, signing=True)
    folders = [Path(facts["folder"]) for facts in report["artifacts"]]
    with journal.signing(release_dir, folders):  # all or nothing, across SIGKILL too (pipeline/release/journal.py)
        for facts, folder in zip(report["artifacts"], folders):
            (folder / SIGNATURE_FILE).unlink(missing_ok=True)  # an old signature must not outlive a failed run
            atomic_write_json(folder / SIGNOFF_FILE, artifact_signoff(report, facts))
            write_provenance(folder, signing_key, release)
            sign_folder(folder, signing_key, tuple(certificate_chain))
            progress(f"signed {folder} ({SIGNOFF_FILE}, {PROVENANCE_FILE}, {SIGNATURE_FILE})")
    return folders

"""Release trust: what lets a service prove that the bytes it loads are the bytes that were signed off.

    keys.py        a local signing key pair for development (`make keys`); CI brings its own
    sign.py        one OpenSSF model-signing signature per artifact folder, covering every file (`make sign`)
    provenance.py  an in-toto statement with a SLSA provenance predicate per artifact, DSSE-signed with the
                   same key (`quantgate provenance PATH`)
    publish.py     each ready artifact as one OCI artifact in a registry with ORAS (`make publish`), and back
                   (`make pull`: sha256 and signature verified before anything is written)
    registry.py    a local CNCF distribution registry (Debian's `docker-registry`) for trying it out and tests

After `make sign` an artifact folder holds, besides the build's files and verify.json:

    signoff.json            the release signoff's verdict and rows for this artifact, as signed
    provenance.intoto.json  DSSE envelope of the in-toto statement (SLSA provenance v1)
    model.sig               the model-signing bundle: sha256 of every other file, signed

Every error a user can cause is a TrustError whose message names what is wrong and the fix.
"""
from __future__ import annotations

from pipeline.errors import InputError
from pipeline.guard.signature import SIGNATURE_FILE  # the guard checks signatures too: one name

PROVENANCE_FILE = "provenance.intoto.json"
SIGNOFF_FILE = "signoff.json"
# Written by `make sign`, in this order: the signature is last and covers the other two.
TRUST_FILES = (SIGNOFF_FILE, PROVENANCE_FILE, SIGNATURE_FILE)


class TrustError(InputError):
    """A bad input (key, signature, folder, registry, reference): refused with one message, exit 2."""

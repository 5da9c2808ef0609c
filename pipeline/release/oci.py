"""The OCI registry, through ORAS (the `oras` library): references, a client that fails fast, media types.

quantgate's OCI artifact, one per artifact folder:

- manifest: an OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) with
  `artifactType: application/vnd.quantgate.artifact.v1`; its annotations carry the stamp (target ISA,
  required CPU features, versions, mode, ...), the release and the artifact's name;
- config: `application/vnd.quantgate.artifact.config.v1+json`, the same facts as JSON;
- layers: every file of the signed folder, titled with its path (`org.opencontainers.image.title`),
  verify.json, signoff.json, the signature (`model.sig`) and the provenance among them;
- tag: the release (`<registry>/<artifact>:<release>`).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from pipeline import kinds
from pipeline.release import PROVENANCE_FILE, SIGNATURE_FILE, SIGNOFF_FILE, TrustError

ARTIFACT_TYPE = "application/vnd.quantgate.artifact.v1"
CONFIG_MEDIA_TYPE = "application/vnd.quantgate.artifact.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ANNOTATION = "dev.quantgate."
TITLE = "org.opencontainers.image.title"
MEDIA_TYPES = {SIGNATURE_FILE: "application/vnd.dev.sigstore.bundle.v0.3+json",
               PROVENANCE_FILE: "application/vnd.dsse.envelope.v1+json",
               SIGNOFF_FILE: "application/vnd.quantgate.signoff.v1+json",
               "verify.json": "application/vnd.quantgate.verify.v1+json",
               "manifest.json": "application/vnd.quantgate.manifest.v1+json"}
# Data files beside the model; the model file's own media type is its kind's (pipeline/kinds.py media_types).
SUFFIX_MEDIA_TYPES = {".npz": "application/vnd.numpy.npz", ".json": "application/json"}
TIMEOUT_SECONDS = 60
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def media_type(relative: str) -> str:
    suffix = Path(relative).suffix
    return MEDIA_TYPES.get(relative) or kinds.media_types().get(suffix) or SUFFIX_MEDIA_TYPES.get(
        suffix, "application/octet-stream")


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise TrustError(f"{tag!r} is not a valid OCI tag (letters, digits, `_ . -`, at most 128, not starting with "
                         f"`.` or `-`): use another release name")
    return tag


def check_repository(path: str) -> str:
    components = path.split("/")
    if not all(_NAME.match(part) for part in components):
        raise TrustError(f"{path!r} is not a valid repository path (lower-case letters, digits and `. _ -` between "
                         f"them, separated by `/`)")
    return path


def split_registry(registry: str) -> tuple[str, str]:
    """`localhost:5000/quantgate` -> (`localhost:5000`, `quantgate`); the namespace may be empty."""
    registry = registry.strip().removeprefix("oci://").rstrip("/")
    if not registry or "://" in registry:
        raise TrustError(f"REGISTRY={registry!r}: give a host[:port][/namespace], e.g. localhost:5000/quantgate")
    host, _, namespace = registry.partition("/")
    if namespace:
        check_repository(namespace)
    return host, namespace


def split_reference(reference: str) -> tuple[str, str, str]:
    """`localhost:5000/quantgate/minilm-dynamic-avx2:rc1` -> (host, `quantgate/minilm-dynamic-avx2`, `rc1`)."""
    host, _, rest = reference.strip().removeprefix("oci://").partition("/")
    repository, colon, tag = rest.rpartition(":")
    if not host or not rest or not colon or "/" in tag or not repository:
        raise TrustError(f"REF={reference!r}: give <host[:port]>/<repository>:<tag>, e.g. "
                         f"localhost:5000/quantgate/minilm-dynamic-avx2:rc1")
    return host, check_repository(repository), check_tag(tag)


def plain_http(host: str) -> bool:
    """The loopback registry of `make registry` speaks plain HTTP; anything else is expected to use TLS."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in ("localhost", "127.0.0.1", "[::1]") or name.startswith("127.")


class Registry:
    """An ORAS registry client for one host that fails fast: a timeout on every request and no retry loop
    (oras-py retries five times with sleeps of 3 to 83 s, two minutes for a registry that is down)."""

    def __init__(self, host: str, insecure: bool | None = None):
        import oras.provider

        class _Once(oras.provider.Registry):
            def do_request(self, *args, **kwargs):  # the undecorated request: one try
                return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

        self.host = host
        self.insecure = plain_http(host) if insecure is None else insecure
        self.oras = _Once(hostname=host, insecure=self.insecure)
        self.oras.session.request = functools.partial(self.oras.session.request, timeout=TIMEOUT_SECONDS)
        self.base = f"{'http' if self.insecure else 'https'}://{host}"

    def _words(self, error: Exception) -> str:
        import requests
        if isinstance(error, requests.exceptions.ConnectionError):
            return (f"the registry at {self.host} is not reachable ({type(error).__name__}): start it (`make registry` "
                    f"for a local one) or check REGISTRY=/REF=")
        if isinstance(error, requests.exceptions.Timeout):
            return f"the registry at {self.host} did not answer within {TIMEOUT_SECONDS} s: check it and try again"
        return f"talking to the registry at {self.host} failed: {type(error).__name__}: {error}"

    def request(self, method: str, url: str, **kwargs):
        import requests
        try:
            return self.oras.do_request(url, method, **kwargs)
        except (requests.exceptions.RequestException, OSError) as error:
            raise TrustError(self._words(error)) from None
        except Exception as error:  # noqa: BLE001 - oras' authentication errors (ValueError, AuthenticationException)
            raise TrustError(f"the registry at {self.host} refused {method} {url.split(self.host, 1)[-1]}: {error} "
                             f"(if it needs a login: `oras login {self.host}` or `docker login {self.host}`)") from None

    def ping(self) -> None:
        response = self.request("GET", f"{self.base}/v2/")
        if response.status_code not in (200, 401):
            raise TrustError(f"{self.host} does not answer like an OCI registry (GET /v2/ gave HTTP "
                             f"{response.status_code}): check REGISTRY=")

    def container(self, repository: str, tag: str):
        import oras.container
        return oras.container.Container(f"{repository}:{tag}", registry=self.host)

    def manifest(self, repository: str, tag: str) -> dict | None:
        """The manifest under `repository:tag`, or None if there is none."""
        url = f"{self.base}/v2/{repository}/manifests/{tag}"
        response = self.request("GET", url, headers={"Accept": MANIFEST_MEDIA_TYPE})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TrustError(f"the registry refused to read {self.host}/{repository}:{tag} (HTTP "
                             f"{response.status_code}: {_errors(response)})")
        return response.json()

    def upload(self, repository: str, path: Path, layer: dict) -> bool:
        """Upload one blob unless the registry has it; True if uploaded."""
        import oras.utils
        container = self.container(repository, "unused")
        try:
            if self.oras.blob_exists(layer, container):
                return False
        except Exception as error:  # noqa: BLE001 - requests errors
            raise TrustError(self._words(error)) from None
        # oras-py's put_upload, with the registry's answer to each step checked (it reads a refused POST's
        # body as JSON and fails on an empty one): POST opens an upload session, PUT ?digest= closes it.
        opened = self.request("POST", f"{self.base}/v2/{repository}/blobs/uploads/",
                              headers={"Content-Type": "application/octet-stream"})
        session = self.oras._get_location(opened, container) if opened.status_code == 202 else ""
        response = opened
        if session:
            response = self.request("PUT", oras.utils.append_url_params(session, {"digest": layer["digest"]}),
                                    data=path.read_bytes(), headers={"Content-Length": str(layer["size"]),
                                                                     "Content-Type": "application/octet-stream"})
        if not session or response.status_code not in (200, 201, 202):
            raise TrustError(f"the registry at {self.host} refused the upload of {path.name} to {repository} (HTTP "
                             f"{response.status_code}: {_errors(response)}): check that it accepts pushes (read-only "
                             f"mode, permissions, quota)")
        return True

    def put_manifest(self, repository: str, tag: str, manifest: dict) -> str | None:
        """PUT the manifest under `tag` (this creates or moves the tag); returns its digest."""
        try:
            response = self.oras.upload_manifest(manifest, self.container(repository, tag))
        except Exception as error:  # noqa: BLE001
            raise TrustError(self._words(error)) from None
        if response.status_code not in (200, 201, 202):
            raise TrustError(f"the registry at {self.host} refused the manifest of {repository}:{tag} (HTTP "
                             f"{response.status_code}: {_errors(response)})")
        return response.headers.get("Docker-Content-Digest")

    def download(self, repository: str, digest: str, out: Path) -> str:
        """Stream a blob into `out`; returns the sha256 of the bytes received."""
        import hashlib
        import requests
        digest_of = hashlib.sha256()
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        try:
            with self.request("GET", url, stream=True) as response:
                if response.status_code != 200:
                    raise TrustError(f"the registry at {self.host} has no blob {digest} of {repository} (HTTP "
                                     f"{response.status_code}): publish the release again")
                with open(out, "wb") as handle:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        digest_of.update(chunk)
                        handle.write(chunk)
        except requests.exceptions.RequestException as error:
            raise TrustError(self._words(error)) from None
        return digest_of.hexdigest()


def _errors(response) -> str:
    try:
        errors = response.json().get("errors", [])
        return "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors) or response.reason
    except ValueError:
        return response.reason or "no details"

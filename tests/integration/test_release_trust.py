"""Release trust against real keys and a real local OCI registry (Debian's docker-registry, CNCF distribution):
sign, tamper, detect; provenance against the files; publish a ready two-artifact release, pull it into an
empty folder and load it with the guard; every bad input refused in words with nothing half-done."""
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from pipeline.config.schema import ReleaseConfig
from pipeline.guard import ArtifactRefused, SignatureCheckUnavailable, ensure_can_run
from pipeline.manifest import BuildRecord, CalibrationRecord, Manifest, sha256_file
from pipeline.release import PROVENANCE_FILE, SIGNATURE_FILE, SIGNOFF_FILE, TrustError
from pipeline.release import registry as local_registry
from pipeline.release.keys import generate_keys, load_signing_key
from pipeline.release.provenance import verify_provenance
from pipeline.release.publish import publish_release as _publish_release
from pipeline.release.pull import pull
from pipeline.release.sign import sign_release as _sign_release
from pipeline.release.trust import Trust, verify_folder
from pipeline.commands.signoff import main as signoff_main
from pipeline.release.signoff import signoff as judge_release
from tests.conftest import REPO
from tests.fixtures.matrix import combination, floor_waivers, write_matrix
from tests.fixtures.tiny_artifact import make_artifact_folder

TARGETS = ("avx2", "x86_64_v2")
NAMES = tuple(f"tiny-dynamic-{target}" for target in TARGETS)
SOURCE_SHA, CALIBRATION_SHA, HELDOUT_SHA = "a1" * 32, "c2" * 32, "e3" * 32


# A tiny MLP is not faster in int8: these tests are about trust, not speed.
NO_LATENCY_LIMIT = ReleaseConfig(max_latency_ratio=1e6)


def overrides_for(target):
    return ["model=digits_cnn", "mode=dynamic", f"target={target}"]


# Verified natively only: the floor CPUs (haswell, nehalem) are waived by name, as a user of such a release must.
FLOOR = {}


@pytest.fixture(scope="module", autouse=True)
def floor_waived(tmp_path_factory):
    FLOOR["waivers"] = floor_waivers(tmp_path_factory.mktemp("floor") / "floor.yaml")
    return FLOOR["waivers"]


def signoff(release, release_dir, waivers, **kwargs):
    """The signoff with the limits and waivers the fixture's report was made with."""
    return judge_release(release, release_dir, waivers or FLOOR["waivers"], settings=NO_LATENCY_LIMIT, **kwargs)


def sign_release(*args, **kwargs):
    return _sign_release(*args, **{"waivers": FLOOR["waivers"], **kwargs})


def publish_release(*args, **kwargs):
    return _publish_release(*args, **{"waivers": FLOOR["waivers"], **kwargs})


# --- fixtures: keys, a ready two-artifact release, a real registry ----------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    key, pub, cert = generate_keys(folder)
    other = generate_keys(tmp_path_factory.mktemp("other-keys"))
    return {"key": key, "pub": pub, "cert": cert, "other_pub": other[1]}


@pytest.fixture(scope="module")
def ready_release(tmp_path_factory):
    """Two tiny artifacts, verified natively (real verify.json), with a `ready` signoff report."""
    from pipeline.config import compose_config
    from pipeline.verify import stage as verify_stage
    from pipeline.builder.stamp import config_sha256

    release = tmp_path_factory.mktemp("release") / "rc"
    for target, name in zip(TARGETS, NAMES):
        folder = make_artifact_folder(release / name, target=target)
        manifest = Manifest.load(folder)  # what a real build records about its inputs
        manifest.source_model, manifest.source_weights_sha256 = "tiny-mlp", SOURCE_SHA
        manifest.calibration = CalibrationRecord(dataset="tiny-random", split="train", n=8, n_heldout=8,
                                                 method="minmax", sha256=CALIBRATION_SHA, heldout_sha256=HELDOUT_SHA,
                                                 seed=0)
        overrides = overrides_for(target)  # as a build records them; provenance recomposes the config
        manifest.build = BuildRecord(time_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     host=socket.gethostname(), host_microarchitecture="x86_64_v3",
                                     host_cpu_features=["avx2"], seconds=1.0, config_overrides=overrides)
        manifest.config_sha256 = config_sha256(compose_config(overrides))
        manifest.save()
        cfg = compose_config([f"target={target}", "verify.profiles=[native]", "verify.reference_cpu=native", "verify.latency_repeats=2"])
        assert verify_stage.run(cfg, Manifest.load(folder)).verify_status == "pass"
    write_matrix(release, *(combination(release, name, overrides_for(target)) for target, name in zip(TARGETS, NAMES)))
    report = release.parent / "reports"
    assert signoff_main(["--release", "rc", "--artifacts-dir", str(release), "--out", str(report), "--waivers",
                         str(FLOOR["waivers"]), f"release.max_latency_ratio={NO_LATENCY_LIMIT.max_latency_ratio}"]) == 0
    return release, report


def rebind_verify_json(folder):
    """verify.json records the sha256 of the manifest it judged; a test that edits manifest.json re-binds it."""
    import json
    from pipeline.manifest import sha256_file
    report = json.loads((folder / "verify.json").read_text())
    report["manifest_sha256"] = sha256_file(folder / "manifest.json")
    (folder / "verify.json").write_text(json.dumps(report))


def copy_release(ready_release, tmp_path):
    release, report = ready_release
    copy = tmp_path / "artifacts" / "rc"
    shutil.copytree(release, copy)
    return copy, report


@pytest.fixture
def signed(ready_release, keys, tmp_path):
    release, report = copy_release(ready_release, tmp_path)
    sign_release("rc", release, report, load_signing_key(keys["key"]), progress=lambda _: None)
    return release, report


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real CNCF distribution registry on 127.0.0.1 (free port, tmp storage, a config we write)."""
    try:
        local_registry.binary()
    except TrustError as error:
        pytest.skip(f"docker-registry cannot be used here: {error}")
    folder, port = tmp_path_factory.mktemp("registry"), local_registry.free_port()
    local_registry.start(folder, port)
    yield {"host": f"127.0.0.1:{port}", "storage": folder / "storage", "dir": folder}
    local_registry.stop(folder)


def registry_manifest(host, repository, tag):
    return requests.get(f"http://{host}/v2/{repository}/manifests/{tag}",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)


def quantgate(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"quantgate {result.args[3]}: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def trust_files(release):
    return sorted(p.relative_to(release).as_posix() for name in (SIGNATURE_FILE, PROVENANCE_FILE, SIGNOFF_FILE)
                  for p in release.glob(f"*/{name}"))


# --- signing -----------------------------------------------------------------------------------------
def test_sign_every_folder_then_detect_a_changed_file(signed, keys):
    release, _ = signed
    trust = Trust(public_key=keys["pub"])
    for name in NAMES:
        result = verify_folder(release / name, trust)
        assert result["files"] == 7  # model, reference, heldout, manifest, verify.json, signoff.json, provenance
    # verify.json is outside manifest.json's sha256 list: only the signature vouches for it.
    verify_json = release / NAMES[0] / "verify.json"
    verify_json.write_text(verify_json.read_text().replace('"pass"', '"PASS"', 1))
    with pytest.raises(TrustError, match=r"files differ from what was signed \(verify\.json changed since signing\)"):
        verify_folder(release / NAMES[0], trust)
    # A file added after signing is refused too.
    (release / NAMES[1] / "extra.onnx").write_bytes(b"not signed")
    with pytest.raises(TrustError, match="extra.onnx appeared"):
        verify_folder(release / NAMES[1], trust)


def test_signoff_checks_signatures_and_a_changed_model_blocks(signed, keys, tmp_path):
    release, _ = signed
    report = signoff("rc", release, None, public_key=keys["pub"])
    assert report["verdict"] == "ready"
    rows = [r for r in report["rows"] if r["profile"] == "signature"]
    assert [r["status"] for r in rows] == ["verified", "verified"]
    model = release / NAMES[0] / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    report = signoff("rc", release, None, public_key=keys["pub"])
    assert report["verdict"] == "blocked"
    assert any(w.startswith(f"{NAMES[0]} / signature: invalid") and "model.onnx" in w for w in report["blocking"])


def test_the_wrong_public_key_is_refused(signed, keys):
    release, _ = signed
    with pytest.raises(TrustError, match="does not verify with public key"):
        verify_folder(release / NAMES[0], Trust(public_key=keys["other_pub"]))
    report = signoff("rc", release, None, public_key=keys["other_pub"])
    assert report["verdict"] == "blocked" and all("does not verify" in w for w in report["blocking"])


def test_a_removed_signature_blocks_a_signed_release_and_cannot_be_waived(signed, keys, tmp_path):
    release, _ = signed
    (release / NAMES[1] / SIGNATURE_FILE).unlink()
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text("waivers:\n  - {artifact: '*', profile: '*', reason: all, who: me, expires: 2999-01-01}\n")
    report = signoff("rc", release, waivers, public_key=keys["pub"])
    assert report["verdict"] == "blocked"
    assert report["blocking"] == [f"{NAMES[1]} / signature: unsigned: no model.sig: other artifacts of this release "
                                  f"are signed; sign the release (`make sign`)"]


def test_unsigned_release_is_ready_unless_signatures_are_required(ready_release, keys, tmp_path):
    release, _ = copy_release(ready_release, tmp_path)
    assert signoff("rc", release, None)["verdict"] == "ready"
    report = signoff("rc", release, None, public_key=keys["pub"], require_signatures=True)
    assert report["verdict"] == "blocked" and len(report["blocking"]) == 2
    assert all("no model.sig: the release requires signatures" in w for w in report["blocking"])


def test_missing_and_expired_keys_are_refused_and_nothing_is_written(ready_release, tmp_path):
    release, report = copy_release(ready_release, tmp_path)
    result = quantgate("sign", "--release", "rc", "--artifacts-dir", str(release), "--report", str(report),
                       "--key", str(tmp_path / "nope.key"))
    assert_refused(result, "no signing key at", "make keys")
    expired = tmp_path / "expired"
    generate_keys(expired, days=1, not_before=datetime.now(timezone.utc) - timedelta(days=3))
    result = quantgate("sign", "--release", "rc", "--artifacts-dir", str(release), "--report", str(report),
                       "--key", str(expired / "quantgate.key"))
    assert_refused(result, "expired on", "make keys FORCE=1")
    assert trust_files(release) == []


def test_a_blocked_release_is_not_signed(ready_release, keys, tmp_path):
    release, report = copy_release(ready_release, tmp_path)
    with open(release / NAMES[1] / "reference.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TrustError, match="blocked now.*reference.onnx changed after the build"):
        sign_release("rc", release, report, load_signing_key(keys["key"]), progress=lambda _: None)
    assert trust_files(release) == []


def test_a_failure_half_way_takes_back_what_was_signed(ready_release, keys, tmp_path, monkeypatch):
    release, report = copy_release(ready_release, tmp_path)
    from pipeline.release import sign as sign_module
    real, calls = sign_module.sign_folder, []

    def second_fails(folder, *args):
        calls.append(folder)
        if len(calls) == 2:
            raise TrustError("injected failure")
        return real(folder, *args)
    monkeypatch.setattr(sign_module, "sign_folder", second_fails)
    with pytest.raises(TrustError, match="injected"):
        sign_release("rc", release, report, load_signing_key(keys["key"]), progress=lambda _: None)
    assert trust_files(release) == []


# --- provenance --------------------------------------------------------------------------------------
def test_provenance_matches_the_files_and_names_the_inputs(signed, keys):
    release, _ = signed
    folder = release / NAMES[0]
    from pipeline.release.keys import load_public_key
    statement = verify_provenance(folder, load_public_key(keys["pub"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert set(subjects) == {"heldout.npz", "manifest.json", "model.onnx", "reference.onnx", "verify.json",
                             SIGNOFF_FILE}
    assert all(sha256_file(folder / name) == digest for name, digest in subjects.items())
    dependencies = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["source-model:tiny-mlp"]["digest"] == {"sha256": SOURCE_SHA}
    assert dependencies["calibration-sample:tiny-random"]["digest"] == {"sha256": CALIBRATION_SHA}
    assert dependencies["heldout-split:tiny-random"]["digest"] == {"sha256": HELDOUT_SHA}
    assert dependencies["pypi:onnxruntime"]["uri"].startswith("pkg:pypi/onnxruntime@1.32")
    if (REPO / ".git").exists():  # a checkout (CI's clone, a worktree): the commit; else the version
        assert len(dependencies["quantgate"]["digest"]["gitCommit"]) == 40
    else:
        assert dependencies["quantgate"]["uri"].startswith("pkg:pypi/quantgate@")
    builder = statement["predicate"]["runDetails"]["builder"]
    assert builder["version"]["os"].startswith("Linux") and "quantgate" in builder["version"]
    # The CLI prints it and checks it; a changed file makes it exit 1.
    result = quantgate("provenance", str(folder), "--public-key", str(keys["pub"]))
    assert result.returncode == 0 and "signature verified, every subject's sha256 matches" in result.stdout
    assert f"calibration-sample:tiny-random: sha256 {CALIBRATION_SHA}" in result.stdout
    (folder / "heldout.npz").write_bytes(b"other bytes")
    result = quantgate("provenance", str(folder))
    assert result.returncode == 1 and "heldout.npz changed after the provenance was written" in result.stderr
    assert "Traceback" not in result.stderr


def test_provenance_records_the_full_config_and_refuses_one_it_cannot_reproduce(ready_release, keys, tmp_path):
    from pipeline.release.provenance import build_statement, statement_json
    release, report = copy_release(ready_release, tmp_path)
    external = statement_json(build_statement(release / NAMES[0], "rc"))["predicate"]["buildDefinition"][
        "externalParameters"]
    assert external["config_overrides"] == overrides_for("avx2") and external["release"] == "rc"
    assert external["config"]["model"]["name"] == "digits_cnn" and external["config"]["target"]["name"] == "avx2"
    assert "matches the build's config_sha256" in external["config_note"]
    manifest = Manifest.load(release / NAMES[1])
    manifest.config_sha256 = "0" * 64  # conf/ changed since the build: the config cannot be reproduced
    manifest.save()
    rebind_verify_json(release / NAMES[1])  # keep verify.json bound to this manifest: only the config differs
    with pytest.raises(TrustError, match="conf/ or the code changed since the build"):
        sign_release("rc", release, report, load_signing_key(keys["key"]), progress=lambda _: None)
    assert trust_files(release) == []


# --- publishing and pulling ---------------------------------------------------------------------------
def test_publish_a_ready_release_then_pull_into_an_empty_folder_and_load(signed, keys, registry, tmp_path):
    release, report = signed
    target = f"{registry['host']}/quantgate/good"
    records = publish_release("rc", release, report, target, keys["pub"], progress=lambda _: None)
    assert [r["reference"] for r in records] == [f"{target}/{name}:rc" for name in NAMES]
    manifest = registry_manifest(registry["host"], f"quantgate/good/{NAMES[0]}", "rc").json()
    labels = manifest["annotations"]
    assert labels["dev.quantgate.target_isa"] == "avx2" and labels["dev.quantgate.release"] == "rc"
    assert "avx2" in json.loads(labels["dev.quantgate.required_cpu_features"])
    assert labels["dev.quantgate.mode"] == "dynamic" and "onnxruntime" in json.loads(labels["dev.quantgate.versions"])
    titles = {layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]}
    assert {"verify.json", SIGNOFF_FILE, SIGNATURE_FILE, PROVENANCE_FILE, "model.onnx"} <= titles
    deploy = tmp_path / "deploy"
    for name in NAMES:
        folder = pull(f"{target}/{name}:rc", deploy, keys["pub"], progress=lambda _: None)
        assert folder == deploy / name
        assert (folder / "model.onnx").read_bytes() == (release / name / "model.onnx").read_bytes()
        verdict = ensure_can_run(folder / "model.onnx", public_key=keys["pub"])
        assert verdict.can_run
        import numpy as np
        import onnxruntime
        session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        inputs = dict(np.load(folder / "heldout.npz"))
        assert session.run(None, {"x": inputs["x"]})[0].shape == (8, 8)
    assert sorted(p.name for p in deploy.iterdir()) == sorted(NAMES)  # no staging folders left
    # Publishing the same bytes again is a no-op.
    again = publish_release("rc", release, report, target, keys["pub"], progress=lambda _: None)
    assert all(r["unchanged"] for r in again)


def test_the_guard_refuses_an_unsigned_or_altered_folder(signed, keys, ready_release, monkeypatch):
    release, _ = signed
    unsigned = ready_release[0] / NAMES[0] / "model.onnx"
    with pytest.raises(ArtifactRefused, match="is not signed"):
        ensure_can_run(unsigned, public_key=keys["pub"])
    (release / NAMES[0] / "manifest.json").write_text("{}")
    with pytest.raises(ArtifactRefused, match="manifest.json"):
        ensure_can_run(release / NAMES[0] / "model.onnx", public_key=keys["pub"])
    monkeypatch.setitem(sys.modules, "model_signing", None)  # as if model-signing were not installed
    with pytest.raises(SignatureCheckUnavailable, match="not installed: `pip install model-signing"):
        ensure_can_run(release / NAMES[1] / "model.onnx", public_key=keys["pub"])
    assert ensure_can_run(release / NAMES[1] / "model.onnx").can_run  # without a key: no signature check


def test_a_blocked_or_unsigned_release_does_not_publish(ready_release, signed, keys, registry, tmp_path):
    unsigned, report = copy_release(ready_release, tmp_path / "unsigned")
    result = quantgate("publish", "--release", "rc", "--artifacts-dir", str(unsigned), "--report", str(report),
                       "--registry", f"{registry['host']}/quantgate/blocked", "--public-key", str(keys["pub"]))
    assert_refused(result, "blocked", "no model.sig: the release requires signatures")
    release, report = signed
    with open(release / NAMES[0] / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TrustError, match="blocked now.*model.onnx"):
        publish_release("rc", release, report, f"{registry['host']}/quantgate/blocked", keys["pub"])
    catalog = requests.get(f"http://{registry['host']}/v2/_catalog", timeout=10).json()["repositories"]
    assert not [r for r in catalog if r.startswith("quantgate/blocked")]


def test_a_tag_with_other_content_is_refused_unless_forced(signed, keys, registry, tmp_path):
    release, report = signed
    target = f"{registry['host']}/quantgate/conflict"
    publish_release("rc", release, report, target, keys["pub"], progress=lambda _: None)
    before = registry_manifest(registry["host"], f"quantgate/conflict/{NAMES[0]}", "rc").json()
    sign_release("rc", release, report, load_signing_key(keys["key"]), progress=lambda _: None)  # new signature bytes
    with pytest.raises(TrustError, match="already published with other content.*nothing was pushed.*--force"):
        publish_release("rc", release, report, target, keys["pub"], progress=lambda _: None)
    assert registry_manifest(registry["host"], f"quantgate/conflict/{NAMES[0]}", "rc").json() == before
    publish_release("rc", release, report, target, keys["pub"], force=True, progress=lambda _: None)
    assert registry_manifest(registry["host"], f"quantgate/conflict/{NAMES[0]}", "rc").json() != before


def test_a_registry_that_is_down_or_refuses_the_push(signed, keys, tmp_path):
    release, report = signed
    started = time.monotonic()
    with pytest.raises(TrustError, match="not reachable.*make registry"):
        publish_release("rc", release, report, f"127.0.0.1:{local_registry.free_port()}/q", keys["pub"])
    assert time.monotonic() - started < 20  # no retry loop with minute-long sleeps
    folder, port = tmp_path / "read-only", local_registry.free_port()
    local_registry.start(folder, port, read_only=True)
    try:
        with pytest.raises(TrustError, match="refused the upload of .* check that it accepts pushes"):
            publish_release("rc", release, report, f"127.0.0.1:{port}/q", keys["pub"], progress=lambda _: None)
        assert registry_manifest(f"127.0.0.1:{port}", f"q/{NAMES[0]}", "rc").status_code == 404
    finally:
        local_registry.stop(folder)


def test_a_pulled_blob_whose_digest_does_not_match_is_not_written(signed, keys, registry, tmp_path):
    release, report = signed
    target = f"{registry['host']}/quantgate/corrupt"
    publish_release("rc", release, report, target, keys["pub"], progress=lambda _: None)
    digest = sha256_file(release / NAMES[0] / "model.onnx")
    data = registry["storage"] / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, other bytes: the registry's copy damaged
    data.write_bytes(bytes(blob))
    deploy = tmp_path / "deploy"
    result = quantgate("pull", f"{target}/{NAMES[0]}:rc", "--out", str(deploy), "--public-key", str(keys["pub"]))
    assert_refused(result, "model.onnx", "has sha256", "nothing was written")
    assert list(deploy.iterdir()) == []
    result = quantgate("pull", f"{target}/{NAMES[1]}:rc", "--out", str(deploy), "--public-key", str(keys["other_pub"]))
    assert_refused(result, "does not verify with public key")
    assert list(deploy.iterdir()) == []
    with pytest.raises(TrustError, match="does not exist in the registry"):
        pull(f"{target}/{NAMES[1]}:nope", deploy, keys["pub"])


class StallOnManifest:
    """A TCP proxy to the registry that forwards everything except a manifest PUT, which it holds: the
    publisher is then exactly half-way (every blob uploaded, no tag yet) when the test kills it."""

    def __init__(self, upstream_port: int):
        self.upstream, self.seen = upstream_port, threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, to_registry):
        try:
            while data := source.recv(1 << 16):
                if to_registry and b"PUT /v2/" in data and b"/manifests/" in data:
                    self.seen.set()
                    return  # hold it: never forwarded
                sink.sendall(data)
        except OSError:
            pass

    def close(self):
        self.server.close()


def test_a_push_killed_half_way_leaves_no_tag(signed, keys, registry):
    release, report = signed
    proxy = StallOnManifest(int(registry["host"].rsplit(":", 1)[1]))
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "publish", "--release", "rc", "--artifacts-dir", str(release),
             "--report", str(report), "--registry", f"127.0.0.1:{proxy.port}/quantgate/killed",
             "--public-key", str(keys["pub"]), "--waivers", str(FLOOR["waivers"])], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        assert proxy.seen.wait(90), process.communicate(timeout=30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
    finally:
        proxy.close()
    for name in NAMES:
        assert registry_manifest(registry["host"], f"quantgate/killed/{name}", "rc").status_code == 404
    model_digest = sha256_file(release / NAMES[1] / "model.onnx")
    blob = requests.head(f"http://{registry['host']}/v2/quantgate/killed/{NAMES[1]}/blobs/sha256:{model_digest}",
                         timeout=10)
    assert blob.status_code == 200  # the blobs were there: it really was half-way
    lines = []
    publish_release("rc", release, report, f"{registry['host']}/quantgate/killed", keys["pub"], progress=lines.append)
    assert any(line.startswith("  present ") for line in lines)  # the second push reuses them
    assert registry_manifest(registry["host"], f"quantgate/killed/{NAMES[0]}", "rc").status_code == 200


def test_usage_errors_name_the_fix(tmp_path, keys):
    result = quantgate("pull", "not-a-reference", "--out", str(tmp_path), "--public-key", str(keys["pub"]))
    assert_refused(result, "give <host[:port]>/<repository>:<tag>")
    result = quantgate("publish", "--release", "rc", "--registry", "localhost:1/q",
                       "--artifacts-dir", str(tmp_path / "none"))
    assert_refused(result, "holds no artifact folders", "make matrix")
    result = quantgate("pull", "127.0.0.1:1/q/x:rc", "--out", str(tmp_path), "--public-key", str(keys["key"]))
    assert_refused(result, "is not a PEM public key")


def test_certificate_mode_signs_with_the_chain_and_verifies_against_the_ca(ready_release, keys, tmp_path):
    release, report = copy_release(ready_release, tmp_path)
    signing_key = load_signing_key(keys["key"])  # keys/quantgate.crt beside it: its certificate
    assert signing_key.certificate == keys["cert"] and signing_key.not_after > datetime.now(timezone.utc)
    sign_release("rc", release, report, signing_key, (keys["cert"],), progress=lambda _: None)
    assert verify_folder(release / NAMES[0], Trust.of(keys["cert"]))["files"] == 7
    with pytest.raises(TrustError, match="signed with a certificate: verify it with your CA's certificate"):
        verify_folder(release / NAMES[0], Trust.of(keys["pub"]))
    other_ca = generate_keys(tmp_path / "other-ca")[2]
    with pytest.raises(TrustError, match="does not chain to"):
        verify_folder(release / NAMES[0], Trust.of(other_ca))
    assert signoff("rc", release, None, public_key=keys["cert"])["verdict"] == "ready"

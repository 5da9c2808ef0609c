"""Lab hosts over SSH as CPU profiles, against a real OpenSSH server on 127.0.0.1.

The server (/usr/sbin/sshd, its own config, a throw-away host key, a user key made here) lets root log in
with that key only. The "lab host" is this machine, so its interpreter is this venv's python; a host
below the avx2 floor is this machine's python under `qemu-x86_64 -cpu Nehalem`. Profiles are written to a
folder named by verify.cpu_profile_dirs, never into conf/cpu/.
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.fixtures.tiny_artifact import make_artifact_folder
from tests.helpers.cpu import requires_host_features

from pipeline.errors import ExitCode
from pipeline.isa.targets import load_profile
from pipeline.verify import remote
from pipeline.commands import verify as verify_command
from pipeline.verify.sandbox import classify

os.environ["HF_HUB_OFFLINE"] = "1"
SSHD = "/usr/sbin/sshd"
REMOTE_TMP = "/tmp/quantgate-remote.*"  # mktemp -d -t on the host, which is this machine


@dataclass
class Server:
    port: int
    folder: Path
    process: subprocess.Popen | None

    @property
    def user_key(self) -> Path:
        return self.folder / "user_key"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path, sftp: bool = True) -> Server:
    """A real sshd on 127.0.0.1, root login by the key made here only (`sftp=False`: without an SFTP subsystem, as
    dropbear and hardened hosts run); skips when it cannot start."""
    if not Path(SSHD).is_file() or shutil.which("ssh") is None:
        pytest.skip(f"needs OpenSSH ({SSHD} and ssh): `apt-get install openssh-server`")
    if os.geteuid() != 0:
        pytest.skip("sshd logs in as the user it runs as only when started by root")
    folder.mkdir(parents=True, exist_ok=True)
    keygen(folder / "host_key")
    keygen(folder / "user_key")
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    port = free_port()
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"{'Subsystem sftp internal-sftp' if sftp else ''}\nPidFile {folder / 'sshd.pid'}\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        if process.poll() is not None:
            pytest.skip(f"sshd could not start: {process.stderr.read().decode(errors='replace')[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Server(port, folder, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.skip("sshd did not listen within 10 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server_without_sftp(tmp_path_factory):
    running = start_sshd(tmp_path_factory.mktemp("sshd-no-sftp"), sftp=False)
    yield running
    running.stop()


def write_profile(folder: Path, server: Server, name: str = "lab", **overrides) -> Path:
    values = {"kind": "ssh", "host": "127.0.0.1", "user": "root", "port": server.port,
              "identity_file": str(server.user_key), "known_hosts": str(server.known_hosts),
              "python": sys.executable} | overrides
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()))
    return folder


def verify(folder: Path, profiles_dir: Path, *overrides: str) -> tuple[int, dict]:
    code = verify_command.main(["--artifact-dir", str(folder), "verify.reference_cpu=native",
                              "verify.native_max_samples=4", "verify.latency_repeats=2",
                              f"verify.cpu_profile_dirs=['{profiles_dir}']", *overrides])
    return code, json.loads((folder / "verify.json").read_text())


def remote_folders() -> set[str]:
    return set(glob.glob(REMOTE_TMP))


@requires_host_features("avx2", why="the lab host is this machine, and the artifact is built for avx2")
def test_avx2_artifact_passes_on_the_ssh_host_and_its_cpu_is_recorded(tmp_path, server):
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    profiles = write_profile(tmp_path / "profiles", server, microarchitecture="haswell")
    before = remote_folders()
    code, report = verify(folder, profiles, "verify.profiles=[native]", "verify.extra_profiles=[lab]")
    lab = report["profiles"]["lab"]
    assert code == ExitCode.OK and lab["status"] == "pass" and lab["requirement_met"], lab
    assert "avx2" in lab["host"]["cpu_features"] and lab["host"]["machine"] == "x86_64"
    assert lab["host"]["versions"]["onnxruntime"] and lab["host"]["versions"]["numpy"]
    assert lab["versions"]["onnxruntime"] == lab["host"]["versions"]["onnxruntime"]  # the child's own import agrees
    assert "mismatch" not in lab["host"] and lab["fidelity"]["cosine_worst"] > 0.99
    assert lab["command"].startswith("cd ") and "ssh " in lab["command"] and "BatchMode=yes" in lab["command"]
    assert remote_folders() <= before  # what was copied there is gone (other tests may run in parallel)


def test_a_host_whose_sshd_has_no_sftp_subsystem_is_verified(tmp_path, server_without_sftp):
    """Files travel as a tar stream over the SSH channel, not by scp (which speaks SFTP since OpenSSH 9.0): a host
    without an SFTP subsystem (dropbear, hardened hosts) works ("OpenSSH failed (scp: Connection closed)" before)."""
    server = server_without_sftp
    probe = tmp_path / "probe.txt"
    probe.write_text("x")
    scp = subprocess.run(["scp", "-q", "-P", str(server.port), "-o", "BatchMode=yes", "-i", str(server.user_key),
                          "-o", f"UserKnownHostsFile={server.known_hosts}", str(probe), "root@127.0.0.1:/tmp/"],
                         capture_output=True, text=True, timeout=60)
    if scp.returncode == 0:
        pytest.skip("this OpenSSH's scp does not use SFTP: the server cannot show the difference")
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-x86_64_v2", target="x86_64_v2")
    profiles = write_profile(tmp_path / "profiles", server)
    before = remote_folders()
    code, report = verify(folder, profiles, "verify.profiles=[native]", "verify.extra_profiles=[lab]")
    lab = report["profiles"]["lab"]
    assert code == ExitCode.OK and lab["status"] == "pass" and lab["requirement_met"], lab
    assert remote_folders() <= before


@requires_host_features("avx2", why="the lab host is this machine, and the custom-op library is built with -mavx2")
def test_custom_op_libraries_are_copied_to_the_host(tmp_path, server):
    from tests.helpers.cpu import isa_custom_op_library
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    library = isa_custom_op_library(tmp_path, "avx2")
    profiles = write_profile(tmp_path / "profiles", server)
    before = remote_folders()
    code, report = verify(folder, profiles, "verify.profiles=[native]", "verify.extra_profiles=[lab]",
                          f"verify.custom_op_libraries=[{library}]")
    lab = report["profiles"]["lab"]
    assert code == ExitCode.OK and lab["status"] == "pass", lab
    assert "--custom-ops custom_ops/0-libuses_avx2.so" in lab["command"]  # registered from the host's own copy
    assert remote_folders() == before


@pytest.mark.slow
@requires_host_features("avx2", why="the lab host is this machine, and the artifact is built for avx2")
def test_a_runtime_is_prepared_on_the_host_once_and_used(tmp_path, server):
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    cache = tmp_path / "host-cache"  # on the "host", which is this machine
    profiles = write_profile(tmp_path / "profiles", server, runtime="onnxruntime==1.20.1 numpy<2",
                             runtime_cache=str(cache))
    code, report = verify(folder, profiles, "verify.profiles=[native]", "verify.extra_profiles=[lab]")
    lab = report["profiles"]["lab"]
    assert code == ExitCode.OK and lab["status"] == "pass", lab
    assert lab["host"]["versions"]["onnxruntime"] == "1.20.1" == lab["versions"]["onnxruntime"]  # the child's own
    assert lab["runtime"]["prepared_on_host"] == "onnxruntime==1.20.1 numpy<2"
    (venv,) = [p for p in cache.iterdir() if (p / "COMPLETE").is_file()]
    built = (venv / "COMPLETE").stat().st_mtime
    code, again = verify(folder, profiles, "verify.profiles=[native]", "verify.extra_profiles=[lab]")
    assert code == ExitCode.OK and (venv / "COMPLETE").stat().st_mtime == built  # reused, not rebuilt
    assert [p.name for p in cache.iterdir()] == [venv.name]  # no half-built folder beside it


@pytest.mark.parametrize("problem, words", [
    ("unknown_host_key", "host key is not in"),
    ("refused_login", "the login was refused"),
    ("missing_python", "cannot be run there"),
])
def test_a_host_that_cannot_run_it_is_not_verified_in_words(tmp_path, server, problem, words):
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    overrides = {}
    if problem == "unknown_host_key":
        (tmp_path / "empty_known_hosts").write_text("")
        overrides["known_hosts"] = str(tmp_path / "empty_known_hosts")
    elif problem == "refused_login":
        keygen(tmp_path / "stranger")
        overrides["identity_file"] = str(tmp_path / "stranger")
    else:
        overrides["python"] = "/nonexistent/bin/python3"
    profiles = write_profile(tmp_path / "profiles", server, **overrides)
    code, report = verify(folder, profiles, "verify.profiles=[lab]")
    lab = report["profiles"]["lab"]
    assert (code, report["status"], lab["status"]) == (ExitCode.NOT_VERIFIED, "not_verified", "not_verified")
    assert words in lab["reason"], lab["reason"]
    if problem == "unknown_host_key":  # refused, never added silently
        assert (tmp_path / "empty_known_hosts").read_text() == ""


def test_a_stopped_server_is_not_verified(tmp_path):
    stopped = start_sshd(tmp_path / "sshd")
    stopped.stop()
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    code, report = verify(folder, write_profile(tmp_path / "profiles", stopped), "verify.profiles=[lab]")
    lab = report["profiles"]["lab"]
    assert (code, lab["status"]) == (ExitCode.NOT_VERIFIED, "not_verified")
    assert "nothing listens for SSH there" in lab["reason"]


def test_a_run_killed_half_way_leaves_nothing_on_the_host(tmp_path, server):
    cpu = load_profile(write_profile(tmp_path / "profiles", server) / "lab.yaml")
    before = remote_folders()
    marker = "61.2345"  # the child's own command line, to find it if it survived
    run = remote.run_child(cpu, ["python", "-c", f"import time; time.sleep({marker})"], {}, tmp_path / "out", [],
                           timeout_seconds=1, memory_limit_mb=4096)
    outcome = classify(run)
    assert run.timed_out and (outcome.status, outcome.failure) == ("not_verified", "timeout")
    assert remote_folders() == before
    survivors = subprocess.run(["pgrep", "-f", f"time.sleep\\({marker}"], capture_output=True, text=True).stdout
    assert survivors == "", "the timed-out child is still running on the host"


# Kills the nearest sshd above it: the SSH session serving this run, so the connection drops mid-run.
DROP_CONNECTION = """
import os, signal
pid = os.getppid()
while pid > 1:
    stat = open(f"/proc/{pid}/stat").read()
    name, after = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if name.startswith("sshd"):
        os.kill(pid, signal.SIGKILL)
        break
    pid = int(after[1])  # after the name: state, then the parent's pid
"""


def test_a_dropped_connection_is_named_and_the_folder_still_removed(tmp_path, server):
    cpu = load_profile(write_profile(tmp_path / "profiles", server) / "lab.yaml")
    before = remote_folders()
    with pytest.raises(remote.HostUnavailable, match="the connection dropped"):
        remote.run_child(cpu, ["python", "-c", DROP_CONNECTION], {}, tmp_path / "out", [], timeout_seconds=60,
                         memory_limit_mb=4096)
    assert remote_folders() == before  # the host is still reachable: cleaned up over a new connection


def test_a_crash_on_the_host_is_classified_like_a_local_one(tmp_path, server):
    cpu = load_profile(write_profile(tmp_path / "profiles", server) / "lab.yaml")
    run = remote.run_child(cpu, ["python", "-c", "import ctypes; ctypes.string_at(0)"], {}, tmp_path / "out", [],
                           timeout_seconds=60, memory_limit_mb=4096)
    outcome = classify(run)
    assert (outcome.status, outcome.failure, run.signal_name) == ("crashed", "sigsegv", "SIGSEGV")
    assert "segmentation fault" in outcome.reason


@pytest.mark.slow
def test_a_host_below_the_floor_refuses_and_a_false_claim_is_reported(tmp_path, server):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("needs qemu-x86_64 for a host below the avx2 floor: `apt-get install qemu-user`")
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    # Claims Haswell, but its interpreter runs on an emulated Nehalem: the guard there must refuse.
    profiles = write_profile(tmp_path / "profiles", server, python=f"{qemu} -cpu Nehalem {sys.executable}",
                             microarchitecture="haswell")
    code, report = verify(folder, profiles, "verify.profiles=[lab]")
    lab = report["profiles"]["lab"]
    assert lab["expected"] == "refused_by_guard" and lab["status"] == "refused_by_guard", lab
    assert code == ExitCode.OK and lab["exit_code"] == 3 and "avx2" in lab["reason"]
    assert "avx2" not in lab["host"]["cpu_features"] and "sse4_2" in lab["host"]["cpu_features"]
    assert "claims haswell" in lab["host"]["mismatch"]
    assert any("claims haswell" in note for note in report["notes"])


RENDEZVOUS = """#!/bin/sh
# The lab host's python, which for a verification run first waits (up to 60 s) for the other host's run to start.
case "$*" in *child_onnx*)
    touch "{folder}/{name}.started"
    for _ in $(seq 300); do
        if [ -e "{folder}/{other}.started" ]; then touch "{folder}/{name}.met"; break; fi
        sleep 0.2
    done;;
esac
exec {python} "$@"
"""


@requires_host_features("avx2", why="the lab hosts are this machine, and the artifact is built for avx2")
def test_lab_hosts_are_verified_in_parallel(tmp_path, server):
    folder = make_artifact_folder(tmp_path / "tiny-dynamic-avx2", target="avx2")
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    profiles = tmp_path / "profiles"
    for name, other in (("lab-a", "lab-b"), ("lab-b", "lab-a")):
        wrapper = tmp_path / f"{name}-python"
        wrapper.write_text(RENDEZVOUS.format(folder=meeting, name=name, other=other, python=sys.executable))
        wrapper.chmod(0o755)
        write_profile(profiles, server, name=name, python=str(wrapper), microarchitecture="haswell")
    code, report = verify(folder, profiles, "verify.profiles=[native]", "verify.extra_profiles=[lab-a,lab-b]",
                          "verify.max_parallel_hosts=2")
    assert code == ExitCode.OK and [report["profiles"][n]["status"] for n in ("lab-a", "lab-b")] == ["pass", "pass"]
    # each host's run saw the other's start while it waited: they ran at the same time
    assert sorted(p.name for p in meeting.iterdir()) == ["lab-a.met", "lab-a.started", "lab-b.met", "lab-b.started"]
    # the signoff tells the real machines from the emulated ones
    from pipeline.release.signoff import signoff
    release = tmp_path / "artifacts" / "rc1"
    release.mkdir(parents=True)
    shutil.copytree(folder, release / folder.name)
    report = signoff("rc1", release, None)
    where = {column["name"]: (column["where"], column["label"]) for column in report["grid"]["columns"]}
    assert where["lab-a"] == ("lab host", "lab-a (127.0.0.1)") and where["native"][0] == "this host"

"""Recovery: every multi-file write is all or nothing across SIGKILL (write aside, rename last, recover on the next
run), leftovers of a killed run never count or block, and every message that names a fix names one that works:
each fix is run here. Real keys, real signatures, real SIGKILL (docs/reliability.md, "Recovery")."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.release import SIGNATURE_FILE, SIGNOFF_FILE
from pipeline.release.trust import Trust, verify_folder
from tests.integration.test_release_trust import (FLOOR, NAMES, NO_LATENCY_LIMIT, copy_release, floor_waived,  # noqa: F401
                                                  keys, ready_release)
from tests.reliability.helpers import REPO, assert_user_error, quantgate

pytestmark = pytest.mark.slow  # the release fixture verifies two artifacts natively


def killed_in(code: str, *command: str) -> subprocess.CompletedProcess:
    """`quantgate COMMAND` in a child that SIGKILLs itself where `code` (run first) says."""
    script = textwrap.dedent(code) + f"\nfrom pipeline.cli import main\nmain({list(command)!r})\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-3000:])
    return result


def sign(release, report, keys):  # noqa: F811
    return quantgate("sign", "--release", "rc", "--artifacts-dir", str(release), "--report", str(report),
                     "--key", str(keys["key"]), "--waivers", str(FLOOR["waivers"]))


def make_signoff(release, report, keys):  # noqa: F811
    return quantgate("signoff", "--release", "rc", "--artifacts-dir", str(release), "--out", str(report),
                     "--waivers", str(FLOOR["waivers"]), "--public-key", str(keys["pub"]), f"release.max_latency_ratio={NO_LATENCY_LIMIT.max_latency_ratio}")


def all_signed(release, keys):  # noqa: F811
    trust = Trust(public_key=keys["pub"])
    return all(verify_folder(release / name, trust)["files"] for name in NAMES)


def own_report(ready_release, tmp_path):  # noqa: F811
    release, report = copy_release(ready_release, tmp_path)
    shutil.copytree(report, tmp_path / "reports")
    return release, tmp_path / "reports"


def test_sign_killed_between_folders_is_rolled_back_and_make_sign_then_signs(ready_release, keys, tmp_path):  # noqa: F811
    release, report = own_report(ready_release, tmp_path)
    killed_in("""
        import os, signal
        from pipeline.release import sign
        real, calls = sign.sign_folder, []
        def second_kills(folder, *args):
            calls.append(folder)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(folder, *args)
        sign.sign_folder = second_kills
        """, "sign", "--release", "rc", "--artifacts-dir", str(release), "--report", str(report), "--key",
              str(keys["key"]), "--waivers", str(FLOOR["waivers"]))
    assert (release / NAMES[0] / SIGNATURE_FILE).is_file() and list(release.glob(".quantgate-sign-*"))
    # the advice of a half-signed release, `make signoff` then `make sign`, works
    result = make_signoff(release, report, keys)
    assert result.returncode == 0, result.stdout[-3000:]  # rolled back: unsigned, ready
    assert not list(release.glob(f"*/{SIGNATURE_FILE}")) and not list(release.glob(".quantgate-sign-*"))
    signed = sign(release, report, keys)
    assert signed.returncode == 0, signed.stderr[-3000:]
    assert all_signed(release, keys)


def test_a_half_signed_release_is_fixed_by_the_make_sign_it_names(ready_release, keys, tmp_path):  # noqa: F811
    """A folder's signature removed: signoff blocks naming `make sign`, and `make sign` (not refused as blocked)
    signs the release again."""
    release, report = own_report(ready_release, tmp_path)
    assert sign(release, report, keys).returncode == 0
    (release / NAMES[1] / SIGNATURE_FILE).unlink()
    blocked = make_signoff(release, report, keys)
    assert blocked.returncode == 1 and "sign the release (`make sign`)" in blocked.stdout, blocked.stdout[-3000:]
    fixed = sign(release, report, keys)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert all_signed(release, keys) and make_signoff(release, report, keys).returncode == 0


def test_a_killed_builds_staging_or_kept_rejected_folder_is_not_an_artifact(ready_release, keys, tmp_path):  # noqa: F811
    release, report = own_report(ready_release, tmp_path)
    for leftover in (f".{NAMES[0]}.staging-123-abcd", f".{NAMES[1]}.rejected-456-ef01"):
        shutil.copytree(release / NAMES[0], release / leftover)
        (release / leftover / "verify.json").unlink()  # never verified: it would block if it were counted
    result = make_signoff(release, report, keys)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [a["name"] for a in json.loads((report / SIGNOFF_FILE).read_text())["artifacts"]] == sorted(NAMES)
    assert sign(release, report, keys).returncode == 0
    assert not list(release.glob(f".*/{SIGNATURE_FILE}"))


def test_a_killed_signoff_leaves_no_verdict_beside_pages_it_did_not_write(ready_release, keys, tmp_path):  # noqa: F811
    release, report = own_report(ready_release, tmp_path)
    assert json.loads((report / SIGNOFF_FILE).read_text())["verdict"] == "ready"
    (release / NAMES[0] / "verify.json").unlink()  # now blocked: the new pages say so
    killed_in("""
        import os, signal
        from pipeline.release.signoff import rendering as signoff
        def dies(path, payload):
            os.kill(os.getpid(), signal.SIGKILL)
        signoff.atomic_write_json = dies  # killed right before signoff.json, every other page written
        """, "signoff", "--release", "rc", "--artifacts-dir", str(release), "--out", str(report),
              "--waivers", str(FLOOR["waivers"]))
    assert "BLOCKED" in (report / "signoff.md").read_text().upper()
    assert not (report / SIGNOFF_FILE).exists()  # not the old `ready` beside the new BLOCKED pages
    refused = sign(release, report, keys)
    assert refused.returncode == 2
    assert_user_error(refused, "has no signoff", "make signoff RELEASE=rc")


def test_a_killed_verifys_temporary_folders_are_removed_by_the_next_run(ready_release, tmp_path):  # noqa: F811
    release, _ = copy_release(ready_release, tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    mine = temp / "quantgate-verify-notes"  # the user's, only named like ours
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    command = [sys.executable, "-m", "pipeline.cli", "verify", "--artifact-dir", str(release / NAMES[0]),
               "--out", str(tmp_path / "verify.json"), "verify.profiles=[native]", "verify.reference_cpu=native"]
    env = {**os.environ, "TMPDIR": str(temp)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(temp.glob("quantgate-verify-*/.quantgate-owner")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    left = sorted(p.name for p in temp.iterdir() if p != mine)
    assert any(name.startswith("quantgate-snapshot-") for name in left) and \
        any(name.startswith("quantgate-verify-") for name in left), left
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in temp.glob("quantgate-*")) == [mine.name]
    assert (mine / "notes.txt").read_text() == "the user's"


def test_keys_killed_half_way_leave_no_private_key_alone_and_the_named_fix_works(tmp_path):
    folder = tmp_path / "keys"
    killed_in("""
        import os, signal
        from pipeline.release import keys
        real = keys.atomic_write_bytes
        def dies_at_the_private_key(path, data, mode=None):
            if str(path).endswith(".key"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, data, mode)
        keys.atomic_write_bytes = dies_at_the_private_key
        """, "keys", "--out", str(folder))
    assert not (folder / "quantgate.key").exists()  # never a private key without its public key
    refused = quantgate("keys", "--out", str(folder))
    assert refused.returncode == 2
    assert_user_error(refused, "is incomplete", "quantgate.key missing", "--force")
    fixed = quantgate("keys", "--out", str(folder), "--force")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["quantgate.crt", "quantgate.key", "quantgate.pub"]


def test_a_sign_of_a_release_another_run_is_writing_is_refused_naming_it(ready_release, keys, tmp_path):  # noqa: F811
    """Two writers of one release at once (sign beside publish or matrix): the second is refused, exit 2, nothing
    signed, and once the first is done the same sign works."""
    from pipeline.release.lock import acquire
    release, report = own_report(ready_release, tmp_path)
    holder = acquire(release, "publish")
    try:
        refused = sign(release, report, keys)
        assert refused.returncode == 2
        assert_user_error(refused, "another quantgate publish", "is writing the release")
        assert not any((release / name / SIGNATURE_FILE).exists() for name in NAMES)
    finally:
        holder.close()
    assert sign(release, report, keys).returncode == 0 and all_signed(release, keys)

"""The repository holds source, not build outputs."""
import subprocess

from tests.conftest import REPO

LIMIT_BYTES = 5_000_000


def test_no_tracked_file_is_over_5_mb():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    large = [(name.decode(), (REPO / name.decode()).stat().st_size) for name in tracked
             if name and (REPO / name.decode()).is_file() and (REPO / name.decode()).stat().st_size > LIMIT_BYTES]
    assert not large, (f"tracked files over {LIMIT_BYTES / 1e6:g} MB (build outputs belong in artifacts/, "
                       f"and .gitignore should cover them): {large}")


def test_build_outputs_are_ignored():
    names = ["model.onnx", "weights.data", "model.onnx.data", "model.pt2", "heldout.npz", "artifacts/x/manifest.json"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(names)

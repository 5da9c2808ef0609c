import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DIGITS = ["model=digits_cnn", "mode=static", "verify.enabled=false"]


def quantgate(*args: str, env: dict | None = None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **popen)


def assert_user_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    """A clear message naming the problem, a non-zero exit, no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr, f"{text!r} not in: {result.stderr[-3000:]}"


def published(artifacts: Path) -> list[str]:
    """Artifact folders a user could mistake for builds (hidden staging and locks excluded)."""
    return sorted(p.name for p in artifacts.iterdir() if not p.name.startswith(".")) if artifacts.exists() else []


def digits_rows(count=40) -> list[list]:
    """Rows of 64 pixels (0..1) and an integer label: a valid calibration file for model=digits_cnn."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return [list(digits.data[i] / 16.0) + [int(digits.target[i])] for i in range(count)]


def write_csv(path, rows, header=None):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or [f"p{i}" for i in range(64)] + ["label"])
        writer.writerows(rows)
    return path

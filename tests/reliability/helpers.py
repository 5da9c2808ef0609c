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

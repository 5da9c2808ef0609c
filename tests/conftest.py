import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing in the suite may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Every build exports its own fp32 reference; tests of the reference cache turn it on with a folder of their own.
os.environ["QUANTGATE_REFERENCE_CACHE"] = "off"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def compose():
    """Compose the project's Hydra config with overrides, as the app would."""
    from pipeline.config import compose_config
    return compose_config


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ...` (or another module via args) as a user would."""
    return subprocess.run([sys.executable, *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


@pytest.fixture(scope="session")
def ort116_env(tmp_path_factory):
    """The one older runtime the suite builds (onnxruntime 1.16.3, from the package registry), in a
    cache of its own so tests can corrupt it; every test that needs it shares it, as do children."""
    from pipeline.runtimes import venvs
    previous = os.environ.get("QUANTGATE_RUNTIME_CACHE")
    os.environ["QUANTGATE_RUNTIME_CACHE"] = str(tmp_path_factory.mktemp("runtimes"))
    messages = []
    env = venvs.prepare(venvs.parse("ort116"), progress=messages.append)
    env.build_messages = messages
    yield env
    if previous is None:
        os.environ.pop("QUANTGATE_RUNTIME_CACHE", None)
    else:
        os.environ["QUANTGATE_RUNTIME_CACHE"] = previous


# --- the reliability suite's counts (tests/reliability/), printed at the end of every run ----------------------
_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    # Called where the reports arrive: in the one pytest process, or in the controller under pytest-xdist.
    if "tests/reliability" in report.nodeid and (report.when == "call" or report.failed or report.skipped):
        previous = _outcomes.get(report.nodeid)
        if previous != "failed":
            _outcomes[report.nodeid] = "failed" if report.failed else ("skipped" if report.skipped else "passed")


def pytest_terminal_summary(terminalreporter):
    if not _outcomes:
        return
    passed = sum(1 for status in _outcomes.values() if status == "passed")
    failed = sum(1 for status in _outcomes.values() if status == "failed")
    terminalreporter.write_line(
        f"reliability: {len(_outcomes)} cases tried, {passed} passed, {failed} failed "
        f"(docs/reliability.md lists each case)")

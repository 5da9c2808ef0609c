"""The reliability suite: every bad input and injected fault is one test; counts at the end."""
import pytest

_outcomes: dict[str, str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if "tests/reliability" in str(item.fspath) and (report.when == "call" or report.failed or report.skipped):
        previous = _outcomes.get(item.nodeid)
        if previous != "failed":
            _outcomes[item.nodeid] = "failed" if report.failed else ("skipped" if report.skipped else "passed")


def pytest_terminal_summary(terminalreporter):
    if not _outcomes:
        return
    passed = sum(1 for status in _outcomes.values() if status == "passed")
    failed = sum(1 for status in _outcomes.values() if status == "failed")
    terminalreporter.write_line(
        f"reliability: {len(_outcomes)} cases tried, {passed} passed, {failed} failed "
        f"(docs/reliability.md lists each case)")

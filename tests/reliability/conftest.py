"""The reliability suite: every bad input and injected fault is one test; counts at the end."""

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

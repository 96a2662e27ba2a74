"""The fault matrix's report (issue 19): cases run, passed, failed with their seeds (the ``--fault-seed``
option is in tests/conftest.py, so that it is known however pytest is started)."""
from __future__ import annotations

from typing import Any

import pytest

SEED_KEY = "fault_seed"
CASE_KEY = "fault_case"


_results: list[tuple[str, str, int, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if SEED_KEY not in props:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _results.append((report.nodeid, str(props[CASE_KEY]), int(str(props[SEED_KEY])), report.outcome))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _results:
        return
    tr = terminalreporter
    failed = sum(1 for *_, outcome in _results if outcome == "failed")
    passed = sum(1 for *_, outcome in _results if outcome == "passed")
    tr.section("fault matrix")
    tr.write_line(f"{len(_results)} case(s) run, {passed} passed, {failed} failed")
    for node, case, seed, outcome in _results:
        replay = f"  (replay: pytest -m '' '{node}' --fault-seed {seed})" if outcome == "failed" else ""
        tr.write_line(f"{outcome.upper():8} {case} seed {seed}{replay}")

"""The test run's own reporting (tests/conftest.py): a failure pytest cannot format is still reported
as that test's failure, the run goes on, and the last lines of the output name it (and a quarantined
test's failure)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

INNER = '''
import _pytest._code.code as code
import pytest


def test_unformattable_failure(monkeypatch):
    def no_line(self):
        raise TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'")
    # What Python 3.11 gives pytest for a frame with no line number (stops 23-25's CI).
    monkeypatch.setattr(code.TracebackEntry, "lineno", property(no_line))
    assert 1 + 1 == 3, "the failure's own message"


def test_the_run_goes_on():
    assert True


@pytest.mark.xfail(strict=False, reason="quarantined")
def test_quarantined():
    assert False, "the quarantined test's own message"
'''


def test_a_failure_pytest_cannot_format_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (tmp_path / "test_inner.py").write_text(INNER)
    cp = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                         "test_inner.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    out = cp.stdout + cp.stderr
    assert "INTERNALERROR" not in out, out
    assert cp.returncode == 1, out  # tests failed (2 would be INTERNALERROR's 3, or usage)
    assert "1 failed, 1 passed, 1 xfailed" in out, out
    tail = out.splitlines()[-100:]  # CI shows about the last 150 lines
    assert any("digest of failures" in line for line in tail), out
    assert any("FAILED test_inner.py::test_unformattable_failure" in line for line in tail), out
    assert any("the failure's own message" in line for line in tail), out
    assert any("pytest could not format this failure" in line for line in tail), out
    # A quarantined (xfail) test's failure is in the digest too: CI's excerpt says what it did.
    assert any("QUARANTINED (xfail) and failed test_inner.py::test_quarantined" in line for line in tail), out

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


def no_line_numbers(monkeypatch):
    def no_line(self):
        raise TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'")
    # What Python 3.11 gives pytest for a frame with no line number (stops 23-25's CI).
    monkeypatch.setattr(code.TracebackEntry, "lineno", property(no_line))


def test_unformattable_failure(monkeypatch):
    no_line_numbers(monkeypatch)
    print("the test's captured output")
    assert 1 + 1 == 3, "the failure's own message"


@pytest.mark.xfail(strict=False, reason="quarantined")
def test_quarantined_unformattable(monkeypatch):
    no_line_numbers(monkeypatch)
    print("more captured output")
    assert False, "the quarantined unformattable test's message"


def test_long_images_differ():
    image = bytearray(64 << 20)
    other = bytes(image[:5 * 4096 + 7]) + b"x" + bytes(image[5 * 4096 + 8:])
    assert bytes(image) == other


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
    assert "2 failed, 1 passed, 2 xfailed" in out, out
    # Two 64 MiB images: where they differ, in a few lines (pytest's difflib ran out CI's timeout).
    assert "first difference at byte 20487 (block 5 of 4096 bytes)" in out, out
    assert "1 of 16384 blocks differ" in out, out
    tail = out.splitlines()[-100:]  # CI shows about the last 150 lines
    assert any("digest of failures" in line for line in tail), out
    assert any("FAILED test_inner.py::test_unformattable_failure" in line for line in tail), out
    assert any("the failure's own message" in line for line in tail), out
    assert any("pytest could not format this failure" in line for line in tail), out
    # A quarantined (xfail) test's failure is in the digest too: CI's excerpt says what it did.
    assert any("QUARANTINED (xfail) and failed test_inner.py::test_quarantined" in line for line in tail), out

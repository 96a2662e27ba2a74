"""Shared fixtures: real `sanlab serve` processes on loopback ports."""
from __future__ import annotations

import contextlib
import faulthandler
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples, so that a run is reproducible and
# a failure is the change's, not the draw's; locally they explore (HYPOTHESIS_PROFILE=ci to pin).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent

# pytest explains a failed ``==`` of two sequences with difflib over their reprs whenever it thinks
# it runs on CI (CI or BUILD_NUMBER set: _pytest.compat.running_on_ci), even without -v.  For two
# unequal volume images of some MiB that takes minutes, so in CI a failed byte check became a test
# time-out with its message lost (and a check expected to fail inside pytest.raises took 300 s:
# the division test, CI after stop 30).  The tests say what differs themselves (block offsets,
# write numbers); the explanation stays the short one it is on a workstation.
for _ci_var in ("CI", "BUILD_NUMBER"):
    os.environ.pop(_ci_var, None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fault-seed", type=int, default=None,
                     help="run the selected fault-matrix cases (tests/faults) at this seed (also SANLAB_FAULT_SEED)")
TARGET = "iqn.2026-11.org.sanlab:array0"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def full_file_system(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` and filled to the last byte by a file ``filler``
    (remove it to make room); unmounted at the end.  Root only, as the fault matrix's."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        with open(where / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\xff" * 65536)
                    f.flush()
            except OSError:
                pass  # full
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def need(tool: str) -> str:
    """Path of a required external client; missing tools fail loudly (CI installs them)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (apt-get install libiscsi-bin qemu-utils)")
    return path


@dataclass
class SanlabProcess:
    """A running `sanlab serve`."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: Path
    log_path: Path
    killed: bool = False
    """Killed on purpose by the test (no clean-exit check at teardown)."""

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, lun: int = 0, target: str = TARGET, user: str | None = None, secret: str | None = None,
            **args: str) -> str:
        cred = f"{user}%{secret}@" if user else ""
        q = ("?" + "&".join(f"{k}={v}" for k, v in args.items())) if args else ""
        return f"iscsi://{cred}{self.portal}/{target}/{lun}{q}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        """The array's resident set size now (bytes, /proc VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stacks(self, wait: float = 2.0) -> str:
        """Ask the array for every task's and thread's stack (SIGUSR1, tools/diagnostics.py) and
        return what it logged: for an assertion message when the array seems stuck."""
        if self.proc.poll() is not None:
            return f"(array exited with {self.proc.returncode})"
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(wait)
        lines = [line for line in self.log().splitlines() if '"task_stacks"' in line or line.startswith(
            ("Thread 0x", "Current thread", "  File"))]
        return "\n".join(lines[-80:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if sig == signal.SIGKILL:
            self.killed = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"sanlab did not stop within {timeout}s:\n{self.log()[-4000:]}")
        return int(self.proc.returncode)


_STARTED: list[SanlabProcess] = []
"""Arrays started by the running test (the hang watchdog's to dump and kill)."""

_DIGEST: list[str] = []
"""What the run's last lines must show: watchdog dumps and the failures (:func:`pytest_terminal_summary`)."""

WATCHDOG_MARGIN = 45.0
"""Seconds before pytest-timeout's limit at which the watchdog acts."""


def _item_timeout(item: pytest.Item) -> float:
    """pytest-timeout's limit for ``item``: its marker, else --timeout, else the ini's."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value or 0)


@pytest.fixture(autouse=True)
def _hang_watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that hangs fails on its own, with the arrays' stacks, before pytest-timeout's limit.

    pytest-timeout interrupts the test with a signal; on Python 3.11 the traceback of a frame
    interrupted that way can carry no line number, and pytest's report then crashes the whole run
    (INTERNALERROR, stop 24's CI).  Shortly before that limit this watchdog asks every array the
    test started for its task stacks (SIGUSR1: tools/diagnostics.py), writes them and the test
    process's own thread stacks to stderr (the report shows them), and kills the arrays: whatever
    the test waits for then fails with a connection error, an ordinary failure that names the test.
    """
    limit = _item_timeout(request.node)
    _STARTED.clear()
    if limit <= WATCHDOG_MARGIN:
        yield
        return
    began = time.monotonic()
    name = request.node.nodeid

    def fire() -> None:
        live = [sp for sp in _STARTED if sp.proc.poll() is None]
        free = shutil.disk_usage(tempfile.gettempdir()).free
        parts = [f"WATCHDOG: {name} still running after {time.monotonic() - began:.0f} s; "
                 f"{len(live)} array(s) dumped and killed; {free / 2**30:.1f} GiB free under {tempfile.gettempdir()}"]
        for sp in live:
            parts.append(f"--- array {sp.portal} ({sp.log_path}):\n{sp.stacks()}")
            sp.killed = True
            sp.proc.kill()
        with tempfile.TemporaryFile("w+") as f:
            faulthandler.dump_traceback(file=f, all_threads=True)
            f.seek(0)
            parts.append("--- the test process's threads:\n" + f.read())
        text = "\n".join(parts)
        _DIGEST.append(text)
        out = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
        out.write("\n" + text + "\n")
        out.flush()

    timer = threading.Timer(limit - WATCHDOG_MARGIN, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def start_sanlab(tmp: Path, config: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                 extra: list[str] | None = None) -> SanlabProcess:
    port = port or free_port(host)
    data_dir = tmp / "data"
    args = [sys.executable, "-m", "sanlab.tools.cli", "serve", "--data-dir", str(data_dir),
            "--portal", f"{host}:{port}", "--log-format", "json", "--log-level", "debug"]
    if config is not None:
        cfg = tmp / "sanlab.toml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    args += extra or []
    # A wrapper for fault injection by hand, e.g. slow syncs:
    # SANLAB_TEST_WRAP="strace -f -qq -o /dev/null --seccomp-bpf -e trace=fdatasync -e inject=fdatasync:delay_exit=100000"
    args = shlex.split(os.environ.get("SANLAB_TEST_WRAP", "")) + args
    log_path = tmp / f"sanlab-{port}.log"
    logf = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp)
    sp = SanlabProcess(proc, host, port, data_dir, log_path)
    _STARTED.append(sp)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sanlab exited with {proc.returncode}:\n{sp.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return sp
        except OSError:
            time.sleep(0.05)
    sp.stop(signal.SIGKILL)
    raise AssertionError(f"sanlab did not listen on {host}:{port}:\n{sp.log()}")


@pytest.fixture
def sanlab_factory(tmp_path: Path) -> Iterator[Callable[..., SanlabProcess]]:
    """Start `sanlab serve` processes; each is stopped (SIGTERM, clean exit asserted) at teardown."""
    started: list[SanlabProcess] = []

    def factory(config: str | None = None, **kw: object) -> SanlabProcess:
        sub = tmp_path / f"s{len(started)}"
        sub.mkdir()
        sp = start_sanlab(sub, config, **kw)  # type: ignore[arg-type]
        started.append(sp)
        return sp

    yield factory
    for sp in started:
        rc = sp.stop()
        if sp.killed:
            continue
        assert rc == 0, f"sanlab exited with {rc}:\n{sp.log()[-4000:]}"
        assert "connection_crashed" not in sp.log(), sp.log()[-4000:]


@pytest.fixture
def sanlab(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    """One `sanlab serve` on the embedded default config (a small LUN would be faster, but this is the default)."""
    return sanlab_factory()


def run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    cp = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=full_env)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failure's report, even when pytest cannot format its traceback.

    On Python 3.11 a traceback entry can carry no line number (a frame interrupted by a signal, or
    a coroutine a cancellation was thrown into), and pytest's formatter then raises TypeError: the
    whole run stopped with INTERNALERROR and no word of which test failed or why (stops 23-25's
    CI).  Here such a failure is reported with the standard library's own formatting instead."""
    try:
        report: pytest.TestReport = yield
    except Exception as crash:  # noqa: BLE001 - any formatter crash: report the test's failure instead
        try:
            text = "".join(traceback.format_exception(call.excinfo.value)) if call.excinfo else ""
        except Exception:  # noqa: BLE001 - not even that: the exception's repr
            text = repr(call.excinfo.value) if call.excinfo else ""
        text += f"\n(pytest could not format this failure: {crash!r})"
        # TestReport.sections holds (title, content) pairs; the item keeps (when, key, content).
        sections = [(f"Captured {key} {when}", content) for when, key, content in item._report_sections]
        report = pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords},
                                   "failed" if call.excinfo else "passed", text, call.when,
                                   sections, call.duration, call.start, call.stop, list(item.user_properties))
        xfail = item.get_closest_marker("xfail")
        if xfail is not None and call.excinfo is not None and call.when == "call":
            # The skipping plugin's wrapper saw the crash, not a report: keep what it would have said.
            report.outcome = "skipped"
            report.wasxfail = str(xfail.kwargs.get("reason", ""))  # type: ignore[attr-defined]
    if report.failed or (hasattr(report, "wasxfail") and call.excinfo is not None and report.when == "call"):
        how = "FAILED" if report.failed else "QUARANTINED (xfail) and failed"
        _DIGEST.append(f"{how} {item.nodeid} ({report.when}):\n" + "\n".join(str(report.longrepr).splitlines()[-25:]))
    return report


BYTES_SHOWN = 4096
"""Byte strings longer than this are compared by :func:`pytest_assertrepr_compare`'s digest."""


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first byte where ``a`` and ``b`` differ (bisection on slices: fast for MiBs)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def describe_bytes_difference(a: bytes, b: bytes, unit: int = 4096, shown: int = 8) -> list[str]:
    """A few lines saying where two long byte strings differ: lengths, the first differing offset,
    how many ``unit``-sized blocks differ and the first few of them (offset, 16 bytes of each)."""
    out = [f"lengths {len(a)} and {len(b)}"]
    n = min(len(a), len(b))
    first = _first_difference(a, b)
    out.append(f"first difference at byte {first} (block {first // unit} of {unit} bytes)")
    diff = [off for off in range(first - first % unit, n, unit) if a[off:off + unit] != b[off:off + unit]]
    out.append(f"{len(diff)} of {(n + unit - 1) // unit} blocks differ; the first {min(shown, len(diff))}:")
    for off in diff[:shown]:
        out.append(f"  @{off}: left {a[off:off + 16].hex()}  right {b[off:off + 16].hex()}")
    return out


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: object, right: object) -> list[str] | None:
    """``==`` of long byte strings (whole LUN images) explained in a few lines.

    pytest's own explanation runs difflib over the pretty-printed values: for MiBs that is
    quadratic and ran for the whole test timeout in CI, hiding the failure behind a timeout
    (stops 23-26's CI: the division test's image comparison)."""
    kinds = (bytes, bytearray, memoryview)
    if op != "==" or not isinstance(left, kinds) or not isinstance(right, kinds):
        return None
    a, b = bytes(left), bytes(right)
    if max(len(a), len(b)) <= BYTES_SHOWN:
        return None
    return [f"byte strings of {len(a)} and {len(b)} bytes differ"] + describe_bytes_difference(a, b)[1:]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The failures' last lines (quarantined tests' too) and any watchdog dump, again, at the end of
    the output (where CI's excerpt of it is), at most 150 lines."""
    if not _DIGEST:
        return
    tmp = Path(tempfile.gettempdir())
    free = shutil.disk_usage(tmp).free
    _DIGEST.insert(0, f"{free / 2**30:.1f} GiB free under {tmp} at the end of the run")
    lines = "\n\n".join(_DIGEST).splitlines()
    terminalreporter.section("digest of failures (tests/conftest.py)")
    for line in lines[:60] + (["..."] + lines[-90:] if len(lines) > 150 else lines[60:150]):
        terminalreporter.write_line(line[:300])

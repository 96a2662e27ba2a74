"""Fuzzing a real `sanlab serve` over TCP with mutated PDUs, in login and in full-feature phase.

Each example opens its own connection to one server that lives for the whole test, sends what the
strategies draw (the in-process fuzzers' strategies: tests/target/test_*_fuzz.py), and checks the
documented answer: in login, Login Responses only, a failed one followed by the close (RFC 7143
§6.1, §11.13.5); in full-feature phase, answers that decode (Reject, NOP-In, responses) up to an
immediate NOP-Out placed last, or the connection dropped for a format error (§7.8); random bytes,
lengths included, end in the connection dropped.  After every example a fresh session logs in and
gets its NOP-In, and the log holds no crash.  CI runs fixed examples (HYPOTHESIS_PROFILE=ci); the
slow job explores longer.
"""
from __future__ import annotations

import socket
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.target.pdu import (
    LoginResponse, NopIn, NopOut, decode,
)
from tests.conftest import TARGET, SanlabProcess
from tests.target.test_connection_fuzz import mutated
from tests.target.test_login_fuzz import login_pdus
from tests.target.wire_client import WireClient

pytestmark = pytest.mark.integration

CONFIG = f"""
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
size = "8MiB"
"""

SYNC_ITT = 0xFEED0000
CRASH_MARKS = ("connection_crashed", "Traceback", "Fatal error", "scsi_execute_failed", "tmf_failed")


@pytest.fixture
def server(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    return sanlab_factory(CONFIG)


class Watch:
    """The server under fuzz: healthy for a new session, and no crash logged since the last look."""

    def __init__(self, sp: SanlabProcess, extra_marks: tuple[str, ...] = ()) -> None:
        self.sp = sp
        self.seen = 0
        self.marks = CRASH_MARKS + extra_marks

    def check(self) -> None:
        c = WireClient(self.sp.host, self.sp.port)
        try:
            resp = c.login(TARGET, isid=0x400000000099)
            assert (resp.status_class, resp.status_detail) == (0, 0)
            c.send_pdu(NopOut(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, data=b"alive"))
            r = c.recv()
            assert isinstance(r, NopIn) and bytes(r.data) == b"alive"
        finally:
            c.close()
        self.scan()

    def scan(self) -> None:
        """Only the log: no crash since the last look."""
        log = self.sp.log()
        new, self.seen = log[self.seen:], len(log)
        for mark in self.marks:
            assert mark not in new, new[new.find(mark) - 2000:new.find(mark) + 2000]


def read_until_closed_or(c: WireClient, stop: Callable[[object], bool]) -> bool:
    """Read PDUs (each must decode) until ``stop`` says so (True) or the target closes (False)."""
    while True:
        try:
            raw = c.recv_raw()
        except socket.timeout:
            raise AssertionError("the target neither answered nor closed within 10 s") from None
        if raw is None:
            return False
        pdu = decode(raw)
        if stop(pdu):
            return True


def login_phase(sp: SanlabProcess, stream: list[bytes]) -> None:
    c = WireClient(sp.host, sp.port)
    try:
        for blob in stream:
            c.send_raw(blob)
            raw = c.recv_raw()
            if raw is None:
                return  # dropped: a failed login's response came first (checked below) or none was due
            resp = decode(raw)
            assert isinstance(resp, LoginResponse), resp
            if resp.status_class:
                assert c.recv_raw() is None, "a failed login must end the connection"
                return
            if resp.transit and resp.nsg == 3:
                return  # full-feature phase: the login was acceptable
    except (ConnectionResetError, BrokenPipeError):
        return
    finally:
        c.close()


def full_feature(sp: SanlabProcess, stream: list[bytes]) -> None:
    c = WireClient(sp.host, sp.port)
    try:
        resp = c.login(TARGET, MaxRecvDataSegmentLength="65536")
        assert resp.status_class == 0
        for blob in stream:
            c.send_raw(blob)
        # Immediate delivery: answered whatever the CmdSN state the stream left (§3.2.2.1).
        c.send_pdu(NopOut(immediate=True, initiator_task_tag=SYNC_ITT, cmdsn=c.cmdsn, data=b"sync"))
        read_until_closed_or(c, lambda p: isinstance(p, NopIn) and p.initiator_task_tag == SYNC_ITT)
    except (ConnectionResetError, BrokenPipeError):
        return
    finally:
        c.close()


def garbage(sp: SanlabProcess, blob: bytes, after_login: bool) -> None:
    """Random bytes, lengths and all: answered or dropped once we stop sending."""
    c = WireClient(sp.host, sp.port)
    try:
        if after_login:
            assert c.login(TARGET).status_class == 0
        c.send_raw(blob)
        c.sock.shutdown(socket.SHUT_WR)
        read_until_closed_or(c, lambda p: False)
    except (ConnectionResetError, BrokenPipeError):
        return
    finally:
        c.close()


SOCKET_FUZZ = settings(max_examples=25, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LONG = settings(SOCKET_FUZZ, max_examples=600)
LOGIN_STREAMS = st.builds(lambda first, rest: [first, *rest], login_pdus(first=True),
                          st.lists(login_pdus(first=False), max_size=3))
# WireClient's session starts at CmdSN 1.
FF_STREAMS = st.lists(mutated(expcmdsn=1), min_size=1, max_size=10)
GARBAGE = st.tuples(st.binary(min_size=1, max_size=300), st.booleans())


def test_login_phase_fuzz(server: SanlabProcess) -> None:
    watch = Watch(server)

    @SOCKET_FUZZ
    @given(stream=LOGIN_STREAMS)
    def one(stream: list[bytes]) -> None:
        login_phase(server, stream)
        watch.check()
    one()


def test_full_feature_fuzz(server: SanlabProcess) -> None:
    watch = Watch(server)

    @SOCKET_FUZZ
    @given(stream=FF_STREAMS)
    def one(stream: list[bytes]) -> None:
        full_feature(server, stream)
        watch.check()
    one()


def test_garbage_fuzz(server: SanlabProcess) -> None:
    watch = Watch(server)

    @SOCKET_FUZZ
    @given(case=GARBAGE)
    def one(case: tuple[bytes, bool]) -> None:
        garbage(server, *case)
        watch.check()
    one()


RSS_GROWTH = 4 << 20
"""What RSS may grow while the same examples run a second time before it counts as a leak."""


@pytest.mark.slow
def test_pdu_fuzz_explore(server: SanlabProcess) -> None:
    """The long run, and memory: every example drawn is then sent again, and the server's RSS after
    the second pass is within RSS_GROWTH of the first's.  The first pass may raise the high-water
    mark (a WRITE's buffer is allocated for its EDTL when the command arrives, and the allocator
    keeps freed memory); the same bad input again must not add to it, or something leaks."""
    watch = Watch(server)
    drawn: list[tuple[list[bytes], list[bytes], tuple[bytes, bool]]] = []
    samples: list[int] = []

    def run(login: list[bytes], ff: list[bytes], junk: tuple[bytes, bool]) -> None:
        login_phase(server, login)
        full_feature(server, ff)
        garbage(server, *junk)
        watch.check()
        samples.append(server.rss())

    @LONG
    @given(login=LOGIN_STREAMS, ff=FF_STREAMS, junk=GARBAGE)
    def one(login: list[bytes], ff: list[bytes], junk: tuple[bytes, bool]) -> None:
        drawn.append((login, ff, junk))
        run(login, ff, junk)
    one()
    first = samples[-1]
    for example in drawn:
        run(*example)
    second = samples[-1]
    print(f"\nPDU fuzz: {len(drawn)} examples twice; server RSS start {samples[0] >> 20} MiB, after the first "
          f"pass {first >> 20} MiB, after the second {second >> 20} MiB, peak {max(samples) >> 20} MiB")
    assert second - first < RSS_GROWTH, f"RSS grew {(second - first) >> 20} MiB on the same examples again"

"""Fuzzing the management socket (tools/mgmt.py) of a real `sanlab serve` with random requests.

Invariant (README "Managing a running array"): every request line gets one JSON reply — ``ok``
true, or false with an ``error`` text — and the connection stays usable for the next line; an
operation's handler never fails with an unexpected exception (the log's ``mgmt_op_failed``: the
table or the handler should have refused the arguments in words).  Requests are operations from
the table with arguments drawn by each parameter's kind (plausible, out of range, wrong type),
plus unknown operations and lines that are not requests at all.  Operations that name files,
portals or remotes are left out: a fuzzer must not write outside its directory or dial out.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sanlab.tools.mgmt import SOCKET_NAME
from sanlab.tools.operations import OPERATIONS, Kind
from tests.conftest import SanlabProcess
from tests.faults.test_pdu_fuzz import CONFIG, Watch

pytestmark = pytest.mark.integration

UNSAFE = {"replace_drive", "backup_create", "backup_restore", "capture_start", "add_external", "add_remote",
          "pair_create", "wait_rebuild"}
SAFE_OPS = sorted(set(OPERATIONS) - UNSAFE)
SAFE_TEXT = st.text(st.characters(blacklist_characters="/\\\0", blacklist_categories=("Cs",)), max_size=12)
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | SAFE_TEXT,
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(SAFE_TEXT, c, max_size=3), max_leaves=6)
BY_KIND: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.TEXT: st.one_of(st.sampled_from(["lu0", "rg0", "vol0", "iqn.2026-11.org.sanlab:array0", "", "x" * 300]),
                         SAFE_TEXT),
    Kind.INT: st.one_of(st.integers(-2, 70000), st.sampled_from([2**63, -2**63, "7", "0x10", "1e3"])),
    Kind.NUMBER: st.one_of(st.floats(allow_nan=True), st.sampled_from([0, 0.01, "1.5", "inf", "nan", -1])),
    Kind.BOOL: st.one_of(st.booleans(), st.sampled_from(["yes", "no", "maybe", 2])),
    Kind.SIZE: st.one_of(st.sampled_from(["1MiB", "4KiB", "0", "-1MiB", "1.5GiB", "99999999PiB", "512", "abc"]),
                         st.integers(-1, 1 << 70)),
    Kind.LIST: st.one_of(st.lists(SAFE_TEXT, max_size=4), st.lists(st.integers(), max_size=3), SAFE_TEXT),
}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.binary(max_size=80)).replace(b"\n", b" ")
    if shape == 1:
        return json.dumps(draw(ANY_JSON)).encode()
    if shape == 2:
        return json.dumps({"op": draw(SAFE_TEXT), "args": draw(ANY_JSON)}).encode()
    op = OPERATIONS[draw(st.sampled_from(SAFE_OPS))]
    args: dict[str, Any] = {}
    for p in op.params:
        if draw(st.integers(0, 3)):
            args[p.name] = draw(BY_KIND.get(p.kind, ANY_JSON)) if draw(st.integers(0, 5)) else draw(ANY_JSON)
    if draw(st.integers(0, 9)) == 0:
        args[draw(SAFE_TEXT)] = draw(ANY_JSON)
    return json.dumps({"op": op.name if draw(st.booleans()) else op.command, "args": args}).encode()


class Client:
    def __init__(self, data_dir: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(data_dir / SOCKET_NAME))
        self.buf = b""

    def ask(self, line: bytes) -> dict[str, Any]:
        self.sock.sendall(line + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"the array closed the management connection after {line[:200]!r}"
            self.buf += chunk
        reply, _, self.buf = self.buf.partition(b"\n")
        out: dict[str, Any] = json.loads(reply)
        return out


def check_reply(line: bytes, reply: dict[str, Any]) -> None:
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert isinstance(reply.get("error"), str) and reply["error"], reply


@pytest.fixture
def server(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    return sanlab_factory(CONFIG)


MGMT_FUZZ = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def fuzz(server: SanlabProcess, fuzz_settings: settings) -> None:
    watch = Watch(server, extra_marks=("mgmt_op_failed", "mgmt_client_error"))
    client = Client(server.data_dir)

    @fuzz_settings
    @given(line=requests())
    @example(line=b'{"op": "show", "args": {"n": ' + b"1" * 5000 + b"}}")
    @example(line=b"[" * 100_000)
    @example(line=b'{"op": "auto-tiering", "args": {"interval": 0.0}}')
    @example(line=b'{"op": "tiering-round", "args": {"seconds": 0}}')
    @example(line=b'{"op": "journal-status", "args": {"name": ""}}')
    @example(line=b'{"op": "create_volume", "args": {"name": "v", "size": "1MiB", "ldevs": [""]}}')
    def one(line: bytes) -> None:
        check_reply(line, client.ask(line))
        check_reply(b"show", client.ask(b'{"op": "show"}'))  # the same connection still answers
        watch.scan()
    one()
    watch.check()


def test_random_requests_get_an_error_reply(server: SanlabProcess) -> None:
    fuzz(server, MGMT_FUZZ)


def test_an_overlong_line_gets_a_reply_naming_the_limit(server: SanlabProcess) -> None:
    client = Client(server.data_dir)
    try:
        client.sock.sendall(b"x" * (2 << 20))
    except BrokenPipeError:
        pass  # the array stopped reading at the limit and answered
    reply = json.loads(client.sock.makefile("rb").readline())
    assert reply["ok"] is False and "one line of at most 1048576 bytes" in reply["error"]


@pytest.mark.slow
def test_random_requests_explore(server: SanlabProcess) -> None:
    fuzz(server, settings(MGMT_FUZZ, max_examples=3000))

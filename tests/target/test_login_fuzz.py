"""Fuzzing the target's login state machine (sans-IO, in-process): random keys, values and flags.

Invariant (RFC 7143 §6, §11.13.5): every Login Request gets a Login Response that encodes — success,
or a status class/detail naming the failure (a :class:`LoginError` carries it) — never another
exception (the server would log it as ``connection_crashed``).  CHAP keys are in the draw, with and
without a secret configured, so the authentication path is fuzzed too.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.target.errors import LoginError
from sanlab.target.keys import KEYS
from sanlab.target.login import TargetAuth, TargetLogin
from sanlab.target.pdu import LoginRequest, LoginResponse, PduFramer, decode, encode_bytes

from tests.target.test_login import INAME, SECRET, TNAME, Directory

KEY_NAMES = sorted(KEYS) + ["CHAP_A", "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C", "AuthMethod", "X-com.example.k",
                            "X#vendor", "", "=", "A" * 70]
VALUES = st.one_of(
    st.sampled_from(["", "None", "CRC32C", "CRC32C,None", "Yes", "No", "Normal", "Discovery", "0", "1", "512",
                     "65536", "16777216", "99999999999999999999999", "0x1f", "0xZZ", "5", "CHAP", "CHAP,None",
                     "0b0101", "0x" + "ab" * 16, "0x", "-1", "Reject", "NotUnderstood", "Irrelevant", INAME, TNAME,
                     "All", "a" * 9000]),
    st.text(max_size=30),
)
PAIRS = st.lists(st.tuples(st.sampled_from(KEY_NAMES), VALUES), max_size=10)


def body(pairs: list[tuple[str, str]], base: dict[str, str]) -> bytes:
    items = dict(base)
    items.update(pairs)
    return b"".join(f"{k}={v}".encode("utf-8", "surrogatepass") + b"\0" for k, v in items.items())


@st.composite
def login_pdus(draw: st.DrawFn, first: bool) -> bytes:
    base = {"InitiatorName": INAME, "TargetName": TNAME} if first and draw(st.booleans()) else {}
    transit = draw(st.booleans())
    req = LoginRequest(transit=transit, cont=draw(st.booleans()), csg=draw(st.integers(0, 3)),
                       nsg=draw(st.integers(0, 3)) if transit else 0, version_max=draw(st.integers(0, 2)),
                       version_min=draw(st.integers(0, 2)), isid=draw(st.sampled_from([0x400000000001, 0, 1 << 47])),
                       tsih=draw(st.sampled_from([0, 0x21, 0xFFFF])), initiator_task_tag=1,
                       cid=draw(st.integers(0, 2)), cmdsn=draw(st.integers(0, 0xFFFFFFFF)),
                       data=body(draw(PAIRS), base) if draw(st.integers(0, 9)) else draw(st.binary(max_size=80)))
    blob = bytearray(encode_bytes(req))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, 47))
        if at not in (0, 4, 5, 6, 7):  # keep it a framed Login Request (the server drops anything else)
            blob[at] = draw(st.integers(0, 255))
    return bytes(blob)


def secret(initiator: str, user: str) -> bytes | None:
    return SECRET if user == "user" else None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=login_pdus(first=True), rest=st.lists(login_pdus(first=False), max_size=4), chap=st.booleans())
def test_login_requests_get_a_login_response(first: bytes, rest: list[bytes], chap: bool) -> None:
    run([first, *rest], chap)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=login_pdus(first=True), rest=st.lists(login_pdus(first=False), max_size=6), chap=st.booleans())
def test_login_requests_explore(first: bytes, rest: list[bytes], chap: bool) -> None:
    run([first, *rest], chap)


def run(stream: list[bytes], chap: bool) -> None:
    d = Directory({TNAME: TargetAuth(name=TNAME, incoming=secret if chap else None)})
    login = TargetLogin(d, statsn=40)
    framer = PduFramer()
    for blob in stream:
        if login.done:
            break
        framer.feed(blob)
        raw = framer.next()
        assert raw is not None
        req = decode(raw)
        assert isinstance(req, LoginRequest)
        try:
            resp = login.receive(req)
        except LoginError as exc:  # the server answers these with their status (server.py _login)
            assert exc.status >> 8 in (2, 3), exc
            continue
        assert isinstance(resp, LoginResponse)
        encode_bytes(resp)
        if resp.status_class:
            assert login.done  # a failed login ends: the server drops the connection after the answer

"""Text keys and the negotiation table (RFC 7143 §6.2, §13), byte fixtures."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.target.errors import LoginError, LoginStatus
from sanlab.target.keys import (
    INITIATOR_DEFAULTS, TARGET_DEFAULTS, Negotiator, encode_text, parse_text,
)


def respond(data: bytes, local: dict[str, str] | None = None, session: str = "Normal") -> dict[str, str]:
    n = Negotiator("target", dict(TARGET_DEFAULTS if local is None else local))
    n.set_session_type(session)  # type: ignore[arg-type]
    return dict(n.respond(parse_text(data)))


_key = st.from_regex(r"[A-Za-z][A-Za-z0-9.\-+@_]{0,62}", fullmatch=True)
_val = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=100)


@given(st.lists(st.tuples(_key, _val), max_size=10))
def test_parse_encode_round_trip(pairs: list[tuple[str, str]]) -> None:
    assert parse_text(encode_text(pairs)) == pairs


def test_parse_fixture_and_missing_final_nul() -> None:
    assert parse_text(b"A=1\0B=x,y\0") == [("A", "1"), ("B", "x,y")]
    assert parse_text(b"A=1\0B=") == [("A", "1"), ("B", "")]
    assert parse_text(b"") == []


@pytest.mark.parametrize("blob", [b"novalue\0", b"=x\0", b"K" * 64 + b"=1\0", b"A B=1\0", b"\xff=1\0",
                                  b"A=" + b"v" * 8193 + b"\0"])
def test_malformed_text(blob: bytes) -> None:
    with pytest.raises(LoginError) as exc:
        parse_text(blob)
    assert exc.value.status == LoginStatus.INITIATOR_ERROR


def test_list_key_takes_first_initiator_value_the_target_supports() -> None:
    # tgt answers with its own preference; RFC 7143 §6.2 says the proposer's order decides.
    assert respond(b"HeaderDigest=None,CRC32C\0")["HeaderDigest"] == "None"
    assert respond(b"HeaderDigest=CRC32C,None\0")["HeaderDigest"] == "CRC32C"
    assert respond(b"DataDigest=FancyCRC,CRC32C\0")["DataDigest"] == "CRC32C"
    assert respond(b"DataDigest=FancyCRC\0")["DataDigest"] == "Reject"
    assert respond(b"HeaderDigest=CRC32C\0", dict(TARGET_DEFAULTS, HeaderDigest="None"))["HeaderDigest"] == "Reject"


def test_boolean_and_or() -> None:
    a = respond(b"InitialR2T=No\0ImmediateData=Yes\0DataPDUInOrder=No\0DataSequenceInOrder=No\0")
    assert a == {"InitialR2T": "No", "ImmediateData": "Yes", "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes"}
    a = respond(b"InitialR2T=Yes\0ImmediateData=No\0")
    assert a == {"InitialR2T": "Yes", "ImmediateData": "No"}
    local = dict(TARGET_DEFAULTS, InitialR2T="Yes", ImmediateData="No")
    assert respond(b"InitialR2T=No\0ImmediateData=Yes\0", local) == {"InitialR2T": "Yes", "ImmediateData": "No"}


def test_numerical_min_max() -> None:
    a = respond(b"MaxBurstLength=65536\0FirstBurstLength=9999999\0MaxOutstandingR2T=64\0"
                b"DefaultTime2Wait=0\0DefaultTime2Retain=3600\0ErrorRecoveryLevel=2\0MaxConnections=8\0")
    # FirstBurstLength: min(9999999, 262144) = 262144, then clamped to the MaxBurstLength in force (§13.14).
    assert a == {"MaxBurstLength": "65536", "FirstBurstLength": "65536", "MaxOutstandingR2T": "16",
                 "DefaultTime2Wait": "2", "DefaultTime2Retain": "0", "ErrorRecoveryLevel": "0",
                 "MaxConnections": "1"}


@pytest.mark.parametrize("blob", [b"MaxBurstLength=100\0", b"MaxBurstLength=16777216\0", b"MaxBurstLength=abc\0",
                                  b"ImmediateData=Maybe\0", b"DefaultTime2Wait=3601\0", b"ErrorRecoveryLevel=3\0"])
def test_out_of_range_is_rejected(blob: bytes) -> None:
    (answer,) = respond(blob).values()
    assert answer == "Reject"


def test_unknown_and_private_keys_not_understood() -> None:
    assert respond(b"FooBar=1\0X-com.example.x=2\0X#NodeArchitecture=y\0") == {
        "FooBar": "NotUnderstood", "X-com.example.x": "NotUnderstood", "X#NodeArchitecture": "NotUnderstood"}


def test_obsolete_markers() -> None:
    assert respond(b"IFMarker=No\0OFMarker=Yes\0OFMarkInt=2048~8192\0") == {
        "IFMarker": "No", "OFMarker": "No", "OFMarkInt": "Reject"}


def test_discovery_session_irrelevant_keys() -> None:
    a = respond(b"MaxBurstLength=65536\0InitialR2T=No\0HeaderDigest=CRC32C\0MaxConnections=1\0", session="Discovery")
    assert a == {"MaxBurstLength": "Irrelevant", "InitialR2T": "Irrelevant", "HeaderDigest": "CRC32C",
                 "MaxConnections": "Irrelevant"}


def test_key_offered_twice_is_an_error() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    n.respond([("MaxBurstLength", "65536")])
    with pytest.raises(LoginError):
        n.respond([("MaxBurstLength", "65536")])


def test_answer_values_are_not_offers() -> None:
    with pytest.raises(LoginError):
        respond(b"HeaderDigest=Reject\0")


def test_declarative_mrdsl_and_params() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    assert n.respond(parse_text(b"MaxRecvDataSegmentLength=4096\0MaxBurstLength=131072\0"
                                b"FirstBurstLength=262144\0HeaderDigest=CRC32C\0")) == [
        ("MaxBurstLength", "131072"), ("FirstBurstLength", "131072"), ("HeaderDigest", "CRC32C")]
    assert n.target_declarations() == [("MaxRecvDataSegmentLength", "262144")]
    p = n.params()
    assert p.max_recv_data_segment_length_initiator == 4096
    assert p.max_recv_data_segment_length_target == 262144
    assert p.max_burst_length == 131072 and p.first_burst_length == 131072  # FirstBurst ≤ MaxBurst
    assert p.header_digest and not p.data_digest
    assert p.initial_r2t  # not offered: the RFC default (Yes) stands


def test_defaults_when_nothing_offered() -> None:
    p = Negotiator("target", TARGET_DEFAULTS).params()
    assert (p.max_recv_data_segment_length_initiator, p.max_burst_length, p.first_burst_length,
            p.initial_r2t, p.immediate_data, p.max_outstanding_r2t) == (8192, 262144, 65536, True, True, 1)


def test_initiator_and_target_agree() -> None:
    ini = Negotiator("initiator", dict(INITIATOR_DEFAULTS, HeaderDigest="CRC32C,None", MaxBurstLength="65536"))
    tgt = Negotiator("target", TARGET_DEFAULTS)
    answers = tgt.respond(ini.offers()) + tgt.target_declarations()
    assert ini.absorb(answers) == []
    pi, pt = ini.params(), tgt.params()
    for f in ("header_digest", "data_digest", "max_burst_length", "first_burst_length", "initial_r2t",
              "immediate_data", "max_outstanding_r2t", "max_recv_data_segment_length_target",
              "max_recv_data_segment_length_initiator", "error_recovery_level"):
        assert getattr(pi, f) == getattr(pt, f), f
    assert pi.header_digest and pi.max_burst_length == 65536


def test_initiator_refuses_answer_outside_its_offer() -> None:
    ini = Negotiator("initiator", dict(INITIATOR_DEFAULTS, HeaderDigest="None"))
    ini.offers()
    with pytest.raises(LoginError):
        ini.absorb([("HeaderDigest", "CRC32C")])
    ini2 = Negotiator("initiator", dict(INITIATOR_DEFAULTS, MaxBurstLength="65536"))
    ini2.offers()
    with pytest.raises(LoginError):
        ini2.absorb([("MaxBurstLength", "131072")])

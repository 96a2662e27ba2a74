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


# --- rules added with the Use/Scope/sender columns and the FirstBurstLength fix-ups -----------------

from hypothesis import settings  # noqa: E402

from sanlab.target.keys import KEYS, SessionParams, parse_number  # noqa: E402


@given(st.binary(max_size=300))
def test_any_text_parses_or_raises_initiator_error(blob: bytes) -> None:
    # The fuzzed invariant (ARCHITECTURE.md §11): pairs, or LoginError(INITIATOR_ERROR), nothing else.
    try:
        pairs = parse_text(blob)
    except LoginError as exc:
        assert exc.status == LoginStatus.INITIATOR_ERROR
    else:
        assert all(k and "=" not in k and "\0" not in v for k, v in pairs)


@given(st.binary(max_size=200))
def test_any_offer_is_answered_or_raises_login_error(blob: bytes) -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    try:
        answers = n.respond(parse_text(b"MaxBurstLength=" + blob + b"\0HeaderDigest=" + blob + b"\0"))
    except LoginError:
        return
    assert {k for k, _ in answers} <= {"MaxBurstLength", "HeaderDigest"}
    n.params()


def test_byte_fixture_full_answer() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    out = encode_text(n.respond(parse_text(
        b"HeaderDigest=None,CRC32C\0DataDigest=CRC32C\0MaxBurstLength=65536\0InitialR2T=Yes\0"
        b"ImmediateData=Yes\0FirstBurstLength=131072\0MaxRecvDataSegmentLength=131072\0")))
    assert out == (b"HeaderDigest=None\0DataDigest=CRC32C\0MaxBurstLength=65536\0InitialR2T=Yes\0"
                   b"ImmediateData=Yes\0FirstBurstLength=65536\0")
    p = n.params()
    assert p == SessionParams(header_digest=False, data_digest=True, initial_r2t=True, immediate_data=True,
                              max_recv_data_segment_length_target=262144,
                              max_recv_data_segment_length_initiator=131072, max_burst_length=65536,
                              first_burst_length=65536)


def test_first_burst_irrelevant_without_unsolicited_data() -> None:
    # RFC 7143 §13.14: irrelevant when InitialR2T=Yes and ImmediateData=No.
    a = respond(b"InitialR2T=Yes\0ImmediateData=No\0FirstBurstLength=4096\0")
    assert a == {"InitialR2T": "Yes", "ImmediateData": "No", "FirstBurstLength": "Irrelevant"}
    a = respond(b"FirstBurstLength=4096\0InitialR2T=Yes\0ImmediateData=No\0")  # order within the round
    assert a["FirstBurstLength"] == "Irrelevant"
    assert respond(b"InitialR2T=Yes\0FirstBurstLength=4096\0")["FirstBurstLength"] == "4096"


def test_first_burst_clamped_to_default_max_burst() -> None:
    # MaxBurstLength not offered: the RFC default 262144 is in force, so FirstBurstLength cannot exceed it.
    local = dict(TARGET_DEFAULTS, FirstBurstLength="1048576")
    n = Negotiator("target", local)
    assert n.respond([("FirstBurstLength", "1048576")]) == [("FirstBurstLength", "262144")]
    assert n.params().first_burst_length == 262144


def test_numerical_syntax() -> None:
    assert parse_number("0x10000") == 65536 and parse_number("0X1f") == 31 and parse_number("007") == 7
    for bad in ("", "-1", "1.0", "²", "١٢٣", "0x", "0xg", " 1", "1 ", "9" * 21):
        assert parse_number(bad) is None, bad
    assert respond(b"MaxBurstLength=0x10000\0") == {"MaxBurstLength": "65536"}
    assert respond("MaxBurstLength=١٢٣٤٥\0".encode()) == {"MaxBurstLength": "Reject"}
    assert respond(b"MaxBurstLength=\0") == {"MaxBurstLength": "Reject"}


def test_full_feature_phase_refuses_login_only_keys() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    assert n.respond([("MaxBurstLength", "65536"), ("HeaderDigest", "CRC32C"), ("MaxRecvDataSegmentLength", "4096")],
                     "full-feature") == [("MaxBurstLength", "Reject"), ("HeaderDigest", "Reject")]
    assert n.params().max_recv_data_segment_length_initiator == 4096  # declarative, ALL (§13.12)
    assert n.respond([("MaxRecvDataSegmentLength", "8192")], "full-feature") == []  # may be redeclared
    with pytest.raises(ValueError):
        n.respond([], "bogus")


def test_ffpo_and_wrong_sender_keys_are_rejected_during_login() -> None:
    assert respond(b"SendTargets=All\0TargetAlias=x\0TargetPortalGroupTag=1\0TargetAddress=1.2.3.4\0") == {
        "SendTargets": "Reject", "TargetAlias": "Reject", "TargetPortalGroupTag": "Reject", "TargetAddress": "Reject"}
    assert respond(b"InitiatorAlias=web server 4\0") == {}


def test_non_leading_connection_rejects_lo_keys() -> None:
    n = Negotiator("target", TARGET_DEFAULTS, leading=False)
    assert n.respond([("InitialR2T", "No"), ("HeaderDigest", "CRC32C"), ("MaxRecvDataSegmentLength", "4096")]) == [
        ("InitialR2T", "Reject"), ("HeaderDigest", "CRC32C")]


def test_task_reporting_and_protocol_level() -> None:
    assert respond(b"TaskReporting=FastAbort,RFC3720\0iSCSIProtocolLevel=2\0") == {
        "TaskReporting": "RFC3720", "iSCSIProtocolLevel": "1"}
    assert respond(b"TaskReporting=FastAbort\0iSCSIProtocolLevel=32\0") == {
        "TaskReporting": "Reject", "iSCSIProtocolLevel": "Reject"}
    n = Negotiator("target", TARGET_DEFAULTS)
    n.respond([("iSCSIProtocolLevel", "0")])
    assert n.params().iscsi_protocol_level == 0 and n.params().task_reporting == "RFC3720"


def test_discovery_session_applicable_keys_and_params() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    n.set_session_type("Discovery")
    assert dict(n.respond(parse_text(
        b"DataDigest=CRC32C,None\0DefaultTime2Wait=5\0DefaultTime2Retain=0\0ErrorRecoveryLevel=0\0"
        b"ImmediateData=No\0DataPDUInOrder=No\0MaxOutstandingR2T=4\0FirstBurstLength=512\0TaskReporting=RFC3720\0"
        b"MaxRecvDataSegmentLength=16384\0"))) == {
        "DataDigest": "CRC32C", "DefaultTime2Wait": "5", "DefaultTime2Retain": "0", "ErrorRecoveryLevel": "0",
        "ImmediateData": "Irrelevant", "DataPDUInOrder": "Irrelevant", "MaxOutstandingR2T": "Irrelevant",
        "FirstBurstLength": "Irrelevant", "TaskReporting": "Irrelevant"}
    p = n.params()
    assert p.session_type == "Discovery" and p.data_digest and p.default_time2wait == 5
    assert p.max_recv_data_segment_length_initiator == 16384
    assert (p.immediate_data, p.max_outstanding_r2t, p.first_burst_length) == (True, 1, 65536)


def test_record_and_names_in_params() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    n.record("InitiatorName", "iqn.2026-11.test:host")
    n.record("TargetName", "iqn.2026-11.org.sanlab:array0")
    n.record("InitiatorAlias", "host")
    assert n.respond([("HeaderDigest", "None")]) == [("HeaderDigest", "None")]  # record() sends nothing
    p = n.params()
    assert (p.initiator_name, p.target_name, p.initiator_alias) == (
        "iqn.2026-11.test:host", "iqn.2026-11.org.sanlab:array0", "host")
    assert n.negotiated["HeaderDigest"] == "None" and n.negotiated["InitiatorName"] == "iqn.2026-11.test:host"


def test_duplicate_within_one_round_and_across_stages() -> None:
    with pytest.raises(LoginError) as exc:
        respond(b"MaxBurstLength=65536\0MaxBurstLength=65536\0")
    assert exc.value.status == LoginStatus.INITIATOR_ERROR
    n = Negotiator("target", TARGET_DEFAULTS)
    n.respond([("MaxRecvDataSegmentLength", "4096")], "security")
    with pytest.raises(LoginError):
        n.respond([("MaxRecvDataSegmentLength", "4096")], "operational")


@pytest.mark.parametrize("special", ["Reject", "Irrelevant", "NotUnderstood"])
def test_special_values_are_not_offers(special: str) -> None:
    with pytest.raises(LoginError) as exc:
        respond(f"MaxBurstLength={special}\0".encode())
    assert exc.value.status == LoginStatus.INITIATOR_ERROR


def test_invalid_local_configuration_is_refused() -> None:
    for bad in ({"HeaderDigest": "CRC64"}, {"MaxBurstLength": "1"}, {"InitialR2T": "maybe"}):
        with pytest.raises(ValueError):
            Negotiator("target", dict(TARGET_DEFAULTS, **bad))


def test_initiator_discovery_offers_skip_irrelevant_keys() -> None:
    ini = Negotiator("initiator", INITIATOR_DEFAULTS)
    ini.set_session_type("Discovery")
    keys = {k for k, _ in ini.offers()}
    assert "MaxRecvDataSegmentLength" in keys and "HeaderDigest" in keys
    assert not keys & {"MaxBurstLength", "InitialR2T", "ImmediateData", "MaxConnections", "TaskReporting"}


def test_initiator_answers_target_offers_and_refuses_repeats() -> None:
    ini = Negotiator("initiator", INITIATOR_DEFAULTS)
    ini.offers()
    assert ini.absorb([("DefaultTime2Wait", "5"), ("TargetAlias", "array0")]) == []  # answered our offer
    ini2 = Negotiator("initiator", {"MaxRecvDataSegmentLength": "8192"})
    ini2.offers()
    # The target proposes a key we did not offer: we answer it by the same rules (max of 5 and 2).
    assert ini2.absorb([("DefaultTime2Wait", "5"), ("TargetAlias", "array0")]) == [("DefaultTime2Wait", "5")]
    assert ini2.params().target_alias == "array0"
    with pytest.raises(LoginError):
        ini2.absorb([("DefaultTime2Wait", "5")])
    with pytest.raises(LoginError):
        ini2.absorb([("MaxRecvDataSegmentLength", "100")])


def test_initiator_keeps_default_on_reject_and_irrelevant() -> None:
    ini = Negotiator("initiator", dict(INITIATOR_DEFAULTS, HeaderDigest="CRC32C", FirstBurstLength="4096"))
    ini.offers()
    ini.absorb([("HeaderDigest", "Reject"), ("FirstBurstLength", "Irrelevant")])
    p = ini.params()
    assert not p.header_digest and p.first_burst_length == 65536


# Strategies for valid local configurations of either side.
def _value_strategy(key: str) -> st.SearchStrategy[str]:
    spec = KEYS[key]
    if spec.values == frozenset({"Yes", "No"}):
        return st.sampled_from(["Yes", "No"])
    if key in ("HeaderDigest", "DataDigest"):
        return st.sampled_from(["None", "CRC32C", "None,CRC32C", "CRC32C,None"])
    if key == "TaskReporting":
        return st.sampled_from(["RFC3720", "FastAbort,RFC3720", "ResponseFence"])
    return st.integers(spec.low, spec.high).map(str)


_NEGOTIABLE = ["HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T", "ImmediateData",
               "MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
               "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
               "ErrorRecoveryLevel", "TaskReporting", "iSCSIProtocolLevel"]
_configs = st.fixed_dictionaries({}, optional={k: _value_strategy(k) for k in _NEGOTIABLE})


@settings(max_examples=200)
@given(_configs, _configs, st.sampled_from(["Normal", "Discovery"]))
def test_initiator_and_target_always_agree(ini_local: dict[str, str], tgt_local: dict[str, str],
                                           session: str) -> None:
    ini = Negotiator("initiator", ini_local)
    tgt = Negotiator("target", tgt_local)
    ini.set_session_type(session)  # type: ignore[arg-type]
    tgt.set_session_type(session)  # type: ignore[arg-type]
    answers = tgt.respond(ini.offers()) + tgt.target_declarations()
    assert ini.absorb(answers) == []
    pi, pt = ini.params(), tgt.params()
    assert pi == pt
    assert pt.first_burst_length <= pt.max_burst_length
    if "MaxRecvDataSegmentLength" in tgt_local:
        assert pt.max_recv_data_segment_length_target == int(tgt_local["MaxRecvDataSegmentLength"])


def test_session_type_offered_through_respond_applies() -> None:
    n = Negotiator("target", TARGET_DEFAULTS)
    assert n.respond(parse_text(b"SessionType=Discovery\0MaxBurstLength=65536\0")) == [
        ("MaxBurstLength", "Irrelevant")]
    assert n.params().session_type == "Discovery"
    assert respond(b"SessionType=Other\0") == {"SessionType": "Reject"}

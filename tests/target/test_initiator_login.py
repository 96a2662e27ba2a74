"""Initiator login state machine (sans-IO): requests out, responses in, against byte fixtures and
against the target's own login state machine (the two roles share keys.py and chap.py)."""
from __future__ import annotations

import pytest

from sanlab.storage.peer import PeerRefused
from sanlab.target.chap import ChapCredentials
from sanlab.target.errors import LoginFailed, LoginStatus
from sanlab.target.initiator_login import InitiatorLogin
from sanlab.target.keys import INITIATOR_DEFAULTS, encode_text
from sanlab.target.login import TargetLogin
from sanlab.target.pdu import LoginRequest, LoginResponse, LoginStage, RawPdu, decode, encode_bytes
from tests.target.test_login import INAME, SECRET, TNAME, TSECRET, _chap_dir, plain_dir

ISID = 0x801234560000
KEYS = {"MaxRecvDataSegmentLength": "65536", "ImmediateData": "Yes", "InitialR2T": "No",
        "MaxBurstLength": "16384", "FirstBurstLength": "8192"}

# The first Login Request of a login without CHAP, straight to the operational stage (RFC 7143 §11.12).
REQUEST = bytes.fromhex(
    "43"            # I bit (always set on a Login Request) | opcode 0x03
    "87"            # T=1, C=0, CSG=1 (operational), NSG=3 (full-feature phase)
    "00" "00"       # Version-max, Version-min
    "00" "0000bc"   # TotalAHSLength 0, DataSegmentLength 188
    "801234560000"  # ISID: type 10b (random)
    "0000"          # TSIH 0: a new session
    "00000001"      # Initiator Task Tag
    "0000" "0000"   # CID, reserved
    "00000001"      # CmdSN
    "00000000"      # ExpStatSN
    + "00" * 16
) + (b"InitiatorName=iqn.2026-11.test:i\0SessionType=Normal\0TargetName=iqn.2026-11.test:t\0"
     b"MaxRecvDataSegmentLength=65536\0ImmediateData=Yes\0InitialR2T=No\0MaxBurstLength=16384\0"
     b"FirstBurstLength=8192\0")

# The target's final Login Response (RFC 7143 §11.13).
RESPONSE = bytes.fromhex(
    "23"            # opcode 0x23
    "87"            # T=1, CSG=1, NSG=3
    "00" "00"       # Version-max, Version-active
    "00" "000080"   # DataSegmentLength 128
    "801234560000"  # ISID
    "0021"          # TSIH given by the target
    "00000001"      # Initiator Task Tag
    "00000000"      # reserved
    "00000040"      # StatSN
    "00000001"      # ExpCmdSN
    "00000008"      # MaxCmdSN
    "00" "00"       # Status-Class, Status-Detail: success
    + "00" * 10
) + (b"TargetPortalGroupTag=1\0ImmediateData=Yes\0InitialR2T=No\0MaxBurstLength=16384\0FirstBurstLength=8192\0"
     b"MaxRecvDataSegmentLength=4096\0")


def response(raw: bytes) -> LoginResponse:
    pdu = decode(RawPdu(raw[:48], b"", raw[48:]))  # the fixtures need no padding
    assert isinstance(pdu, LoginResponse)
    return pdu


def test_login_exchange_bytes() -> None:
    login = InitiatorLogin("iqn.2026-11.test:i", "iqn.2026-11.test:t", isid=ISID, keys=KEYS)
    assert encode_bytes(login.first_request()) == REQUEST
    assert login.receive(response(RESPONSE)) is None
    assert login.done and login.outcome is not None
    o = login.outcome
    assert (o.tsih, o.expstatsn, o.expcmdsn, o.maxcmdsn) == (0x21, 0x41, 1, 8)
    p = o.params
    assert (p.max_burst_length, p.first_burst_length, p.immediate_data, p.initial_r2t) == (16384, 8192, True, False)
    # Each side's MaxRecvDataSegmentLength is its own declaration (§13.12).
    assert (p.max_recv_data_segment_length_target, p.max_recv_data_segment_length_initiator) == (4096, 65536)


def test_refused_login_is_a_peer_refusal() -> None:
    login = InitiatorLogin(INAME, TNAME, isid=ISID)
    resp = response(RESPONSE)
    resp.transit, resp.status_class, resp.status_detail, resp.data = False, 2, 3, b""
    with pytest.raises(LoginFailed) as exc:
        login.receive(resp)
    assert exc.value.login_status == LoginStatus.NOT_FOUND and exc.value.status is None
    assert isinstance(exc.value, PeerRefused)


def test_target_must_not_transit_further_than_asked() -> None:
    login = InitiatorLogin(INAME, TNAME, isid=ISID, chap=ChapCredentials("host", SECRET))
    first = login.first_request()
    assert (first.csg, first.transit) == (LoginStage.SECURITY_NEGOTIATION, False)
    resp = LoginResponse(transit=True, csg=0, nsg=3, isid=ISID, initiator_task_tag=first.initiator_task_tag,
                         data=encode_text([("AuthMethod", "CHAP")]))
    with pytest.raises(LoginFailed) as exc:
        login.receive(resp)
    assert exc.value.login_status == LoginStatus.INITIATOR_ERROR


def test_continued_response_is_asked_for_the_rest() -> None:
    login = InitiatorLogin("iqn.2026-11.test:i", "iqn.2026-11.test:t", isid=ISID, keys=KEYS)
    login.first_request()
    whole = response(RESPONSE)
    text = bytes(whole.data)
    part = LoginResponse(transit=False, cont=True, csg=1, isid=ISID, initiator_task_tag=1, statsn=0x3F,
                         data=text[:50])  # cut in the middle of a key=value pair
    more = login.receive(part)
    # An empty Login Request, T=0, in the same stage asks for the rest (§6.1, §11.13.2).
    assert more is not None and (more.transit, more.cont, more.csg, bytes(more.data)) == (False, False, 1, b"")
    assert more.expstatsn == 0x40
    whole.data = text[50:]
    assert login.receive(whole) is None
    assert login.outcome is not None and login.outcome.params.max_recv_data_segment_length_target == 4096


def run_against_target(login: InitiatorLogin, target: TargetLogin) -> list[LoginRequest]:
    """Drive both sans-IO roles against each other; the requests the initiator sent."""
    sent = [login.first_request()]
    while True:
        resp = target.receive(sent[-1])
        nxt = login.receive(resp)
        if nxt is None:
            return sent
        sent.append(nxt)


def test_mutual_chap_login_against_the_target_state_machine() -> None:
    target = TargetLogin(_chap_dir(outgoing=ChapCredentials("array0", TSECRET)), statsn=7)
    login = InitiatorLogin(INAME, TNAME, isid=ISID, chap=ChapCredentials("host", SECRET),
                           target_chap=ChapCredentials("array0", TSECRET), chap_rng=lambda n: bytes(range(1, n + 1)))
    sent = run_against_target(login, target)
    # AuthMethod, CHAP_A, CHAP_N/R + our challenge (security), then the operational offers.
    assert [(r.csg, r.transit) for r in sent] == [(0, False), (0, False), (0, True), (1, True)]
    assert target.result is not None and login.outcome is not None
    assert login.outcome.tsih == target.result.tsih and target.result.username == "host"
    assert login.outcome.params.max_burst_length == target.result.params.max_burst_length
    assert login.outcome.expstatsn == target.statsn  # the next StatSN the target will use


def test_target_that_fails_mutual_chap_is_refused() -> None:
    target = TargetLogin(_chap_dir(outgoing=ChapCredentials("array0", b"not-what-we-know")))
    login = InitiatorLogin(INAME, TNAME, isid=ISID, chap=ChapCredentials("host", SECRET),
                           target_chap=ChapCredentials("array0", TSECRET))
    with pytest.raises(LoginFailed) as exc:
        run_against_target(login, target)
    assert exc.value.login_status == LoginStatus.AUTHENTICATION_FAILURE


def test_discovery_login_against_the_target_state_machine() -> None:
    target = TargetLogin(plain_dir())
    login = InitiatorLogin(INAME, None, isid=ISID, keys=dict(INITIATOR_DEFAULTS))
    sent = run_against_target(login, target)
    assert b"SessionType=Discovery\0" in bytes(sent[0].data) and b"TargetName" not in bytes(sent[0].data)
    assert login.outcome is not None and login.outcome.params.session_type == "Discovery"

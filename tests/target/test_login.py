"""Target login state machine (sans-IO): stages, status codes, CHAP, ACLs, TSIH rules."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from sanlab.target.chap import ChapCredentials
from sanlab.target.errors import LoginStatus
from sanlab.target.keys import TARGET_DEFAULTS
from sanlab.target.login import TargetAuth, TargetLogin
from sanlab.target.pdu import LoginRequest, LoginResponse, PduFramer, decode

TNAME = "iqn.2026-11.org.sanlab:array0"
INAME = "iqn.2026-11.test:host"
SECRET = b"initiator-secret"
TSECRET = b"target-secret-99"


@dataclass
class Directory:
    targets: dict[str, TargetAuth]
    portal_group_tag: int = 7
    used_challenges: set[bytes] = field(default_factory=set)
    local_keys: dict[str, str] = field(default_factory=lambda: dict(TARGET_DEFAULTS))
    discovery_auth: TargetAuth = field(default_factory=lambda: TargetAuth(name=""))
    sessions: set[tuple[str, int, str, int]] = field(default_factory=set)
    tsih: int = 0x20

    def target(self, name: str) -> TargetAuth | None:
        return self.targets.get(name)

    def session_exists(self, initiator_name: str, isid: int, target_name: str, tsih: int) -> bool:
        return (initiator_name, isid, target_name, tsih) in self.sessions

    def new_tsih(self) -> int:
        self.tsih += 1
        return self.tsih

    def admit_session(self, initiator_name: str, isid: int, target_name: str) -> None:
        pass


def kv(**keys: str) -> bytes:
    return b"".join(f"{k.replace('__', '-')}={v}".encode() + b"\0" for k, v in keys.items())


def answers(resp: LoginResponse) -> dict[str, str]:
    return dict(i.decode().split("=", 1) for i in bytes(resp.data).split(b"\0") if i)


def req(data: bytes, *, csg: int = 1, nsg: int = 3, transit: bool = True, cont: bool = False, tsih: int = 0,
        isid: int = 0x400000000001) -> LoginRequest:
    return LoginRequest(transit=transit, cont=cont, csg=csg, nsg=nsg if transit else 0, isid=isid, tsih=tsih,
                        initiator_task_tag=1, cid=0, cmdsn=5, data=data)


def status(resp: LoginResponse) -> int:
    return (resp.status_class << 8) | resp.status_detail


def plain_dir(**auth: object) -> Directory:
    return Directory({TNAME: TargetAuth(name=TNAME, alias="array0", **auth)})  # type: ignore[arg-type]


def test_normal_login_in_one_pdu() -> None:
    d = plain_dir()
    login = TargetLogin(d, statsn=40)
    resp = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, SessionType="Normal",
                                HeaderDigest="None", MaxRecvDataSegmentLength="65536")))
    assert status(resp) == 0 and resp.transit and resp.nsg == 3
    a = answers(resp)
    assert a["TargetPortalGroupTag"] == "7" and a["TargetAlias"] == "array0" and a["HeaderDigest"] == "None"
    assert int(a["MaxRecvDataSegmentLength"]) >= 512
    assert resp.tsih == 0x21 and resp.statsn == 40 and resp.expcmdsn == 5
    assert login.done and login.result is not None
    r = login.result
    assert (r.initiator_name, r.tsih, r.statsn, r.expcmdsn) == (INAME, 0x21, 41, 5)
    assert r.params.max_recv_data_segment_length_initiator == 65536


def test_discovery_login() -> None:
    login = TargetLogin(plain_dir())
    resp = login.receive(req(kv(InitiatorName=INAME, SessionType="Discovery")))
    assert status(resp) == 0 and login.result is not None
    assert login.result.target is None and login.result.params.session_type == "Discovery"


@pytest.mark.parametrize("data,expected", [
    (kv(TargetName=TNAME), LoginStatus.MISSING_PARAMETER),
    (kv(InitiatorName=INAME), LoginStatus.MISSING_PARAMETER),
    (kv(InitiatorName=INAME, TargetName="iqn.2026-11.x:none"), LoginStatus.NOT_FOUND),
    (kv(InitiatorName=INAME, TargetName=TNAME, SessionType="Other"), LoginStatus.SESSION_TYPE_NOT_SUPPORTED),
    (kv(InitiatorName=INAME, SessionType="Discovery", TargetName=TNAME), LoginStatus.INITIATOR_ERROR),
    (b"garbage-without-equals\0", LoginStatus.INITIATOR_ERROR),
])
def test_leading_key_errors(data: bytes, expected: int) -> None:
    login = TargetLogin(plain_dir())
    resp = login.receive(req(data))
    assert status(resp) == expected and login.done and login.result is None


def test_status_values_are_the_rfc_codes() -> None:
    # RFC 7143 §11.13.5
    assert LoginStatus.AUTHENTICATION_FAILURE == 0x0201
    assert LoginStatus.AUTHORIZATION_FAILURE == 0x0202
    assert LoginStatus.NOT_FOUND == 0x0203
    assert LoginStatus.MISSING_PARAMETER == 0x0207
    assert LoginStatus.SESSION_DOES_NOT_EXIST == 0x020A


def test_acl_refuses_unknown_initiator() -> None:
    login = TargetLogin(plain_dir(acl=frozenset({"iqn.2026-11.test:other"})))
    resp = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME)))
    assert status(resp) == LoginStatus.AUTHORIZATION_FAILURE


def test_unsupported_version() -> None:
    login = TargetLogin(plain_dir())
    r = req(kv(InitiatorName=INAME, TargetName=TNAME))
    r.version_max, r.version_min = 3, 2
    assert status(login.receive(r)) == LoginStatus.UNSUPPORTED_VERSION


def test_t_and_c_together_is_an_initiator_error() -> None:
    login = TargetLogin(plain_dir())
    assert status(login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME), cont=True))) == 0x0200


def test_reinstating_unknown_tsih_fails() -> None:
    login = TargetLogin(plain_dir())
    resp = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME), tsih=0x99))
    assert status(resp) == LoginStatus.SESSION_DOES_NOT_EXIST


def test_connection_reinstatement_keeps_tsih() -> None:
    d = plain_dir()
    d.sessions.add((INAME, 0x400000000001, TNAME, 0x33))
    login = TargetLogin(d)
    resp = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME), tsih=0x33))
    assert status(resp) == 0 and resp.tsih == 0x33
    assert login.result is not None and login.result.existing_tsih == 0x33


def test_text_split_over_continued_requests() -> None:
    login = TargetLogin(plain_dir())
    data = kv(InitiatorName=INAME, TargetName=TNAME)
    r1 = login.receive(req(data[:10], transit=False, cont=True))
    assert status(r1) == 0 and not r1.transit and r1.data == b""
    r2 = login.receive(req(data[10:]))
    assert status(r2) == 0 and r2.transit


def _chap_response(ident: int, secret: bytes, challenge_hex: str, alg: str = "5") -> str:
    h = hashlib.md5 if alg == "5" else hashlib.sha256
    return "0x" + h(bytes([ident]) + secret + bytes.fromhex(challenge_hex[2:])).hexdigest()


def _chap_dir(**extra: object) -> Directory:
    def incoming(initiator: str, user: str) -> bytes | None:
        return SECRET if (initiator, user) == (INAME, "host") else None
    return plain_dir(incoming=incoming, **extra)


def _chap_login(d: Directory, secret: bytes, alg: str = "5", mutual: bool = False) -> tuple[TargetLogin, LoginResponse]:
    login = TargetLogin(d)
    r = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, AuthMethod="CHAP,None"), csg=0, nsg=1,
                          transit=False))
    assert status(r) == 0 and answers(r)["AuthMethod"] == "CHAP" and not r.transit
    r = login.receive(req(kv(CHAP_A=alg), csg=0, transit=False))
    a = answers(r)
    assert a["CHAP_A"] == alg
    ident, chal = int(a["CHAP_I"]), a["CHAP_C"]
    keys = {"CHAP_N": "host", "CHAP_R": _chap_response(ident, secret, chal, alg)}
    if mutual:
        keys |= {"CHAP_I": "77", "CHAP_C": "0x" + "ab" * 16}
    r = login.receive(req(kv(**keys), csg=0, nsg=1))
    return login, r


def test_chap_one_way_md5() -> None:
    d = _chap_dir()
    login, r = _chap_login(d, SECRET)
    assert status(r) == 0 and r.transit and r.nsg == 1
    r = login.receive(req(kv(MaxBurstLength="65536"), csg=1, nsg=3))
    assert status(r) == 0 and login.result is not None and login.result.username == "host"


def test_chap_sha256_when_offered() -> None:
    _, r = _chap_login(_chap_dir(), SECRET, alg="7")
    assert status(r) == 0


def test_chap_wrong_secret_is_authentication_failure() -> None:
    _, r = _chap_login(_chap_dir(), b"wrong-secret-xx")
    assert status(r) == LoginStatus.AUTHENTICATION_FAILURE


def test_chap_required_but_skipped() -> None:
    login = TargetLogin(_chap_dir())
    resp = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME), csg=1, nsg=3))
    assert status(resp) == LoginStatus.AUTHENTICATION_FAILURE


def test_mutual_chap() -> None:
    d = _chap_dir(outgoing=ChapCredentials("array0", TSECRET))
    _, r = _chap_login(d, SECRET, mutual=True)
    assert status(r) == 0
    a = answers(r)
    assert a["CHAP_N"] == "array0"
    assert a["CHAP_R"].lower() == "0x" + hashlib.md5(bytes([77]) + TSECRET + bytes.fromhex("ab" * 16)).hexdigest()


def test_mutual_chap_without_target_secret_fails() -> None:
    _, r = _chap_login(_chap_dir(), SECRET, mutual=True)
    assert status(r) == LoginStatus.AUTHENTICATION_FAILURE


def test_challenges_are_not_reused_across_logins() -> None:
    d = _chap_dir()
    seen = set()
    for _ in range(20):
        login = TargetLogin(d)
        login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, AuthMethod="CHAP"), csg=0, nsg=1,
                          transit=False))
        a = answers(login.receive(req(kv(CHAP_A="5"), csg=0, transit=False)))
        assert a["CHAP_C"] not in seen
        seen.add(a["CHAP_C"])


def test_joining_connection_does_not_renegotiate_session_keys() -> None:
    d = plain_dir()
    d.sessions.add((INAME, 0x400000000001, TNAME, 0x33))
    login = TargetLogin(d)
    resp = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, MaxBurstLength="65536",
                                HeaderDigest="None"), tsih=0x33))
    a = answers(resp)
    assert a["MaxBurstLength"] == "Reject" and a["HeaderDigest"] == "None"


# --- declarations repeated in a later Login Request (libiscsi; RFC 7143 §6.2) ---------------------------------

def _libiscsi_pdu(bhs_hex: str, text: bytes) -> LoginRequest:
    """A Login Request as libiscsi 1.19 put it on the wire (BHS captured, data segment padded)."""
    raw = bytes.fromhex(bhs_hex) + text + bytes(-len(text) & 3)
    framer = PduFramer()
    framer.feed(raw)
    frame = framer.next()
    assert frame is not None and framer.buffered == 0
    pdu = decode(frame)
    assert isinstance(pdu, LoginRequest)
    return pdu


_LIBISCSI_INQ = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq"
_LIBISCSI_OPS = (b"HeaderDigest=None,CRC32C\0DataDigest=None\0InitialR2T=No\0ImmediateData=Yes\0"
                 b"MaxBurstLength=262144\0FirstBurstLength=262144\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0"
                 b"MaxOutstandingR2T=1\0ErrorRecoveryLevel=0\0IFMarker=No\0OFMarker=No\0MaxConnections=1\0"
                 b"MaxRecvDataSegmentLength=262144\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0")


def test_libiscsi_repeats_names_after_authmethod_none() -> None:
    # `iscsi-inq iscsi://user%secret@host/target/0` against a target without CHAP: libiscsi offers
    # AuthMethod=CHAP,None, gets None, and sends InitiatorName/TargetName/SessionType again with its
    # operational keys.  The same values again are not a renegotiation: the login succeeds.
    d = Directory({"iqn.2026-11.org.sanlab:array0": TargetAuth(name="iqn.2026-11.org.sanlab:array0",
                                                               alias="array0")})
    login = TargetLogin(d)
    names = (f"InitiatorName={_LIBISCSI_INQ}\0TargetName=iqn.2026-11.org.sanlab:array0\0"
             "SessionType=Normal\0").encode()
    r1 = login.receive(_libiscsi_pdu("438100000000009280b819d9000000003d7a98ec0000000067554787000000010000000000"
                                     "0000000000000000000000", names + b"AuthMethod=CHAP,None\0"))
    assert status(r1) == 0 and r1.transit and r1.nsg == 1 and answers(r1)["AuthMethod"] == "None"
    r2 = login.receive(_libiscsi_pdu("43870000000001b980b819d9000000003d7a98ec000000006755478762ded8320000000000"
                                     "0000000000000000000000", names + _LIBISCSI_OPS))
    assert status(r2) == 0 and r2.transit and r2.nsg == 3, answers(r2)
    assert login.result is not None and login.result.initiator_name == _LIBISCSI_INQ
    assert login.result.target is not None and login.result.target.name == "iqn.2026-11.org.sanlab:array0"
    assert login.result.params.session_type == "Normal"
    # The declarations are not answered (they are declarative, §13.4/§13.5/§13.21).
    assert not {"InitiatorName", "TargetName", "SessionType"} & answers(r2).keys()


def test_libiscsi_discovery_repeats_names_after_authmethod_none() -> None:
    # `iscsi-ls -s iscsi://user%secret@host`: the discovery session takes the same path.
    login = TargetLogin(plain_dir())
    names = b"InitiatorName=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls\0SessionType=Discovery\0"
    r1 = login.receive(_libiscsi_pdu("438100000000006b804d6dfd0000000057c385b7000000004e650a23000000010000000000"
                                     "0000000000000000000000", names + b"AuthMethod=CHAP,None\0"))
    assert status(r1) == 0 and answers(r1) == {"AuthMethod": "None"}
    ops = _LIBISCSI_OPS.replace(b"HeaderDigest=None,CRC32C", b"HeaderDigest=None")
    r2 = login.receive(_libiscsi_pdu("438700000000018b804d6dfd0000000057c385b7000000004e650a236efd125e0000000000"
                                     "0000000000000000000000", names + ops))
    assert status(r2) == 0 and r2.transit and r2.nsg == 3
    assert login.result is not None and login.result.target is None
    assert login.result.params.session_type == "Discovery"


def test_names_repeated_at_every_chap_step_are_accepted() -> None:
    d = _chap_dir()
    login = TargetLogin(d)
    names = dict(InitiatorName=INAME, TargetName=TNAME, SessionType="Normal")
    r = login.receive(req(kv(**names, AuthMethod="CHAP"), csg=0, nsg=1, transit=False))
    assert status(r) == 0
    a = answers(login.receive(req(kv(**names, CHAP_A="5"), csg=0, transit=False)))
    r = login.receive(req(kv(**names, CHAP_N="host", CHAP_R=_chap_response(int(a["CHAP_I"]), SECRET, a["CHAP_C"])),
                          csg=0, nsg=1))
    assert status(r) == 0 and r.transit
    r = login.receive(req(kv(**names, MaxBurstLength="65536"), csg=1, nsg=3))
    assert status(r) == 0 and login.result is not None and login.result.username == "host"


def test_implicit_normal_session_type_may_be_declared_later() -> None:
    login = TargetLogin(plain_dir())
    r = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, AuthMethod="None"), csg=0, nsg=1))
    assert status(r) == 0
    r = login.receive(req(kv(SessionType="Normal", InitiatorName=INAME), csg=1, nsg=3))
    assert status(r) == 0 and login.result is not None


@pytest.mark.parametrize("later", [
    kv(InitiatorName="iqn.2026-11.test:someone-else"),
    kv(TargetName="iqn.2026-11.org.sanlab:other"),
    kv(SessionType="Discovery"),
    kv(InitiatorName=INAME, TargetName=TNAME, SessionType="Normal", InitiatorAlias="renamed"),
])
def test_changed_declaration_is_an_initiator_error(later: bytes) -> None:
    # §6.2: redeclaring a key is detected by the target and answered with Login reject
    # (initiator error, 0x0200, §11.13.5); the login ends without a session.
    d = plain_dir()
    d.targets["iqn.2026-11.org.sanlab:other"] = TargetAuth(name="iqn.2026-11.org.sanlab:other")
    login = TargetLogin(d)
    r = login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, InitiatorAlias="host",
                             AuthMethod="None"), csg=0, nsg=1))
    assert status(r) == 0
    r = login.receive(req(later + kv(MaxBurstLength="65536"), csg=1, nsg=3))
    assert status(r) == LoginStatus.INITIATOR_ERROR and not r.transit
    assert login.done and login.result is None and login.failure is not None


def test_changed_declaration_during_chap_is_an_initiator_error() -> None:
    login = TargetLogin(_chap_dir())
    login.receive(req(kv(InitiatorName=INAME, TargetName=TNAME, AuthMethod="CHAP"), csg=0, nsg=1, transit=False))
    r = login.receive(req(kv(InitiatorName="iqn.2026-11.test:other", CHAP_A="5"), csg=0, transit=False))
    assert status(r) == LoginStatus.INITIATOR_ERROR and login.result is None


def test_target_name_declared_late_in_a_discovery_login_is_an_initiator_error() -> None:
    login = TargetLogin(plain_dir())
    r = login.receive(req(kv(InitiatorName=INAME, SessionType="Discovery", AuthMethod="None"), csg=0, nsg=1))
    assert status(r) == 0
    r = login.receive(req(kv(TargetName=TNAME), csg=1, nsg=3))
    assert status(r) == LoginStatus.INITIATOR_ERROR and login.result is None

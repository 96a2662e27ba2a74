"""Wire-level behaviour of a real `sanlab serve` against hand-built PDUs over TCP.

Covers what libiscsi cannot send: data digests, malformed PDUs, digest errors,
segments beyond the negotiated limits, exact login status codes.  After every
abuse a second, well-behaved session must still work (one bad connection never
harms another).
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Callable

import pytest

from sanlab.target.pdu import (
    BHS_LEN, DataIn, LoginResponse, NopIn, NopOut, Reject, ScsiCommand, ScsiResponse, TextRequest, TextResponse,
    digest_bytes, encode_bytes,
)
from tests.conftest import TARGET, SanlabProcess
from tests.target.wire_client import WireClient, parse

pytestmark = pytest.mark.integration

CONFIG = f"""
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
size = "16MiB"
"""

DIGESTS = {"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None"}


@pytest.fixture
def server(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    return sanlab_factory(CONFIG)


def client(sp: SanlabProcess) -> WireClient:
    return WireClient(sp.host, sp.port)


def logged_in(sp: SanlabProcess, **keys: str) -> WireClient:
    c = client(sp)
    resp = c.login(TARGET, MaxRecvDataSegmentLength="65536", ImmediateData="Yes", InitialR2T="No", **keys)
    assert (resp.status_class, resp.status_detail) == (0, 0), parse(bytes(resp.data))
    return c


def assert_healthy(sp: SanlabProcess) -> None:
    """A fresh session can still log in and get a NOP-In answer."""
    c = logged_in(sp)
    c.send_pdu(NopOut(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, data=b"alive"))
    r = c.recv()
    assert isinstance(r, NopIn) and bytes(r.data) == b"alive"
    c.close()


def write_cmd(c: WireClient, lba: int, data: bytes) -> ScsiCommand:
    blocks = len(data) // 512
    cdb = bytes([0x2A, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"
    cmd = ScsiCommand(write=True, initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn,
                      expected_data_transfer_length=len(data), cdb=cdb.ljust(16, b"\0"), data=data)
    c.cmdsn += 1
    return cmd


def read_cmd(c: WireClient, lba: int, blocks: int) -> ScsiCommand:
    cdb = bytes([0x28, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"
    cmd = ScsiCommand(read=True, initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn,
                      expected_data_transfer_length=blocks * 512, cdb=cdb.ljust(16, b"\0"))
    c.cmdsn += 1
    return cmd


def unit_attention_cleared(c: WireClient) -> None:
    """The first command of a new nexus gets the power-on unit attention; take it."""
    c.send_pdu(ScsiCommand(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, cdb=bytes(16)))
    c.cmdsn += 1
    r = c.recv()
    assert isinstance(r, ScsiResponse)


# --- login status codes (RFC 7143 §11.13.5) -------------------------------------------------------


@pytest.mark.parametrize("target,keys,version,status", [
    ("iqn.2026-11.org.sanlab:nosuch", {}, (0, 0), (0x02, 0x03)),            # target not found
    (TARGET, {"InitiatorName": None}, (0, 0), (0x02, 0x07)),                 # missing parameter
    (TARGET, {}, (2, 1), (0x02, 0x05)),                                      # unsupported version
    (TARGET, {"SessionType": "Bogus"}, (0, 0), (0x02, 0x09)),                # session type not supported
])
def test_login_status_codes(server: SanlabProcess, target: str, keys: dict[str, str | None],
                            version: tuple[int, int], status: tuple[int, int]) -> None:
    c = client(server)
    resp = c.login(target, version=version, **keys)  # type: ignore[arg-type]
    assert (resp.status_class, resp.status_detail) == status
    assert c.recv_raw() is None  # the target closes after a failed login (§6.1)
    assert_healthy(server)


def test_login_answers_list_keys_with_initiator_preference(server: SanlabProcess) -> None:
    c = client(server)
    resp = c.login(TARGET, HeaderDigest="None,CRC32C", DataDigest="CRC32C,None")
    ans = parse(bytes(resp.data))
    # RFC 7143 §6.2: the first value of the initiator's list that the target supports.
    assert ans["HeaderDigest"] == "None" and ans["DataDigest"] == "CRC32C"
    assert ans["TargetPortalGroupTag"] == "1"
    assert "MaxRecvDataSegmentLength" in ans


def test_unknown_key_is_not_understood(server: SanlabProcess) -> None:
    c = client(server)
    resp = c.login(TARGET, **{"X-com.example.Knob": "1", "FancyKey": "1"})
    ans = parse(bytes(resp.data))
    assert resp.status_class == 0
    assert ans["X-com.example.Knob"] == "NotUnderstood" and ans["FancyKey"] == "NotUnderstood"


# --- digests ------------------------------------------------------------------------------------


def test_header_and_data_digests_write_and_read_back(server: SanlabProcess) -> None:
    c = logged_in(server, **DIGESTS)
    assert c.header_digest and c.data_digest
    unit_attention_cleared(c)
    payload = os.urandom(8192)
    c.send_pdu(write_cmd(c, 8, payload))
    r = c.recv()
    assert isinstance(r, ScsiResponse) and r.status == 0
    c.send_pdu(read_cmd(c, 8, 16))
    got = b""
    while True:
        r = c.recv()  # recv() asserts every Data-In's data digest
        assert isinstance(r, (DataIn, ScsiResponse))
        if isinstance(r, DataIn):
            got += bytes(r.data)
            if r.status_present:
                break
        else:
            break
    assert got == payload


def test_data_digest_error_on_immediate_data_is_rejected(server: SanlabProcess) -> None:
    c = logged_in(server, **DIGESTS)
    unit_attention_cleared(c)
    cmd = write_cmd(c, 0, os.urandom(4096))
    blob = bytearray(encode_bytes(cmd, True, True))
    blob[-1] ^= 0x5A  # corrupt the data digest
    c.send_raw(bytes(blob))
    r = c.recv()
    assert isinstance(r, Reject) and r.reason == 0x02  # Data (payload) Digest Error, §11.17.1
    assert bytes(r.data)[:BHS_LEN] == bytes(blob[:BHS_LEN])
    # The session goes on: the lost command's CmdSN was consumed, the next one runs.
    c.send_pdu(NopOut(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, data=b"x"))
    assert isinstance(c.recv(), NopIn)


def test_header_digest_error_drops_only_that_connection(server: SanlabProcess) -> None:
    c = logged_in(server, **DIGESTS)
    blob = bytearray(encode_bytes(NopOut(initiator_task_tag=5, cmdsn=c.cmdsn), True, True))
    blob[BHS_LEN] ^= 1
    c.send_raw(bytes(blob))
    assert c.recv_raw() is None
    assert_healthy(server)


# --- malformed PDUs ---------------------------------------------------------------------------------


def test_unknown_opcode_gets_reject(server: SanlabProcess) -> None:
    c = logged_in(server)
    blob = bytearray(encode_bytes(NopOut(initiator_task_tag=5, cmdsn=c.cmdsn)))
    blob[0] = 0x1D
    c.send_raw(bytes(blob))
    r = c.recv()
    assert isinstance(r, Reject) and r.reason == 0x05  # Command not supported
    c.send_pdu(NopOut(initiator_task_tag=6, cmdsn=c.cmdsn, data=b"still"))
    assert isinstance(c.recv(), NopIn)


def test_data_segment_beyond_mrdsl_drops_connection(server: SanlabProcess) -> None:
    c = logged_in(server)
    unit_attention_cleared(c)
    # The target declared its MaxRecvDataSegmentLength at login; send far more as immediate data.
    c.send_pdu(write_cmd(c, 0, bytes(1 << 20)))
    r = c.recv_raw()
    # Either a Reject then a drop, or a drop: never a hang, never GOOD.
    while r is not None:
        assert r.opcode in (0x3F,), hex(r.opcode)
        r = c.recv_raw()
    assert_healthy(server)


def test_garbage_stream_does_not_hurt_the_server(server: SanlabProcess) -> None:
    for _ in range(3):
        c = client(server)
        c.send_raw(os.urandom(4096))
        # End the stream: a header whose data segment is still owed must not leave the
        # target waiting on a connection that has nothing more to say.
        c.sock.shutdown(socket.SHUT_WR)
        while c.recv_raw() is not None:
            pass
    assert_healthy(server)


def test_non_login_header_before_login_is_dropped_at_once(server: SanlabProcess) -> None:
    c = client(server)
    # A SCSI Command header claiming 60000 bytes of immediate data that never come: the
    # target must not wait out its login timeout for a PDU it could never accept (§6.1).
    blob = bytearray(encode_bytes(write_cmd(c, 0, bytes(60000))))[:BHS_LEN]
    c.send_raw(bytes(blob))
    assert c.recv_raw() is None
    assert_healthy(server)


def test_bad_ahs_length(server: SanlabProcess) -> None:
    c = logged_in(server)
    unit_attention_cleared(c)
    cmd = read_cmd(c, 0, 1)
    blob = bytearray(encode_bytes(cmd))
    blob[4] = 2  # TotalAHSLength: 8 bytes of AHS follow...
    blob += struct.pack(">HBB", 300, 1, 0) + bytes(4)  # ...claiming a 300-byte extended CDB
    c.send_raw(bytes(blob))
    r = c.recv_raw()
    assert r is None or r.opcode in (0x3F, 0x21)
    assert_healthy(server)


def test_text_send_targets_on_discovery(server: SanlabProcess) -> None:
    c = client(server)
    resp = c.login(None)
    assert isinstance(resp, LoginResponse) and resp.status_class == 0
    c.send_pdu(TextRequest(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn,
                           data=b"SendTargets=All\0"))
    r = c.recv()
    assert isinstance(r, TextResponse)
    ans = bytes(r.data).split(b"\0")
    assert f"TargetName={TARGET}".encode() in ans
    assert any(a.startswith(b"TargetAddress=127.0.0.1:") and a.endswith(b",1") for a in ans)


def test_digest_bytes_helper_matches_wire() -> None:
    # The raw client relies on the codec's digest: pin it to the RFC vector once more here.
    assert digest_bytes(bytes(32)) == bytes.fromhex("aa36918a")


def test_session_reinstatement_drops_the_old_connection(server: SanlabProcess) -> None:
    old = logged_in(server)
    new = logged_in(server)  # same initiator name and ISID, TSIH 0: reinstatement (RFC 7143 §6.3.5)
    assert old.isid == new.isid
    r = old.recv_raw()
    while r is not None:  # possibly an Async Message first; then the close
        r = old.recv_raw()
    new.send_pdu(NopOut(initiator_task_tag=new.next_itt(), cmdsn=new.cmdsn, expstatsn=new.statsn, data=b"new"))
    assert isinstance(new.recv(), NopIn)


def test_many_sessions_side_by_side(server: SanlabProcess) -> None:
    clients = []
    for i in range(8):
        c = client(server)
        c.isid = 0x400000001000 + i
        resp = c.login(TARGET)
        assert resp.status_class == 0
        clients.append(c)
    for i, c in enumerate(clients):
        c.send_pdu(NopOut(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, data=bytes([i])))
    for i, c in enumerate(clients):
        r = c.recv()
        assert isinstance(r, NopIn) and bytes(r.data) == bytes([i])


def _tmf(c: WireClient, function: int, lun: bytes = bytes(8)) -> int:
    from sanlab.target.pdu import TaskMgmtRequest, TaskMgmtResponse
    c.send_pdu(TaskMgmtRequest(function=function, initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn,
                               expstatsn=c.statsn, lun=lun))
    r = c.recv()
    assert isinstance(r, TaskMgmtResponse)
    return r.response


@pytest.mark.parametrize("function", [2, 4, 5, 6])  # ABORT TASK SET, CLEAR TASK SET, LU RESET, WARM RESET
def test_task_management_functions_complete(server: SanlabProcess, function: int) -> None:
    c = logged_in(server)
    unit_attention_cleared(c)
    assert _tmf(c, function) == 0  # FUNCTION COMPLETE
    if function in (5, 6):
        # A reset leaves a unit attention (29h/03h) for the next command (SAM-5 §6.6).
        c.send_pdu(ScsiCommand(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, cdb=bytes(16)))
        c.cmdsn += 1
        r = c.recv()
        assert isinstance(r, ScsiResponse) and r.status == 2
        assert (r.sense()[2] & 0xF, r.sense()[12], r.sense()[13]) == (6, 0x29, 0x03)


def test_lun_reset_on_missing_lun(server: SanlabProcess) -> None:
    c = logged_in(server)
    assert _tmf(c, 5, bytes([0, 9]) + bytes(6)) == 2  # LUN DOES NOT EXIST


def test_target_cold_reset_closes_every_session(server: SanlabProcess) -> None:
    other = client(server)
    other.isid += 1
    assert other.login(TARGET).status_class == 0
    c = logged_in(server)
    assert _tmf(c, 7) == 0
    assert c.recv_raw() is None
    # TARGET COLD RESET ends the other initiator's session as well (RFC 7143 §11.5.1).
    while (r := other.recv_raw()) is not None:
        assert r.opcode == 0x32  # at most an Async Message before the close
    assert_healthy(server)


NOP_CONFIG = CONFIG + """
[server]
nop_interval = 1
nop_timeout = 2
"""


def test_target_pings_idle_initiator_and_drops_a_silent_one(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(NOP_CONFIG)
    c = logged_in(sp)
    ping = c.recv()  # idle for nop_interval: the target pings (RFC 7143 §11.19)
    assert isinstance(ping, NopIn) and ping.initiator_task_tag == 0xFFFFFFFF and ping.target_transfer_tag != 0xFFFFFFFF
    c.send_pdu(NopOut(immediate=True, initiator_task_tag=0xFFFFFFFF, target_transfer_tag=ping.target_transfer_tag,
                      cmdsn=c.cmdsn, expstatsn=c.statsn))
    ping2 = c.recv()  # answered, so the session lives on and is pinged again later
    assert isinstance(ping2, NopIn)
    r = c.recv_raw()  # this time we stay silent: dropped after nop_timeout
    assert r is None


def test_connection_reinstatement_keeps_session_values(server: SanlabProcess) -> None:
    from sanlab.target.pdu import LoginRequest
    from tests.target.wire_client import text
    first = logged_in(server)  # InitialR2T=No, ImmediateData=Yes negotiated on the leading login
    tsih = first.login_tsih
    again = client(server)
    again.send_pdu(LoginRequest(transit=True, csg=1, nsg=3, isid=first.isid, tsih=tsih, initiator_task_tag=1,
                                cid=0, cmdsn=first.cmdsn,
                                data=text(InitiatorName="iqn.2026-11.test:wire", TargetName=TARGET)))
    resp = again.recv()
    assert isinstance(resp, LoginResponse) and resp.status_class == 0 and resp.tsih == tsih
    again.statsn = resp.statsn + 1
    again.cmdsn = first.cmdsn
    assert first.recv_raw() is None  # the old connection is replaced
    # Unsolicited data is still allowed (InitialR2T=No from the session), immediate data too.
    unit_attention_cleared(again)
    payload = os.urandom(2048)
    cmd = write_cmd(again, 0, payload)
    cmd.data = payload[:1024]
    cmd.final = False
    from sanlab.target.pdu import DataOut
    again.send_pdu(cmd)
    again.send_pdu(DataOut(final=True, initiator_task_tag=cmd.initiator_task_tag, datasn=0, buffer_offset=1024,
                           data=payload[1024:]))
    r = again.recv()
    assert isinstance(r, ScsiResponse) and r.status == 0

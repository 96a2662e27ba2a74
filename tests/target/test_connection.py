"""Full-feature phase state machine (sans-IO): PDUs in, PDUs and events out, time passed in."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus
from sanlab.target.connection import Close, Execute, TargetConnection, TaskManagement
from sanlab.target.errors import RejectReason
from sanlab.target.pdu import (
    RESERVED_TAG, AsyncMessage, DataIn, DataOut, LogoutReason, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu,
    PduFramer, R2T, RawPdu, Reject, ScsiCommand, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfFunction, TmfResponse, encode_bytes,
)

NEXUS = Nexus("iqn.2026-11.test:init", 0x400000000001, "iqn.2026-11.org.sanlab:array0", 1)
LUN0 = bytes(8)


@dataclass
class Params:
    initial_r2t: bool = False
    immediate_data: bool = True
    max_recv_data_segment_length_target: int = 8192
    max_recv_data_segment_length_initiator: int = 8192
    max_burst_length: int = 16384
    first_burst_length: int = 8192
    max_outstanding_r2t: int = 1
    default_time2wait: int = 2
    default_time2retain: int = 0
    session_type: str = "Normal"


def raw(pdu: Pdu, corrupt_data: bool = False) -> RawPdu:
    f = PduFramer()
    f.data_digest = corrupt_data
    blob = bytearray(encode_bytes(pdu, data_digest=corrupt_data))
    if corrupt_data:
        blob[-1] ^= 0xFF
    f.feed(bytes(blob))
    r = f.next()
    assert r is not None
    return r


def conn(**kw: object) -> TargetConnection:
    params = Params(**{k: v for k, v in kw.items() if hasattr(Params, k)})  # type: ignore[arg-type]
    other = {k: v for k, v in kw.items() if not hasattr(Params, k)}
    return TargetConnection(nexus=NEXUS, params=params, cid=1, statsn=100, expcmdsn=10, now=0.0,
                            cmd_window=8, **other)  # type: ignore[arg-type]


def read10(lba: int, blocks: int) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes(7)


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes(7)


def feed(c: TargetConnection, *pdus: Pdu, now: float = 0.0) -> tuple[list[Pdu], list[object]]:
    for p in pdus:
        c.receive(raw(p), now)
    return c.take_output(), list(c.take_events())


# --- NOP and the CmdSN window --------------------------------------------------------------


def test_nop_out_ping_is_echoed_with_statsn() -> None:
    c = conn()
    out, ev = feed(c, NopOut(initiator_task_tag=7, cmdsn=10, data=b"ping"))
    (nop,) = out
    assert isinstance(nop, NopIn)
    assert (nop.initiator_task_tag, nop.target_transfer_tag, bytes(nop.data)) == (7, RESERVED_TAG, b"ping")
    assert (nop.statsn, nop.expcmdsn, nop.maxcmdsn) == (100, 11, 18)
    assert ev == []


def test_commands_execute_in_cmdsn_order_and_out_of_window_is_ignored() -> None:
    c = conn()
    _, ev = feed(c, ScsiCommand(read=True, initiator_task_tag=2, cmdsn=11, expected_data_transfer_length=512,
                                cdb=read10(0, 1)))
    assert ev == []  # CmdSN 11 waits for 10
    out, ev = feed(c, ScsiCommand(read=True, initiator_task_tag=9, cmdsn=99, cdb=read10(0, 1),
                                  expected_data_transfer_length=512))
    assert out == [] and ev == []  # outside [ExpCmdSN, MaxCmdSN]: silently ignored (§4.2.2.1)
    _, ev = feed(c, ScsiCommand(read=True, initiator_task_tag=1, cmdsn=10, expected_data_transfer_length=512,
                                cdb=read10(0, 1)))
    assert [e.itt for e in ev if isinstance(e, Execute)] == [1, 2]
    assert c.expcmdsn == 12 and c.maxcmdsn == 19


def test_immediate_pdu_does_not_advance_cmdsn() -> None:
    c = conn()
    feed(c, NopOut(immediate=True, initiator_task_tag=1, cmdsn=10))
    assert c.expcmdsn == 10


# --- writes: immediate, unsolicited, R2T -------------------------------------------------------


def test_write_with_immediate_unsolicited_and_solicited_data() -> None:
    c = conn(max_outstanding_r2t=1, max_burst_length=8192)
    edtl = 3 * 8192
    payload = bytes(range(256)) * (edtl // 256)
    out, ev = feed(c, ScsiCommand(write=True, final=False, initiator_task_tag=5, cmdsn=10,
                                  expected_data_transfer_length=edtl, cdb=write10(0, edtl // 512),
                                  data=payload[:4096]))
    # The first R2T goes out at once; unsolicited data covers [0, FirstBurstLength).
    (r2t,) = out
    assert isinstance(r2t, R2T)
    assert (r2t.buffer_offset, r2t.desired_data_transfer_length, r2t.r2tsn) == (8192, 8192, 0)
    out, ev = feed(c, DataOut(final=True, initiator_task_tag=5, datasn=0, buffer_offset=4096,
                              data=payload[4096:8192]))
    assert out == [] and ev == []
    out, ev = feed(c, DataOut(final=True, initiator_task_tag=5, target_transfer_tag=r2t.target_transfer_tag,
                              datasn=0, buffer_offset=8192, data=payload[8192:16384]))
    (r2t2,) = out  # MaxOutstandingR2T=1: the next R2T only after the first burst completed
    assert isinstance(r2t2, R2T) and (r2t2.buffer_offset, r2t2.r2tsn) == (16384, 1)
    assert ev == []
    out, ev = feed(c, DataOut(final=True, initiator_task_tag=5, target_transfer_tag=r2t2.target_transfer_tag,
                              datasn=0, buffer_offset=16384, data=payload[16384:]))
    (ex,) = ev
    assert isinstance(ex, Execute) and bytes(ex.task.data_out) == payload
    assert ex.task.write_edtl == edtl and ex.task.nexus == NEXUS
    c.complete(5, ScsiResult(status=ScsiStatus.GOOD, transfer_length=edtl, data_out_direction=True))
    (resp,) = c.take_output()
    assert isinstance(resp, ScsiResponse)
    assert (resp.status, resp.residual_count, resp.overflow, resp.underflow) == (0, 0, False, False)
    assert resp.expdatasn == 2  # R2TSN count for a write (§11.4.6)


def test_initial_r2t_yes_forbids_unsolicited_data_out() -> None:
    c = conn(initial_r2t=True)
    out, ev = feed(c, ScsiCommand(write=True, final=False, initiator_task_tag=5, cmdsn=10,
                                  expected_data_transfer_length=1024, cdb=write10(0, 2)))
    assert isinstance(out[0], Reject) and out[0].reason == RejectReason.PROTOCOL_ERROR


def test_immediate_data_beyond_first_burst_is_rejected() -> None:
    c = conn(first_burst_length=4096, max_recv_data_segment_length_target=65536)
    out, _ = feed(c, ScsiCommand(write=True, initiator_task_tag=5, cmdsn=10, expected_data_transfer_length=8192,
                                 cdb=write10(0, 16), data=bytes(8192)))
    assert isinstance(out[0], Reject)


def test_bad_datasn_rejects_and_fails_only_that_command() -> None:
    c = conn()
    out, _ = feed(c, ScsiCommand(write=True, final=False, initiator_task_tag=5, cmdsn=10,
                                 expected_data_transfer_length=2048, cdb=write10(0, 4)))
    out, ev = feed(c, DataOut(final=False, initiator_task_tag=5, datasn=1, buffer_offset=0, data=bytes(1024)))
    rej, resp = out
    assert isinstance(rej, Reject) and rej.reason == RejectReason.PROTOCOL_ERROR
    assert isinstance(resp, ScsiResponse) and resp.status == ScsiStatus.CHECK_CONDITION
    sense = resp.sense()
    assert (sense[2] & 0xF, sense[12], sense[13]) == (0x0B, 0x4B, 0x00)
    assert ev == [] and not c.closed
    # The rest of that command's data is discarded; the session goes on.
    out, ev = feed(c, DataOut(final=True, initiator_task_tag=5, datasn=0, buffer_offset=1024, data=bytes(1024)))
    assert out == [] and ev == []
    out, _ = feed(c, NopOut(initiator_task_tag=6, cmdsn=11, data=b"x"))
    assert isinstance(out[0], NopIn)


def test_data_out_data_digest_error_fails_the_command_with_crc_sense() -> None:
    c = conn()
    feed(c, ScsiCommand(write=True, final=False, initiator_task_tag=5, cmdsn=10,
                        expected_data_transfer_length=1024, cdb=write10(0, 2)))
    c.receive(raw(DataOut(final=True, initiator_task_tag=5, datasn=0, buffer_offset=0, data=bytes(1024)),
                  corrupt_data=True), 0.0)
    rej, resp = c.take_output()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.DATA_DIGEST_ERROR
    assert isinstance(resp, ScsiResponse) and resp.status == ScsiStatus.CHECK_CONDITION
    sense = resp.sense()
    assert (sense[2] & 0xF, sense[12], sense[13]) == (0x0B, 0x47, 0x05)
    assert c.take_events() == []
    assert not c.closed


def test_data_out_longer_than_mrdsl_drops_the_connection() -> None:
    c = conn(max_recv_data_segment_length_target=1024)
    feed(c, ScsiCommand(write=True, final=False, initiator_task_tag=5, cmdsn=10,
                        expected_data_transfer_length=4096, cdb=write10(0, 8)))
    out, ev = feed(c, DataOut(final=True, initiator_task_tag=5, datasn=0, buffer_offset=0, data=bytes(2048)))
    assert isinstance(out[0], Reject)
    assert any(isinstance(e, Close) for e in ev)


# --- reads: Data-In segmentation, phase collapse, residuals ------------------------------------


def _run_read(c: TargetConnection, edtl: int, result: ScsiResult) -> list[Pdu]:
    _, ev = feed(c, ScsiCommand(read=True, initiator_task_tag=3, cmdsn=10, expected_data_transfer_length=edtl,
                                cdb=read10(0, max(1, edtl // 512))))
    assert isinstance(ev[0], Execute) and ev[0].task.expected_in_length == edtl
    c.complete(3, result)
    return c.take_output()


def test_data_in_segmented_at_mrdsl_with_bursts_and_phase_collapse() -> None:
    c = conn(max_recv_data_segment_length_initiator=8192, max_burst_length=16384)
    data = bytes(range(256)) * 80  # 20480
    out = _run_read(c, 20480, ScsiResult(data_in=data))
    assert [type(p) for p in out] == [DataIn, DataIn, DataIn]
    assert [(p.datasn, p.buffer_offset, len(p.data), p.final) for p in out] == [  # type: ignore[attr-defined]
        (0, 0, 8192, False), (1, 8192, 8192, True), (2, 16384, 4096, True)]
    last = out[-1]
    assert isinstance(last, DataIn) and last.status_present and last.status == 0 and last.statsn == 100
    assert b"".join(bytes(p.data) for p in out) == data  # type: ignore[attr-defined]


def test_read_underflow_and_overflow_residuals() -> None:
    out = _run_read(conn(), 10000, ScsiResult(data_in=bytes(512)))
    (din,) = out
    assert isinstance(din, DataIn) and din.underflow and din.residual_count == 9488 and len(din.data) == 512
    out = _run_read(conn(), 512, ScsiResult(data_in=bytes(1024)))
    (din,) = out
    assert isinstance(din, DataIn) and din.overflow and din.residual_count == 512 and len(din.data) == 512


def test_check_condition_is_a_separate_response_with_sense() -> None:
    sense = bytes([0x70, 0, 5, 0, 0, 0, 0, 10]) + bytes(4) + bytes([0x21, 0]) + bytes(4)
    out = _run_read(conn(), 512, ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=sense, transfer_length=512))
    (resp,) = out
    assert isinstance(resp, ScsiResponse) and resp.status == 2 and resp.sense() == sense
    assert resp.residual_count == 0


# --- task management ---------------------------------------------------------------------------


def test_abort_task_suppresses_the_response_and_reports_after_completion() -> None:
    c = conn()
    feed(c, ScsiCommand(read=True, initiator_task_tag=3, cmdsn=10, expected_data_transfer_length=512,
                        cdb=read10(0, 1)))
    out, ev = feed(c, TaskMgmtRequest(function=TmfFunction.ABORT_TASK, initiator_task_tag=4, cmdsn=11,
                                      referenced_task_tag=3, refcmdsn=10))
    (tm,) = ev
    assert isinstance(tm, TaskManagement) and tm.referenced_itts == [3] and out == []
    c.complete(3, ScsiResult(data_in=bytes(512)))
    assert c.take_output() == []  # an aborted task gets no response
    c.tmf_done(4, TmfResponse.FUNCTION_COMPLETE)
    (resp,) = c.take_output()
    assert isinstance(resp, TaskMgmtResponse) and resp.response == TmfResponse.FUNCTION_COMPLETE


def test_abort_of_an_unknown_task() -> None:
    c = conn()
    out, _ = feed(c, TaskMgmtRequest(function=TmfFunction.ABORT_TASK, initiator_task_tag=4, cmdsn=10,
                                     referenced_task_tag=77, refcmdsn=3))
    (resp,) = out
    assert isinstance(resp, TaskMgmtResponse) and resp.response == TmfResponse.TASK_DOES_NOT_EXIST


def test_lun_reset_on_missing_lun() -> None:
    c = conn(lun_exists=lambda lun: lun == 0)
    out, _ = feed(c, TaskMgmtRequest(function=TmfFunction.LOGICAL_UNIT_RESET, initiator_task_tag=4, cmdsn=10,
                                     lun=bytes([0, 5]) + bytes(6)))
    (resp,) = out
    assert isinstance(resp, TaskMgmtResponse) and resp.response == TmfResponse.LUN_DOES_NOT_EXIST


# --- logout, pings, text, rejects ----------------------------------------------------------------


def test_logout_waits_for_executing_commands() -> None:
    c = conn()
    feed(c, ScsiCommand(read=True, initiator_task_tag=3, cmdsn=10, expected_data_transfer_length=512,
                        cdb=read10(0, 1)))
    out, ev = feed(c, LogoutRequest(reason=LogoutReason.CLOSE_SESSION, initiator_task_tag=9, cmdsn=11, cid=1))
    assert out == [] and ev == []
    c.complete(3, ScsiResult(data_in=bytes(512)))
    out = c.take_output()
    assert [type(p) for p in out] == [DataIn, LogoutResponse]
    assert isinstance(c.take_events()[0], Close)


def test_target_pings_idle_initiator_and_drops_it_when_silent() -> None:
    c = conn(nop_interval=5.0, nop_timeout=3.0)
    c.tick(4.0)
    assert c.take_output() == []
    c.tick(5.0)
    (ping,) = c.take_output()
    assert isinstance(ping, NopIn) and ping.initiator_task_tag == RESERVED_TAG
    assert ping.target_transfer_tag != RESERVED_TAG and ping.statsn == 100
    c.tick(8.5)
    assert any(isinstance(e, Close) for e in c.take_events())


def test_ping_answer_keeps_the_connection() -> None:
    c = conn(nop_interval=5.0, nop_timeout=3.0)
    c.tick(5.0)
    (ping,) = c.take_output()
    assert isinstance(ping, NopIn)
    c.receive(raw(NopOut(immediate=True, initiator_task_tag=RESERVED_TAG, cmdsn=10,
                         target_transfer_tag=ping.target_transfer_tag)), 6.0)
    c.tick(9.0)
    assert c.take_output() == [] and c.take_events() == []
    assert c.statsn == 100  # a ping and its answer do not consume StatSN


def test_send_targets_in_a_discovery_session() -> None:
    c = TargetConnection(nexus=NEXUS, params=Params(session_type="Discovery"), cid=0, statsn=1, expcmdsn=1,
                         now=0.0, send_targets=lambda v: [("TargetName", "iqn.2026-11.x:a"),
                                                          ("TargetAddress", "127.0.0.1:3260,1")])
    out, _ = feed(c, TextRequest(initiator_task_tag=1, cmdsn=1, data=b"SendTargets=All\0"))
    (resp,) = out
    assert isinstance(resp, TextResponse) and resp.final
    assert bytes(resp.data) == b"TargetName=iqn.2026-11.x:a\0TargetAddress=127.0.0.1:3260,1\0"


def test_scsi_command_in_discovery_session_is_rejected() -> None:
    c = TargetConnection(nexus=NEXUS, params=Params(session_type="Discovery"), cid=0, statsn=1, expcmdsn=1,
                         now=0.0)
    out, _ = feed(c, ScsiCommand(read=True, initiator_task_tag=3, cmdsn=1, expected_data_transfer_length=512,
                                 cdb=read10(0, 1)))
    assert isinstance(out[0], Reject) and out[0].reason == RejectReason.PROTOCOL_ERROR


def test_initiator_opcode_unknown_is_rejected_not_fatal() -> None:
    c = conn()
    blob = bytearray(encode_bytes(NopOut(initiator_task_tag=1, cmdsn=10)))
    blob[0] = 0x1C  # not an opcode
    f = PduFramer()
    f.feed(bytes(blob))
    r = f.next()
    assert r is not None
    c.receive(r, 0.0)
    (rej,) = c.take_output()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.COMMAND_NOT_SUPPORTED
    assert bytes(rej.data) == bytes(blob)  # the Reject carries the offending header (§11.17)
    assert not c.closed
    out, _ = feed(c, NopOut(initiator_task_tag=2, cmdsn=10))
    assert isinstance(out[0], NopIn)


def test_target_opcode_from_initiator_is_rejected() -> None:
    c = conn()
    out, _ = feed(c, NopIn(initiator_task_tag=1))
    assert isinstance(out[0], Reject) and out[0].reason == RejectReason.COMMAND_NOT_SUPPORTED


def test_request_logout_sends_async_message() -> None:
    c = conn()
    c.request_logout(3)
    (msg,) = c.take_output()
    assert isinstance(msg, AsyncMessage) and msg.async_event == 1 and msg.parameter3 == 3


@settings(max_examples=300, deadline=None)
@given(blobs=st.lists(st.binary(min_size=48, max_size=120), max_size=6))
def test_fuzz_connection_never_raises(blobs: list[bytes]) -> None:
    """Any framed garbage ends in output, a Reject or a Close — never an exception."""
    c = conn()
    for b in blobs:
        b = bytearray(b)
        b[4] = 0
        b[5:8] = (len(b) - 48).to_bytes(3, "big")
        f = PduFramer()
        f.feed(bytes(b) + bytes(-len(b) & 3))
        for r in f:
            c.receive(r, 0.0)
            for e in c.take_events():
                if isinstance(e, Execute):
                    c.complete(e.itt, ScsiResult(data_in=bytes(16)))
                elif isinstance(e, TaskManagement):
                    c.tmf_done(e.itt, TmfResponse.FUNCTION_COMPLETE)
        c.take_output()


@pytest.mark.parametrize("edtl", [0x7FFFFFFF, 0xFFFFFFFF])
def test_huge_write_edtl_does_not_allocate(edtl: int) -> None:
    c = conn()
    out, ev = feed(c, ScsiCommand(write=True, final=False, initiator_task_tag=5, cmdsn=10,
                                  expected_data_transfer_length=edtl, cdb=write10(0, 1)))
    # Refused up front with a CHECK CONDITION rather than a multi-GiB buffer.
    assert not any(isinstance(e, Execute) for e in ev)
    assert out and isinstance(out[0], (ScsiResponse, Reject))

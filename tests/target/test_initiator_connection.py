"""Initiator connection (sans-IO): target PDUs in as bytes, PDUs to send and events out, time passed in."""
from __future__ import annotations

import pytest

from sanlab.scsi.lun import encode_lun
from sanlab.scsi.sense import Asc, SenseKey, build_sense
from sanlab.storage.peer import PeerRefused, PeerUnreachable
from sanlab.target.errors import CommandRejected, ConnectionLost, RejectReason, ScsiCommandError
from sanlab.target.initiator_connection import InitiatorConnection
from sanlab.target.initiator_events import (
    Closed, CommandDone, Event, LoginComplete, LogoutRequested, PingDone, RequestFailed, TaskMgmtDone, TextDone,
)
from sanlab.target.initiator_login import InitiatorLogin
from sanlab.target.keys import INITIATOR_DEFAULTS, encode_text
from sanlab.target.outcome import CommandResult
from sanlab.target.pdu import (
    RESERVED_TAG, AsyncEvent, AsyncMessage, DataIn, DataOut, LoginResponse, NopIn, NopOut, Pdu, R2T, Reject,
    ScsiCommand, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction,
    encode_bytes,
)
from tests.target.test_initiator_login import REQUEST, RESPONSE

ISID = 0x801234560000
STATSN = 0x41
"""The StatSN of the first full-feature response (the login's was 0x40)."""


def login_answer(**keys: str) -> bytes:
    answer = {"ImmediateData": "Yes", "InitialR2T": "No", "MaxBurstLength": "16384", "FirstBurstLength": "8192",
              "MaxRecvDataSegmentLength": "4096"}
    answer.update({k.replace("_", ""): v for k, v in keys.items()})
    return encode_text(answer.items())


def logged_in(*, maxcmdsn: int = 8, offer: dict[str, str] | None = None, nop_interval: float = 0.0,
              nop_timeout: float = 10.0, **answer: str) -> InitiatorConnection:
    """A connection past a login whose final response answered ``answer`` (key names without '_')."""
    keys = dict(INITIATOR_DEFAULTS, **(offer or {}))
    conn = InitiatorConnection(InitiatorLogin("iqn.2026-11.test:i", "iqn.2026-11.test:t", isid=ISID, keys=keys),
                               nop_interval=nop_interval, nop_timeout=nop_timeout)
    conn.start()
    conn.take_output()
    out, ev = feed(conn, LoginResponse(transit=True, csg=1, nsg=3, isid=ISID, tsih=0x21, initiator_task_tag=1,
                                       statsn=0x40, expcmdsn=1, maxcmdsn=maxcmdsn, data=login_answer(**answer)))
    assert out == [] and isinstance(ev[0], LoginComplete)
    return conn


def feed(conn: InitiatorConnection, *pdus: Pdu, now: float = 0.0, digests: bool = False) -> tuple[list[Pdu], list[Event]]:
    conn.receive_data(b"".join(encode_bytes(p, digests, digests) for p in pdus), now)
    return conn.take_output(), conn.take_events()


def read10(lba: int, blocks: int) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


PAYLOAD = bytes(range(256)) * 160
"""40 KiB of recognisable data."""


# --- login and framing -----------------------------------------------------------------------------


def test_login_bytes_out_and_in_then_full_feature() -> None:
    keys = {"MaxRecvDataSegmentLength": "65536", "ImmediateData": "Yes", "InitialR2T": "No",
            "MaxBurstLength": "16384", "FirstBurstLength": "8192"}
    conn = InitiatorConnection(InitiatorLogin("iqn.2026-11.test:i", "iqn.2026-11.test:t", isid=ISID, keys=keys))
    conn.start()
    assert b"".join(encode_bytes(p) for p in conn.take_output()) == REQUEST
    with pytest.raises(ConnectionLost):
        conn.command(0, read10(0, 1), read_length=512)  # not before the login is done
    conn.receive_data(RESPONSE, 1.0)
    (done,) = conn.take_events()
    assert isinstance(done, LoginComplete) and done.tsih == 0x21
    assert done.params.max_recv_data_segment_length_target == 4096
    assert conn.full_feature and (conn.expstatsn, conn.expcmdsn, conn.maxcmdsn) == (0x41, 1, 8)


@pytest.mark.parametrize("how", ["whole", "byte-by-byte", "with-trailing-bytes"])
def test_framing_whole_byte_by_byte_and_with_trailing_bytes(how: str) -> None:
    conn = InitiatorConnection(InitiatorLogin("iqn.2026-11.test:i", "iqn.2026-11.test:t", isid=ISID,
                                              keys={"MaxRecvDataSegmentLength": "65536", "ImmediateData": "Yes",
                                                    "InitialR2T": "No", "MaxBurstLength": "16384",
                                                    "FirstBurstLength": "8192"}))
    conn.start()
    conn.take_output()
    ping = encode_bytes(NopIn(lun=encode_lun(0), target_transfer_tag=0x77, statsn=STATSN, expcmdsn=1, maxcmdsn=8))
    stream = RESPONSE + ping
    if how == "whole":
        conn.receive_data(stream, 0.0)
    elif how == "byte-by-byte":
        for i in range(len(stream)):
            conn.receive_data(stream[i:i + 1], 0.0)
    else:
        conn.receive_data(RESPONSE + ping[:30], 0.0)  # the login ends with part of the next PDU behind it
        assert conn.full_feature and conn.take_output() == []
        conn.receive_data(ping[30:], 0.0)
    (answer,) = conn.take_output()
    assert isinstance(answer, NopOut) and answer.target_transfer_tag == 0x77
    assert [type(e) for e in conn.take_events()] == [LoginComplete]


def test_digests_apply_after_login_and_a_bad_data_digest_closes() -> None:
    conn = logged_in(offer={"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None"},
                     HeaderDigest="CRC32C", DataDigest="CRC32C")
    assert conn.header_digest and conn.data_digest
    itt = conn.command(0, read10(0, 1), read_length=512)
    conn.take_output()
    blob = bytearray(encode_bytes(DataIn(final=True, status_present=True, initiator_task_tag=itt, statsn=STATSN,
                                         expcmdsn=2, maxcmdsn=9, data=PAYLOAD[:512]), True, True))
    blob[-1] ^= 1  # corrupt the data digest
    conn.receive_data(bytes(blob), 0.0)
    (closed,) = conn.take_events()
    assert isinstance(closed, Closed) and isinstance(closed.error, PeerUnreachable)
    assert "digest" in str(closed.error)


# --- reads ---------------------------------------------------------------------------------------------


def test_read_reassembled_from_data_in_with_status_in_the_last() -> None:
    conn = logged_in()
    itt = conn.command(0, read10(0, 24), read_length=12288)
    (cmd,) = conn.take_output()
    assert isinstance(cmd, ScsiCommand)
    assert (cmd.read, cmd.write, cmd.final, cmd.expected_data_transfer_length, cmd.cmdsn, cmd.expstatsn) == \
        (True, False, True, 12288, 1, 0x41)
    _, ev = feed(conn, DataIn(initiator_task_tag=itt, datasn=0, buffer_offset=0, expcmdsn=2, maxcmdsn=9,
                              data=PAYLOAD[:4096]),
                 DataIn(initiator_task_tag=itt, datasn=1, buffer_offset=4096, expcmdsn=2, maxcmdsn=9,
                        data=PAYLOAD[4096:8192]))
    assert ev == []
    _, ev = feed(conn, DataIn(final=True, status_present=True, status=0, initiator_task_tag=itt, statsn=STATSN,
                              datasn=2, buffer_offset=8192, expcmdsn=2, maxcmdsn=9, data=PAYLOAD[8192:12288]))
    assert ev == [CommandDone(itt, CommandResult(0, PAYLOAD[:12288]))]
    assert conn.expstatsn == STATSN + 1 and conn.outstanding == 0


def test_underflow_residual() -> None:
    conn = logged_in()
    itt = conn.command(0, read10(0, 16), read_length=8192)
    conn.take_output()
    _, ev = feed(conn, DataIn(final=True, status_present=True, underflow=True, residual_count=4096,
                              initiator_task_tag=itt, statsn=STATSN, expcmdsn=2, maxcmdsn=9, data=PAYLOAD[:4096]))
    assert ev == [CommandDone(itt, CommandResult(0, PAYLOAD[:4096], None, 4096))]


def test_check_condition_carries_the_decoded_sense_and_is_a_refusal() -> None:
    conn = logged_in()
    itt = conn.command(0, read10(1 << 30, 1), read_length=512)
    conn.take_output()
    sense = build_sense(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    _, ev = feed(conn, ScsiResponse(status=2, initiator_task_tag=itt, statsn=STATSN, expcmdsn=2, maxcmdsn=9,
                                    data=len(sense).to_bytes(2, "big") + sense))
    (done,) = ev
    assert isinstance(done, CommandDone) and done.result.sense is not None
    assert (done.result.sense.key, done.result.sense.asc_ascq) == (SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    with pytest.raises(ScsiCommandError) as exc:
        done.result.check()
    assert isinstance(exc.value, PeerRefused) and exc.value.status == 2 and exc.value.sense == done.result.sense


def test_data_in_out_of_sequence_or_beyond_the_buffer_closes() -> None:
    for bad in (dict(datasn=1, buffer_offset=0), dict(datasn=0, buffer_offset=4096)):
        conn = logged_in()
        itt = conn.command(0, read10(0, 8), read_length=4096)
        conn.take_output()
        _, ev = feed(conn, DataIn(initiator_task_tag=itt, data=PAYLOAD[:512], **bad))  # type: ignore[arg-type]
        (closed,) = ev
        assert isinstance(closed, Closed) and isinstance(closed.error, ConnectionLost) and conn.closed


# --- writes ------------------------------------------------------------------------------------------


def test_r2t_answered_with_its_data_out_sequence() -> None:
    conn = logged_in(ImmediateData="No", InitialR2T="Yes")
    itt = conn.command(3, write10(0, 64), PAYLOAD[:32768])
    (cmd,) = conn.take_output()
    assert isinstance(cmd, ScsiCommand)
    # No immediate or unsolicited data: the command alone, F set (§11.3.1).
    assert (cmd.write, cmd.final, len(cmd.data), cmd.expected_data_transfer_length) == (True, True, 0, 32768)
    for ttt, offset in ((0x1234, 0), (0x1235, 16384)):
        out, ev = feed(conn, R2T(lun=encode_lun(3), initiator_task_tag=itt, target_transfer_tag=ttt, statsn=STATSN,
                                 expcmdsn=2, maxcmdsn=9, r2tsn=offset // 16384, buffer_offset=offset,
                                 desired_data_transfer_length=16384))
        assert ev == []
        # MaxRecvDataSegmentLength 4096 at the target: four PDUs, DataSN from 0, the TTT echoed, F on the last.
        assert all(isinstance(p, DataOut) for p in out)
        assert [(p.datasn, p.buffer_offset, p.final, p.target_transfer_tag, p.initiator_task_tag)  # type: ignore
                for p in out] == [(n, offset + 4096 * n, n == 3, ttt, itt) for n in range(4)]
        assert b"".join(bytes(p.data) for p in out) == PAYLOAD[offset:offset + 16384]  # type: ignore
        assert all(p.lun == encode_lun(3) and p.expstatsn == STATSN for p in out)  # type: ignore


def test_immediate_and_unsolicited_data_then_r2t() -> None:
    conn = logged_in()  # ImmediateData=Yes, InitialR2T=No, FirstBurstLength 8192, target MRDSL 4096
    itt = conn.command(0, write10(0, 40), PAYLOAD[:20480])
    cmd, unsolicited = conn.take_output()
    assert isinstance(cmd, ScsiCommand) and isinstance(unsolicited, DataOut)
    # Immediate data up to the target's MaxRecvDataSegmentLength; F clear: unsolicited Data-Out follows.
    assert (bytes(cmd.data), cmd.final) == (PAYLOAD[:4096], False)
    assert (unsolicited.buffer_offset, len(unsolicited.data), unsolicited.datasn, unsolicited.final,
            unsolicited.target_transfer_tag) == (4096, 4096, 0, True, RESERVED_TAG)
    out, _ = feed(conn, R2T(initiator_task_tag=itt, target_transfer_tag=9, statsn=STATSN, expcmdsn=2, maxcmdsn=9,
                            buffer_offset=8192, desired_data_transfer_length=12288))
    assert [(p.buffer_offset, p.datasn, p.final) for p in out] == [(8192, 0, False), (12288, 1, False),  # type: ignore
                                                                    (16384, 2, True)]
    _, ev = feed(conn, ScsiResponse(initiator_task_tag=itt, statsn=STATSN, expcmdsn=2, maxcmdsn=9))
    assert ev == [CommandDone(itt, CommandResult(0))]


def test_r2t_beyond_the_data_or_max_burst_closes() -> None:
    for offset, length in ((20480, 8192), (0, 20480)):  # past the 24 KiB written; above MaxBurstLength
        conn = logged_in(ImmediateData="No", InitialR2T="Yes")
        itt = conn.command(0, write10(0, 48), PAYLOAD[:24576])
        conn.take_output()
        out, ev = feed(conn, R2T(initiator_task_tag=itt, target_transfer_tag=1, buffer_offset=offset,
                                 desired_data_transfer_length=length))
        assert out == [] and len(ev) == 1 and isinstance(ev[0], Closed)


def test_extended_cdb_goes_in_an_ahs() -> None:
    conn = logged_in()
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 0x18]) + bytes(range(24))
    conn.command(0, cdb)
    (cmd,) = conn.take_output()
    assert isinstance(cmd, ScsiCommand) and cmd.full_cdb() == cdb


# --- the command window --------------------------------------------------------------------------


def test_window_closes_at_maxcmdsn_and_reopens() -> None:
    conn = logged_in(maxcmdsn=2)
    itts = [conn.command(0, read10(i, 1), read_length=512) for i in range(3)]
    assert [p.cmdsn for p in conn.take_output()] == [1, 2]  # type: ignore[attr-defined]
    assert not conn.window_open and conn.outstanding == 3
    # Immediate requests are not held by the window (§4.2.2.1).
    tmf = conn.task_management(TmfFunction.LOGICAL_UNIT_RESET)
    (req,) = conn.take_output()
    assert isinstance(req, TaskMgmtRequest) and req.immediate and req.cmdsn == 3 and conn.cmdsn == 3
    # MaxCmdSN < ExpCmdSN - 1: both ignored.
    out, _ = feed(conn, NopIn(statsn=STATSN, expcmdsn=3, maxcmdsn=1))
    assert out == [] and (conn.expcmdsn, conn.maxcmdsn) == (1, 2)
    out, ev = feed(conn, ScsiResponse(initiator_task_tag=itts[0], statsn=STATSN, expcmdsn=3, maxcmdsn=3),
                   TaskMgmtResponse(initiator_task_tag=tmf, statsn=STATSN + 1, expcmdsn=3, maxcmdsn=3))
    (third,) = out
    assert isinstance(third, ScsiCommand) and (third.initiator_task_tag, third.cmdsn) == (itts[2], 3)
    assert ev == [CommandDone(itts[0], CommandResult(0)), TaskMgmtDone(tmf, 0)]
    assert not conn.window_open and conn.expstatsn == STATSN + 2


def test_a_forgotten_command_never_leaves_or_is_ignored() -> None:
    conn = logged_in(maxcmdsn=1)
    sent = conn.command(0, read10(0, 1), read_length=512)
    waiting = conn.command(0, read10(1, 1), read_length=512)
    conn.take_output()
    assert conn.forget(waiting) is None  # never left: nothing to abort
    assert conn.forget(sent) == 1  # out with CmdSN 1: the caller aborts it with RefCmdSN 1
    out, ev = feed(conn, DataIn(final=True, status_present=True, initiator_task_tag=sent, statsn=STATSN,
                                expcmdsn=2, maxcmdsn=5, data=PAYLOAD[:512]))
    assert out == [] and ev == [] and conn.outstanding == 0


# --- NOP, keepalive, text, reject, asynchronous messages ------------------------------------------


def test_target_nop_in_with_ttt_is_answered_by_nop_out() -> None:
    conn = logged_in()
    out, ev = feed(conn, NopIn(lun=encode_lun(2), target_transfer_tag=0xABCD, statsn=STATSN, expcmdsn=1,
                               maxcmdsn=8))
    (nop,) = out
    assert isinstance(nop, NopOut) and ev == []
    # ITT reserved, the TTT and LUN echoed, immediate, the CmdSN not advanced (§11.18).
    assert (nop.initiator_task_tag, nop.target_transfer_tag, nop.lun, nop.cmdsn, nop.expstatsn) == \
        (RESERVED_TAG, 0xABCD, encode_lun(2), 1, STATSN)
    assert encode_bytes(nop)[:2] == b"\x40\x80"  # I bit | NOP-Out, F bit
    assert conn.cmdsn == 1


def test_ping_answer_and_keepalive_timeout() -> None:
    conn = logged_in(nop_interval=5.0, nop_timeout=2.0)
    itt = conn.ping(b"hello")
    (ping,) = conn.take_output()
    _, ev = feed(conn, NopIn(initiator_task_tag=itt, statsn=STATSN, expcmdsn=1, maxcmdsn=8, data=b"hello"), now=1.0)
    assert ev == [PingDone(itt, b"hello")]
    conn.tick(5.9)
    assert conn.take_output() == []  # heard from the target at 1.0
    conn.tick(6.0)
    (keepalive,) = conn.take_output()
    assert isinstance(keepalive, NopOut) and keepalive.initiator_task_tag != RESERVED_TAG and keepalive.immediate
    _, ev = feed(conn, NopIn(initiator_task_tag=keepalive.initiator_task_tag, statsn=STATSN + 1, expcmdsn=1,
                             maxcmdsn=8), now=6.5)
    assert ev == []  # our own keepalive's answer is no one else's business
    conn.tick(11.5)
    (again,) = conn.take_output()
    conn.tick(13.4)
    assert conn.take_events() == []
    conn.tick(13.5)
    (closed,) = conn.take_events()
    assert isinstance(closed, Closed) and isinstance(closed.error, PeerUnreachable) and conn.closed


def test_text_response_continued_by_the_target() -> None:
    conn = logged_in()
    itt = conn.text(b"SendTargets=All\0")
    (req,) = conn.take_output()
    assert isinstance(req, TextRequest) and (req.cmdsn, req.target_transfer_tag) == (1, RESERVED_TAG)
    out, ev = feed(conn, TextResponse(final=False, initiator_task_tag=itt, target_transfer_tag=0x99, statsn=STATSN,
                                      expcmdsn=2, maxcmdsn=9, data=b"TargetName=iqn.x\0TargetAdd"))
    (more,) = out
    assert isinstance(more, TextRequest) and ev == []
    assert (more.initiator_task_tag, more.target_transfer_tag, more.cmdsn, bytes(more.data)) == (itt, 0x99, 2, b"")
    _, ev = feed(conn, TextResponse(initiator_task_tag=itt, statsn=STATSN + 1, expcmdsn=3, maxcmdsn=10,
                                    data=b"ress=1.2.3.4:3260,1\0"))
    assert ev == [TextDone(itt, b"TargetName=iqn.x\0TargetAddress=1.2.3.4:3260,1\0")]


def test_rejected_command_is_a_refusal() -> None:
    conn = logged_in()
    itt = conn.command(0, read10(0, 1), read_length=512)
    (cmd,) = conn.take_output()
    _, ev = feed(conn, Reject(reason=RejectReason.INVALID_PDU_FIELD, statsn=STATSN, expcmdsn=2, maxcmdsn=9,
                              data=encode_bytes(cmd)[:48]))
    (failed,) = ev
    assert isinstance(failed, RequestFailed) and failed.itt == itt
    assert isinstance(failed.error, CommandRejected) and isinstance(failed.error, PeerRefused)
    assert conn.outstanding == 0 and conn.expstatsn == STATSN + 1


def test_asynchronous_messages() -> None:
    conn = logged_in()
    _, ev = feed(conn, AsyncMessage(async_event=AsyncEvent.LOGOUT_REQUESTED, parameter3=5, statsn=STATSN,
                                    expcmdsn=1, maxcmdsn=8))
    assert ev == [LogoutRequested(5)]
    _, ev = feed(conn, AsyncMessage(async_event=AsyncEvent.CONNECTION_DROP, statsn=STATSN + 1, expcmdsn=1,
                                    maxcmdsn=8))
    (closed,) = ev
    assert isinstance(closed, Closed) and isinstance(closed.error, PeerUnreachable)
    with pytest.raises(ConnectionLost):
        conn.command(0, read10(0, 1), read_length=512)

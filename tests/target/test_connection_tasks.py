"""Every SCSI Command takes one way through the connection (issue 13, "one fast path"): framed
bytes in, one Execute event per command (the task created by the one WAIT_DATA → EXECUTING
transition), and the answer given to :meth:`TargetConnection.complete` turned into PDUs.  The
connection never calls out (no I/O hook): these tests drive it with bytes alone."""
from __future__ import annotations

import inspect
import random
from typing import Any

from sanlab.scsi.task import Nexus, ScsiResult, ScsiTask, TaskAttribute
from sanlab.target.connection import Execute, TargetConnection, TaskManagement
from sanlab.target.errors import RejectReason
from sanlab.target.pdu import (
    DataIn, DataOut, LogoutReason, LogoutRequest, Pdu, Reject, ScsiCommand, ScsiResponse, TaskMgmtRequest,
    TmfFunction, encode_bytes,
)
from tests.target.test_connection import Params, feed, raw, read10, write10

NEXUS = Nexus("iqn.2026-11.test:init", 0x400000000001, "iqn.2026-11.org.sanlab:array0", 1)


def pattern(n: int, seed: int) -> bytearray:
    return bytearray((seed + i * 7) & 0xFF for i in range(n))


def conn(**kw: Any) -> TargetConnection:
    params = Params(**{k: v for k, v in kw.items() if hasattr(Params, k)})
    other = {k: v for k, v in kw.items() if not hasattr(Params, k)}
    return TargetConnection(nexus=NEXUS, params=params, cid=1, statsn=100, expcmdsn=10, now=0.0, cmd_window=8,
                            **other)


def read_cmd(itt: int, cmdsn: int, lba: int, blocks: int, **kw: Any) -> ScsiCommand:
    return ScsiCommand(read=True, initiator_task_tag=itt, cmdsn=cmdsn, expected_data_transfer_length=blocks * 512,
                       cdb=read10(lba, blocks), **kw)


def write_cmd(itt: int, cmdsn: int, lba: int, blocks: int, **kw: Any) -> ScsiCommand:
    kw.setdefault("data", bytes(pattern(blocks * 512, lba)))
    return ScsiCommand(write=True, initiator_task_tag=itt, cmdsn=cmdsn, expected_data_transfer_length=blocks * 512,
                       cdb=write10(lba, blocks), **kw)


def answer(task: ScsiTask) -> ScsiResult:
    """What a device server answers for a plain READ/WRITE(10) (the data a read gets is a pattern)."""
    n = int.from_bytes(task.cdb[7:9], "big") * 512
    if task.cdb[0] == 0x2A:
        return ScsiResult(transfer_length=n, data_out_direction=True)
    return ScsiResult(data_in=pattern(n, int.from_bytes(task.cdb[2:6], "big")), transfer_length=n)


def test_the_connection_has_no_io_hook() -> None:
    # Convention 1: the connection is fed bytes and gives PDUs and events; the glue does the I/O.
    params = inspect.signature(TargetConnection).parameters
    assert "inline" not in params
    assert not [n for n in params if n not in ("nexus", "params", "cid", "statsn", "expcmdsn", "now", "cmd_window",
                                               "nop_interval", "nop_timeout", "send_targets", "lun_exists",
                                               "max_task_buffer", "max_connection_buffer")]


def test_a_read_is_one_execute_event_and_one_data_in_carrying_the_status() -> None:
    c = conn()
    out, ev = feed(c, read_cmd(3, 10, lba=5, blocks=2))
    assert out == []
    (e,) = ev
    assert isinstance(e, Execute) and e.itt == 3
    assert e.task == ScsiTask(NEXUS, 0, read10(5, 2), TaskAttribute.SIMPLE, b"", 1024, 3, 0)
    c.complete(3, answer(e.task))
    (din,) = c.take_output()
    assert isinstance(din, DataIn)
    assert (din.final, din.status_present, din.status, din.underflow, din.overflow, din.residual_count) == (
        True, True, 0, False, False, 0)
    assert (din.initiator_task_tag, din.statsn, din.expcmdsn, din.maxcmdsn, din.datasn) == (3, 100, 11, 18, 0)
    assert bytes(din.data) == bytes(pattern(1024, 5))


def test_a_write_with_all_its_data_immediate_executes_at_once_on_that_data() -> None:
    c = conn()
    out, ev = feed(c, write_cmd(4, 10, lba=9, blocks=4))
    assert out == []
    (e,) = ev
    assert isinstance(e, Execute)
    assert bytes(e.task.data_out) == bytes(pattern(2048, 9)) and e.task.write_edtl == 2048
    c.complete(4, answer(e.task))
    (resp,) = c.take_output()
    assert isinstance(resp, ScsiResponse)
    assert (resp.status, resp.response, resp.residual_count, resp.overflow, resp.underflow) == (0, 0, 0, False, False)
    assert (resp.initiator_task_tag, resp.statsn, resp.expcmdsn, resp.expdatasn, bytes(resp.data)) == (
        4, 100, 11, 0, b"")


def test_mixed_commands_give_one_event_each_and_wire_exact_answers() -> None:
    """500 reads and writes of every size the PDU limits allow: one Execute per command, in CmdSN
    order, and answers whose PDUs carry the right StatSN, DataSN and data."""
    rnd = random.Random(7)
    c = conn(max_recv_data_segment_length_initiator=65536, max_burst_length=65536,
             max_recv_data_segment_length_target=65536, first_burst_length=65536)
    cmdsn, statsn = 10, 100
    for itt in range(1, 500):
        lba, blocks = rnd.randrange(1 << 20), rnd.choice((1, 8, 64, 128))
        pdu = read_cmd(itt, cmdsn, lba, blocks) if rnd.random() < 0.5 else write_cmd(itt, cmdsn, lba, blocks)
        out, ev = feed(c, pdu)
        assert out == [] and len(ev) == 1
        e = ev[0]
        assert isinstance(e, Execute) and e.itt == itt and e.task.cdb == pdu.cdb
        c.complete(itt, answer(e.task))
        got = c.take_output()
        assert got[-1].statsn == statsn  # type: ignore[attr-defined]
        if pdu.read:
            assert all(isinstance(p, DataIn) for p in got)
            assert [p.datasn for p in got] == list(range(len(got)))  # type: ignore[attr-defined]
            assert b"".join(bytes(p.data) for p in got) == bytes(pattern(blocks * 512, lba))  # type: ignore
            assert got[-1].status_present and not any(p.status_present for p in got[:-1])  # type: ignore
        else:
            assert [type(p) for p in got] == [ScsiResponse]
        assert encode_bytes(got[-1])  # every PDU encodes
        cmdsn += 1
        statsn += 1
    assert (c.statsn, c.expcmdsn) == (statsn, cmdsn)


def test_a_read_of_another_length_than_the_edtl_reports_the_residual() -> None:
    # The CDB asks for 2 blocks, the initiator's EDTL says 1: overflow of 512 (RFC 7143 §11.4.5.1).
    c = conn()
    _, (e,) = feed(c, ScsiCommand(read=True, initiator_task_tag=3, cmdsn=10, expected_data_transfer_length=512,
                                  cdb=read10(0, 2)))
    assert isinstance(e, Execute) and e.task.expected_in_length == 512
    c.complete(3, answer(e.task))
    out = c.take_output()
    last = out[-1]
    assert isinstance(last, (DataIn, ScsiResponse)) and last.overflow and last.residual_count == 512
    assert sum(len(p.data) for p in out if isinstance(p, DataIn)) == 512


def test_an_executing_command_is_a_task_like_any_other() -> None:
    c = conn()
    _, ev = feed(c, read_cmd(3, 10, 0, 1))
    assert [type(e) for e in ev] == [Execute]
    # Its ITT is in use until it ends ...
    out, _ = feed(c, read_cmd(3, 11, 0, 1))
    (rej,) = out
    assert isinstance(rej, Reject) and rej.reason == RejectReason.TASK_IN_PROGRESS
    # ... ABORT TASK finds it, and waits for it ...
    _, ev = feed(c, TaskMgmtRequest(function=TmfFunction.ABORT_TASK, initiator_task_tag=9, cmdsn=12,
                                    referenced_task_tag=3, refcmdsn=10))
    (tm,) = ev
    assert isinstance(tm, TaskManagement) and tm.referenced_itts == [3]
    # ... and its late answer is dropped (aborted: no response, RFC 7143 §11.5.1).
    c.complete(3, ScsiResult(data_in=bytes(512)))
    assert c.take_output() == []


def test_a_logout_waits_for_an_executing_command() -> None:
    c = conn()
    feed(c, read_cmd(3, 10, 0, 1))
    out, _ = feed(c, LogoutRequest(reason=LogoutReason.CLOSE_SESSION, initiator_task_tag=9, cmdsn=11, cid=1))
    assert out == []
    c.complete(3, ScsiResult(data_in=bytes(512)))
    assert [type(p).__name__ for p in c.take_output()] == ["DataIn", "LogoutResponse"]


def test_nothing_executes_after_a_logout_request() -> None:
    c = conn()
    feed(c, read_cmd(3, 10, 0, 1))
    feed(c, LogoutRequest(reason=LogoutReason.CLOSE_SESSION, initiator_task_tag=9, cmdsn=11, cid=1))
    out, ev = feed(c, read_cmd(4, 12, 0, 1))
    assert ev == []
    assert isinstance(out[0], Reject) and out[0].reason == RejectReason.WAITING_FOR_LOGOUT


def test_stray_data_out_for_a_finished_write_is_discarded() -> None:
    c = conn()
    _, (e,) = feed(c, write_cmd(4, 10, 0, 1))
    assert isinstance(e, Execute)
    c.complete(4, answer(e.task))
    c.take_output()
    out, ev = feed(c, DataOut(initiator_task_tag=4, datasn=0, buffer_offset=0, data=bytes(512), final=True))
    assert out == [] and ev == [] and not c.closed


def test_commands_out_of_order_execute_in_cmdsn_order() -> None:
    c = conn()
    out, ev = feed(c, read_cmd(2, 11, 1, 1))  # CmdSN 11 before 10: it waits for 10
    assert out == [] and ev == []
    _, ev = feed(c, read_cmd(1, 10, 0, 1))
    assert [e.itt for e in ev] == [1, 2]  # type: ignore[attr-defined]


def test_a_command_waiting_for_a_cmdsn_gap_is_aborted_by_its_lun_reset() -> None:
    c = conn()
    feed(c, read_cmd(2, 11, 1, 1, lun=bytes([0, 1]) + bytes(6)))  # LUN 1, waits for CmdSN 10
    feed(c, read_cmd(3, 12, 1, 1))  # LUN 0, waits too
    _, ev = feed(c, TaskMgmtRequest(function=TmfFunction.LOGICAL_UNIT_RESET, immediate=True, initiator_task_tag=9,
                                    cmdsn=10, lun=bytes([0, 1]) + bytes(6)))
    assert [type(e) for e in ev] == [TaskManagement]
    _, ev = feed(c, read_cmd(1, 10, 0, 1))
    assert [e.itt for e in ev] == [1, 3]  # type: ignore[attr-defined]  # 2 was aborted, its CmdSN consumed
    assert c.expcmdsn == 13


def test_a_discovery_session_executes_no_scsi_command() -> None:
    c = conn(session_type="Discovery")
    out, ev = feed(c, read_cmd(3, 10, 0, 1))
    assert ev == [] and isinstance(out[0], Reject)


def test_the_lun_is_decoded_from_its_field() -> None:
    for field, lun in ((bytes([0, 7]) + bytes(6), 7), (bytes([0x40 | 0x12, 0x34]) + bytes(6), 0x1234),
                       (bytes([0, 1, 0, 1]) + bytes(4), -1)):
        c = conn()
        _, (e,) = feed(c, read_cmd(3, 10, 0, 1, lun=field))
        assert isinstance(e, Execute) and e.task.lun == lun, field.hex()


def test_a_data_digest_error_never_executes() -> None:
    c = conn()
    c.receive(raw(write_cmd(4, 10, 0, 1), corrupt_data=True), 0.0)
    out, ev = c.take_output(), c.take_events()
    assert ev == [] and isinstance(out[0], Reject) and out[0].reason == RejectReason.DATA_DIGEST_ERROR
    assert c.expcmdsn == 11  # the lost command's CmdSN is consumed


def test_task_attributes_reach_the_task() -> None:
    for attr, want in ((0, TaskAttribute.UNTAGGED), (1, TaskAttribute.SIMPLE), (2, TaskAttribute.ORDERED),
                       (3, TaskAttribute.HEAD_OF_QUEUE)):
        c = conn()
        _, (e,) = feed(c, read_cmd(3, 10, 0, 1, attr=attr))
        assert isinstance(e, Execute) and e.task.attr is want


def test_pdus_in_one_batch() -> None:
    """Commands framed together each give their event; nothing waits for anything but the CmdSN."""
    c = conn()
    pdus: list[Pdu] = [read_cmd(i, 9 + i, i, 1) for i in range(1, 9)]
    _, ev = feed(c, *pdus)
    assert [e.itt for e in ev] == list(range(1, 9))  # type: ignore[attr-defined]

"""The connection's inline path (TargetConnection._inline): plain READ/WRITEs handed to the InlineIO
hook as they are framed must give exactly the PDUs the general path (Execute, complete) gives, and
everything that is not plain must still take the general path."""
from __future__ import annotations

import random
from collections.abc import Awaitable, Generator
from typing import Any

import pytest

from sanlab.scsi.task import Nexus, ScsiResult
from sanlab.target.connection import Execute, InlineAnswer, Started, TargetConnection, TaskManagement
from sanlab.target.errors import RejectReason
from sanlab.target.pdu import (
    DataIn, DataOut, LogoutReason, LogoutRequest, Pdu, Reject, ScsiCommand, ScsiResponse, TaskMgmtRequest,
    TmfFunction, encode_bytes,
)
from tests.target.test_connection import Params, feed, raw, read10, write10

NEXUS = Nexus("iqn.2026-11.test:init", 0x400000000001, "iqn.2026-11.org.sanlab:array0", 1)


class Hook:
    """An InlineIO that records its calls and answers with what the test set."""

    def __init__(self, answer: Any = "echo") -> None:
        self.answer = answer
        self.calls: list[tuple[Nexus, int, bytes, bytes]] = []

    def __call__(self, nexus: Nexus, lun: int, cdb: bytes, data_out: Any, length: int | None = None) -> InlineAnswer:
        self.calls.append((nexus, lun, bytes(cdb), bytes(data_out)))
        if self.answer != "echo":
            return self.answer  # type: ignore[no-any-return]
        n = int.from_bytes(cdb[7:9], "big") * 512
        if length is not None and length != n:
            return None  # as DeviceServer.plain_io: another length than the EDTL is declined
        if cdb[0] == 0x2A:
            return True
        return pattern(n, int.from_bytes(cdb[2:6], "big"))


class Waiting(Awaitable[ScsiResult]):
    """Stands for the future DeviceServer.plain_io gives when the transfer waits for the disk."""

    def __await__(self) -> Generator[Any, None, ScsiResult]:  # pragma: no cover - never awaited here
        raise NotImplementedError
        yield


def pattern(n: int, seed: int) -> bytearray:
    return bytearray((seed + i * 7) & 0xFF for i in range(n))


def conn(hook: Any, **kw: Any) -> TargetConnection:
    params = Params(**{k: v for k, v in kw.items() if hasattr(Params, k)})
    other = {k: v for k, v in kw.items() if not hasattr(Params, k)}
    return TargetConnection(nexus=NEXUS, params=params, cid=1, statsn=100, expcmdsn=10, now=0.0, cmd_window=8,
                            inline=hook, **other)


def read_cmd(itt: int, cmdsn: int, lba: int, blocks: int, **kw: Any) -> ScsiCommand:
    return ScsiCommand(read=True, initiator_task_tag=itt, cmdsn=cmdsn, expected_data_transfer_length=blocks * 512,
                       cdb=read10(lba, blocks), **kw)


def write_cmd(itt: int, cmdsn: int, lba: int, blocks: int, **kw: Any) -> ScsiCommand:
    kw.setdefault("data", bytes(pattern(blocks * 512, lba)))
    return ScsiCommand(write=True, initiator_task_tag=itt, cmdsn=cmdsn, expected_data_transfer_length=blocks * 512,
                       cdb=write10(lba, blocks), **kw)


def wire(pdus: list[Pdu]) -> list[bytes]:
    return [encode_bytes(p) for p in pdus]


def test_read_is_one_data_in_carrying_the_status() -> None:
    hook = Hook()
    c = conn(hook)
    out, ev = feed(c, read_cmd(3, 10, lba=5, blocks=2))
    assert ev == []
    assert hook.calls == [(NEXUS, 0, read10(5, 2), b"")]
    (din,) = out
    assert isinstance(din, DataIn)
    assert (din.final, din.status_present, din.status, din.underflow, din.overflow, din.residual_count) == (
        True, True, 0, False, False, 0)
    assert (din.initiator_task_tag, din.statsn, din.expcmdsn, din.maxcmdsn, din.datasn) == (3, 100, 11, 18, 0)
    assert bytes(din.data) == bytes(pattern(1024, 5))


def test_write_with_all_its_data_immediate_is_one_good_response() -> None:
    hook = Hook()
    c = conn(hook)
    out, ev = feed(c, write_cmd(4, 10, lba=9, blocks=4))
    assert ev == []
    assert hook.calls == [(NEXUS, 0, write10(9, 4), bytes(pattern(2048, 9)))]
    (resp,) = out
    assert isinstance(resp, ScsiResponse)
    assert (resp.status, resp.response, resp.residual_count, resp.overflow, resp.underflow) == (0, 0, 0, False, False)
    assert (resp.initiator_task_tag, resp.statsn, resp.expcmdsn, resp.expdatasn, bytes(resp.data)) == (
        4, 100, 11, 0, b"")


def _general(c: TargetConnection, pdu: ScsiCommand) -> list[Pdu]:
    """What the general path answers for ``pdu`` when the device server gives what Hook gives."""
    out, ev = feed(c, pdu)
    for e in ev:
        assert isinstance(e, Execute)
        answer = Hook()(e.task.nexus, e.task.lun, e.task.cdb, e.task.data_out)
        if answer is True:
            c.complete(e.itt, ScsiResult(transfer_length=len(e.task.data_out), data_out_direction=True))
        else:
            assert isinstance(answer, bytearray)
            c.complete(e.itt, ScsiResult(data_in=answer, transfer_length=len(answer)))
    return out + c.take_output()


def test_same_pdus_as_the_general_path() -> None:
    rnd = random.Random(7)
    hook = Hook()
    fast = conn(hook, max_recv_data_segment_length_initiator=65536, max_burst_length=65536,
                max_recv_data_segment_length_target=65536, first_burst_length=65536)
    slow = conn(None, max_recv_data_segment_length_initiator=65536, max_burst_length=65536,
                max_recv_data_segment_length_target=65536, first_burst_length=65536)
    cmdsn = 10
    for itt in range(1, 500):
        lba, blocks = rnd.randrange(1 << 20), rnd.choice((1, 8, 64, 128))
        pdu = read_cmd(itt, cmdsn, lba, blocks) if rnd.random() < 0.5 else write_cmd(itt, cmdsn, lba, blocks)
        got = feed(fast, pdu)
        assert got[1] == []
        assert wire(got[0]) == wire(_general(slow, pdu)), itt
        cmdsn += 1
    assert len(hook.calls) == 499
    assert (fast.statsn, fast.expcmdsn) == (slow.statsn, slow.expcmdsn)


def test_a_declined_command_takes_the_general_path() -> None:
    c = conn(Hook(answer=None))
    out, ev = feed(c, read_cmd(3, 10, 0, 1))
    assert out == [] and isinstance(ev[0], Execute) and ev[0].itt == 3
    c.complete(3, ScsiResult(data_in=bytes(512)))
    (din,) = c.take_output()
    assert isinstance(din, DataIn) and din.status_present and din.statsn == 100


def test_a_read_answer_of_another_length_takes_the_general_path() -> None:
    # The CDB asks for 2 blocks, the initiator's EDTL says 1: the residual is the general path's to report.
    c = conn(Hook())
    out, ev = feed(c, ScsiCommand(read=True, initiator_task_tag=3, cmdsn=10, expected_data_transfer_length=512,
                                  cdb=read10(0, 2)))
    assert out == [] and isinstance(ev[0], Execute)


NOT_PLAIN: dict[str, tuple[ScsiCommand, list[Pdu]]] = {
    "ordered": (read_cmd(3, 10, 0, 1, attr=2), []),
    "head of queue": (read_cmd(3, 10, 0, 1, attr=3), []),
    "immediate delivery": (read_cmd(3, 10, 0, 1, immediate=True), []),
    "flat space LUN": (read_cmd(3, 10, 0, 1, lun=bytes([0x40, 0]) + bytes(6)), []),
    "second-level LUN": (read_cmd(3, 10, 0, 1, lun=bytes([0, 1, 0, 1]) + bytes(4)), []),
    "AHS": (read_cmd(3, 10, 0, 1, ahs=bytes([0, 4, 1, 0]) + bytes(4)), []),
    "no data": (ScsiCommand(read=True, initiator_task_tag=3, cmdsn=10, cdb=read10(0, 0)), []),
    "unsolicited Data-Out to follow": (write_cmd(3, 10, 0, 2, final=False, data=bytes(512)),
                                       [DataOut(initiator_task_tag=3, datasn=0, buffer_offset=512, data=bytes(512),
                                                final=True)]),
    "part of the data immediate": (write_cmd(3, 10, 0, 2, data=bytes(512)),
                                   [DataOut(initiator_task_tag=3, target_transfer_tag=1, datasn=0,
                                            buffer_offset=512, data=bytes(512), final=True)]),
}


@pytest.mark.parametrize("pdus", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_what_is_not_plain_is_never_offered_to_the_hook(pdus: tuple[ScsiCommand, list[Pdu]]) -> None:
    hook = Hook()
    c = conn(hook)
    out, ev = feed(c, pdus[0], *pdus[1])
    assert hook.calls == []
    # The general path has it: an Execute event, or its own answer (a Reject).
    assert [e.itt for e in ev if isinstance(e, Execute)] == [3] or any(isinstance(p, Reject) for p in out)


def test_a_read_longer_than_one_data_in_is_not_offered() -> None:
    hook = Hook()
    c = conn(hook, max_recv_data_segment_length_initiator=8192)
    _, ev = feed(c, read_cmd(3, 10, 0, 17))
    assert hook.calls == [] and isinstance(ev[0], Execute)


def test_a_command_waiting_for_the_disk_is_a_task_like_any_other() -> None:
    waiting = Waiting()
    c = conn(Hook(answer=waiting))
    out, ev = feed(c, read_cmd(3, 10, 0, 1))
    assert out == [] and ev == [Started(3, waiting)]
    # Its ITT is in use until it ends ...
    out, _ = feed(c, read_cmd(3, 11, 0, 1))
    (rej,) = out
    assert isinstance(rej, Reject) and rej.reason == RejectReason.TASK_IN_PROGRESS
    # ... ABORT TASK finds it ...
    _, ev = feed(c, TaskMgmtRequest(function=TmfFunction.ABORT_TASK, initiator_task_tag=9, cmdsn=12,
                                    referenced_task_tag=3, refcmdsn=10))
    (tm,) = ev
    assert isinstance(tm, TaskManagement) and tm.referenced_itts == [3]


def test_a_waiting_command_is_answered_by_complete() -> None:
    waiting = Waiting()
    c = conn(Hook(answer=waiting))
    feed(c, write_cmd(5, 10, 0, 2))
    c.complete(5, ScsiResult(transfer_length=1024, data_out_direction=True))
    (resp,) = c.take_output()
    assert isinstance(resp, ScsiResponse) and resp.status == 0 and resp.residual_count == 0
    assert resp.initiator_task_tag == 5


def test_a_logout_waits_for_a_waiting_command() -> None:
    c = conn(Hook(answer=Waiting()))
    feed(c, read_cmd(3, 10, 0, 1))
    out, _ = feed(c, LogoutRequest(reason=LogoutReason.CLOSE_SESSION, initiator_task_tag=9, cmdsn=11, cid=1))
    assert out == []
    c.complete(3, ScsiResult(data_in=bytes(512)))
    assert [type(p).__name__ for p in c.take_output()] == ["DataIn", "LogoutResponse"]


def test_nothing_is_offered_after_a_logout_request() -> None:
    hook = Hook(answer=Waiting())
    c = conn(hook)
    feed(c, read_cmd(3, 10, 0, 1))
    feed(c, LogoutRequest(reason=LogoutReason.CLOSE_SESSION, initiator_task_tag=9, cmdsn=11, cid=1))
    out, _ = feed(c, read_cmd(4, 12, 0, 1))
    assert len(hook.calls) == 1
    assert isinstance(out[0], Reject) and out[0].reason == RejectReason.WAITING_FOR_LOGOUT


def test_stray_data_out_for_a_finished_inline_write_is_discarded() -> None:
    c = conn(Hook())
    feed(c, write_cmd(4, 10, 0, 1))
    out, ev = feed(c, DataOut(initiator_task_tag=4, datasn=0, buffer_offset=0, data=bytes(512), final=True))
    assert out == [] and ev == [] and not c.closed


def test_commands_out_of_order_are_answered_in_cmdsn_order() -> None:
    hook = Hook()
    c = conn(hook)
    out, _ = feed(c, read_cmd(2, 11, 1, 1))  # CmdSN 11 before 10: it waits for 10
    assert out == [] and hook.calls == []
    out, ev = feed(c, read_cmd(1, 10, 0, 1))
    assert [p.initiator_task_tag for p in out] == [1]  # type: ignore[attr-defined]
    # The one that waited goes the general way (it was not framed now), in order after 10.
    assert [e.itt for e in ev] == [2]  # type: ignore[attr-defined]


def test_a_discovery_session_has_no_inline_path() -> None:
    hook = Hook()
    c = conn(hook, session_type="Discovery")
    out, _ = feed(c, read_cmd(3, 10, 0, 1))
    assert hook.calls == [] and isinstance(out[0], Reject)


def test_the_hook_sees_the_lun() -> None:
    hook = Hook()
    c = conn(hook)
    feed(c, read_cmd(3, 10, 0, 1, lun=bytes([0, 7]) + bytes(6)))
    assert hook.calls[0][1] == 7
    # A raw PDU with a data digest error never reaches it either.
    c2 = conn(hook)
    c2.receive(raw(write_cmd(4, 10, 0, 1), corrupt_data=True), 0.0)
    assert len(hook.calls) == 1

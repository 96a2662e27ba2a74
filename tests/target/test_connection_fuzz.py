"""Fuzzing the full-feature state machine (sans-IO, in-process): random and mutated PDUs.

Invariant (RFC 7143 §7.8, §11.17): whatever arrives, ``receive`` answers with PDUs that encode
(a Reject, a response) or asks to close the connection — it never raises.  Valid requests are
drawn first and then mutated byte by byte, so the fuzzer reaches deep into each handler instead of
stopping at the opcode check.  Fixed examples in CI (HYPOTHESIS_PROFILE=ci); the slow job explores.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.scsi.task import ScsiResult, ScsiStatus
from sanlab.target.connection import TASKS_OVER_WINDOW, Close, Execute, TargetConnection, TaskManagement
from sanlab.target.pdu import (
    BHS_LEN, R2T, DataOut, LogoutRequest, NopOut, Pdu, PduFramer, ScsiCommand, ScsiResponse, SnackRequest,
    TaskMgmtRequest, TextRequest, TmfResponse, encode, encode_bytes,
)

from tests.target.test_connection import NEXUS, Params, read10, write10
from tests.target.test_connection import raw as raw_pdu

u32 = st.integers(0, 0xFFFFFFFF)
small_data = st.binary(max_size=64)
cdbs = st.one_of(
    st.builds(lambda op, rest: bytes([op]) + rest, st.sampled_from([0x00, 0x12, 0x25, 0x28, 0x2A, 0x35, 0x88, 0x8A]),
              st.binary(min_size=15, max_size=15)),
    st.binary(min_size=16, max_size=16),
)

def requests(expcmdsn: int) -> st.SearchStrategy[Pdu]:
    """Well-formed initiator requests around ``expcmdsn`` (in order, early, stale), ITTs 0-8."""
    sns = st.integers(expcmdsn - 2, expcmdsn + 4).map(lambda n: n & 0xFFFFFFFF)
    return st.one_of(
        st.builds(NopOut, immediate=st.booleans(), initiator_task_tag=u32, target_transfer_tag=u32, cmdsn=u32,
                  data=small_data),
        st.builds(ScsiCommand, immediate=st.booleans(), final=st.booleans(), read=st.booleans(), write=st.booleans(),
                  initiator_task_tag=st.integers(0, 8), expected_data_transfer_length=st.integers(0, 70000),
                  cmdsn=sns, cdb=cdbs, data=small_data),
        st.builds(DataOut, final=st.booleans(), initiator_task_tag=st.integers(0, 8), target_transfer_tag=u32,
                  datasn=st.integers(0, 4), buffer_offset=st.integers(0, 70000), data=small_data),
        st.builds(TaskMgmtRequest, immediate=st.booleans(), function=st.integers(0, 15),
                  initiator_task_tag=st.integers(0, 8), referenced_task_tag=st.integers(0, 8), cmdsn=sns),
        st.builds(TextRequest, immediate=st.booleans(), final=st.booleans(), cont=st.booleans(),
                  initiator_task_tag=st.integers(0, 8), target_transfer_tag=u32, cmdsn=sns,
                  data=st.one_of(small_data, st.just(b"SendTargets=All\0"))),
        st.builds(LogoutRequest, immediate=st.booleans(), reason=st.integers(0, 3), initiator_task_tag=u32,
                  cid=st.integers(0, 3), cmdsn=sns),
        st.builds(SnackRequest),
    )


@st.composite
def mutated(draw: st.DrawFn, expcmdsn: int = 10) -> bytes:
    """One request, encoded, then a few bytes of its BHS or data overwritten (never the lengths:
    a PDU whose lengths lie is a framing error, answered by dropping the connection)."""
    blob = bytearray(encode_bytes(draw(requests(expcmdsn))))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(blob) - 1))
        if at < BHS_LEN and at in (4, 5, 6, 7):
            continue  # lengths: framing errors are the framer's (tested below), not the handler's
        blob[at] = draw(st.integers(0, 255))
    return bytes(blob)


def conn(**kw: object) -> TargetConnection:
    return TargetConnection(nexus=NEXUS, params=Params(**kw), cid=1, statsn=100, expcmdsn=10, now=0.0,  # type: ignore[arg-type]
                            cmd_window=4, lun_exists=lambda lun: lun == 0)


def run(c: TargetConnection, stream: list[bytes], answer: int) -> None:
    """Feed every PDU; answer commands and TMFs the way the glue would; check what goes out."""
    framer = PduFramer(max_data_segment=8192)
    now = 0.0
    for blob in stream:
        framer.feed(blob)
        for raw in framer:
            now += 0.5
            c.receive(raw, now)
            for ev in c.take_events():
                if isinstance(ev, Execute):
                    status = ScsiStatus.GOOD if answer % 2 else ScsiStatus.CHECK_CONDITION
                    c.complete(ev.itt, ScsiResult(status=status, data_in=bytes(answer % 700),
                                                  sense=b"" if answer % 2 else bytes([0x70, 0, 5]) + bytes(15)))
                elif isinstance(ev, TaskManagement):
                    c.tmf_done(ev.itt, TmfResponse.FUNCTION_COMPLETE)
                else:
                    assert isinstance(ev, Close)
            for pdu in c.take_output():
                encode(pdu, False, False)  # every answer is a well-formed PDU
        c.tick(now + 100.0)
        c.take_output()
        c.take_events()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(stream=st.lists(mutated(), min_size=1, max_size=12), answer=st.integers(0, 5000),
       initial_r2t=st.booleans(), immediate_data=st.booleans(), max_outstanding_r2t=st.integers(1, 3))
def test_mutated_requests_never_raise(stream: list[bytes], answer: int, initial_r2t: bool, immediate_data: bool,
                                      max_outstanding_r2t: int) -> None:
    run(conn(initial_r2t=initial_r2t, immediate_data=immediate_data, max_outstanding_r2t=max_outstanding_r2t),
        stream, answer)


@FUZZ
@given(stream=st.lists(st.binary(min_size=BHS_LEN, max_size=BHS_LEN + 40), min_size=1, max_size=6))
def test_random_headers_never_raise(stream: list[bytes]) -> None:
    """Raw random BHSs (lengths kept small so each frames) : a Reject or a close, never an exception."""
    fixed = []
    for blob in stream:
        b = bytearray(blob)
        b[4] = 0
        b[5:8] = (len(blob) - BHS_LEN).to_bytes(3, "big")
        fixed.append(bytes(b) + bytes(-len(b) & 3))
    run(conn(), fixed, 1)


@pytest.mark.slow
@settings(FUZZ, max_examples=5000)
@given(stream=st.lists(mutated(), min_size=1, max_size=20), answer=st.integers(0, 5000),
       initial_r2t=st.booleans(), immediate_data=st.booleans(), max_outstanding_r2t=st.integers(1, 3))
def test_mutated_requests_explore(stream: list[bytes], answer: int, initial_r2t: bool, immediate_data: bool,
                                  max_outstanding_r2t: int) -> None:
    run(conn(initial_r2t=initial_r2t, immediate_data=immediate_data, max_outstanding_r2t=max_outstanding_r2t),
        stream, answer)


def test_write_buffers_per_connection_are_bounded() -> None:
    """WRITEs whose data never comes hold at most ``max_connection_buffer`` bytes; the next one is
    answered TASK SET FULL (SAM-5 §5.3.1); completing one makes room again."""
    c = TargetConnection(nexus=NEXUS, params=Params(initial_r2t=True), cid=1, statsn=100, expcmdsn=10, now=0.0,  # type: ignore[arg-type]
                         cmd_window=64, max_connection_buffer=40 << 10)
    for i in range(6):  # five 8 KiB writes fit in 40 KiB, the sixth does not
        c.receive(raw_pdu(ScsiCommand(write=True, final=True, initiator_task_tag=i, cmdsn=10 + i,
                                      expected_data_transfer_length=8192, cdb=write10(0, 16))), 0.0)
    out = c.take_output()
    full = [p for p in out if isinstance(p, ScsiResponse)]
    assert [(p.initiator_task_tag, p.status) for p in full] == [(5, ScsiStatus.TASK_SET_FULL)]
    assert c.buffered == 5 * 8192
    # Data-Out for the refused one is dropped quietly; the first task gets its data and completes.
    c.receive(raw_pdu(DataOut(final=True, initiator_task_tag=5, target_transfer_tag=0xFFFFFFFF, data=bytes(8192))), 0.0)
    r2t = next(p for p in out if isinstance(p, R2T) and p.initiator_task_tag == 0)
    c.receive(raw_pdu(DataOut(final=True, initiator_task_tag=0, target_transfer_tag=r2t.target_transfer_tag,
                              data=bytes(8192))), 0.0)
    (ev,) = [e for e in c.take_events() if isinstance(e, Execute)]
    c.complete(ev.itt, ScsiResult())
    assert c.buffered == 4 * 8192
    c.receive(raw_pdu(ScsiCommand(write=True, final=True, initiator_task_tag=9, cmdsn=16,
                                  expected_data_transfer_length=8192, cdb=write10(0, 16))), 0.0)
    assert not [p for p in c.take_output() if isinstance(p, ScsiResponse) and p.status == ScsiStatus.TASK_SET_FULL]
    assert c.buffered == 5 * 8192 and not c.closed


def test_tasks_in_flight_per_connection_are_bounded_immediate_ones_too() -> None:
    """Immediate commands (I bit) are not counted by the CmdSN window: a connection holds at most
    ``cmd_window + TASKS_OVER_WINDOW`` tasks, the next is answered TASK SET FULL, and a completed
    task makes room again."""
    window = 8
    c = TargetConnection(nexus=NEXUS, params=Params(), cid=1, statsn=100, expcmdsn=10, now=0.0,  # type: ignore[arg-type]
                         cmd_window=window)
    limit = window + TASKS_OVER_WINDOW
    for i in range(limit + 3):
        c.receive(raw_pdu(ScsiCommand(immediate=True, read=True, final=True, initiator_task_tag=i, cmdsn=10,
                                      expected_data_transfer_length=512, cdb=read10(0, 1))), 0.0)
    full = [p for p in c.take_output() if isinstance(p, ScsiResponse)]
    assert [(p.initiator_task_tag, p.status) for p in full] == [
        (i, ScsiStatus.TASK_SET_FULL) for i in range(limit, limit + 3)]
    started = [e for e in c.take_events() if isinstance(e, Execute)]
    assert len(started) == limit and not c.closed
    c.complete(started[0].itt, ScsiResult(data_in=bytes(512), transfer_length=512))
    c.receive(raw_pdu(ScsiCommand(immediate=True, read=True, final=True, initiator_task_tag=999, cmdsn=10,
                                  expected_data_transfer_length=512, cdb=read10(0, 1))), 0.0)
    assert not [p for p in c.take_output() if isinstance(p, ScsiResponse) and p.status == ScsiStatus.TASK_SET_FULL]
    assert [e.itt for e in c.take_events() if isinstance(e, Execute)] == [999]

"""One SCSI task on a target connection: its Data-Out transfer and its answer (RFC 7143 §4.2.5, §11.4, §11.7, §11.8).

A :class:`Task` is made for each SCSI Command (by ``TargetConnection._scsi_command``, the only
place) and goes through the one state table below; the connection owns the task table, the TTT
map and the StatSN, this module owns the per-task rules of the write data:

========== ================================================ =================================
state      entered when                                     left when
========== ================================================ =================================
WAIT_DATA  the command is taken and Data-Out is still owed  the last byte arrives → EXECUTING;
                                                            abort, sequence or digest error →
                                                            gone (answered CHECK CONDITION)
EXECUTING  all Data-Out is here: an Execute event is given  ``complete`` (answered) or abort
                                                            (awaited, never answered) → gone
========== ================================================ =================================

The write data arrives as immediate data (in the command), an unsolicited sequence (up to
FirstBurstLength when InitialR2T=No) and solicited bursts (one per R2T, at most
MaxOutstandingR2T at a time, each up to MaxBurstLength).  With DataPDUInOrder and
DataSequenceInOrder (both Yes here) every sequence has DataSN from 0 and offsets in order; any
other Data-Out is a sequence error (:class:`DataOutError`).  :func:`answer` turns the device
server's result into the task's Data-In and status PDUs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Protocol

from sanlab.scsi.task import ScsiResult, ScsiStatus
from sanlab.target.pdu import RESERVED_TAG, DataIn, DataOut, Pdu, ScsiCommand, ScsiResponse


class AnswerParams(Protocol):
    """The negotiated limits an answer's Data-In respects (``keys.SessionParams``)."""

    max_recv_data_segment_length_initiator: int
    max_burst_length: int


class TaskState(enum.Enum):
    """Where a task is in the state table of this module's docstring."""

    WAIT_DATA = "wait-data"
    EXECUTING = "executing"


class DataOutError(Exception):
    """A Data-Out PDU out of its sequence (DataSN, offset, TTT or length): at ErrorRecoveryLevel 0
    the command cannot be recovered (RFC 7143 §7.1.5)."""


@dataclass(slots=True)
class R2TState:
    """One outstanding R2T: the burst it asked for and how far its Data-Out has come."""

    ttt: int
    """Target Transfer Tag the Data-Out echoes."""
    offset: int
    """Buffer offset the burst starts at."""
    length: int
    """Desired Data Transfer Length of the burst."""
    next_offset: int
    """Offset the next Data-Out of the burst must carry."""
    datasn: int = 0
    """DataSN the next Data-Out of the burst must carry (from 0 per burst, §11.7.5)."""


@dataclass(slots=True)
class Task:
    """A SCSI command on this connection, from its arrival to its answer."""

    itt: int
    """Initiator Task Tag."""
    cmdsn: int
    """CmdSN of the command."""
    lun_field: bytes
    """The 8-byte LUN field, echoed in Data-In and R2T."""
    lun: int
    """The decoded LUN (NOT_SUPPORTED for addressing we do not serve)."""
    cmd: ScsiCommand
    """The command PDU (its data segment moved to :attr:`buf`)."""
    edtl: int
    """Bytes of Data-Out owed: the EDTL of a write, 0 otherwise."""
    buf: bytearray | bytes | None
    """Data-Out as it arrives; the immediate data itself when that is all of it (no copy)."""
    received: int = 0
    """Data-Out bytes taken so far."""
    unsolicited_end: int = 0
    """End of the unsolicited region: immediate data plus, when F=0, up to FirstBurstLength."""
    unsolicited_next: int = 0
    """Offset the next unsolicited Data-Out must carry."""
    unsolicited_datasn: int = 0
    """DataSN the next unsolicited Data-Out must carry."""
    unsolicited_open: bool = False
    """Unsolicited Data-Out is still expected (the command had F=0 and no final Data-Out came)."""
    solicit_next: int = 0
    """Offset the next R2T asks from."""
    r2tsn: int = 0
    """R2TSN of the next R2T (also ExpDataSN's share of the answer, §11.4.8)."""
    r2ts: dict[int, R2TState] = field(default_factory=dict)
    """Outstanding R2Ts by TTT."""
    state: TaskState = TaskState.WAIT_DATA
    """See the module's state table."""
    aborted: bool = False
    """Aborted by a TMF while EXECUTING: its answer is dropped."""

    def take_data_out(self, pdu: DataOut) -> int | None:
        """Check ``pdu`` against its sequence and copy its data in; the TTT of the R2T whose burst it
        completed (the caller forgets the TTT and may issue the next R2T), else None.  Raises
        :class:`DataOutError` with the reason, having taken nothing, when it is out of sequence."""
        n = len(pdu.data)
        off = pdu.buffer_offset
        done_ttt: int | None = None
        ttt = pdu.target_transfer_tag
        if ttt == RESERVED_TAG:
            # Unsolicited sequence: DataSN from 0, offsets in order (DataPDUInOrder=Yes).
            if not self.unsolicited_open:
                raise DataOutError("unsolicited Data-Out not expected")
            if pdu.datasn != self.unsolicited_datasn or off != self.unsolicited_next or off + n > self.unsolicited_end:
                raise DataOutError(f"unsolicited Data-Out DataSN {pdu.datasn}/offset {off} out of sequence")
            if pdu.final and off + n != self.unsolicited_end:
                # Less unsolicited data than FirstBurstLength/EDTL required (§4.2.5.2).
                raise DataOutError("unsolicited data ended before FirstBurstLength")
            self.unsolicited_datasn += 1
            self.unsolicited_next = off + n
            if pdu.final:
                self.unsolicited_open = False
        else:
            r2t = self.r2ts.get(ttt)
            if r2t is None:
                raise DataOutError(f"Data-Out with unknown TTT 0x{ttt:08x}")
            if pdu.datasn != r2t.datasn or off != r2t.next_offset or off + n > r2t.offset + r2t.length:
                raise DataOutError(f"solicited Data-Out DataSN {pdu.datasn}/offset {off} out of sequence")
            if pdu.final and off + n != r2t.offset + r2t.length:
                raise DataOutError("R2T burst ended early")
            r2t.datasn += 1
            r2t.next_offset = off + n
            if pdu.final:
                del self.r2ts[ttt]
                done_ttt = ttt
        assert isinstance(self.buf, bytearray)  # Data-Out is only taken while some is still missing
        self.buf[off:off + n] = pdu.data
        self.received += n
        return done_ttt

    def next_r2t(self, max_burst_length: int, max_outstanding_r2t: int,
                 alloc_ttt: Callable[[], int]) -> R2TState | None:
        """The next R2T to send, tagged by ``alloc_ttt()`` and recorded as outstanding, or None when
        every byte owed is solicited or MaxOutstandingR2T are out (§11.8)."""
        if self.solicit_next >= self.edtl or len(self.r2ts) >= max_outstanding_r2t:
            return None
        length = min(max_burst_length, self.edtl - self.solicit_next)
        ttt = alloc_ttt()
        r2t = R2TState(ttt=ttt, offset=self.solicit_next, length=length, next_offset=self.solicit_next)
        self.r2ts[ttt] = r2t
        self.solicit_next += length
        return r2t


def answer(task: Task, result: ScsiResult, params: AnswerParams, statsn: int, expcmdsn: int, maxcmdsn: int,
           out: list[Pdu]) -> None:
    """Append to ``out`` the PDUs that answer ``task`` with ``result``: Data-In within the
    initiator's MaxRecvDataSegmentLength and MaxBurstLength (F at each burst's end, DataSN from 0),
    the status collapsed into the last Data-In when it is GOOD with no sense (§11.7.4), else a SCSI
    Response with the sense; residuals against the EDTL of the command's direction (§11.4.5).
    Exactly one of the PDUs carries the status and takes ``statsn``; the others carry it unchanged."""
    itt = task.itt
    cmd = task.cmd
    status = int(result.status)
    if cmd.read and not cmd.write:
        edtl = cmd.expected_data_transfer_length
    elif cmd.read and cmd.write:
        edtl = cmd.bidi_read_edtl() or 0
    else:
        edtl = 0
    data = result.data_in
    send = min(len(data), edtl)
    if (send and send == edtl and result.status == ScsiStatus.GOOD and not result.sense
            and send <= params.max_recv_data_segment_length_initiator and send <= params.max_burst_length
            and not (cmd.write or result.data_out_direction)
            and (len(data) if result.transfer_length is None else result.transfer_length) == edtl):
        # The plain read, most reads: the one Data-In the general loop below builds, built directly.
        out.append(DataIn(True, False, False, False, True, status, task.lun_field, itt, RESERVED_TAG, statsn,
                          expcmdsn, maxcmdsn, 0, 0, 0, b"", data if send == len(data) else memoryview(data)[:send]))
        return
    # Residuals (§11.4.5): against the write EDTL for write-type commands, else the read EDTL.
    if result.data_out_direction or (cmd.write and not cmd.read):
        expected = task.edtl
        want = expected if result.transfer_length is None else result.transfer_length
    else:
        expected = edtl
        want = len(data) if result.transfer_length is None else result.transfer_length
    overflow = want > expected
    underflow = want < expected
    residual = abs(want - expected)
    datasn = 0
    if send:
        view = memoryview(data)[:send]
        seg = params.max_recv_data_segment_length_initiator
        burst = params.max_burst_length
        collapse = status == ScsiStatus.GOOD and not result.sense
        off = 0
        while off < send:
            n = min(seg, send - off, burst - (off % burst))
            last = off + n == send
            end_burst = last or (off + n) % burst == 0
            pdu = DataIn(final=end_burst, lun=task.lun_field, initiator_task_tag=itt, datasn=datasn,
                         buffer_offset=off, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn, data=view[off:off + n],
                         statsn=statsn)
            if last and collapse:
                # Phase collapse: status rides on the last Data-In (§11.7.4).
                pdu.final = True
                pdu.status_present = True
                pdu.status = status
                pdu.overflow, pdu.underflow, pdu.residual_count = overflow, underflow, residual
            out.append(pdu)
            datasn += 1
            off += n
        if collapse:
            return
    sense = result.sense
    out.append(ScsiResponse(
        overflow=overflow, underflow=underflow, residual_count=residual, status=status, initiator_task_tag=itt,
        statsn=statsn, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn, expdatasn=datasn + task.r2tsn,
        data=(len(sense).to_bytes(2, "big") + sense) if sense else b""))

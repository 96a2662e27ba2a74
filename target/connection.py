"""Full-feature phase of one target-side iSCSI connection, sans-IO (RFC 7143 §3.2, §4.2, §11).

The asyncio glue (``server.py``) feeds each framed PDU to
:meth:`TargetConnection.receive` together with the current time, collects the
PDUs to send with :meth:`take_output` and the work to do with
:meth:`take_events`:

* :class:`Execute` — a SCSI command with all its Data-Out is ready for the
  device server; the glue answers with :meth:`complete`.
* :class:`TaskManagement` — a TMF that needs the device server or other
  sessions; the glue answers with :meth:`tmf_done`.
* :class:`Close` — drop the connection (after flushing output).

Nothing here touches a socket or a clock: time is passed in, tags come from
counters, so every rule is testable with byte fixtures.  We run
ErrorRecoveryLevel 0 and one connection per session: any error the RFC would
recover within a command at higher levels ends the connection here
(RFC 7143 §7.1.5, session recovery), after a Reject that says why.

Why one module of this size: it is one state machine (RFC 7143 §11's requests as they move
one connection's shared state: the CmdSN window and its out-of-order queue, StatSN, the task
table with its TTT map, NOP-In pings, logout).  Each part reads and moves that same state, so
splitting it would pass it through every call; what is per task (the Data-Out rules and the
answer's Data-In) lives in ``transfer.py`` and the PDU layouts in ``pdu.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import structlog

from sanlab.scsi.lun import PERIPHERAL_LUNS, decode_lun
from sanlab.scsi.sense import Asc, SenseKey, build_sense
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask, TaskAttribute
from sanlab.target.errors import ProtocolError, RejectReason
from sanlab.target.keys import encode_text, parse_text
from sanlab.target.pdu import (
    RESERVED_TAG, AsyncEvent, AsyncMessage, Buffer, DataOut, LogoutReason, LogoutRequest,
    LogoutResponse, LogoutResponseCode, NopIn, NopOut, Opcode, Pdu, R2T, RawPdu, Reject, ScsiCommand,
    ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction,
    TmfResponse, decode,
)
from sanlab.target.seqnum import sn_add, sn_in_window
from sanlab.target.transfer import DataOutError, Task, TaskState, answer

log = structlog.get_logger("sanlab.target.connection")

# Sense for a command whose data phase failed a digest check: ABORTED COMMAND,
# PROTOCOL SERVICE CRC ERROR (47h/05h), RFC 7143 §7.8 / §11.17.1.
_CRC_ERROR_SENSE = build_sense(SenseKey.ABORTED_COMMAND, Asc.PROTOCOL_SERVICE_CRC_ERROR)
# Sense for a write whose Expected Data Transfer Length exceeds what we buffer per task:
# ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT (0Eh/03h, SPC-4 annex D).
_EDTL_TOO_LARGE_SENSE = build_sense(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
# Sense for a command whose Data-Out broke DataSN/offset rules: ABORTED COMMAND, DATA PHASE ERROR.
_DATA_PHASE_ERROR_SENSE = build_sense(SenseKey.ABORTED_COMMAND, Asc.DATA_PHASE_ERROR)

_ATTRS = (TaskAttribute.UNTAGGED, TaskAttribute.SIMPLE, TaskAttribute.ORDERED, TaskAttribute.HEAD_OF_QUEUE,
          TaskAttribute.ACA, TaskAttribute.SIMPLE, TaskAttribute.SIMPLE, TaskAttribute.SIMPLE)
"""ATTR field (3 bits) → task attribute; the reserved values 5-7 are taken as SIMPLE."""

MAX_TASK_BUFFER = 64 << 20
"""Largest write (EDTL) buffered for one task; beyond it the command is refused, not allocated."""
TASKS_OVER_WINDOW = 32
"""Tasks one connection may hold beyond its command window.  An initiator that waits for MaxCmdSN
keeps about ``cmd_window`` in flight; immediate commands (I bit) are not counted by the window at
all.  Past ``cmd_window + TASKS_OVER_WINDOW`` a new command is answered TASK SET FULL."""
MAX_CONNECTION_BUFFER = 256 << 20
"""Most bytes of write buffers one connection's tasks hold at once (their EDTLs, allocated when the
command arrives).  Without it the CmdSN window alone (128 commands, immediate ones not even
counted) would let one initiator pin 8 GiB by sending WRITEs and never their data; a command past
it is answered TASK SET FULL (SAM-5 §5.3.1), which initiators retry once earlier ones complete."""


class Params(Protocol):
    """The negotiated values the full-feature phase depends on (``keys.SessionParams``)."""

    initial_r2t: bool
    immediate_data: bool
    max_recv_data_segment_length_target: int
    max_recv_data_segment_length_initiator: int
    max_burst_length: int
    first_burst_length: int
    max_outstanding_r2t: int
    default_time2wait: int
    default_time2retain: int
    session_type: str


@dataclass(slots=True)
class Execute:
    """A SCSI command is ready for the device server."""

    itt: int
    task: ScsiTask


@dataclass(slots=True)
class TaskManagement:
    """A TMF for the glue to carry out (it may reach other sessions and the device server)."""

    itt: int
    function: TmfFunction
    lun: int
    referenced_itts: list[int]
    """Tasks of *this* session already marked aborted; their executions must be awaited."""


@dataclass(slots=True)
class Close:
    """Drop the connection once the pending output is written."""

    reason: str


Event = Execute | TaskManagement | Close

_Request = NopOut | ScsiCommand | TaskMgmtRequest | TextRequest | LogoutRequest
"""The requests an initiator sends with a CmdSN (the opcodes of ``_COMMAND_OPCODES``)."""


class TargetConnection:
    """One iSCSI connection in full-feature phase, target role."""

    def __init__(
        self,
        *,
        nexus: Nexus,
        params: Params,
        cid: int,
        statsn: int,
        expcmdsn: int,
        now: float,
        cmd_window: int = 128,
        nop_interval: float = 30.0,
        nop_timeout: float = 60.0,
        send_targets: Callable[[str], list[tuple[str, str]]] | None = None,
        lun_exists: Callable[[int], bool] | None = None,
        max_task_buffer: int = MAX_TASK_BUFFER,
        max_connection_buffer: int = MAX_CONNECTION_BUFFER,
    ) -> None:
        self.nexus = nexus
        self.params = params
        self.cid = cid
        self.discovery = params.session_type == "Discovery"
        self.statsn = statsn
        self.expcmdsn = expcmdsn
        self.cmd_window = cmd_window
        self.nop_interval = nop_interval
        self.nop_timeout = nop_timeout
        self._send_targets = send_targets or (lambda _v: [])
        self._lun_exists = lun_exists or (lambda _l: True)
        self.max_task_buffer = max_task_buffer
        self.max_connection_buffer = max_connection_buffer
        self.buffered = 0
        """Bytes of write buffers the tasks in ``_tasks`` hold (bounded by ``max_connection_buffer``)."""
        self._out: list[Pdu] = []
        self._events: list[Event] = []
        self._pending: dict[int, tuple[_Request, RawPdu]] = {}
        """CmdSN → a request that arrived ahead of a gap in the CmdSN sequence (§4.2.2.1)."""
        self._tasks: dict[int, Task] = {}
        self._ttt_to_itt: dict[int, int] = {}
        self._next_ttt = 1
        self._aborted_cmdsns: set[int] = set()
        self._finished_itts: set[int] = set()
        self._finished_itts_old: set[int] = set()
        """ITTs of tasks ended here, newest generation and the one before (about 4096-8192 kept)."""
        self._text_pending: dict[int, tuple[bytes, int]] = {}  # ITT -> (remaining, TTT)
        self._text_in: dict[int, bytearray] = {}
        self._last_rx = now
        self._ping_ttt: int | None = None
        self._ping_sent_at = 0.0
        self._logout_itt: int | None = None
        self._logout_pdu: LogoutRequest | None = None
        self.closed = False
        self.log = log.bind(initiator=nexus.initiator_name, isid=f"{nexus.isid:012x}", cid=cid)

    # --- window ------------------------------------------------------------

    @property
    def maxcmdsn(self) -> int:
        """Highest CmdSN the initiator may send: a constant window above ExpCmdSN (§4.2.2.1)."""
        return (self.expcmdsn + self.cmd_window - 1) & 0xFFFFFFFF  # sn_add, inline: once per response

    def _next_statsn(self) -> int:
        sn = self.statsn
        self.statsn = sn_add(sn, 1)
        return sn

    # --- output/event queues -------------------------------------------------

    def take_output(self) -> list[Pdu]:
        """PDUs to send, in order."""
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        """Work for the glue, in order."""
        ev, self._events = self._events, []
        return ev

    def _close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._events.append(Close(reason))

    def _reject(self, raw_bhs: bytes, reason: RejectReason) -> None:
        # Reject carries the offending header and consumes a StatSN (§11.17).
        self._out.append(Reject(reason=reason, statsn=self._next_statsn(), expcmdsn=self.expcmdsn,
                                maxcmdsn=self.maxcmdsn, data=raw_bhs))

    # --- input -------------------------------------------------------------

    def receive(self, raw: RawPdu, now: float) -> None:
        """Process one framed PDU: only state changes, output PDUs and events (no I/O)."""
        if self.closed:
            return
        self._last_rx = now
        try:
            op = raw.opcode
            if op == Opcode.SCSI_DATA_OUT:
                self._data_out(raw)
                return
            if op not in _COMMAND_OPCODES:
                self._not_a_request(op)
            if not raw.data_digest_ok:
                # The header is sound, the data is not: Reject and drop the PDU (§7.8.1).  A
                # SCSI command with bad immediate data is lost, so its CmdSN is consumed.
                self._reject(raw.bhs, RejectReason.DATA_DIGEST_ERROR)
                if not raw.immediate:
                    self._consume_cmdsn(raw.cmdsn)
                return
            # The request's own layout decodes it (the SCSI Command's without the table lookup:
            # most PDUs are SCSI Commands).
            req: _Request = (ScsiCommand.from_bhs(raw.bhs, raw.ahs, raw.data) if op == Opcode.SCSI_COMMAND
                             else decode(raw))  # type: ignore[assignment]
            if req.immediate:  # immediate delivery (I bit): ahead of the CmdSN order
                self._dispatch(req, raw)
                return
            cmdsn = req.cmdsn
            if cmdsn == self.expcmdsn:
                self.expcmdsn = (cmdsn + 1) & 0xFFFFFFFF  # sn_add, inline: once per command
                if type(req) is ScsiCommand and not self._aborted_cmdsns and self._logout_itt is None:
                    self._scsi_command(req, raw)  # what _dispatch would do, one call shorter
                else:
                    self._dispatch(req, raw, cmdsn)
                if self._pending:
                    self._drain_pending()
            elif sn_in_window(cmdsn, self.expcmdsn, self.maxcmdsn):
                # A later command that arrived early waits for the gap (§4.2.2.1 ordered delivery).
                self._pending.setdefault(cmdsn, (req, raw))
            else:
                # Outside the window: silently ignored (RFC 7143 §4.2.2.1).
                self.log.info("cmdsn_outside_window", cmdsn=cmdsn, expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn)
        except ProtocolError as exc:
            self.log.warning("protocol_error", error=str(exc), opcode=raw.opcode)
            if exc.reject is not None:
                self._reject(raw.bhs, exc.reject)
            else:
                self._close(f"protocol error: {exc}")

    @staticmethod
    def _not_a_request(op: int) -> None:
        """Raise the Reject for an opcode an initiator may not send in full-feature phase."""
        if op == Opcode.SNACK_REQUEST:
            # SNACK exists only at ErrorRecoveryLevel > 0 (§11.16); at 0 it is a command we do not
            # support.
            raise ProtocolError("SNACK at ErrorRecoveryLevel 0", RejectReason.COMMAND_NOT_SUPPORTED)
        if op == Opcode.LOGIN_REQUEST:
            raise ProtocolError("Login Request in full-feature phase", RejectReason.PROTOCOL_ERROR)
        raise ProtocolError(f"opcode 0x{op:02x} not valid from an initiator", RejectReason.COMMAND_NOT_SUPPORTED)

    def _consume_cmdsn(self, cmdsn: int) -> None:
        if cmdsn == self.expcmdsn:
            self.expcmdsn = sn_add(cmdsn, 1)
            self._drain_pending()

    def _drain_pending(self) -> None:
        while (waiting := self._pending.pop(self.expcmdsn, None)) is not None:
            cmdsn = self.expcmdsn
            self.expcmdsn = sn_add(cmdsn, 1)
            self._dispatch(waiting[0], waiting[1], cmdsn)

    def _dispatch(self, req: _Request, raw: RawPdu, cmdsn: int | None = None) -> None:
        if cmdsn is not None and self._aborted_cmdsns and cmdsn in self._aborted_cmdsns:
            self._aborted_cmdsns.discard(cmdsn)
            return  # aborted by ABORT TASK before it arrived (§11.5.1)
        if self._logout_itt is not None and not isinstance(req, LogoutRequest):
            raise ProtocolError("command after Logout", RejectReason.WAITING_FOR_LOGOUT)
        _HANDLERS[type(req)](self, req, raw)

    # --- NOP ---------------------------------------------------------------

    def _nop_out(self, pdu: NopOut, raw: RawPdu) -> None:
        if pdu.target_transfer_tag != RESERVED_TAG:
            # Answer to our ping (§11.18.3): nothing to send back.
            if pdu.target_transfer_tag == self._ping_ttt:
                self._ping_ttt = None
            return
        if pdu.initiator_task_tag == RESERVED_TAG:
            if not pdu.immediate:
                raise ProtocolError("NOP-Out with reserved ITT must be immediate", RejectReason.PROTOCOL_ERROR)
            return
        if len(pdu.data) > self.params.max_recv_data_segment_length_initiator:
            raise ProtocolError("NOP-Out ping data too long to echo", RejectReason.PROTOCOL_ERROR)
        self._out.append(NopIn(lun=pdu.lun, initiator_task_tag=pdu.initiator_task_tag, statsn=self._next_statsn(),
                               expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn, data=bytes(pdu.data)))

    def tick(self, now: float) -> None:
        """Send a NOP-In ping to an idle initiator; drop it if it never answers (§11.19)."""
        if self.closed or self.discovery or self.nop_interval <= 0:
            return
        if self._ping_ttt is not None:
            if now - self._ping_sent_at > self.nop_timeout:
                self.log.warning("nop_timeout", waited=now - self._ping_sent_at)
                self._close("initiator did not answer NOP-In")
            return
        if now - self._last_rx >= self.nop_interval:
            self._ping_ttt = self._alloc_ttt()
            self._ping_sent_at = now
            # A ping carries the current StatSN without consuming it (§11.19.4).
            self._out.append(NopIn(initiator_task_tag=RESERVED_TAG, target_transfer_tag=self._ping_ttt,
                                   statsn=self.statsn, expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn))

    def _alloc_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = ttt + 1 if ttt < 0x7FFFFFFF else 1
        return ttt

    # --- SCSI command ------------------------------------------------------

    def _scsi_command(self, pdu: ScsiCommand, raw: RawPdu) -> None:
        if self.discovery:
            raise ProtocolError("SCSI command in a discovery session", RejectReason.PROTOCOL_ERROR)
        itt = pdu.initiator_task_tag
        if itt == RESERVED_TAG:
            raise ProtocolError("SCSI command with the reserved ITT", RejectReason.INVALID_PDU_FIELD)
        if itt in self._tasks:
            raise ProtocolError(f"ITT 0x{itt:08x} already in use", RejectReason.TASK_IN_PROGRESS)
        p = self.params
        edtl = pdu.expected_data_transfer_length
        imm = len(pdu.data)
        if imm:
            if not pdu.write:
                raise ProtocolError("immediate data without the W bit", RejectReason.PROTOCOL_ERROR)
            if not p.immediate_data:
                raise ProtocolError("immediate data but ImmediateData=No", RejectReason.PROTOCOL_ERROR)
            if imm > p.max_recv_data_segment_length_target or imm > p.first_burst_length or imm > edtl:
                raise ProtocolError("immediate data beyond negotiated limits or EDTL", RejectReason.PROTOCOL_ERROR)
        if not pdu.write and not pdu.final:
            raise ProtocolError("F bit clear on a command with no Data-Out", RejectReason.PROTOCOL_ERROR)
        if pdu.write and not pdu.final and p.initial_r2t:
            raise ProtocolError("unsolicited Data-Out announced but InitialR2T=Yes", RejectReason.PROTOCOL_ERROR)
        lun_field = pdu.lun
        lun = PERIPHERAL_LUNS.get(lun_field)
        if lun is None:
            lun = decode_lun(lun_field)  # NOT_SUPPORTED: the device server answers LOGICAL UNIT NOT SUPPORTED
        wlen = edtl if pdu.write else 0
        # A buffer of EDTL bytes is allocated per write: an absurd EDTL is refused up front so one
        # initiator cannot exhaust memory.  Data-Out that follows is discarded (_finished_itts).
        too_large = wlen > self.max_task_buffer
        imm_data = pdu.data
        whole = isinstance(imm_data, bytes) and imm == wlen and pdu.final
        buf: bytearray | bytes | None = None
        if wlen and not too_large:
            buf = imm_data if isinstance(imm_data, bytes) and whole else bytearray(wlen)
        task = Task(itt=itt, cmdsn=pdu.cmdsn, lun_field=pdu.lun, lun=lun, cmd=pdu, edtl=0 if too_large else wlen,
                     buf=buf)
        if too_large:
            self.log.warning("edtl_too_large", itt=itt, edtl=edtl)
            self._fail_task(task, _EDTL_TOO_LARGE_SENSE)
            return
        if wlen and self.buffered + wlen > self.max_connection_buffer:
            self.log.warning("task_set_full", itt=itt, edtl=edtl, buffered=self.buffered)
            self._task_set_full(itt)
            return
        if len(self._tasks) >= self.cmd_window + TASKS_OVER_WINDOW:
            # Immediate commands pass the CmdSN window (§3.2.2.1): without this bound an initiator
            # could keep any number of tasks in flight on one connection.
            self.log.warning("task_set_full", itt=itt, tasks=len(self._tasks))
            self._task_set_full(itt)
            return
        self.buffered += wlen
        if imm:
            assert task.buf is not None
            if not whole:
                assert isinstance(task.buf, bytearray)
                task.buf[:imm] = pdu.data
            task.received = imm
        # Unsolicited region: immediate data plus, when F=0, Data-Out up to FirstBurstLength (§4.2.5.2).
        task.unsolicited_end = imm if pdu.final else min(p.first_burst_length, wlen)
        task.unsolicited_next = imm
        task.unsolicited_open = not pdu.final
        task.solicit_next = task.unsolicited_end
        self._tasks[itt] = task
        pdu.data = b""  # the bytes live in task.buf now
        if task.solicit_next < wlen:
            self._issue_r2ts(task)
        if task.received >= task.edtl:
            self._execute(task)

    def _task_set_full(self, itt: int) -> None:
        """Answer the command ``itt`` TASK SET FULL (SAM-5 §5.3.1: not performed; initiators retry
        once earlier tasks complete) without starting it; Data-Out that follows for it is dropped."""
        self._finished(itt)
        self._out.append(ScsiResponse(status=ScsiStatus.TASK_SET_FULL, initiator_task_tag=itt,
                                      statsn=self._next_statsn(), expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn))

    def _issue_r2ts(self, task: Task) -> None:
        p = self.params
        while (r2t := task.next_r2t(p.max_burst_length, p.max_outstanding_r2t, self._alloc_ttt)) is not None:
            self._ttt_to_itt[r2t.ttt] = task.itt
            self._out.append(R2T(lun=task.lun_field, initiator_task_tag=task.itt, target_transfer_tag=r2t.ttt,
                                 statsn=self.statsn, expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn,
                                 r2tsn=task.r2tsn, buffer_offset=r2t.offset, desired_data_transfer_length=r2t.length))
            task.r2tsn += 1

    def _maybe_execute(self, task: Task) -> None:
        if task.state is TaskState.WAIT_DATA and task.received >= task.edtl:
            self._execute(task)

    def _execute(self, task: Task) -> None:
        """WAIT_DATA → EXECUTING: all of the task's Data-Out is here; hand it to the glue."""
        task.state = TaskState.EXECUTING
        cmd = task.cmd
        if not cmd.write:
            read_len = cmd.expected_data_transfer_length if cmd.read else 0
            data: Buffer = b""
        else:
            read_len = (cmd.bidi_read_edtl() or 0) if cmd.read else 0
            data = memoryview(task.buf) if task.buf is not None else b""
        self._events.append(Execute(task.itt, ScsiTask(
            self.nexus, task.lun, cmd.full_cdb() if cmd.ahs else cmd.cdb, _ATTRS[cmd.attr], data, read_len,
            task.itt, task.edtl)))

    # --- Data-Out ----------------------------------------------------------

    def _data_out(self, raw: RawPdu) -> None:
        pdu = DataOut.from_bhs(raw.bhs, raw.ahs, raw.data)
        task = self._tasks.get(pdu.initiator_task_tag)
        if task is None or task.state is not TaskState.WAIT_DATA:
            itt = pdu.initiator_task_tag
            if itt in self._finished_itts or itt in self._finished_itts_old:
                return  # data for a task already aborted or failed: discard quietly
            raise ProtocolError(f"Data-Out for unknown ITT 0x{pdu.initiator_task_tag:08x}", None)
        n = len(pdu.data)
        if n > self.params.max_recv_data_segment_length_target:
            self._reject(raw.bhs, RejectReason.PROTOCOL_ERROR)
            raise ProtocolError("Data-Out longer than MaxRecvDataSegmentLength", None)
        if not raw.data_digest_ok:
            # ERL 0 cannot ask for the data again: Reject, then end the task with
            # PROTOCOL SERVICE CRC ERROR (RFC 7143 §7.8.1).
            self._reject(raw.bhs, RejectReason.DATA_DIGEST_ERROR)
            self._fail_task(task, _CRC_ERROR_SENSE)
            return
        try:
            done_ttt = task.take_data_out(pdu)
        except DataOutError as exc:
            self._sequence_error(raw, str(exc))
            return
        if done_ttt is not None:
            self._ttt_to_itt.pop(done_ttt, None)
            self._issue_r2ts(task)
        self._maybe_execute(task)

    def _sequence_error(self, raw: RawPdu, why: str) -> None:
        # A DataSN/offset/TTT error cannot be recovered within the command at ErrorRecoveryLevel 0
        # (RFC 7143 §7.1.5).  Rather than end the whole session, Reject the PDU and end the command
        # with ABORTED COMMAND / DATA PHASE ERROR (4Bh/00h); later Data-Out for it is discarded.
        # One broken command never costs the initiator its other commands.
        self.log.warning("data_out_sequence_error", error=why)
        self._reject(raw.bhs, RejectReason.PROTOCOL_ERROR)
        task = self._tasks.get(int.from_bytes(raw.bhs[16:20], "big"))
        if task is not None:
            self._fail_task(task, _DATA_PHASE_ERROR_SENSE)

    def _fail_task(self, task: Task, sense: bytes) -> None:
        self._forget(task)
        self._out.append(ScsiResponse(status=ScsiStatus.CHECK_CONDITION, initiator_task_tag=task.itt,
                                      statsn=self._next_statsn(), expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn,
                                      expdatasn=task.r2tsn, data=len(sense).to_bytes(2, "big") + sense))

    def _forget(self, task: Task) -> None:
        if self._tasks.pop(task.itt, None) is not None:
            self.buffered -= task.edtl  # 0 unless a write
        if task.r2ts:
            for ttt in task.r2ts:
                self._ttt_to_itt.pop(ttt, None)
        self._finished(task.itt)

    def _finished(self, itt: int) -> None:
        finished = self._finished_itts
        finished.add(itt)
        if len(finished) > 4096:
            # A generation swap instead of evicting the oldest one by one: O(1) per task.
            self._finished_itts_old, self._finished_itts = finished, set()

    # --- completion ----------------------------------------------------------

    def complete(self, itt: int, result: ScsiResult) -> None:
        """The device server finished the command: send Data-In and/or the SCSI Response."""
        task = self._tasks.get(itt)
        if task is None or task.state is not TaskState.EXECUTING:
            return
        del self._tasks[itt]
        self.buffered -= task.edtl
        if task.r2ts:  # (the rest of _forget)
            for ttt in task.r2ts:
                self._ttt_to_itt.pop(ttt, None)
        finished = self._finished_itts
        finished.add(itt)
        if len(finished) > 4096:
            self._finished(itt)
        if not (task.aborted or self.closed):
            self._respond(task, result)
        if self._logout_pdu is not None:
            # A Logout waiting for this command is answered after its response (§11.14).
            self._maybe_logout()

    def _respond(self, task: Task, result: ScsiResult) -> None:
        """The answer to ``task``: its Data-In and status, taking one StatSN (transfer.answer)."""
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF  # _next_statsn, inline: once per command
        answer(task, result, self.params, statsn, self.expcmdsn, self.maxcmdsn, self._out)

    # --- task management -----------------------------------------------------

    def _tmf(self, pdu: TaskMgmtRequest, raw: RawPdu) -> None:
        fn = pdu.function
        itt = pdu.initiator_task_tag
        if self.discovery:
            raise ProtocolError("TMF in a discovery session", RejectReason.PROTOCOL_ERROR)
        try:
            lun = decode_lun(pdu.lun)
        except ValueError:
            lun = -1
        if fn == TmfFunction.ABORT_TASK:
            task = self._tasks.get(pdu.referenced_task_tag)
            if task is None or task.lun_field != pdu.lun:
                # Not here: if its CmdSN is in the window and not yet received, abort it on arrival.
                if sn_in_window(pdu.refcmdsn, self.expcmdsn, self.maxcmdsn) and \
                        pdu.refcmdsn not in self._pending:
                    self._aborted_cmdsns.add(pdu.refcmdsn)
                    self.tmf_done(itt, TmfResponse.FUNCTION_COMPLETE)
                else:
                    self.tmf_done(itt, TmfResponse.TASK_DOES_NOT_EXIST)
                return
            waiting = self.abort_tasks(lambda t_itt, _lun: t_itt == task.itt)
            self._events.append(TaskManagement(itt, TmfFunction.ABORT_TASK, lun, waiting))
            return
        if fn in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET, TmfFunction.LOGICAL_UNIT_RESET):
            if not self._lun_exists(lun):
                self.tmf_done(itt, TmfResponse.LUN_DOES_NOT_EXIST)
                return
            waiting = self.abort_tasks(lambda _itt, t_lun: t_lun == lun)
            self._events.append(TaskManagement(itt, TmfFunction(fn), lun, waiting))
            return
        if fn in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            waiting = self.abort_tasks(lambda _itt, _lun: True)
            self._events.append(TaskManagement(itt, TmfFunction(fn), lun, waiting))
            return
        if fn == TmfFunction.CLEAR_ACA:
            # No ACA is ever established (NACA=1 is refused), so there is nothing to clear (SAM-5 §7.3).
            self.tmf_done(itt, TmfResponse.FUNCTION_COMPLETE)
            return
        if fn == TmfFunction.TASK_REASSIGN:
            # ErrorRecoveryLevel 0: allegiance reassignment is not supported (§11.5.1).
            self.tmf_done(itt, TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED)
            return
        self.tmf_done(itt, TmfResponse.FUNCTION_REJECTED)

    def abort_tasks(self, match: Callable[[int, int], bool]) -> list[int]:
        """Abort this session's tasks that ``match(itt, lun)``; return the ITTs still executing (to
        await).  Commands that wait in the CmdSN window for a gap are aborted too: they will never
        execute, and their CmdSN still counts when the gap fills."""
        executing = []
        for task in list(self._tasks.values()):
            if not match(task.itt, task.lun):
                continue
            if task.state is TaskState.EXECUTING:
                task.aborted = True
                executing.append(task.itt)
            else:
                self._forget(task)
        for cmdsn, (req, _raw) in list(self._pending.items()):
            if isinstance(req, ScsiCommand) and match(req.initiator_task_tag, decode_lun(req.lun)):
                self._aborted_cmdsns.add(cmdsn)
        return executing

    def abort_lun_tasks(self, lun: int | None) -> list[int]:
        """For another session's LUN/target reset: abort this session's tasks on ``lun`` (None: all)."""
        return self.abort_tasks(lambda _itt, t_lun: lun is None or t_lun == lun)

    def tmf_done(self, itt: int, response: TmfResponse) -> None:
        """Send the TMF Response (after every task it aborted has ended)."""
        if self.closed:
            return
        self._out.append(TaskMgmtResponse(response=response, initiator_task_tag=itt, statsn=self._next_statsn(),
                                          expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn))
        self._maybe_logout()

    # --- Text ----------------------------------------------------------------

    def _text(self, pdu: TextRequest, raw: RawPdu) -> None:
        itt = pdu.initiator_task_tag
        if itt == RESERVED_TAG:
            raise ProtocolError("Text Request with the reserved ITT", RejectReason.INVALID_PDU_FIELD)
        if pdu.target_transfer_tag != RESERVED_TAG:
            # The initiator asks for the next part of a long response (§11.10.4).
            pending = self._text_pending.pop(itt, None)
            if pending is None or pending[1] != pdu.target_transfer_tag:
                raise ProtocolError("Text Request continues an unknown response", RejectReason.INVALID_PDU_FIELD)
            self._send_text(itt, pdu.lun, pending[0])
            return
        acc = self._text_in.setdefault(itt, bytearray())
        acc += pdu.data
        if len(acc) > 65536:
            self._text_in.pop(itt, None)
            raise ProtocolError("Text Request too long", RejectReason.PROTOCOL_ERROR)
        if pdu.cont:
            # More key text follows: answer with an empty response that asks for it (§11.10.2).
            ttt = self._alloc_ttt()
            self._out.append(TextResponse(final=False, lun=pdu.lun, initiator_task_tag=itt, target_transfer_tag=ttt,
                                          statsn=self._next_statsn(), expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn))
            return
        text = bytes(self._text_in.pop(itt))
        try:
            pairs = parse_text(text)
        except Exception as exc:  # noqa: BLE001 - LoginError from the key parser: malformed text
            raise ProtocolError(f"malformed text keys: {exc}", RejectReason.PROTOCOL_ERROR) from exc
        answer: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "SendTargets":
                if not self.discovery and value == "All":
                    answer.append(("SendTargets", "Reject"))
                else:
                    answer.extend(self._send_targets(value or ("All" if self.discovery else self.nexus.target_name)))
            elif key == "MaxRecvDataSegmentLength" and value.isdigit() and 512 <= int(value) <= 0xFFFFFF:
                # Declarative; may be redeclared in full-feature phase (§13.12).
                self.params.max_recv_data_segment_length_initiator = int(value)
            else:
                answer.append((key, "NotUnderstood" if key.startswith("X") else "Reject"))
        self._send_text(itt, pdu.lun, encode_text(answer))

    def _send_text(self, itt: int, lun: bytes, body: bytes) -> None:
        limit = self.params.max_recv_data_segment_length_initiator
        if len(body) <= limit:
            self._out.append(TextResponse(final=True, lun=lun, initiator_task_tag=itt, statsn=self._next_statsn(),
                                          expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn, data=body))
            return
        ttt = self._alloc_ttt()
        self._text_pending[itt] = (body[limit:], ttt)
        self._out.append(TextResponse(final=False, cont=True, lun=lun, initiator_task_tag=itt,
                                      target_transfer_tag=ttt, statsn=self._next_statsn(), expcmdsn=self.expcmdsn,
                                      maxcmdsn=self.maxcmdsn, data=body[:limit]))

    # --- Logout --------------------------------------------------------------

    def _logout(self, pdu: LogoutRequest, raw: RawPdu) -> None:
        if pdu.reason == LogoutReason.CLOSE_CONNECTION and pdu.cid != self.cid:
            self._logout_reply(pdu, LogoutResponseCode.CID_NOT_FOUND, close=False)
            return
        if pdu.reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            self._logout_reply(pdu, LogoutResponseCode.RECOVERY_NOT_SUPPORTED, close=False)
            return
        if pdu.reason not in (LogoutReason.CLOSE_SESSION, LogoutReason.CLOSE_CONNECTION):
            raise ProtocolError(f"logout reason {pdu.reason}", RejectReason.INVALID_PDU_FIELD)
        self._logout_itt = pdu.initiator_task_tag
        self._logout_pdu = pdu
        # Tasks still waiting for data will never get it: end them now (§11.14).
        for task in list(self._tasks.values()):
            if task.state is TaskState.WAIT_DATA:
                self._forget(task)
        self._maybe_logout()

    def _maybe_logout(self) -> None:
        pdu = self._logout_pdu
        if pdu is None or self.closed:
            return
        if any(t.state is TaskState.EXECUTING for t in self._tasks.values()):
            return  # answer once the executing commands have completed
        self._logout_pdu = None
        self._logout_reply(pdu, LogoutResponseCode.SUCCESS, close=True)

    def _logout_reply(self, pdu: LogoutRequest, code: LogoutResponseCode, close: bool) -> None:
        self._out.append(LogoutResponse(response=code, initiator_task_tag=pdu.initiator_task_tag,
                                        statsn=self._next_statsn(), expcmdsn=self.expcmdsn, maxcmdsn=self.maxcmdsn,
                                        time2wait=self.params.default_time2wait,
                                        time2retain=self.params.default_time2retain))
        if close:
            self._close("logout")

    def request_logout(self, within_seconds: int = 2) -> None:
        """Ask the initiator to log out (shutdown), Async Message event 1 (§11.9.1)."""
        if self.closed:
            return
        self._out.append(AsyncMessage(lun=bytes(8), statsn=self._next_statsn(), expcmdsn=self.expcmdsn,
                                      maxcmdsn=self.maxcmdsn, async_event=AsyncEvent.LOGOUT_REQUESTED,
                                      parameter3=within_seconds))

    @property
    def executing_itts(self) -> list[int]:
        """Tasks currently with the device server."""
        return [t.itt for t in self._tasks.values() if t.state is TaskState.EXECUTING]


_COMMAND_OPCODES = frozenset({Opcode.NOP_OUT, Opcode.SCSI_COMMAND, Opcode.TASK_MGMT_REQUEST, Opcode.TEXT_REQUEST,
                              Opcode.LOGOUT_REQUEST})

_HANDLERS: dict[type, Callable[[TargetConnection, object, RawPdu], None]] = {
    NopOut: TargetConnection._nop_out,  # type: ignore[dict-item]
    ScsiCommand: TargetConnection._scsi_command,  # type: ignore[dict-item]
    TaskMgmtRequest: TargetConnection._tmf,  # type: ignore[dict-item]
    TextRequest: TargetConnection._text,  # type: ignore[dict-item]
    LogoutRequest: TargetConnection._logout,  # type: ignore[dict-item]
}
"""PDU type → handler: the full-feature phase dispatch table (ARCHITECTURE.md convention 2)."""


"""One iSCSI connection, initiator role, sans-IO (RFC 7143 §3.2, §4.2, §11).

The mirror of :mod:`sanlab.target.connection`.  :class:`InitiatorConnection`
is fed the bytes the target sent (:meth:`~InitiatorConnection.receive_data`)
and the current time; the asyncio glue (:mod:`sanlab.target.initiator`) writes
what :meth:`~InitiatorConnection.take_output` gives and acts on what
:meth:`~InitiatorConnection.take_events` gives (the events:
:mod:`sanlab.target.initiator_events`).  Nothing here touches a socket
or a clock, and tags come from a counter, so every rule is testable with byte
fixtures (tests/target/test_initiator_connection.py).

What it does, in order of the RFC:

* the login phase, through :class:`~sanlab.target.initiator_login.InitiatorLogin`
  (event :class:`~sanlab.target.initiator_events.LoginComplete` with the negotiated parameters, or
  :class:`~sanlab.target.initiator_events.Closed` with the ``LoginFailed``);
* the command window (§4.2.2.1): a non-immediate request takes the next CmdSN
  only while CmdSN <= MaxCmdSN; later ones wait in order and go out as the
  target's ExpCmdSN/MaxCmdSN move the window;
* writes (§11.3-§11.8): immediate data up to FirstBurstLength and the
  target's MaxRecvDataSegmentLength when ImmediateData=Yes, unsolicited Data-Out
  up to FirstBurstLength when InitialR2T=No, and each R2T answered with its
  Data-Out sequence (DataSN from 0, BufferOffset, the TTT echoed, F on the last
  PDU, each PDU within the target's MaxRecvDataSegmentLength);
* reads: Data-In reassembled at its BufferOffset, in DataSN order, the status
  taken from the last Data-In (S bit, §11.7) or the SCSI Response, with the
  residual (§11.4.5); event :class:`~sanlab.target.initiator_events.CommandDone`;
* NOP-In: a target ping (TTT set) is answered by a NOP-Out echoing TTT and LUN
  (§11.18, §11.19); the answer to our own ping ends it; with ``nop_interval``
  :meth:`~InitiatorConnection.tick` pings an idle target and closes the
  connection when the ping is not answered in ``nop_timeout``;
* Task Management, Text (SendTargets, with continuation), Logout, Reject and
  Asynchronous Messages.

We run ErrorRecoveryLevel 0 with one connection: a PDU that breaks the RFC
(digest error, Data-In out of sequence or beyond the buffer, an R2T beyond the
command's data or MaxBurstLength) ends the connection
(:class:`~sanlab.target.initiator_events.Closed`, §7.1.5), and every outstanding
command's outcome is then unknown.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import structlog

from sanlab.scsi.lun import encode_lun
from sanlab.scsi.sense import Sense, parse_sense
from sanlab.scsi.task import ScsiStatus, TaskAttribute
from sanlab.target.errors import CommandRejected, ConnectionLost, IscsiError, LoginFailed, ProtocolError
from sanlab.target.initiator_events import (
    Closed, CommandDone, Event, LoginComplete, LogoutDone, LogoutRequested, PingDone, RequestFailed, TaskMgmtDone,
    TextDone,
)
from sanlab.target.initiator_login import InitiatorLogin
from sanlab.target.outcome import CommandResult
from sanlab.target.keys import SessionParams
from sanlab.target.capture import CapturePoint
from sanlab.target.pdu import (
    RESERVED_TAG, AhsType, AsyncEvent, AsyncMessage, Buffer, DataIn, DataOut, LoginResponse, LogoutReason,
    LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, PduFramer, R2T, Reject, ScsiCommand, ScsiResponse,
    TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction, decode, make_ahs,
)
from sanlab.target.seqnum import sn_add, sn_le, sn_lt

log = structlog.get_logger("sanlab.target.initiator")

LOGIN_MAX_SEGMENT = 1 << 20
"""Largest data segment taken during login, before MaxRecvDataSegmentLength is in force."""


@dataclass(slots=True, eq=False)
class _Command:
    """One SCSI command from submission to its status."""

    itt: int
    lun: bytes
    cdb: bytes
    data_out: memoryview
    read_length: int
    cmdsn: int | None = None
    """None while it waits for the window."""
    read_buf: bytearray | None = None
    read_got: int = 0
    datasn: int = 0
    """DataSN the next Data-In must carry (§11.7.5)."""
    whole: bytes | None = None
    """All the data, when one Data-In brought it (then no reassembly buffer is needed)."""


@dataclass(slots=True, eq=False)
class _Text:
    """A Text Request sequence: the body to send, then the continuation requests."""

    itt: int
    data: bytes
    """What the next Text Request carries (empty for a continuation)."""
    ttt: int = RESERVED_TAG
    cmdsn: int | None = None
    received: bytearray = field(default_factory=bytearray)


class InitiatorConnection:
    """One connection of an initiator session: login, then full-feature phase."""

    def __init__(self, login: InitiatorLogin, *, now: float = 0.0, nop_interval: float = 0.0,
                 nop_timeout: float = 10.0) -> None:
        """``nop_interval`` > 0: :meth:`tick` pings the target after that much silence."""
        self.login = login
        self.params = SessionParams()
        """Negotiated parameters (RFC defaults until the login completes)."""
        self.cmdsn = login.cmdsn
        """CmdSN of the next non-immediate request."""
        self.expcmdsn = login.cmdsn
        self.maxcmdsn = login.cmdsn
        self.expstatsn = login.expstatsn
        self.full_feature = False
        self.closed = False
        self.nop_interval = nop_interval
        self.nop_timeout = nop_timeout
        self._framer = PduFramer(max_data_segment=LOGIN_MAX_SEGMENT)
        self._itt = login.itt
        self._out: list[Pdu] = []
        self._events: list[Event] = []
        self._commands: dict[int, _Command] = {}
        self._texts: dict[int, _Text] = {}
        self._requests: set[int] = set()
        """ITTs of outstanding immediate requests (TMF, ping, logout)."""
        self._window: deque[_Command | _Text] = deque()
        """Non-immediate requests waiting for CmdSN <= MaxCmdSN, in submission order."""
        self._last_rx = now
        self.capture: CapturePoint | None = None
        """This connection for packet captures (target/capture.py): PDUs framed here are counted while one runs."""
        self._keepalive_itt: int | None = None
        self._keepalive_sent = 0.0

    # --- queues -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Queue the first Login Request."""
        self._out.append(self.login.first_request())

    def pending_rx(self) -> bytes:
        """Bytes received but not yet a whole PDU (where a capture starting now begins)."""
        return self._framer.pending()

    def take_output(self) -> list[Pdu]:
        """PDUs to send, in order."""
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        """What happened, in order."""
        ev, self._events = self._events, []
        return ev

    @property
    def header_digest(self) -> bool:
        """Whether PDUs we send carry a header digest (negotiated; never during login, §13.1)."""
        return self.full_feature and self.params.header_digest

    @property
    def data_digest(self) -> bool:
        """Whether PDUs we send carry a data digest."""
        return self.full_feature and self.params.data_digest

    @property
    def window_open(self) -> bool:
        """Whether a non-immediate request may take a CmdSN now (CmdSN <= MaxCmdSN, §4.2.2.1)."""
        return sn_le(self.cmdsn, self.maxcmdsn)

    @property
    def outstanding(self) -> int:
        """SCSI commands submitted and not yet ended (sent or waiting for the window)."""
        return len(self._commands)

    def _next_itt(self) -> int:
        self._itt = (self._itt + 1) & 0x7FFFFFFF or 1
        return self._itt

    def _close(self, error: IscsiError) -> None:
        if not self.closed:
            self.closed = True
            self._commands.clear()
            self._texts.clear()
            self._requests.clear()
            self._window.clear()
            self._events.append(Closed(error))

    # --- requests -----------------------------------------------------------------------------------

    def command(self, lun: int, cdb: bytes, data_out: Buffer = b"", read_length: int = 0) -> int:
        """Submit a SCSI command (SIMPLE); return its ITT.  It goes out now or when the window opens."""
        self._check_ready()
        itt = self._next_itt()
        # A bytearray is copied: the caller may reuse or resize it while R2Ts still ask for its data.
        out = memoryview(data_out if isinstance(data_out, (bytes, memoryview)) else bytes(data_out))
        cmd = _Command(itt, encode_lun(lun), bytes(cdb), out, read_length)
        self._commands[itt] = cmd
        self._window.append(cmd)
        self._pump()
        return itt

    def forget(self, itt: int) -> int | None:
        """Stop tracking a command (its caller gave up); later PDUs for it are ignored.

        Returns its CmdSN when it was sent (the target may be running it: abort it, RFC 7143
        §11.5.1), None when it never left (nothing to abort).
        """
        cmd = self._commands.pop(itt, None)
        if cmd is None:
            return None
        if cmd.cmdsn is None:
            self._window.remove(cmd)
        return cmd.cmdsn

    def task_management(self, function: TmfFunction, lun: int = 0, referenced_itt: int = RESERVED_TAG,
                        refcmdsn: int | None = None) -> int:
        """Send a Task Management request (immediate, §11.5); the answer is a :class:`TaskMgmtDone`.

        For ABORT TASK, RefCmdSN is the CmdSN of the task to abort (§11.5.4): the target uses it
        to recognise a task it has not received yet.
        """
        self._check_ready()
        itt = self._next_itt()
        self._requests.add(itt)
        self._out.append(TaskMgmtRequest(
            immediate=True, function=function, lun=encode_lun(lun), initiator_task_tag=itt,
            referenced_task_tag=referenced_itt, cmdsn=self.cmdsn, expstatsn=self.expstatsn,
            refcmdsn=self.cmdsn if refcmdsn is None else refcmdsn))
        return itt

    def ping(self, data: bytes = b"") -> int:
        """NOP-Out asking for a NOP-In (immediate, no new CmdSN, §11.18); answered by :class:`PingDone`."""
        self._check_ready()
        itt = self._next_itt()
        self._requests.add(itt)
        self._out.append(NopOut(immediate=True, initiator_task_tag=itt, cmdsn=self.cmdsn, expstatsn=self.expstatsn,
                                data=data))
        return itt

    def text(self, data: bytes) -> int:
        """Send a Text Request (e.g. ``SendTargets=All``); the whole answer is a :class:`TextDone`."""
        self._check_ready()
        itt = self._next_itt()
        req = _Text(itt, data)
        self._texts[itt] = req
        self._window.append(req)
        self._pump()
        return itt

    def logout(self, reason: LogoutReason = LogoutReason.CLOSE_SESSION) -> int:
        """Logout Request (immediate, §11.14); the answer is a :class:`LogoutDone`."""
        self._check_ready()
        itt = self._next_itt()
        self._requests.add(itt)
        self._out.append(LogoutRequest(immediate=True, reason=reason, initiator_task_tag=itt, cid=self.login.cid,
                                       cmdsn=self.cmdsn, expstatsn=self.expstatsn))
        return itt

    def _check_ready(self) -> None:
        if self.closed or not self.full_feature:
            raise ConnectionLost("not connected")

    def _pump(self) -> None:
        """Send the waiting non-immediate requests the window lets out, in order (§4.2.2.1)."""
        window = self._window
        while window and sn_le(self.cmdsn, self.maxcmdsn):
            req = window.popleft()
            req.cmdsn = self.cmdsn
            self.cmdsn = sn_add(self.cmdsn, 1)
            if isinstance(req, _Command):
                self._send_command(req)
            else:
                self._out.append(TextRequest(final=True, initiator_task_tag=req.itt, target_transfer_tag=req.ttt,
                                             cmdsn=req.cmdsn, expstatsn=self.expstatsn, data=req.data))

    def _send_command(self, cmd: _Command) -> None:
        p = self.params
        length = len(cmd.data_out)
        # Immediate data: at most FirstBurstLength and what the target takes in one PDU (§13.11, §13.14);
        # unsolicited data (InitialR2T=No, §13.10) continues in Data-Out PDUs up to FirstBurstLength.
        immediate = min(length, p.first_burst_length, p.max_recv_data_segment_length_target) \
            if p.immediate_data else 0
        unsolicited_end = immediate if p.initial_r2t else max(immediate, min(length, p.first_burst_length))
        cdb = cmd.cdb
        self._out.append(ScsiCommand(
            final=unsolicited_end == immediate, read=cmd.read_length > 0, write=length > 0,
            attr=TaskAttribute.SIMPLE, lun=cmd.lun, initiator_task_tag=cmd.itt,
            expected_data_transfer_length=length or cmd.read_length, cmdsn=cmd.cmdsn or 0,
            expstatsn=self.expstatsn, cdb=cdb[:16],
            ahs=make_ahs(AhsType.EXTENDED_CDB, cdb[16:]) if len(cdb) > 16 else b"",  # §11.3.5
            data=cmd.data_out[:immediate]))
        if unsolicited_end > immediate:
            self._data_out(cmd, RESERVED_TAG, immediate, unsolicited_end)

    def _data_out(self, cmd: _Command, ttt: int, start: int, end: int) -> None:
        """One Data-Out sequence: [start, end) in PDUs of the target's MaxRecvDataSegmentLength,
        DataSN from 0, F on the last (§11.7.1, §11.7.5)."""
        seg = self.params.max_recv_data_segment_length_target
        datasn = 0
        off = start
        while off < end:
            n = min(seg, end - off)
            self._out.append(DataOut(final=off + n >= end, lun=cmd.lun, initiator_task_tag=cmd.itt,
                                     target_transfer_tag=ttt, expstatsn=self.expstatsn, datasn=datasn,
                                     buffer_offset=off, data=cmd.data_out[off:off + n]))
            datasn += 1
            off += n

    # --- time ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Keepalive (§11.18): ping a target silent for ``nop_interval``; close when it does not answer."""
        if self.closed or not self.full_feature or self.nop_interval <= 0:
            return
        if self._keepalive_itt is not None:
            if now - self._keepalive_sent >= self.nop_timeout:
                self._close(ConnectionLost(f"target did not answer NOP-Out in {self.nop_timeout:g}s"))
        elif now - self._last_rx >= self.nop_interval:
            self._keepalive_itt = self.ping()
            self._keepalive_sent = now

    # --- input --------------------------------------------------------------------------------------

    def connection_lost(self, error: IscsiError) -> None:
        """The transport ended (EOF, reset, or the glue gave up on it): close with ``error``."""
        self._close(error)

    def receive_data(self, data: Buffer, now: float) -> None:
        """Take bytes from the target: frame them into PDUs and act on each."""
        if self.closed:
            return
        if data:
            self._last_rx = now
        point = self.capture
        tap = point.tap if point is not None else None
        try:
            self._framer.feed(data)
            for raw in self._framer:
                if tap is not None:
                    tap.count(raw.bhs)
                if not raw.data_digest_ok:
                    raise ProtocolError("data digest error from the target", None)
                pdu = decode(raw)
                if self.full_feature:
                    self._receive(pdu)
                else:
                    self._login_response(pdu)
                if self.closed:
                    return
        except ProtocolError as exc:
            # ErrorRecoveryLevel 0: no recovery within the connection (§7.1.5).
            self._close(ConnectionLost(f"protocol error: {exc}"))

    def _login_response(self, pdu: Pdu) -> None:
        if not isinstance(pdu, LoginResponse):
            self._close(LoginFailed(0x0200, f"{type(pdu).__name__} during login"))
            return
        try:
            nxt = self.login.receive(pdu)
        except LoginFailed as exc:
            self._close(exc)
            return
        self.expstatsn = self.login.expstatsn
        if nxt is not None:
            self._out.append(nxt)
            return
        outcome = self.login.outcome
        assert outcome is not None
        self.params = outcome.params
        self.expcmdsn, self.maxcmdsn = outcome.expcmdsn, outcome.maxcmdsn
        self.full_feature = True
        # Digests start with the first full-feature PDU; MaxRecvDataSegmentLength bounds what we take (§13.12).
        self._framer.header_digest = outcome.params.header_digest
        self._framer.data_digest = outcome.params.data_digest
        self._framer.max_data_segment = outcome.params.max_recv_data_segment_length_initiator
        self._events.append(LoginComplete(outcome.params, outcome.tsih))

    def _window_update(self, expcmdsn: int, maxcmdsn: int) -> None:
        # §4.2.2.1: ignore both when MaxCmdSN < ExpCmdSN - 1; otherwise each only moves forward.
        if sn_lt(maxcmdsn, sn_add(expcmdsn, 0xFFFFFFFF)):
            return
        if sn_lt(self.expcmdsn, expcmdsn):
            self.expcmdsn = expcmdsn
        if sn_lt(self.maxcmdsn, maxcmdsn):
            self.maxcmdsn = maxcmdsn
            if self._window:
                self._pump()

    def _status(self, statsn: int) -> None:
        """A PDU that carries status: ExpStatSN follows its StatSN (§4.2.2.2)."""
        nxt = sn_add(statsn, 1)
        if sn_lt(self.expstatsn, nxt):
            self.expstatsn = nxt

    def _receive(self, pdu: Pdu) -> None:
        if isinstance(pdu, DataIn):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._data_in(pdu)
        elif isinstance(pdu, ScsiResponse):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._status(pdu.statsn)
            self._scsi_response(pdu)
        elif isinstance(pdu, R2T):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._r2t(pdu)
        elif isinstance(pdu, NopIn):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._nop_in(pdu)
        elif isinstance(pdu, TaskMgmtResponse):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._status(pdu.statsn)
            if self._answered(pdu.initiator_task_tag):
                self._events.append(TaskMgmtDone(pdu.initiator_task_tag, pdu.response))
        elif isinstance(pdu, LogoutResponse):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._status(pdu.statsn)
            if self._answered(pdu.initiator_task_tag):
                self._events.append(LogoutDone(pdu.initiator_task_tag, pdu.response))
        elif isinstance(pdu, TextResponse):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._status(pdu.statsn)
            self._text_response(pdu)
        elif isinstance(pdu, Reject):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._status(pdu.statsn)
            self._reject(pdu)
        elif isinstance(pdu, AsyncMessage):
            self._window_update(pdu.expcmdsn, pdu.maxcmdsn)
            self._status(pdu.statsn)
            self._async_message(pdu)
        else:
            raise ProtocolError(f"{type(pdu).__name__} is not a target PDU of the full-feature phase", None)

    def _answered(self, itt: int) -> bool:
        """Whether ``itt`` was an outstanding immediate request (now answered)."""
        if itt in self._requests:
            self._requests.discard(itt)
            return True
        return False

    def _data_in(self, pdu: DataIn) -> None:
        cmd = self._commands.get(pdu.initiator_task_tag)
        if cmd is None:
            return  # a command we gave up on (aborted): its data goes nowhere
        data = pdu.data
        off = pdu.buffer_offset
        if pdu.datasn != cmd.datasn:
            raise ProtocolError(f"Data-In DataSN {pdu.datasn}, expected {cmd.datasn} (ITT {cmd.itt})", None)
        if off + len(data) > cmd.read_length:
            raise ProtocolError(f"Data-In [{off}, {off + len(data)}) beyond the {cmd.read_length} bytes asked", None)
        cmd.datasn += 1
        if data:
            if pdu.status_present and off == 0 and cmd.read_buf is None:
                cmd.whole = bytes(data)  # the whole read in one PDU: no reassembly copy
            else:
                if cmd.read_buf is None:
                    cmd.read_buf = bytearray(cmd.read_length)
                cmd.read_buf[off:off + len(data)] = data
            cmd.read_got = max(cmd.read_got, off + len(data))
        if pdu.status_present:
            # Phase collapse: the last Data-In carries the status (§11.7); never with sense.
            self._status(pdu.statsn)
            self._finish(cmd, pdu.status, None, _residual(pdu.underflow, pdu.overflow, pdu.residual_count))

    def _scsi_response(self, pdu: ScsiResponse) -> None:
        cmd = self._commands.get(pdu.initiator_task_tag)
        if cmd is None:
            return
        sense = None
        raw_sense = pdu.sense()
        if pdu.status == ScsiStatus.CHECK_CONDITION and raw_sense:
            try:
                sense = parse_sense(raw_sense)
            except ValueError:
                log.warning("unreadable_sense", itt=cmd.itt, sense=raw_sense.hex())
        self._finish(cmd, pdu.status, sense, _residual(pdu.underflow, pdu.overflow, pdu.residual_count))

    def _finish(self, cmd: _Command, status: int, sense: Sense | None, residual: int) -> None:
        del self._commands[cmd.itt]
        if cmd.whole is not None:
            data = cmd.whole
        elif cmd.read_buf is not None:
            data = bytes(memoryview(cmd.read_buf)[:cmd.read_got])
        else:
            data = b""
        self._events.append(CommandDone(cmd.itt, CommandResult(status, data, sense, residual)))

    def _r2t(self, pdu: R2T) -> None:
        cmd = self._commands.get(pdu.initiator_task_tag)
        if cmd is None:
            return
        start, length = pdu.buffer_offset, pdu.desired_data_transfer_length
        # §11.8.4: DesiredDataTransferLength is neither 0 nor above MaxBurstLength, and the target
        # asks only for data the command has.
        if not 0 < length <= self.params.max_burst_length or start + length > len(cmd.data_out):
            raise ProtocolError(f"R2T for [{start}, {start + length}) of a {len(cmd.data_out)}-byte write"
                                f" (MaxBurstLength {self.params.max_burst_length})", None)
        self._data_out(cmd, pdu.target_transfer_tag, start, start + length)

    def _nop_in(self, pdu: NopIn) -> None:
        if pdu.target_transfer_tag != RESERVED_TAG:
            # The target pings us: answer with its TTT and LUN, immediate, no new CmdSN (§11.18).
            self._out.append(NopOut(immediate=True, initiator_task_tag=RESERVED_TAG, lun=pdu.lun,
                                    target_transfer_tag=pdu.target_transfer_tag, cmdsn=self.cmdsn,
                                    expstatsn=self.expstatsn))
            return
        itt = pdu.initiator_task_tag
        if itt == RESERVED_TAG:
            return  # only a window update (its StatSN does not advance, §11.19)
        self._status(pdu.statsn)
        if itt == self._keepalive_itt:
            self._keepalive_itt = None
            self._requests.discard(itt)
        elif self._answered(itt):
            self._events.append(PingDone(itt, bytes(pdu.data)))

    def _text_response(self, pdu: TextResponse) -> None:
        req = self._texts.get(pdu.initiator_task_tag)
        if req is None:
            return
        req.received += pdu.data
        if pdu.final:
            del self._texts[req.itt]
            self._events.append(TextDone(req.itt, bytes(req.received)))
            return
        # More to come: ask for it with an empty Text Request echoing the TTT (§11.10, §11.11).
        req.ttt, req.data, req.cmdsn = pdu.target_transfer_tag, b"", None
        self._window.append(req)
        self._pump()

    def _reject(self, pdu: Reject) -> None:
        hdr = bytes(pdu.data)
        itt = int.from_bytes(hdr[16:20], "big") if len(hdr) >= 20 else RESERVED_TAG
        log.warning("target_reject", reason=pdu.reason, itt=itt)
        err = CommandRejected(pdu.reason)
        if self._commands.pop(itt, None) is not None or self._texts.pop(itt, None) is not None:
            self._events.append(RequestFailed(itt, err))
        elif self._answered(itt):
            if itt == self._keepalive_itt:
                self._keepalive_itt = None
            else:
                self._events.append(RequestFailed(itt, err))

    def _async_message(self, pdu: AsyncMessage) -> None:
        if pdu.async_event == AsyncEvent.LOGOUT_REQUESTED:
            self._events.append(LogoutRequested(pdu.parameter3))
        elif pdu.async_event in (AsyncEvent.CONNECTION_DROP, AsyncEvent.SESSION_DROP):
            self._close(ConnectionLost(f"target announced a drop (asynchronous event {pdu.async_event})"))
        else:
            log.info("target_async_event", event=pdu.async_event, vcode=pdu.async_vcode)


def _residual(underflow: bool, overflow: bool, count: int) -> int:
    """Residual Count as a signed number: positive for underflow, negative for overflow (§11.4.5)."""
    return count if underflow else -count if overflow else 0

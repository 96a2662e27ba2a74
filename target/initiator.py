"""The array's iSCSI initiator (RFC 7143, initiator role): the asyncio part.

It reaches peer arrays for external volumes, migration and replication.  The
protocol is the sans-IO core's (:mod:`sanlab.target.initiator_connection`, its
events in :mod:`sanlab.target.initiator_events`, and
:mod:`sanlab.target.initiator_login`), which shares the target's codec, key
negotiation and CHAP; this module owns what needs the event loop: the socket,
timers and the reconnect.

One :class:`IscsiSession` is one session with one connection
(ErrorRecoveryLevel 0).  Many commands run at once, up to the target's
MaxCmdSN window.  Every command has a timeout, after which it is aborted with
ABORT TASK; a target that answers neither the command nor the abort within
``abort_timeout`` is taken for gone and the connection is dropped.  A lost
connection fails the requests in flight and, when ``reconnect`` is set, logs in
again with backoff (session reinstatement: same ISID, TSIH 0, RFC 7143 §6.3.5),
which also ends whatever the old session left running on the target.

Failures are typed (:mod:`sanlab.storage.peer`): the target's answers
(``ScsiCommandError``, ``CommandRejected``, ``LoginFailed``) are PeerRefused;
no answer (``CommandTimeout``, ``ConnectionLost``) is PeerUnreachable.
:meth:`IscsiSession.execute` returns whatever status the target gave;
:meth:`IscsiSession.run` and the SCSI helpers retry what SAM-5 says may be
retried (:class:`RetryPolicy`) and raise the rest.  The SCSI helpers (``read16``,
``write16``, ``inquiry``...) are :mod:`sanlab.target.initiator_commands`' mixin, which
:class:`IscsiSession` inherits.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine

import structlog

from sanlab.scsi.task import ScsiStatus
from sanlab.target.capture import HUB, CapturePoint, Tap, socket_address
from sanlab.target.chap import ChapCredentials
from sanlab.target.errors import (
    CommandRejected, CommandTimeout, ConnectionLost, IscsiError, LoginFailed, ScsiCommandError,
)
from sanlab.target.initiator_connection import InitiatorConnection
from sanlab.target.initiator_commands import ScsiCommands
from sanlab.target.initiator_events import (
    Answer, Closed, CommandDone, Event, LogoutDone, LogoutRequested, PingDone, RequestFailed, TaskMgmtDone, TextDone,
)
from sanlab.target.initiator_login import InitiatorLogin
from sanlab.target.keys import INITIATOR_DEFAULTS, SessionParams, parse_text
from sanlab.target.outcome import CommandResult, RetryPolicy
from sanlab.target.pdu import RESERVED_TAG, Pdu, TmfFunction, encode

__all__ = [
    "CommandRejected", "CommandResult", "CommandTimeout", "ConnectionLost", "InitiatorConfig", "IscsiError",
    "IscsiSession", "LoginFailed", "RetryPolicy", "ScsiCommandError", "discover",
]

log = structlog.get_logger("sanlab.target.initiator")

DEFAULT_INITIATOR_NAME = "iqn.2026-11.org.sanlab:initiator"


@dataclass(slots=True)
class InitiatorConfig:
    """Who we are, how we log in, and how long we wait."""

    initiator_name: str = DEFAULT_INITIATOR_NAME
    isid: int = field(default_factory=lambda: (0x80 << 40) | int.from_bytes(os.urandom(3), "big") << 16)
    """48-bit ISID; type 10b (random, RFC 7143 §11.12.5) by default."""
    chap: ChapCredentials | None = None
    target_chap: ChapCredentials | None = None
    """Credentials the target must prove (mutual CHAP)."""
    keys: dict[str, str] = field(default_factory=lambda: dict(INITIATOR_DEFAULTS))
    login_timeout: float = 15.0
    command_timeout: float = 30.0
    abort_timeout: float = 5.0
    """How long the ABORT TASK of a timed-out command may take before the connection is dropped."""
    nop_interval: float = 10.0
    """Ping the target after this much silence (0: never)."""
    nop_timeout: float = 10.0
    reconnect: bool = True
    reconnect_backoff: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
    fail_when_refused: bool = False
    """While reconnecting, a command does not wait out its timeout for the session: it has a reconnect
    attempted at once, and fails as soon as an attempt made after it arrived was refused (nothing
    listens at the portal: the peer host is up, its array process is not).  A sync pair's mirror
    session: its fence level decides at once instead of holding the host write for the whole window
    (README, fence levels), and a peer back already is logged in to without the backoff's wait."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def _settle(dst: asyncio.Future[Any], src: asyncio.Future[Any]) -> None:
    """Give ``dst`` the outcome of ``src`` (unless the one waiting on ``dst`` gave up)."""
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
    elif (exc := src.exception()) is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


def _expire(fut: asyncio.Future[Any]) -> None:
    """Fail a request's future that was not answered in time."""
    if not fut.done():
        fut.set_exception(TimeoutError())


class IscsiSession(ScsiCommands):
    """One session to one target (or a discovery session); the typed SCSI commands (``read16``,
    ``write16``, ``inquiry``...) come from :class:`~sanlab.target.initiator_commands.ScsiCommands`."""

    def __init__(self, host: str, port: int, target_name: str | None, config: InitiatorConfig | None = None) -> None:
        self.host, self.port = host, port
        self.target_name = target_name
        self.config = config or InitiatorConfig()
        self.params = SessionParams()
        """The parameters negotiated at the last login."""
        self.tsih = 0
        self.log = log.bind(target=target_name or "discovery", portal=f"{host}:{port}")
        self._conn: InitiatorConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._point: CapturePoint | None = None
        """The connection's packet-capture point (target/capture.py)."""
        self._waiting: dict[int, tuple[asyncio.Future[Any], asyncio.TimerHandle]] = {}
        """ITT → the future of whoever waits for that request's answer, and its timeout."""
        self._rx_task: asyncio.Task[None] | None = None
        self._nop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._flush_soon: InitiatorConnection | None = None
        """A connection whose queued requests go out at the end of this loop turn (one send for all)."""
        self._connected = asyncio.Event()
        self._reconnect_error: BaseException | None = None
        self._reconnecting = False
        self._attempt_now = asyncio.Event()
        """Set by a command waiting for the session: the reconnect loop skips the rest of its backoff."""
        self._attempt_ended = asyncio.Event()
        """Set (and replaced) each time a reconnect attempt ends, and when the loop stops: what such a
        command waits on."""
        self.last_error: IscsiError | None = None
        """Why the connection was last lost (None if it never was): what a link monitor reports,
        since a request made after the loss only learns "not connected"."""

    # --- connection and login --------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and log in (raises :class:`LoginFailed`, ConnectionLost or OSError)."""
        self._closing = False
        try:
            await asyncio.wait_for(self._connect_once(), self.config.login_timeout)
        except TimeoutError:
            raise ConnectionLost(f"no login within {self.config.login_timeout:g}s") from None

    async def _connect_once(self) -> None:
        cfg = self.config
        reader, writer = await asyncio.open_connection(self.host, self.port)
        cmdsn = self._conn.cmdsn if self._conn is not None else 1
        login = InitiatorLogin(cfg.initiator_name, self.target_name, isid=cfg.isid, tsih=self.tsih, cmdsn=cmdsn,
                               keys=cfg.keys, chap=cfg.chap, target_chap=cfg.target_chap)
        keepalive = cfg.nop_interval if self.target_name is not None else 0.0
        conn = InitiatorConnection(login, now=time.monotonic(), nop_interval=keepalive, nop_timeout=cfg.nop_timeout)
        point = conn.capture = HUB.open(socket_address(writer.get_extra_info("sockname")),
                                        socket_address(writer.get_extra_info("peername")), local_is_client=True,
                                        pending_rx=conn.pending_rx)
        conn.start()
        try:
            self._flush(conn, writer)
            while not conn.full_feature:
                chunk = await reader.read(65536)
                if not chunk:
                    point.peer_closed = True
                    raise ConnectionLost("connection closed during login")
                if (tap := point.tap) is not None:
                    tap.received(chunk)
                conn.receive_data(chunk, time.monotonic())
                for ev in conn.take_events():
                    if isinstance(ev, Closed):
                        raise ev.error
                self._flush(conn, writer)
        except BaseException:
            writer.close()
            HUB.close(point)
            raise
        self._close_point()  # the previous connection's, if a reconnect raced its loss
        self._conn, self._writer, self._point = conn, writer, point
        self.params = conn.params
        self.tsih = conn.login.tsih
        self._rx_task = asyncio.create_task(self._receive_loop(conn, reader, writer))
        if keepalive > 0:
            self._nop_task = asyncio.create_task(self._keepalive(conn, writer))
        self._connected.set()
        self.log.info("initiator_logged_in", tsih=self.tsih, header_digest=conn.header_digest,
                      data_digest=conn.data_digest)

    async def discover(self) -> list[tuple[str, list[str]]]:
        """SendTargets=All on a discovery session: [(target name, [addresses])]."""
        conn = self._ready()
        text = await self._answer(conn, conn.text(b"SendTargets=All\0"), self.config.command_timeout)
        out: list[tuple[str, list[str]]] = []
        for k, v in parse_text(text):
            if k == "TargetName":
                out.append((v, []))
            elif k == "TargetAddress" and out:
                out[-1][1].append(v)
        return out

    # --- driving the core -------------------------------------------------------------------------

    def _ready(self) -> InitiatorConnection:
        """The connection in full-feature phase, or ConnectionLost."""
        conn = self._conn
        if conn is None or conn.closed or not self._connected.is_set():
            raise ConnectionLost("not connected")
        return conn

    def _flush(self, conn: InitiatorConnection, writer: asyncio.StreamWriter | None = None) -> None:
        """Write what the core has to send."""
        out = conn.take_output()
        if not out:
            return
        writer = writer or self._writer
        if writer is None or writer.is_closing():
            return  # the receive loop reports the loss
        hd, dd = conn.header_digest, conn.data_digest
        point = conn.capture
        if point is not None and point.tap is not None:
            self._flush_captured(point.tap, out, writer, hd, dd)
            return
        if len(out) == 1:
            writer.writelines(encode(out[0], hd, dd))
            return
        bufs: list[Any] = []
        for pdu in out:
            bufs.extend(encode(pdu, hd, dd))
        writer.writelines(bufs)

    @staticmethod
    def _flush_captured(tap: Tap, out: list[Pdu], writer: asyncio.StreamWriter, hd: bool, dd: bool) -> None:
        """:meth:`_flush` while a packet capture runs: the PDUs are also counted and recorded."""
        bufs: list[Any] = []
        for pdu in out:
            pdu_bufs = encode(pdu, hd, dd)
            tap.count(pdu_bufs[0])
            bufs.extend(pdu_bufs)
        writer.writelines(bufs)
        tap.sent(bufs)

    def _close_point(self) -> None:
        """The capture of the current connection ends with its FINs (target/capture.py)."""
        if self._point is not None:
            HUB.close(self._point)
            self._point = None

    def _flush_queued(self) -> None:
        conn, self._flush_soon = self._flush_soon, None
        if conn is not None and not conn.closed:
            self._flush(conn)

    def _dispatch(self, events: list[Event]) -> None:
        """Hand each event to whoever waits for it."""
        for ev in events:
            if isinstance(ev, Answer):
                entry = self._waiting.pop(ev.itt, None)
                if entry is None:
                    continue  # nobody waits any more (timed out, or our own keepalive)
                fut, timer = entry
                timer.cancel()
                if fut.done():
                    continue
                if isinstance(ev, RequestFailed):
                    fut.set_exception(ev.error)
                elif isinstance(ev, CommandDone):
                    fut.set_result(ev.result)
                elif isinstance(ev, TaskMgmtDone | LogoutDone):
                    fut.set_result(ev.response)
                elif isinstance(ev, TextDone | PingDone):
                    fut.set_result(ev.data)
            elif isinstance(ev, Closed):
                self._lost(ev.error)
            elif isinstance(ev, LogoutRequested):
                self.log.info("target_requests_logout", within=ev.within)
                self._spawn(self._logout_for_target())

    def _expect(self, conn: InitiatorConnection, itt: int, timeout: float,
                on_timeout: Callable[[asyncio.Future[Any]], None]) -> asyncio.Future[Any]:
        """The future of request ``itt``'s answer; what the core queued for it goes out at the end
        of this loop turn, and ``on_timeout`` runs if no answer came within ``timeout``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        # A timer on the future rather than asyncio.timeout(): no task is needed to wait (the
        # device server's fast path and a pair's mirrored write wait with callbacks only).
        self._waiting[itt] = (fut, loop.call_later(timeout, on_timeout, fut))
        # The first request of a loop turn goes out at once (a lone request, as at queue depth 1,
        # waits for nothing); the others queued in the same turn go out together at its end (at
        # depth, one writelines per command cost ~13 µs of syscall each; bench/README.md, sync pairs).
        if self._flush_soon is None:
            self._flush(conn)
            self._flush_soon = conn
            loop.call_soon(self._flush_queued)
        return fut

    async def _answer(self, conn: InitiatorConnection, itt: int, timeout: float) -> Any:
        """Send what the core queued for request ``itt`` and wait for its answer (CommandTimeout after ``timeout``)."""
        fut = self._expect(conn, itt, timeout, _expire)
        try:
            return await fut
        except TimeoutError:
            raise CommandTimeout(f"no answer to ITT {itt} in {timeout:g}s") from None
        finally:
            entry = self._waiting.pop(itt, None)
            if entry is not None:
                entry[1].cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background job of this session, reaped, its failure logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def reap(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("initiator_task_failed", error=repr(t.exception()))

        task.add_done_callback(reap)

    # --- SCSI ----------------------------------------------------------------------------------

    def submit(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
               read_length: int = 0, timeout: float | None = None) -> asyncio.Future[CommandResult]:
        """Send one SCSI command in this loop turn; the future of its result whatever its status.

        Raises :class:`ConnectionLost` at once when not connected (:meth:`execute` waits for a
        reconnecting session first).  The future fails with :class:`ConnectionLost` when the
        connection ends while the command is out, :class:`CommandRejected` when the target rejects
        it, and :class:`CommandTimeout` after ``timeout`` — only once the task was aborted at the
        target (RFC 7143 §11.5.1), so that a retry cannot be overtaken by the command it replaces.
        """
        timeout = timeout or self.config.command_timeout
        conn = self._ready()
        itt = conn.command(lun, cdb, data_out, read_length)
        fut: asyncio.Future[CommandResult] = self._expect(
            conn, itt, timeout, lambda f: self._command_timed_out(f, conn, itt, lun, cdb[0], timeout))
        return fut

    def _command_timed_out(self, fut: asyncio.Future[CommandResult], conn: InitiatorConnection, itt: int,
                           lun: int, opcode: int, timeout: float) -> None:
        self._waiting.pop(itt, None)
        if fut.done():
            return

        async def abort_then_fail() -> None:
            try:
                await self._abort(conn, itt, lun)
            finally:
                if not fut.done():
                    fut.set_exception(CommandTimeout(f"command 0x{opcode:02x} (ITT {itt}) timed out after {timeout:g}s"))

        self._spawn(abort_then_fail())

    async def execute(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
                      read_length: int = 0, timeout: float | None = None) -> CommandResult:
        """Run one SCSI command; the result is returned whatever its status (see :meth:`run`).

        Raises PeerUnreachable subclasses only: :class:`ConnectionLost` (not connected, or the
        connection ended while the command was out) or :class:`CommandTimeout`; and
        :class:`CommandRejected` (a PeerRefused) when the target rejects the PDU.
        """
        timeout = timeout or self.config.command_timeout
        if not self._connected.is_set():
            await self._wait_connected(timeout)
        return await self.submit(lun, cdb, data_out, read_length, timeout)

    async def run(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
                  read_length: int = 0, timeout: float | None = None, *,
                  first: CommandResult | None = None) -> CommandResult:
        """:meth:`execute`, retried as :class:`RetryPolicy` says; GOOD or a typed failure.  With
        ``first``, the command's first answer is already in (:meth:`start`): judged, not sent again."""
        attempt = 0
        result = first if first is not None else await self.execute(lun, cdb, data_out, read_length, timeout)
        while True:
            if result.status == ScsiStatus.GOOD:
                return result
            delay = self.config.retry.delay(result, attempt)
            if delay is None:
                return result.check()
            sense = result.sense
            self.log.info("peer_command_retried", lun=lun, opcode=f"{cdb[0]:02x}", status=f"{result.status:02x}",
                          sense=f"{sense.key:x}/{sense.asc:02x}/{sense.ascq:02x}" if sense else None,
                          attempt=attempt + 1)
            attempt += 1
            if delay:
                await asyncio.sleep(delay)
            result = await self.execute(lun, cdb, data_out, read_length, timeout)

    def start(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
              read_length: int = 0) -> asyncio.Future[CommandResult] | None:
        """:meth:`run` begun without a coroutine: the command goes out in this loop turn, and the
        future holds its GOOD result or what :meth:`run` would raise.  Only an answer other than
        GOOD (or a failure) costs a task, which :meth:`run` finishes.  None when the session is
        not connected now (then :meth:`run` waits for it)."""
        if not self._connected.is_set():
            return None
        try:
            first = self.submit(lun, cdb, data_out, read_length)
        except ConnectionLost:
            return None
        loop = first.get_loop()
        answer: asyncio.Future[CommandResult] = loop.create_future()

        def judged(f: asyncio.Future[CommandResult]) -> None:
            if answer.done():
                return  # the caller gave up (its command was aborted)
            if f.cancelled():
                answer.cancel()
                return
            exc = f.exception()
            if exc is not None:
                answer.set_exception(exc)
                return
            result = f.result()
            if result.status == ScsiStatus.GOOD:
                answer.set_result(result)
                return
            rest = loop.create_task(self.run(lun, cdb, data_out, read_length, first=result))
            rest.add_done_callback(lambda t: _settle(answer, t))

        first.add_done_callback(judged)
        return answer

    async def _wait_connected(self, timeout: float) -> None:
        """Down: fail at once without reconnect; with it, wait for the session to come back for at
        most the command's own timeout (a bounded failure, never a hang); with
        :attr:`InitiatorConfig.fail_when_refused`, only until an attempt made meanwhile is refused."""
        if not self.config.reconnect or self._closing or self.target_name is None:
            raise ConnectionLost("not connected")
        try:
            if self.config.fail_when_refused and self._reconnecting:
                await asyncio.wait_for(self._connected_or_refused(), timeout)
            else:
                await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            why = f": {self._reconnect_error}" if self._reconnect_error is not None else ""
            raise ConnectionLost(f"not connected (reconnecting{why})") from None

    async def _connected_or_refused(self) -> None:
        """Until the session is back; ConnectionLost once a reconnect attempt that ended after this
        call began was refused.  Other failures (a time-out, a login refused) wait for the next one."""
        self._attempt_now.set()  # once per command: a login the peer fails quickly waits for the backoff
        while not self._connected.is_set():
            await self._attempt_ended.wait()
            if self._connected.is_set():
                return
            if isinstance(self._reconnect_error, ConnectionRefusedError):
                raise ConnectionLost(f"not connected (reconnect refused: {self._reconnect_error})")
            if not self._reconnecting:
                raise ConnectionLost("not connected")

    async def _abort(self, conn: InitiatorConnection, itt: int, lun: int) -> None:
        """ABORT TASK for a timed-out command the target may be running (RFC 7143 §11.5.1)."""
        cmdsn = conn.forget(itt)
        if cmdsn is None or conn.closed:
            return  # it never left, or the connection is gone (and its tasks with it)
        try:
            await self.task_management(TmfFunction.ABORT_TASK, lun, itt, cmdsn, timeout=self.config.abort_timeout)
        except CommandTimeout:
            # Neither the command nor its abort answered: only a new session (reinstatement,
            # §6.3.5) makes sure the task is gone, so this connection is given up.
            conn.connection_lost(ConnectionLost(f"target answered neither ITT {itt} nor its ABORT TASK"))
            self._dispatch(conn.take_events())
        except IscsiError as exc:
            self.log.warning("abort_failed", itt=itt, error=str(exc))

    async def task_management(self, function: TmfFunction, lun: int = 0, referenced_itt: int = RESERVED_TAG,
                              refcmdsn: int | None = None, timeout: float | None = None) -> int:
        """Send a TMF; return its response code (RFC 7143 §11.6.1)."""
        conn = self._ready()
        itt = conn.task_management(function, lun, referenced_itt, refcmdsn)
        response: int = await self._answer(conn, itt, timeout or self.config.command_timeout)
        return response

    async def ping(self, data: bytes = b"") -> float:
        """NOP-Out ping; returns the round-trip time in seconds."""
        conn = self._ready()
        t0 = time.monotonic()
        await self._answer(conn, conn.ping(data), self.config.nop_timeout)
        return time.monotonic() - t0

    async def logout(self) -> None:
        """Close the session cleanly (Logout, reason close session)."""
        self._closing = True
        if self._connected.is_set():
            await self._send_logout()
        await self.close()

    async def _send_logout(self) -> None:
        """Logout (close session) and wait up to 5 s for the answer; failures only end it sooner."""
        try:
            conn = self._ready()
            await self._answer(conn, conn.logout(), 5.0)
        except IscsiError:
            pass

    async def close(self) -> None:
        """Drop the connection without a logout."""
        self._closing = True
        for t in (self._nop_task, *self._tasks):
            if t is not None and t is not asyncio.current_task():
                t.cancel()
        if self._writer is not None:
            self._writer.close()
            self._close_point()
        if self._rx_task is not None:
            # close() waits to flush what is buffered: a peer that stopped reading would hold us
            # forever, so after a bound the transport is aborted (its buffer dropped) instead.
            done, _ = await asyncio.wait((self._rx_task,), timeout=5.0)
            if not done:
                if self._writer is not None:
                    self._writer.transport.abort()
                self._rx_task.cancel()
            try:
                await self._rx_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - already logged
                pass
        self._fail_all(ConnectionLost("session closed"))

    async def __aenter__(self) -> "IscsiSession":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.logout()

    # --- receiving, keepalive, loss -----------------------------------------------------------

    async def _receive_loop(self, conn: InitiatorConnection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            while not conn.closed:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    if conn.capture is not None:
                        conn.capture.peer_closed = True
                    conn.connection_lost(ConnectionLost("target closed the connection"))
                else:
                    if conn.capture is not None and (tap := conn.capture.tap) is not None:
                        tap.received(chunk)
                    conn.receive_data(chunk, time.monotonic())
                    self._flush(conn, writer)
                self._dispatch(conn.take_events())
                if not conn.closed:
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            conn.connection_lost(ConnectionLost(str(exc) or type(exc).__name__))
            self._dispatch(conn.take_events())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must fail the commands, not hang them
            self.log.exception("initiator_receive_crashed")
            conn.connection_lost(ConnectionLost(f"initiator crashed: {exc!r}"))
            self._dispatch(conn.take_events())

    async def _keepalive(self, conn: InitiatorConnection, writer: asyncio.StreamWriter) -> None:
        period = max(min(conn.nop_interval, conn.nop_timeout) / 2, 0.05)
        while not conn.closed:
            await asyncio.sleep(period)
            conn.tick(time.monotonic())
            self._flush(conn, writer)
            self._dispatch(conn.take_events())

    def _fail_all(self, exc: IscsiError) -> None:
        waiting, self._waiting = self._waiting, {}
        for fut, timer in waiting.values():
            timer.cancel()
            if not fut.done():
                fut.set_exception(exc)

    def _lost(self, error: IscsiError) -> None:
        """The core closed the connection: fail what waits, and reconnect when configured."""
        self._connected.clear()
        self.last_error = error
        if self._writer is not None:
            self._writer.close()
            self._close_point()
        self._fail_all(error)
        if self._nop_task is not None and self._nop_task is not asyncio.current_task():
            self._nop_task.cancel()
        if not self._closing:
            self.log.warning("initiator_connection_lost", error=str(error))
            if self.config.reconnect and self.target_name is not None:
                self._reconnecting = True  # before the task runs: a command may wait on it already
                self._spawn(self._reconnect())

    async def _logout_for_target(self) -> None:
        # Let commands in flight finish, then log out; reconnect later if configured.
        while self._conn is not None and self._conn.outstanding:
            await asyncio.sleep(0.01)
        keep = self.config.reconnect
        await self._send_logout()
        if not keep:
            self._closing = True

    async def _reconnect(self) -> None:
        delays = self.config.reconnect_backoff
        attempt = 0
        try:
            while not self._closing:
                try:
                    # The backoff, cut short by a command that waits for the session (fail_when_refused).
                    await asyncio.wait_for(self._attempt_now.wait(), delays[min(attempt, len(delays) - 1)])
                except TimeoutError:
                    pass
                self._attempt_now.clear()
                attempt += 1
                self.tsih = 0  # session reinstatement: same ISID, new session (RFC 7143 §6.3.5)
                try:
                    await asyncio.wait_for(self._connect_once(), self.config.login_timeout)
                    self._reconnect_error = None
                    self.log.info("initiator_reconnected", attempts=attempt)
                    return
                except (OSError, IscsiError, TimeoutError) as exc:
                    self._reconnect_error = exc
                    self.log.info("initiator_reconnect_failed", attempt=attempt,
                                  error=str(exc) or type(exc).__name__)
                finally:
                    self._signal_attempt_ended()
        finally:
            self._reconnecting = False
            self._signal_attempt_ended()

    def _signal_attempt_ended(self) -> None:
        """Wake the commands waiting in :meth:`_connected_or_refused` (each takes the next event)."""
        ended, self._attempt_ended = self._attempt_ended, asyncio.Event()
        ended.set()


async def discover(host: str, port: int, config: InitiatorConfig | None = None) -> list[tuple[str, list[str]]]:
    """Log in to a discovery session, SendTargets=All, log out."""
    s = IscsiSession(host, port, None, config)
    await s.connect()
    try:
        return await s.discover()
    finally:
        await s.logout()

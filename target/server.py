"""asyncio glue of the iSCSI target: sockets, timers, tasks (ARCHITECTURE.md: asyncio lives here).

Why one module of ~620 lines: it is one class, :class:`IscsiServer`, whose parts (accept and login,
the full-feature loop, command tasks, task management, session admission) all read and move one
table of live connections and sessions; what stands apart already lives beside it (below).

Each accepted connection runs :func:`IscsiServer._serve_connection`: the
login phase through :class:`~sanlab.target.login.TargetLogin`, then the
full-feature phase through :class:`~sanlab.target.connection.TargetConnection`,
feeding bytes from the socket and writing back the PDUs those state machines
produce.  SCSI commands run as supervised asyncio tasks against the target's
:class:`~sanlab.scsi.device_server.DeviceServer`; a failure in one connection
is logged and closes that connection only.

Beside it: ``live_connection.py`` (a connection's socket-side state and its asyncio protocol),
``eager.py`` (a command stepped by hand until it really waits), ``discovery.py`` (SendTargets).
"""
from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Iterable

import structlog

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.outcome import Pending
from sanlab.scsi.sense import SenseKey, build_sense
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus
from sanlab.target.capture import HUB, CapturePoint, socket_address
from sanlab.target.connection import Close, Execute, TargetConnection, TaskManagement
from sanlab.target.discovery import send_targets
from sanlab.target.eager import EagerCoroutine
from sanlab.target.errors import LoginError, LoginStatus, ProtocolError
from sanlab.target.keys import TARGET_DEFAULTS
from sanlab.target.live_connection import FullFeatureProtocol, LiveConnection
from sanlab.target.login import LoginResult, TargetAuth, TargetLogin
from sanlab.target.pdu import (
    LoginRequest, LoginResponse, Opcode, Pdu, PduFramer, TmfFunction, TmfResponse, decode, encode,
)

log = structlog.get_logger("sanlab.target.server")

LOGIN_MAX_SEGMENT = 65536
"""Longest Login Request data segment accepted before MaxRecvDataSegmentLength is known."""
LOGIN_TIMEOUT = 15.0
"""Seconds a connection may spend in the login phase."""
CLOSE_FLUSH_SECONDS = 10.0
"""How long a closing connection may take to send what it still has buffered before it is aborted."""


def _abort_unflushed(transport: asyncio.WriteTransport) -> None:
    """Abort a closing transport that still had not flushed (a no-op once it has closed).
    (uvloop's transports do not derive from asyncio's classes: called by duck typing.)"""
    try:
        if transport.get_write_buffer_size():
            transport.abort()
    except RuntimeError:  # uvloop: the handle is gone, the transport closed meanwhile
        pass


@dataclass(slots=True)
class Target:
    """One iSCSI target: its name, login policy and device server."""

    auth: TargetAuth
    device_server: DeviceServer

    @property
    def name(self) -> str:
        """The target's iSCSI name."""
        return self.auth.name


@dataclass(slots=True)
class ServerSettings:
    """Tunables of the front end."""

    cmd_window: int = 128
    nop_interval: float = 30.0
    # A minute: single-threaded initiators (libiscsi's sync API, its conformance suite's sleep(60)
    # waits) read the socket only when they send; dropping them would cost a UA and any SPC-2
    # reservation they hold, while a really dead host is still found within 90 s.
    nop_timeout: float = 60.0
    tpgt: int = 1
    # Session limits (issue 19): a host that logs in again and again (a loop, a bad multipath
    # setup) gets OUT OF RESOURCES (RFC 7143 §11.13.5, 0302h) instead of the array's memory and
    # file descriptors; the sessions already in are untouched.
    max_sessions_per_target: int = 256
    max_sessions_per_initiator: int = 64
    local_keys: dict[str, str] = field(default_factory=lambda: dict(TARGET_DEFAULTS))
    discovery_auth: TargetAuth = field(default_factory=lambda: TargetAuth(name=""))


_SESSION_WIDE = ("initial_r2t", "immediate_data", "max_burst_length", "first_burst_length",
                 "max_outstanding_r2t", "default_time2wait", "default_time2retain", "data_pdu_in_order",
                 "data_sequence_in_order", "error_recovery_level", "max_connections")
"""SessionParams fields negotiated once per session (leading-only keys)."""


def _internal_failure() -> ScsiResult:
    """What a command gets when the device server itself failed: HARDWARE ERROR, INTERNAL TARGET
    FAILURE (44h/00h, SPC-4 annex D)."""
    return ScsiResult(status=ScsiStatus.CHECK_CONDITION,
                      sense=build_sense(SenseKey.HARDWARE_ERROR, 0x4400, descriptor=False))


class IscsiServer:
    """The iSCSI front end of one array: portals, targets, sessions."""

    def __init__(self, targets: Iterable[Target], portals: Iterable[tuple[str, int]],
                 settings: ServerSettings | None = None) -> None:
        self.targets = {t.name: t for t in targets}
        self.portals = list(portals)
        self.settings = settings or ServerSettings()
        self.portal_group_tag = self.settings.tpgt
        self.used_challenges: set[bytes] = set()
        self.local_keys = self.settings.local_keys
        self.discovery_auth = self.settings.discovery_auth
        self._servers: list[asyncio.base_events.Server] = []
        self._sessions: dict[tuple[str, int, str], LiveConnection] = {}
        self._tsihs: dict[int, LiveConnection] = {}
        self._next_tsih = 1
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._tmf_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.bound: list[tuple[str, int]] = []
        for t in self.targets.values():
            t.device_server.on_abort = functools.partial(self._abort_nexus_tasks, t)

    # --- LoginDirectory --------------------------------------------------------

    def target(self, name: str) -> TargetAuth | None:
        """The login policy of target ``name``, None when there is no such target (LoginDirectory)."""
        t = self.targets.get(name)
        return t.auth if t else None

    def session_exists(self, initiator_name: str, isid: int, target_name: str, tsih: int) -> bool:
        """A session with this TSIH exists for this initiator port and target (session reinstatement)."""
        c = self._tsihs.get(tsih)
        return c is not None and c.key == (initiator_name, isid, target_name)

    def new_tsih(self) -> int:
        """A TSIH no live session uses (never 0); OUT OF RESOURCES when all are taken."""
        for _ in range(0x10000):
            tsih = self._next_tsih
            self._next_tsih = tsih + 1 if tsih < 0xFFFF else 1
            if tsih not in self._tsihs:
                return tsih
        raise LoginError(LoginStatus.OUT_OF_RESOURCES, "no free TSIH")

    def admit_session(self, initiator_name: str, isid: int, target_name: str) -> None:
        """OUT OF RESOURCES when a new session would pass ``max_sessions_per_target`` or
        ``max_sessions_per_initiator`` (LoginDirectory); a reinstatement replaces its old session."""
        me = (initiator_name, isid, target_name)
        per_target = per_initiator = 0
        for key in self._sessions:
            if key == me:
                continue
            per_target += key[2] == target_name
            per_initiator += key[0] == initiator_name
        s = self.settings
        if per_target >= s.max_sessions_per_target:
            log.warning("session_limit", limit="per_target", target=target_name, initiator=initiator_name,
                        sessions=per_target)
            raise LoginError(LoginStatus.OUT_OF_RESOURCES,
                             f"target {target_name} has {per_target} sessions, its limit")
        if per_initiator >= s.max_sessions_per_initiator:
            log.warning("session_limit", limit="per_initiator", target=target_name, initiator=initiator_name,
                        sessions=per_initiator)
            raise LoginError(LoginStatus.OUT_OF_RESOURCES,
                             f"initiator {initiator_name} has {per_initiator} sessions, its limit")

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every portal."""
        for host, port in self.portals:
            srv = await asyncio.start_server(self._accept, host, port, reuse_address=True, limit=1 << 20)
            self._servers.append(srv)
            for sock in srv.sockets:
                addr = sock.getsockname()
                self.bound.append((addr[0], addr[1]))
                log.info("portal_listening", host=addr[0], port=addr[1])

    async def stop(self, grace: float = 3.0) -> None:
        """Stop accepting, ask initiators to log out, let in-flight commands finish, close volumes."""
        self._stopping = True
        for srv in self._servers:
            srv.close()
        conns = list(self._sessions.values())
        for c in conns:
            c.conn.request_logout(within_seconds=int(grace))
            self._flush(c)
        if conns:
            await asyncio.wait([asyncio.create_task(c.closed.wait()) for c in conns], timeout=grace)
        for c in list(self._sessions.values()):
            await self._drain_running(c)
            self._close_conn(c, "shutdown")
        if self._conn_tasks:
            await asyncio.wait(list(self._conn_tasks), timeout=grace)
        for srv in self._servers:
            await srv.wait_closed()
        for t in self.targets.values():
            await t.device_server.close()
        log.info("server_stopped")

    # --- connections -------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clog = log.bind(peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        point = HUB.open(socket_address(writer.get_extra_info("sockname")), socket_address(peer), local_is_client=False)
        try:
            await self._serve_connection(reader, writer, clog, point)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            clog.info("connection_lost", error=str(exc) or type(exc).__name__)
        except Exception:  # noqa: BLE001 - one connection's bug must never take the server down
            clog.exception("connection_crashed")
        finally:
            self._conn_tasks.discard(task)
            if not writer.is_closing():
                writer.close()
            HUB.close(point)

    @staticmethod
    async def _send_login(writer: asyncio.StreamWriter, point: CapturePoint, resp: Pdu) -> None:
        bufs = encode(resp)
        writer.writelines(bufs)
        if (tap := point.tap) is not None:
            tap.count(bufs[0])
            tap.sent(bufs)
        await writer.drain()

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     framer: PduFramer, clog: structlog.stdlib.BoundLogger, point: CapturePoint) -> LoginResult | None:
        login = TargetLogin(self, statsn=int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF,
                            cmd_window=self.settings.cmd_window)
        deadline = time.monotonic() + LOGIN_TIMEOUT
        while not login.done:
            if framer.pending_opcode not in (None, Opcode.LOGIN_REQUEST):
                # Only Login Requests are valid before full-feature phase (§6.1): drop, without
                # waiting for whatever data segment a stray header claims.
                clog.info("non_login_pdu_during_login", opcode=framer.pending_opcode)
                return None
            raw = framer.next()
            if raw is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    clog.info("login_timeout")
                    return None
                data = await asyncio.wait_for(reader.read(65536), remaining)
                if not data:
                    point.peer_closed = True
                    return None
                if (tap := point.tap) is not None:
                    tap.received(data)
                framer.feed(data)
                continue
            if (tap := point.tap) is not None:
                tap.count(raw.bhs)
            try:
                req = decode(raw)
                assert isinstance(req, LoginRequest)
                resp = login.receive(req)
            except LoginError as exc:  # malformed text raised while decoding
                resp = LoginResponse(status_class=exc.status >> 8, status_detail=exc.status & 0xFF,
                                     initiator_task_tag=raw.initiator_task_tag)
                await self._send_login(writer, point, resp)
                return None
            await self._send_login(writer, point, resp)
        return login.result

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                clog: structlog.stdlib.BoundLogger, point: CapturePoint) -> None:
        if self._stopping:
            return
        framer = PduFramer(max_data_segment=LOGIN_MAX_SEGMENT)
        point.pending_rx = framer.pending
        try:
            result = await self._login(reader, writer, framer, clog, point)
        except asyncio.TimeoutError:
            clog.info("login_timeout")
            return
        except ProtocolError as exc:
            # Not a Login Request stream we can frame (garbage, oversized segment): drop it.
            clog.info("login_framing_error", error=str(exc))
            return
        if result is None:
            await asyncio.sleep(0)  # let the final response go out before close
            return
        if result.existing_tsih and (old := self._tsihs.get(result.existing_tsih)) is not None:
            # Connection reinstatement: session-wide (LO) values were not renegotiated on this login;
            # they stay what the session's leading login settled (RFC 7143 §13, "LO" keys).
            for name in _SESSION_WIDE:
                setattr(result.params, name, getattr(old.result.params, name))
        c = self._connect(result, writer, point)
        framer.header_digest = c.header_digest
        framer.data_digest = c.data_digest
        # A data segment longer than we declared breaks the negotiated contract (RFC 7143 §13.12);
        # the framer refuses it before buffering it, and the connection is dropped.
        framer.max_data_segment = result.params.max_recv_data_segment_length_target
        ticker = asyncio.create_task(self._ticker(c))
        try:
            await self._full_feature(c, reader, framer)
        finally:
            ticker.cancel()
            await self._drain_running(c)
            self._unregister(c)
            c.closed.set()

    def _connect(self, result: LoginResult, writer: asyncio.StreamWriter, point: CapturePoint) -> LiveConnection:
        """The full-feature connection a login ended in, registered (session or connection
        reinstatement done)."""
        target = self.targets.get(result.target.name) if result.target else None
        nexus = Nexus(result.initiator_name, result.isid, target.name if target else "", self.portal_group_tag)
        local = writer.get_extra_info("sockname")
        conn = TargetConnection(
            nexus=nexus, params=result.params, cid=result.cid, statsn=result.statsn, expcmdsn=result.expcmdsn,
            now=time.monotonic(), cmd_window=self.settings.cmd_window, nop_interval=self.settings.nop_interval,
            nop_timeout=self.settings.nop_timeout,
            send_targets=lambda v: send_targets([t.auth for t in self.targets.values()], self.bound,
                                                self.portal_group_tag, v, result.initiator_name, local),
            lun_exists=(target.device_server.has_lun if target else None))
        c = LiveConnection(conn, writer, target, result, point)
        self._register(c)
        return c

    def _register(self, c: LiveConnection) -> None:
        key = c.key
        old = self._sessions.get(key)
        if old is not None and old is not c:
            # Session reinstatement (TSIH 0, same I_T nexus) or connection reinstatement
            # (same TSIH): the old connection ends, its tasks are dropped (§6.3.5, ERL 0).
            old.conn.log.info("session_reinstated" if not c.result.existing_tsih else "connection_reinstated")
            self._close_conn(old, "reinstated")
            for itt in old.conn.abort_lun_tasks(None):
                pass
            self._unregister(old)
        self._sessions[key] = c
        self._tsihs[c.result.tsih] = c
        if c.target is not None and not c.result.existing_tsih:
            c.target.device_server.nexus_added(c.conn.nexus)

    def _unregister(self, c: LiveConnection) -> None:
        if self._sessions.get(c.key) is c:
            del self._sessions[c.key]
            if c.target is not None:
                c.target.device_server.nexus_removed(c.conn.nexus)
        if self._tsihs.get(c.result.tsih) is c:
            del self._tsihs[c.result.tsih]

    async def _ticker(self, c: LiveConnection) -> None:
        while True:
            await asyncio.sleep(1.0)
            c.conn.tick(time.monotonic())
            self._process(c)

    async def _full_feature(self, c: LiveConnection, reader: asyncio.StreamReader, framer: PduFramer) -> None:
        """Hand the socket to :class:`~sanlab.target.live_connection.FullFeatureProtocol` and wait until it is gone."""
        transport = c.transport
        # Bytes the stream reader already holds beyond the login belong to the framer.
        buffered: bytearray = getattr(reader, "_buffer", bytearray())
        leftover = bytes(buffered)
        buffered.clear()
        transport.set_protocol(FullFeatureProtocol(c, framer, self._on_data))
        if getattr(reader, "_paused", False):
            transport.resume_reading()  # type: ignore[attr-defined]
        if transport.is_closing():
            return
        self._on_data(c, framer, leftover)
        await c.lost

    def _on_data(self, c: LiveConnection, framer: PduFramer, data: bytes) -> None:
        """Frame and run everything that arrived; the responses produced meanwhile go out in one send."""
        conn = c.conn
        if conn.closed:
            return
        framer.feed(data)
        # Packet capture (target/capture.py): the one check made while none runs.
        if (tap := c.point.tap) is not None:
            tap.received(data)
        now = time.monotonic()
        c.receiving = True
        try:
            while not conn.closed:
                try:
                    raw = framer.next()
                except ProtocolError as exc:
                    conn.log.warning("framing_error", error=str(exc))
                    self._close_conn(c, str(exc))
                    return
                if raw is None:
                    break
                if tap is not None:
                    tap.count(raw.bhs)
                conn.receive(raw, now)
                self._process(c)
        finally:
            c.receiving = False
        self._flush(c)

    async def _drain(self, c: LiveConnection) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if c.write_paused and not c.transport.is_closing():
            if c.writable is None:
                c.writable = asyncio.get_running_loop().create_future()
            await c.writable

    def _process(self, c: LiveConnection) -> None:
        """Act on the connection's events and write its output."""
        if c.processing:
            return  # the loop below picks up what this call would have handled
        c.processing = True
        try:
            while events := c.conn.take_events():
                for ev in events:
                    if type(ev) is Execute:
                        self._start(c, ev)
                    elif isinstance(ev, TaskManagement):
                        # Keep a reference: the loop holds tasks only weakly.
                        tmf = asyncio.create_task(self._tmf(c, ev))
                        self._tmf_tasks.add(tmf)
                        tmf.add_done_callback(self._tmf_tasks.discard)
                    elif isinstance(ev, Close):
                        self._flush(c)
                        self._close_conn(c, ev.reason)
        finally:
            c.processing = False
        if c.receiving:
            return  # _on_data flushes once the whole batch is done
        # Coalesce: every response produced in this loop iteration goes out in one writelines
        # (one send) instead of one per completed command.
        if not c.flush_scheduled:
            c.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush, c)

    def _start(self, c: LiveConnection, ev: Execute) -> None:
        """Run the command now, up to its first real wait (scsi/outcome.py).  The device server
        answers a plain READ/WRITE at once (:meth:`DeviceServer.start`): from the page cache, with
        no coroutine, or with the future of a transfer in the thread pool.  Anything else, or
        anything it declines, runs :meth:`DeviceServer.execute` as a coroutine that is stepped here
        once; only a command that then waits (for the pool, a range lock, a peer) costs a Task."""
        ds = c.target.device_server if c.target else None
        if ds is not None:
            outcome = ds.start(ev.task)
            if type(outcome) is ScsiResult:
                c.conn.complete(ev.itt, outcome)
                return
            if type(outcome) is Pending:
                self._wait_pooled(c, ev.itt, outcome.answer)
                return
            if ds.detaches_on_abort(ev.task.lun, ev.task.cdb):
                c.detachable.add(ev.itt)
        coro = self._execute(c, ev)
        try:
            first = coro.send(None)
        except StopIteration:
            return
        # _execute's own finally takes it out of c.running when it ends.
        c.running[ev.itt] = asyncio.ensure_future(EagerCoroutine(coro, first))

    def _scheduled_flush(self, c: LiveConnection) -> None:
        c.flush_scheduled = False
        self._flush(c)

    def _flush(self, c: LiveConnection) -> None:
        out = c.conn.take_output()
        if not out or c.transport.is_closing():
            return
        bufs: list[bytes | bytearray | memoryview] = []
        tap = c.point.tap
        for pdu in out:
            pdu_bufs = encode(pdu, c.header_digest, c.data_digest)
            if tap is not None:
                tap.count(pdu_bufs[0])
            bufs.extend(pdu_bufs)
        c.transport.writelines(bufs)
        if tap is not None:
            tap.sent(bufs)

    def _close_conn(self, c: LiveConnection, reason: str) -> None:
        if not c.transport.is_closing():
            self._flush(c)  # what the connection still had to say (a TMF response, a Reject) goes first
            c.conn.log.info("connection_closing", reason=reason)
            c.transport.close()
            # close() first sends what is buffered: an initiator that stopped reading would keep the
            # socket (and the connection's memory) forever, so after a bound it is aborted (RST).
            asyncio.get_running_loop().call_later(CLOSE_FLUSH_SECONDS, _abort_unflushed, c.transport)
        c.conn.closed = True
        if not c.running:
            # The I_T nexus ends with the connection, before anything else is read from any socket:
            # an initiator that got its Logout Response may count on its SPC-2 reservation being gone
            # (SPC-4 §5.9.4) in its very next command on another session.
            self._unregister(c)
        if not c.lost.done():
            c.lost.set_result(None)

    def _wait_pooled(self, c: LiveConnection, itt: int, fut: asyncio.Future[ScsiResult]) -> None:
        """Waiting for the disk in the thread pool: answered from the future's callback."""
        c.running[itt] = fut
        fut.add_done_callback(functools.partial(self._pooled_done, c, itt))

    def _pooled_done(self, c: LiveConnection, itt: int, fut: asyncio.Future[ScsiResult]) -> None:
        """A command the device server started that waited in the thread pool has its answer (see _start)."""
        if c.running.get(itt) is fut:
            del c.running[itt]
        if fut.cancelled():
            return  # as a cancelled _execute: no answer (the connection is going away)
        exc = fut.exception()
        if exc is not None:
            c.conn.log.error("scsi_execute_failed", itt=itt, error=repr(exc))
            self._finish(c, itt, _internal_failure())
        else:
            self._finish(c, itt, fut.result())

    def _finish(self, c: LiveConnection, itt: int, result: ScsiResult) -> None:
        """Answer a command that ended after a wait (outside the batch it arrived in)."""
        c.conn.complete(itt, result)
        self._process(c)
        if not c.running and not c.receiving:
            # Nothing else in flight (queue depth 1): answer now rather than one loop turn later.
            self._flush(c)

    async def _execute(self, c: LiveConnection, ev: Execute) -> None:
        ds = c.target.device_server if c.target else None
        try:
            if ds is None:
                raise RuntimeError("SCSI command without a target")
            result = await ds.execute(ev.task)
        except asyncio.CancelledError:
            if ev.itt not in c.detachable:
                raise
            # Aborted: the command ends here, its work (shielded in the device server) goes on.
            result = ScsiResult(status=ScsiStatus.TASK_ABORTED)
        except Exception:  # noqa: BLE001 - the device server must not crash the connection
            c.conn.log.exception("scsi_execute_failed", itt=ev.itt, cdb=bytes(ev.task.cdb).hex())
            result = _internal_failure()
        finally:
            c.running.pop(ev.itt, None)
            c.detachable.discard(ev.itt)
        self._finish(c, ev.itt, result)

    @staticmethod
    async def _end_tasks(ends: list[tuple[LiveConnection, int]]) -> None:
        """Wait for aborted commands to end; those whose work goes on without them are cancelled."""
        tasks = []
        for o, itt in ends:
            t = o.running.get(itt)
            if t is None or t.done():
                continue
            if itt in o.detachable:
                t.cancel()
            tasks.append(t)
        if tasks:
            await asyncio.wait(tasks)

    async def _drain_running(self, c: LiveConnection) -> None:
        await self._end_tasks([(c, itt) for itt in list(c.running)])

    async def _tmf(self, c: LiveConnection, ev: TaskManagement) -> None:
        try:
            ends = [(c, i) for i in ev.referenced_itts]
            fn = ev.function
            ds = c.target.device_server if c.target else None
            others = [o for o in self._sessions.values() if o is not c and o.target is c.target]
            if fn in (TmfFunction.CLEAR_TASK_SET, TmfFunction.LOGICAL_UNIT_RESET):
                for o in others:
                    ends += [(o, itt) for itt in o.conn.abort_lun_tasks(ev.lun)]
                    self._process(o)
            elif fn in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
                for o in others:
                    ends += [(o, itt) for itt in o.conn.abort_lun_tasks(None)]
                    self._process(o)
            await self._end_tasks(ends)
            if ds is not None:
                if fn == TmfFunction.LOGICAL_UNIT_RESET:
                    ds.lun_reset(ev.lun, c.conn.nexus)
                    await ds.lun_reset_done(ev.lun, c.conn.nexus)
                elif fn in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
                    ds.target_reset(c.conn.nexus, cold=fn == TmfFunction.TARGET_COLD_RESET)
            c.conn.tmf_done(ev.itt, TmfResponse.FUNCTION_COMPLETE)
            self._process(c)
            if fn == TmfFunction.TARGET_COLD_RESET:
                # A cold reset ends every connection to the target after the response (§11.5.1).
                await self._drain(c)
                for o in [c, *others]:
                    self._close_conn(o, "target cold reset")
        except Exception:  # noqa: BLE001
            c.conn.log.exception("tmf_failed", itt=ev.itt)
            self._close_conn(c, "tmf failure")

    async def _abort_nexus_tasks(self, target: Target, lun: int, nexuses: list[Nexus]) -> None:
        """PREEMPT AND ABORT (SPC-4 §5.9.11.5): the preempted I_T nexuses' tasks on ``lun`` are aborted,
        as for CLEAR TASK SET from their own sessions; returns when the executing ones have ended."""
        ends: list[tuple[LiveConnection, int]] = []
        for o in list(self._sessions.values()):
            if o.target is target and o.conn.nexus in nexuses:
                ends += [(o, itt) for itt in o.conn.abort_lun_tasks(lun)]
                self._process(o)
        await self._end_tasks(ends)

    @property
    def session_count(self) -> int:
        """Live sessions (for status views and tests)."""
        return len(self._sessions)

    def sessions(self) -> list[tuple[str, int, str]]:
        """Live sessions as (initiator name, ISID, target name), for the status page and metrics."""
        return list(self._sessions)


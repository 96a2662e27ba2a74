"""The array's iSCSI initiator (RFC 7143, initiator role), on asyncio.

It reaches peer arrays for external volumes and replication, so it shares the
target's codec (:mod:`sanlab.target.pdu`), key negotiation
(:mod:`sanlab.target.keys`) and CHAP (:mod:`sanlab.target.chap`).

One :class:`IscsiSession` is one session with one connection
(ErrorRecoveryLevel 0).  Many commands run at once, up to the target's
MaxCmdSN window; writes use immediate data, unsolicited Data-Out and R2T as
negotiated; reads are reassembled from Data-In.  Target NOP-In pings are
answered, idle connections are pinged, every command has a timeout (then it
is aborted with ABORT TASK), and a lost connection fails the commands in flight
with :class:`ConnectionLost` and, when ``reconnect`` is set, logs in again
with backoff (session reinstatement: same ISID, TSIH 0, RFC 7143 §6.3.5).
Failures carry the SCSI status and decoded sense (:class:`ScsiCommandError`).
"""
from __future__ import annotations

import asyncio
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from sanlab.scsi.lun import encode_lun
from sanlab.scsi.sense import Sense, parse_sense
from sanlab.target.chap import ChapCredentials, InitiatorChap
from sanlab.target.errors import LoginError, LoginStatus, ProtocolError
from sanlab.target.keys import INITIATOR_DEFAULTS, Negotiator, SessionParams, encode_text, parse_text
from sanlab.target.pdu import (
    RESERVED_TAG, AsyncEvent, AsyncMessage, DataIn, DataOut, LoginRequest, LoginResponse, LoginStage,
    LogoutReason, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, PduFramer, R2T, Reject, ScsiCommand,
    ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction, decode, encode,
)
from sanlab.target.seqnum import sn_add, sn_lt

log = structlog.get_logger("sanlab.target.initiator")

DEFAULT_INITIATOR_NAME = "iqn.2026-11.org.sanlab:initiator"
_SEC, _OP, _FFP = (LoginStage.SECURITY_NEGOTIATION, LoginStage.LOGIN_OPERATIONAL_NEGOTIATION,
                   LoginStage.FULL_FEATURE_PHASE)

GOOD = 0x00
CHECK_CONDITION = 0x02
RESERVATION_CONFLICT = 0x18


class IscsiError(Exception):
    """Base of the initiator's errors."""


class LoginFailed(IscsiError):
    """The target refused the login; ``status`` is the RFC 7143 §11.13.5 class/detail."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"login failed with status 0x{status:04x}: {message}")
        self.status = status


class ConnectionLost(IscsiError):
    """The connection ended while the command was outstanding; its outcome is unknown."""


class CommandTimeout(IscsiError):
    """The command did not complete in time and was aborted."""


class ScsiCommandError(IscsiError):
    """A command ended with a status other than GOOD."""

    def __init__(self, status: int, sense: Sense | None) -> None:
        detail = f" sense {sense.key:x}/{sense.asc:02x}/{sense.ascq:02x}" if sense else ""
        super().__init__(f"SCSI status 0x{status:02x}{detail}")
        self.status = status
        self.sense = sense


@dataclass(slots=True)
class CommandResult:
    """Status, Data-In and sense of one command."""

    status: int
    data: bytes = b""
    sense: Sense | None = None
    residual: int = 0
    """Positive: underflow (less moved than expected); negative: overflow."""

    def check(self) -> "CommandResult":
        """Raise :class:`ScsiCommandError` unless GOOD."""
        if self.status != GOOD:
            raise ScsiCommandError(self.status, self.sense)
        return self


@dataclass(slots=True)
class InitiatorConfig:
    """Who we are and how we log in."""

    initiator_name: str = DEFAULT_INITIATOR_NAME
    isid: int = field(default_factory=lambda: (0x80 << 40) | int.from_bytes(os.urandom(3), "big") << 16)
    """48-bit ISID; type 10b (random, RFC 7143 §11.12.5) by default."""
    chap: ChapCredentials | None = None
    target_chap: ChapCredentials | None = None
    """Credentials the target must prove (mutual CHAP)."""
    keys: dict[str, str] = field(default_factory=lambda: dict(INITIATOR_DEFAULTS))
    login_timeout: float = 15.0
    command_timeout: float = 30.0
    nop_interval: float = 10.0
    """Ping the target after this much silence (0: never)."""
    nop_timeout: float = 10.0
    reconnect: bool = True
    reconnect_backoff: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class _Cmd:
    itt: int
    future: asyncio.Future[CommandResult]
    data_out: memoryview
    read_buf: bytearray
    read_got: int = 0
    cmdsn: int = 0


class IscsiSession:
    """One session to one target (or a discovery session)."""

    def __init__(self, host: str, port: int, target_name: str | None, config: InitiatorConfig | None = None) -> None:
        self.host, self.port = host, port
        self.target_name = target_name
        self.config = config or InitiatorConfig()
        self.params = SessionParams()
        self.tsih = 0
        self.log = log.bind(target=target_name or "discovery", portal=f"{host}:{port}")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = PduFramer()
        self._hd = self._dd = False
        self._itt = 0
        self.cmdsn = 1
        self.expstatsn = 0
        self.maxcmdsn = 1
        self._window = asyncio.Condition()
        self._cmds: dict[int, _Cmd] = {}
        self._waiters: dict[int, asyncio.Future[Pdu]] = {}
        self._rx_task: asyncio.Task[None] | None = None
        self._nop_task: asyncio.Task[None] | None = None
        self._last_rx = time.monotonic()
        self._closing = False
        self._connected = asyncio.Event()
        self._reconnect_task: asyncio.Task[None] | None = None

    # --- connection and login --------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and log in (raises :class:`LoginFailed` or OSError)."""
        self._closing = False
        await asyncio.wait_for(self._connect_once(), self.config.login_timeout)

    async def _connect_once(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._reader, self._writer = reader, writer
        self._framer = PduFramer(max_data_segment=1 << 20)
        self._hd = self._dd = False
        try:
            await self._login()
        except BaseException:
            writer.close()
            raise
        self._framer.header_digest, self._framer.data_digest = self._hd, self._dd
        self._framer.max_data_segment = self.params.max_recv_data_segment_length_initiator
        self._last_rx = time.monotonic()
        self._rx_task = asyncio.create_task(self._receive_loop())
        if self.config.nop_interval > 0 and self.target_name is not None:
            self._nop_task = asyncio.create_task(self._keepalive())
        self._connected.set()
        self.log.info("initiator_logged_in", tsih=self.tsih, header_digest=self._hd, data_digest=self._dd)

    def _next_itt(self) -> int:
        self._itt = (self._itt + 1) & 0x7FFFFFFF or 1
        return self._itt

    async def _login_exchange(self, itt: int, csg: int, nsg: int, transit: bool,
                              pairs: list[tuple[str, str]]) -> tuple[LoginResponse, dict[str, str]]:
        assert self._writer is not None and self._reader is not None
        req = LoginRequest(transit=transit, csg=csg, nsg=nsg if transit else 0, isid=self.config.isid,
                           tsih=self.tsih, initiator_task_tag=itt, cid=0, cmdsn=self.cmdsn,
                           expstatsn=self.expstatsn, data=encode_text(pairs))
        self._writer.writelines(encode(req))
        await self._writer.drain()
        while True:
            raw = self._framer.next()
            if raw is not None:
                break
            chunk = await self._reader.read(65536)
            if not chunk:
                raise ConnectionLost("connection closed during login")
            self._framer.feed(chunk)
        resp = decode(raw)
        if not isinstance(resp, LoginResponse):
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"{type(resp).__name__} during login")
        status = (resp.status_class << 8) | resp.status_detail
        if status:
            raise LoginFailed(status, "refused by the target")
        self.expstatsn = sn_add(resp.statsn, 1)
        self.maxcmdsn = resp.maxcmdsn
        return resp, dict(parse_text(bytes(resp.data)))

    async def _login(self) -> None:
        cfg = self.config
        itt = self._next_itt()
        neg = Negotiator("initiator", dict(cfg.keys))
        st = "Normal" if self.target_name is not None else "Discovery"
        neg.set_session_type(st)  # type: ignore[arg-type]
        leading = [("InitiatorName", cfg.initiator_name), ("SessionType", st)]
        if self.target_name is not None:
            leading.append(("TargetName", self.target_name))
        try:
            if cfg.chap is not None:
                chap = InitiatorChap(cfg.chap, cfg.target_chap)
                _, ans = await self._login_exchange(itt, _SEC, _OP, False, leading + chap.auth_method())
                if ans.get("AuthMethod") != "CHAP":
                    raise LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, f"AuthMethod={ans.get('AuthMethod')}")
                _, ans = await self._login_exchange(itt, _SEC, _OP, False, chap.offer())
                resp, ans = await self._login_exchange(itt, _SEC, _OP, True, chap.answer(ans))
                chap.verify(ans)
                stage, first = _OP, []
                if not (resp.transit and resp.nsg == _OP):
                    raise LoginFailed(LoginStatus.INITIATOR_ERROR, "target did not leave the security stage")
            else:
                stage, first = _OP, leading
            resp, ans = await self._login_exchange(itt, stage, _FFP, True, first + neg.offers())
            extra = neg.absorb(list(ans.items()))
            while not (resp.transit and resp.nsg == _FFP):
                resp, ans = await self._login_exchange(itt, _OP, _FFP, True, extra)
                extra = neg.absorb(list(ans.items()))
        except LoginError as exc:
            raise LoginFailed(exc.status, str(exc)) from exc
        self.tsih = resp.tsih
        self.params = neg.params()
        self._hd, self._dd = self.params.header_digest, self.params.data_digest

    async def discover(self) -> list[tuple[str, list[str]]]:
        """SendTargets=All on a discovery session: [(target name, [addresses])]."""
        text = await self._text(b"SendTargets=All\0")
        out: list[tuple[str, list[str]]] = []
        for k, v in parse_text(text):
            if k == "TargetName":
                out.append((v, []))
            elif k == "TargetAddress" and out:
                out[-1][1].append(v)
        return out

    async def _text(self, body: bytes) -> bytes:
        acc = bytearray()
        ttt = RESERVED_TAG
        itt = self._next_itt()
        data = body
        while True:
            fut = self._expect(itt)
            self._send(TextRequest(immediate=False, final=True, initiator_task_tag=itt, target_transfer_tag=ttt,
                                   cmdsn=self.cmdsn, expstatsn=self.expstatsn, data=data))
            self.cmdsn = sn_add(self.cmdsn, 1)
            resp = await asyncio.wait_for(fut, self.config.command_timeout)
            assert isinstance(resp, TextResponse)
            acc += resp.data
            if resp.final or not resp.cont:
                return bytes(acc)
            ttt, data = resp.target_transfer_tag, b""

    # --- sending -----------------------------------------------------------------------------

    def _send(self, *pdus: Pdu) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionLost("not connected")
        bufs: list[Any] = []
        for p in pdus:
            bufs.extend(encode(p, self._hd, self._dd))
        self._writer.writelines(bufs)

    def _expect(self, itt: int) -> asyncio.Future[Pdu]:
        fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._waiters[itt] = fut
        return fut

    async def _wait_window(self) -> None:
        async with self._window:
            # MaxCmdSN bounds the commands in flight (RFC 7143 §4.2.2.1).
            await self._window.wait_for(lambda: not sn_lt(self.maxcmdsn, self.cmdsn) or self._writer is None)

    # --- SCSI ----------------------------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
                      read_length: int = 0, timeout: float | None = None) -> CommandResult:
        """Run one SCSI command; the result is returned whatever its status (see ``check``)."""
        if not self._connected.is_set():
            # Down: fail at once without reconnect; with it, wait for the session to come back
            # for at most the command's own timeout (a bounded failure, never a hang).
            if not self.config.reconnect or self._closing or self.target_name is None:
                raise ConnectionLost("not connected")
            try:
                await asyncio.wait_for(self._connected.wait(), timeout or self.config.command_timeout)
            except asyncio.TimeoutError:
                raise ConnectionLost("not connected (reconnecting)") from None
        await self._wait_window()
        p = self.params
        itt = self._next_itt()
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        out = memoryview(bytes(data_out) if not isinstance(data_out, (bytes, memoryview)) else data_out)
        cmd = _Cmd(itt, fut, out, bytearray(read_length), cmdsn=self.cmdsn)
        self._cmds[itt] = cmd
        edtl = len(out) if len(out) else read_length
        imm = min(len(out), p.first_burst_length, p.max_recv_data_segment_length_target) if p.immediate_data else 0
        unsolicited_end = 0 if p.initial_r2t else min(len(out), p.first_burst_length)
        lun_field = encode_lun(lun)
        pdus: list[Pdu] = [ScsiCommand(
            final=unsolicited_end <= imm, read=read_length > 0, write=len(out) > 0, attr=1, lun=lun_field,
            initiator_task_tag=itt, expected_data_transfer_length=edtl, cmdsn=self.cmdsn, expstatsn=self.expstatsn,
            cdb=cdb[:16], data=out[:imm])]
        if len(cdb) > 16:
            from sanlab.target.pdu import AhsType, make_ahs
            pdus[0].ahs = make_ahs(AhsType.EXTENDED_CDB, bytes(cdb[16:]))  # type: ignore[attr-defined]
        self.cmdsn = sn_add(self.cmdsn, 1)
        if unsolicited_end > imm:
            pdus += self._data_outs(itt, lun_field, RESERVED_TAG, imm, unsolicited_end)
        try:
            self._send(*pdus)
        except ConnectionLost:
            self._cmds.pop(itt, None)
            raise
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout or self.config.command_timeout)
        except asyncio.TimeoutError:
            await self._abort(itt, lun, cmd.cmdsn)
            raise CommandTimeout(f"command 0x{cdb[0]:02x} (ITT {itt}) timed out") from None
        finally:
            self._cmds.pop(itt, None)

    def _data_outs(self, itt: int, lun: bytes, ttt: int, start: int, end: int) -> list[Pdu]:
        cmd = self._cmds.get(itt)
        if cmd is None:
            return []
        seg = self.params.max_recv_data_segment_length_target
        pdus: list[Pdu] = []
        datasn = 0
        off = start
        while off < end:
            n = min(seg, end - off)
            pdus.append(DataOut(final=off + n >= end, lun=lun, initiator_task_tag=itt, target_transfer_tag=ttt,
                                expstatsn=self.expstatsn, datasn=datasn, buffer_offset=off,
                                data=cmd.data_out[off:off + n]))
            datasn += 1
            off += n
        return pdus

    async def _abort(self, itt: int, lun: int, cmdsn: int) -> None:
        try:
            await self.task_management(TmfFunction.ABORT_TASK, lun, itt, cmdsn)
        except IscsiError as exc:
            self.log.warning("abort_failed", itt=itt, error=str(exc))

    async def task_management(self, function: TmfFunction, lun: int = 0, referenced_itt: int = RESERVED_TAG,
                              refcmdsn: int | None = None) -> int:
        """Send a TMF; return its response code (RFC 7143 §11.6.1).

        For ABORT TASK, RefCmdSN is the CmdSN of the task to abort (§11.5.4): the target uses it
        to recognise a task it has not received yet.
        """
        itt = self._next_itt()
        fut = self._expect(itt)
        self._send(TaskMgmtRequest(immediate=True, function=function, lun=encode_lun(lun), initiator_task_tag=itt,
                                   referenced_task_tag=referenced_itt, cmdsn=self.cmdsn, expstatsn=self.expstatsn,
                                   refcmdsn=self.cmdsn if refcmdsn is None else refcmdsn))
        resp = await asyncio.wait_for(fut, self.config.command_timeout)
        assert isinstance(resp, TaskMgmtResponse)
        return resp.response

    async def ping(self, data: bytes = b"") -> float:
        """NOP-Out ping; returns the round-trip time in seconds."""
        itt = self._next_itt()
        fut = self._expect(itt)
        t0 = time.monotonic()
        self._send(NopOut(immediate=True, initiator_task_tag=itt, cmdsn=self.cmdsn, expstatsn=self.expstatsn,
                          data=data))
        await asyncio.wait_for(fut, self.config.nop_timeout)
        return time.monotonic() - t0

    async def logout(self) -> None:
        """Close the session cleanly (Logout, reason close session)."""
        self._closing = True
        if self._writer is not None and not self._writer.is_closing():
            await self._send_logout()
        await self.close()

    async def _send_logout(self) -> None:
        """Logout (close session) and wait up to 5 s for the answer; failures only end it sooner."""
        itt = self._next_itt()
        fut = self._expect(itt)
        try:
            self._send(LogoutRequest(immediate=True, reason=LogoutReason.CLOSE_SESSION, initiator_task_tag=itt,
                                     cmdsn=self.cmdsn, expstatsn=self.expstatsn))
            await asyncio.wait_for(fut, 5.0)
        except (IscsiError, asyncio.TimeoutError, ConnectionError):
            pass

    async def close(self) -> None:
        """Drop the connection without a logout."""
        self._closing = True
        for t in (self._nop_task, self._reconnect_task):
            if t is not None:
                t.cancel()
        if self._writer is not None:
            self._writer.close()
        if self._rx_task is not None:
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

    # --- receiving -----------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        try:
            while True:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    raise ConnectionLost("target closed the connection")
                self._last_rx = time.monotonic()
                self._framer.feed(chunk)
                for raw in self._framer:
                    if not raw.data_digest_ok:
                        raise ConnectionLost("data digest error from the target")
                    self._dispatch(decode(raw))
                if self._writer is not None:
                    await self._writer.drain()
        except (ConnectionLost, ProtocolError, ConnectionError, asyncio.IncompleteReadError) as exc:
            self._lost(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must fail the commands, not hang them
            self.log.exception("initiator_receive_crashed")
            self._lost(exc)

    def _update_sn(self, pdu: Pdu) -> None:
        expcmdsn = getattr(pdu, "expcmdsn", None)
        maxcmdsn = getattr(pdu, "maxcmdsn", None)
        if maxcmdsn is not None and expcmdsn is not None and not sn_lt(maxcmdsn, sn_add(expcmdsn, -1 & 0xFFFFFFFF)):
            if sn_lt(self.maxcmdsn, maxcmdsn):
                self.maxcmdsn = maxcmdsn
                asyncio.ensure_future(self._notify_window())

    async def _notify_window(self) -> None:
        async with self._window:
            self._window.notify_all()

    def _dispatch(self, pdu: Pdu) -> None:
        self._update_sn(pdu)
        if isinstance(pdu, DataIn):
            cmd = self._cmds.get(pdu.initiator_task_tag)
            if cmd is not None:
                off = pdu.buffer_offset
                cmd.read_buf[off:off + len(pdu.data)] = pdu.data
                cmd.read_got = max(cmd.read_got, off + len(pdu.data))
                if pdu.status_present:
                    self.expstatsn = sn_add(pdu.statsn, 1)
                    residual = pdu.residual_count if pdu.underflow else -pdu.residual_count if pdu.overflow else 0
                    self._finish(cmd, CommandResult(pdu.status, bytes(cmd.read_buf[:cmd.read_got]), None, residual))
        elif isinstance(pdu, ScsiResponse):
            self.expstatsn = sn_add(pdu.statsn, 1)
            cmd = self._cmds.get(pdu.initiator_task_tag)
            if cmd is not None:
                sense = None
                if pdu.status == CHECK_CONDITION and pdu.sense():
                    try:
                        sense = parse_sense(pdu.sense())
                    except ValueError:
                        sense = None
                residual = pdu.residual_count if pdu.underflow else -pdu.residual_count if pdu.overflow else 0
                self._finish(cmd, CommandResult(pdu.status, bytes(cmd.read_buf[:cmd.read_got]), sense, residual))
        elif isinstance(pdu, R2T):
            cmd = self._cmds.get(pdu.initiator_task_tag)
            if cmd is not None:
                end = min(pdu.buffer_offset + pdu.desired_data_transfer_length, len(cmd.data_out))
                self._send(*self._data_outs(pdu.initiator_task_tag, pdu.lun, pdu.target_transfer_tag,
                                            pdu.buffer_offset, end))
        elif isinstance(pdu, NopIn):
            if pdu.target_transfer_tag != RESERVED_TAG:
                # The target pings us: answer with its TTT, immediate, no new CmdSN (§11.18).
                self._send(NopOut(immediate=True, initiator_task_tag=RESERVED_TAG, lun=pdu.lun,
                                  target_transfer_tag=pdu.target_transfer_tag, cmdsn=self.cmdsn,
                                  expstatsn=self.expstatsn))
            else:
                self.expstatsn = sn_add(pdu.statsn, 1)
                self._resolve(pdu.initiator_task_tag, pdu)
        elif isinstance(pdu, (TaskMgmtResponse, TextResponse, LogoutResponse)):
            self.expstatsn = sn_add(pdu.statsn, 1)
            self._resolve(pdu.initiator_task_tag, pdu)
        elif isinstance(pdu, Reject):
            self.expstatsn = sn_add(pdu.statsn, 1)
            hdr = bytes(pdu.data)
            itt = int.from_bytes(hdr[16:20], "big") if len(hdr) >= 20 else RESERVED_TAG
            self.log.warning("target_reject", reason=pdu.reason, itt=itt)
            err = IscsiError(f"target rejected the PDU (reason 0x{pdu.reason:02x})")
            cmd = self._cmds.get(itt)
            if cmd is not None and not cmd.future.done():
                cmd.future.set_exception(err)
            w = self._waiters.pop(itt, None)
            if w is not None and not w.done():
                w.set_exception(err)
        elif isinstance(pdu, AsyncMessage):
            self.expstatsn = sn_add(pdu.statsn, 1)
            if pdu.async_event == AsyncEvent.LOGOUT_REQUESTED:
                self.log.info("target_requests_logout", within=pdu.parameter3)
                asyncio.ensure_future(self._logout_for_target())
            elif pdu.async_event in (AsyncEvent.CONNECTION_DROP, AsyncEvent.SESSION_DROP):
                raise ConnectionLost(f"target announced drop (event {pdu.async_event})")

    async def _logout_for_target(self) -> None:
        # Let commands in flight finish, then log out; reconnect later if configured.
        while self._cmds:
            await asyncio.sleep(0.01)
        keep = self.config.reconnect
        await self._send_logout()
        if not keep:
            self._closing = True

    def _resolve(self, itt: int, pdu: Pdu) -> None:
        fut = self._waiters.pop(itt, None)
        if fut is not None and not fut.done():
            fut.set_result(pdu)

    def _finish(self, cmd: _Cmd, result: CommandResult) -> None:
        if not cmd.future.done():
            cmd.future.set_result(result)

    def _fail_all(self, exc: Exception) -> None:
        for cmd in list(self._cmds.values()):
            if not cmd.future.done():
                cmd.future.set_exception(exc)
        for fut in list(self._waiters.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    def _lost(self, exc: BaseException) -> None:
        self._connected.clear()
        if self._writer is not None:
            self._writer.close()
        self._fail_all(exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc)))
        if self._nop_task is not None:
            self._nop_task.cancel()
        if not self._closing:
            self.log.warning("initiator_connection_lost", error=str(exc))
            if self.config.reconnect and self.target_name is not None:
                self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        delays = self.config.reconnect_backoff
        attempt = 0
        while not self._closing:
            await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
            attempt += 1
            self.tsih = 0  # session reinstatement: same ISID, new session (RFC 7143 §6.3.5)
            try:
                await asyncio.wait_for(self._connect_once(), self.config.login_timeout)
                self.log.info("initiator_reconnected", attempts=attempt)
                return
            except (OSError, IscsiError, asyncio.TimeoutError) as exc:
                self.log.info("initiator_reconnect_failed", attempt=attempt, error=str(exc))

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.nop_interval / 2)
            if time.monotonic() - self._last_rx >= self.config.nop_interval:
                try:
                    await self.ping()
                except (asyncio.TimeoutError, IscsiError):
                    self._lost(ConnectionLost("target did not answer NOP-Out"))
                    return

    # --- SCSI helpers ------------------------------------------------------------------------

    async def test_unit_ready(self, lun: int) -> CommandResult:
        return await self.execute(lun, bytes(6))

    async def clear_unit_attentions(self, lun: int, limit: int = 10) -> None:
        """TEST UNIT READY until no unit attention is pending (a fresh nexus starts with one)."""
        for _ in range(limit):
            r = await self.test_unit_ready(lun)
            if r.status == RESERVATION_CONFLICT:
                return  # UAs are reported before conflicts (SAM-5), so none is left; another holds the LU
            if r.status != CHECK_CONDITION or r.sense is None or r.sense.key != 0x6:
                r.check()
                return
        raise IscsiError(f"more than {limit} unit attentions on LUN {lun}")

    async def inquiry(self, lun: int, page: int | None = None, alloc: int = 255) -> bytes:
        cdb = bytes([0x12, 0 if page is None else 1, page or 0]) + alloc.to_bytes(2, "big") + b"\0"
        return (await self.execute(lun, cdb, read_length=alloc)).check().data

    async def report_luns(self) -> list[int]:
        from sanlab.scsi.lun import decode_lun
        alloc = 16 + 8 * 1024
        cdb = bytes([0xA0, 0, 0, 0, 0, 0]) + alloc.to_bytes(4, "big") + b"\0\0"
        data = (await self.execute(0, cdb, read_length=alloc)).check().data
        n = int.from_bytes(data[:4], "big") // 8
        return [decode_lun(data[8 + 8 * i:16 + 8 * i]) for i in range(n)]

    async def read_capacity16(self, lun: int) -> tuple[int, int]:
        """(number of blocks, block size)."""
        cdb = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + b"\0\0"
        data = (await self.execute(lun, cdb, read_length=32)).check().data
        last, bs = struct.unpack_from(">QI", data)
        return last + 1, bs

    async def read16(self, lun: int, lba: int, blocks: int, block_size: int) -> bytes:
        cdb = bytes([0x88, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"
        return (await self.execute(lun, cdb, read_length=blocks * block_size)).check().data

    async def write16(self, lun: int, lba: int, data: bytes | bytearray | memoryview, block_size: int,
                      fua: bool = False) -> None:
        blocks = len(data) // block_size
        cdb = bytes([0x8A, 0x08 if fua else 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"
        (await self.execute(lun, cdb, data_out=data)).check()

    async def synchronize_cache16(self, lun: int) -> None:
        (await self.execute(lun, bytes([0x91]) + bytes(15))).check()

    async def reserve6(self, lun: int) -> CommandResult:
        return await self.execute(lun, bytes([0x16, 0, 0, 0, 0, 0]))

    async def release6(self, lun: int) -> CommandResult:
        return await self.execute(lun, bytes([0x17, 0, 0, 0, 0, 0]))

    async def persistent_reserve_in(self, lun: int, service_action: int, alloc: int = 8192) -> CommandResult:
        cdb = bytes([0x5E, service_action & 0x1F]) + bytes(5) + alloc.to_bytes(2, "big") + b"\0"
        return await self.execute(lun, cdb, read_length=alloc)

    async def persistent_reserve_out(self, lun: int, service_action: int, pr_type: int, key: int,
                                     sa_key: int = 0, flags: int = 0) -> CommandResult:
        params = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(4) + bytes([flags, 0, 0, 0])
        cdb = bytes([0x5F, service_action & 0x1F, pr_type & 0x0F, 0, 0]) + len(params).to_bytes(4, "big") + b"\0"
        return await self.execute(lun, cdb, data_out=params)

    async def compare_and_write(self, lun: int, lba: int, verify: bytes, write: bytes, block_size: int) -> CommandResult:
        blocks = len(verify) // block_size
        cdb = bytes([0x89, 0]) + lba.to_bytes(8, "big") + bytes(3) + bytes([blocks, 0, 0])
        return await self.execute(lun, cdb, data_out=verify + write)

    async def unmap(self, lun: int, ranges: list[tuple[int, int]]) -> CommandResult:
        descs = b"".join(lba.to_bytes(8, "big") + n.to_bytes(4, "big") + bytes(4) for lba, n in ranges)
        params = (len(descs) + 6).to_bytes(2, "big") + len(descs).to_bytes(2, "big") + bytes(4) + descs
        cdb = bytes([0x42, 0]) + bytes(5) + len(params).to_bytes(2, "big") + b"\0"
        return await self.execute(lun, cdb, data_out=params)


async def discover(host: str, port: int, config: InitiatorConfig | None = None) -> list[tuple[str, list[str]]]:
    """Log in to a discovery session, SendTargets=All, log out."""
    s = IscsiSession(host, port, None, config)
    await s.connect()
    try:
        return await s.discover()
    finally:
        await s.logout()

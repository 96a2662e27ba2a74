"""Links between arrays: one iSCSI session from this array to each remote, watched (issue 14).

A **remote** (:class:`Remote`) is a named peer array: its portals, the target name it serves
replication on, and the CHAP secrets of the login (this array's, and the peer's own for mutual
CHAP).  A **link** (:class:`Link`) is this array's own initiator (:mod:`sanlab.target.initiator`)
logged in to that target, kept open by a small task that runs under the array's background-task
supervisor (kind ``link``, one task per remote):

* it logs in, trying the remote's portals in their order;
* while logged in it pings the target (NOP-Out) every ``ping_interval`` seconds: a peer that is
  killed closes the TCP connection and the next ping fails at once, and a peer that hangs without
  closing it fails the ping after ``ping_timeout`` — either way the link goes down with the reason;
* when down it logs in again with a bounded backoff (1 s, 2 s, 4 s, 8 s, then every 10 s), from
  the first delay again after each successful login;
* asked to stop (shutdown, ``sanlab remote delete``) it logs out, or abandons a login in progress.

Every change of state (up/down, or the reason of a down link) is kept with the wall-clock time of
the last up/down change (:class:`LinkState`, shown by ``sanlab remote display``) and logged as one
structured event, ``link_up`` or ``link_down``, with the remote's name and the reason.

The session itself is the initiator's, with its own reconnect turned off: the link decides when to
log in again, so that each loss and each failed login is seen, reported and paced here.  Pairs will
send their S-VOL data and control commands on :attr:`Link.session`.

Secrets never leave this module in a readable form: :class:`Remote`'s repr leaves the credentials
out, and no log line or reason names them (a refused login's reason is the target's status).
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, TypeVar

import structlog

from sanlab.storage.external import stable_isid
from sanlab.target.chap import ChapCredentials
from sanlab.target.errors import LoginStatus
from sanlab.target.initiator import (
    CommandTimeout, ConnectionLost, InitiatorConfig, IscsiError, IscsiSession, LoginFailed,
)

log = structlog.get_logger("sanlab.replication.link")

_T = TypeVar("_T")


def format_portal(host: str, port: int) -> str:
    """``("127.0.0.2", 3260)`` → ``"127.0.0.2:3260"``; an IPv6 address in brackets (``[::1]:3260``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def utc_now() -> datetime:
    """The wall clock, in UTC: what ``since`` is shown in."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Remote:
    """A named peer array: where it is, which of its targets replication logs in to, and how."""

    name: str
    portals: tuple[tuple[str, int], ...]
    """(host, port) of each portal, tried in this order at each login."""
    target: str
    """The peer's target name (IQN) used for replication."""
    chap: ChapCredentials | None = field(default=None, repr=False)
    """This array's CHAP name and secret toward the peer's target (None: no authentication).
    Out of the repr, like :attr:`mutual_chap`: a log line or traceback showing a Remote must not
    carry a secret."""
    mutual_chap: ChapCredentials | None = field(default=None, repr=False)
    """The name and secret the peer's target must prove (mutual CHAP), or None."""

    def portal_texts(self) -> list[str]:
        """The portals as ``HOST:PORT`` text."""
        return [format_portal(h, p) for h, p in self.portals]


@dataclass(frozen=True, slots=True)
class LinkState:
    """Where a link is: up or down, why, and since when (the last change between up and down)."""

    up: bool
    reason: str
    """Down: why (refused, unreachable, authentication failed, ...); up: the portal logged in to."""
    since: datetime
    """When the link last went up or down (for a link never up: when it was started)."""

    def describe(self) -> dict[str, Any]:
        """``link`` (``up``/``down``), ``reason`` and ``since`` (ISO 8601, UTC, seconds)."""
        return {"link": "up" if self.up else "down", "reason": self.reason,
                "since": self.since.isoformat(timespec="seconds")}


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How a link logs in, watches its session and waits between attempts (seconds)."""

    login_timeout: float = 5.0
    """A login that takes longer fails (and is tried again after the backoff)."""
    ping_interval: float = 1.0
    """Seconds between NOP-Out pings while up: how soon a lost connection is seen."""
    ping_timeout: float = 5.0
    """A ping unanswered this long takes the link down (a peer that hangs without closing)."""
    command_timeout: float = 10.0
    """The session's command timeout (for the commands pairs will send on it)."""
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 10.0)
    """Delays before the 1st, 2nd, ... login attempt after a failure or a loss; the last repeats."""


class _Stopped(Exception):
    """The link was asked to stop while it waited."""


def describe_failure(portal: str, exc: BaseException) -> str:
    """The reason a login to (or a session with) ``portal`` failed, in an administrator's words.

    A refused login says what the target answered (authentication failed is spelled out, since
    that is the one an administrator fixes by hand); the rest says what the network did.
    """
    if isinstance(exc, LoginFailed):
        status = exc.login_status
        if status == LoginStatus.AUTHENTICATION_FAILURE:
            return f"authentication failed at {portal} (login status 0x{status:04x}; check the CHAP names and secrets)"
        if status == LoginStatus.AUTHORIZATION_FAILURE:
            return f"not authorized at {portal} (login status 0x{status:04x}; the peer's ACL)"
        if status == LoginStatus.NOT_FOUND:
            return f"no such target at {portal} (login status 0x{status:04x})"
        return f"login refused at {portal}: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {portal}"
    if isinstance(exc, CommandTimeout):
        return f"no answer from {portal}: {exc}"
    if isinstance(exc, ConnectionLost):
        return f"connection to {portal} lost: {exc}"
    if isinstance(exc, OSError):
        return f"cannot reach {portal}: {exc.strerror or exc}"
    return f"{portal}: {type(exc).__name__}: {exc}"


class Link:
    """The session from this array to one remote, kept open by :meth:`run` (a supervised task)."""

    def __init__(self, remote: Remote, initiator_name: str, settings: LinkSettings | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.remote = remote
        self.initiator_name = initiator_name
        """This array's iSCSI name as an initiator."""
        self.settings = settings or LinkSettings()
        self.clock = clock
        """The wall clock (passed in, so tests can pin ``since``)."""
        self.stop_event = asyncio.Event()
        """Set to make :meth:`run` log out and return (the supervisor's stop request)."""
        self._state = LinkState(False, "not logged in yet", clock())
        self._session: IscsiSession | None = None
        self._changed = asyncio.Event()
        """Set (and replaced by a fresh one) at each change of state: what :meth:`wait_state` waits on."""

    @property
    def name(self) -> str:
        """The remote's name."""
        return self.remote.name

    @property
    def state(self) -> LinkState:
        """The link's state now."""
        return self._state

    @property
    def session(self) -> IscsiSession | None:
        """The logged-in session while the link is up, else None (what pairs send their commands on)."""
        return self._session if self._state.up else None

    async def wait_state(self, up: bool, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the link to be up (or down); whether it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._state.up != up:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def _set(self, up: bool, reason: str) -> None:
        """Record a state and log it, when it differs from the one before (up/down, or the reason)."""
        old = self._state
        if old.up == up and old.reason == reason:
            return
        since = self.clock() if old.up != up else old.since
        self._state = LinkState(up, reason, since)
        if up:
            log.info("link_up", remote=self.name, target=self.remote.target, reason=reason)
        elif self.stop_event.is_set():  # asked for (shutdown, remote deleted): nothing to warn about
            log.info("link_down", remote=self.name, target=self.remote.target, reason=reason)
        else:
            log.warning("link_down", remote=self.name, target=self.remote.target, reason=reason)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _initiator_config(self) -> InitiatorConfig:
        s = self.settings
        # The ISID stays the same across restarts, so a new login reinstates (ends) the session an
        # array killed before left on the peer (RFC 7143 §6.3.5) instead of leaving it to time out.
        return InitiatorConfig(initiator_name=self.initiator_name,
                               isid=stable_isid(self.initiator_name, f"remote:{self.name}"),
                               chap=self.remote.chap, target_chap=self.remote.mutual_chap,
                               login_timeout=s.login_timeout, command_timeout=s.command_timeout,
                               nop_interval=0.0,  # the link pings itself, on its own schedule
                               nop_timeout=s.ping_timeout, reconnect=False)

    async def _until_stopped(self, work: Awaitable[_T]) -> _T:
        """``work``'s result, or :class:`_Stopped` (``work`` cancelled) once :attr:`stop_event` is set."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait([task])  # its end, without raising what it raised
        if task.cancelled():
            raise _Stopped
        return task.result()

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise :class:`_Stopped` as soon as the link is asked to stop."""
        if self.stop_event.is_set():
            raise _Stopped
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        if self.stop_event.is_set():
            raise _Stopped

    async def _login(self) -> tuple[IscsiSession | None, str]:
        """Log in through the first portal that lets us: (session, its portal) or (None, why not)."""
        reasons = []
        for host, port in self.remote.portals:
            portal = format_portal(host, port)
            session = IscsiSession(host, port, self.remote.target, self._initiator_config())
            try:
                await self._until_stopped(session.connect())
                return session, portal
            except _Stopped:
                await session.close()
                raise
            except (OSError, IscsiError) as exc:
                await session.close()
                reasons.append(describe_failure(portal, exc))
        return None, "; ".join(reasons)

    async def _watch(self, session: IscsiSession, portal: str) -> str:
        """Ping until the session fails; why it did."""
        while True:
            await self._sleep(self.settings.ping_interval)
            try:
                await self._until_stopped(session.ping())
            except (OSError, IscsiError) as exc:
                # A ping sent after the loss only hears "not connected": the loss itself says why.
                cause = session.last_error if isinstance(exc, ConnectionLost) and session.last_error else exc
                return describe_failure(portal, cause)

    async def run(self) -> None:
        """Keep a session to the remote open until :attr:`stop_event` is set (the supervised task)."""
        attempt = 0
        session: IscsiSession | None = None
        try:
            while True:
                session, where = await self._login()
                if session is None:
                    self._set(False, where)
                    await self._sleep(self.settings.backoff[min(attempt, len(self.settings.backoff) - 1)])
                    attempt += 1
                    continue
                self._session = session
                self._set(True, f"logged in to {where}")
                reason = await self._watch(session, where)
                self._session = None
                await session.close()
                session = None
                self._set(False, reason)
                attempt = 0
                await self._sleep(self.settings.backoff[0])
                attempt = 1
        except _Stopped:
            pass
        finally:
            self._session = None
            self._set(False, "stopped")
            if session is not None:
                # Asked to stop while logged in: log out (bounded by the initiator's 5 s wait).
                with contextlib.suppress(IscsiError, OSError):
                    await session.logout()
                await session.close()

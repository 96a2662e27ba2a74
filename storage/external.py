"""External volumes: a LUN of another iSCSI target used as this array's real volume.

Seed 000 (claims 1-16) and seed 002 (storage control device 40): the array
reaches the peer as an initiator (:mod:`sanlab.target.initiator`), and reads
and writes pass through.  Failures are bounded in time: every command has a
timeout, after which the host's command fails instead of hanging; the session
reconnects in the background and service resumes when the peer is back.

Failures are typed (:mod:`sanlab.storage.peer`): :class:`PeerRefused` when the
peer answered (its status and sense kept on the exception), :class:`PeerUnreachable`
when it did not and the outcome is unknown.  Both are VolumeErrors, which the
device server turns into MEDIUM ERROR for the host, as before; why the peer's
own sense is not forwarded is said in :mod:`sanlab.storage.peer`.

Reserve-based locking (seed 000, claims 14-15): while the array serves a host
request from the external volume it can hold an SPC-2 reservation on the peer
LUN so that a second host logged in to the peer directly gets RESERVATION
CONFLICT.  Modes: ``off``; ``per-request`` — RESERVE when the first request
starts, RELEASE when the last in flight ends; ``held`` — reserved from open to
close.  The array's ISID is derived from its name and the volume, so after a
restart the same I_T nexus logs in again: the peer's session reinstatement (or
I_T nexus loss) drops a stale reservation, never leaving a lock behind.
"""
from __future__ import annotations

import asyncio
import enum
import hashlib
from typing import Any, Awaitable, Protocol

import structlog

from sanlab.scsi.task import ScsiStatus
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable, with_context
from sanlab.storage.volume import VolumeError
from sanlab.storage.emulated import EmulatedBlockOps

log = structlog.get_logger("sanlab.storage.external")


class PeerResult(Protocol):
    """A command's answer (``sanlab.target.initiator.CommandResult``)."""

    status: int

    def check(self) -> Any:
        """Raise the PeerRefused for a status other than GOOD."""
        ...


class PeerLun(Protocol):
    """What the volume needs from the initiator session (``sanlab.target.initiator.IscsiSession``).

    Injected by the caller so that ``storage`` does not import ``target``
    (ARCHITECTURE.md import direction).  Its failures are :class:`PeerRefused` or
    :class:`PeerUnreachable` (the initiator's errors subclass them).
    """

    async def connect(self) -> None:
        """Log in (and keep logged in: the session reconnects)."""

    async def logout(self) -> None:
        """Log out and close the connection."""

    async def clear_unit_attentions(self, lun: int, limit: int = 10) -> None:
        """TEST UNIT READY until no unit attention is pending (at most ``limit`` times)."""

    async def read_capacity16(self, lun: int) -> tuple[int, int]:
        """(number of blocks, block size) from READ CAPACITY(16)."""

    async def read16(self, lun: int, lba: int, blocks: int, block_size: int) -> bytes:
        """READ(16) of ``blocks`` blocks at ``lba``."""

    async def write16(self, lun: int, lba: int, data: bytes | bytearray | memoryview, block_size: int,
                      fua: bool = False) -> None:
        """WRITE(16) of ``data`` (whole blocks) at ``lba``."""

    async def synchronize_cache16(self, lun: int) -> None:
        """SYNCHRONIZE CACHE(16) of the whole LU."""

    async def reserve6(self, lun: int) -> Any:
        """RESERVE(6): the SPC-2 reservation; its result tells GOOD from RESERVATION CONFLICT."""

    async def release6(self, lun: int) -> Any:
        """RELEASE(6) of our SPC-2 reservation."""


def stable_isid(initiator_name: str, volume: str) -> int:
    """A random-type ISID (RFC 7143 §11.12.5, type 10b) that stays the same across restarts."""
    return (0x80 << 40) | int.from_bytes(hashlib.sha256(f"{initiator_name}/{volume}".encode()).digest()[:3],
                                         "big") << 16


class LockMode(enum.Enum):
    """Reserve-based locking of the peer's LUN: none, around each request, or held while open."""

    OFF = "off"
    PER_REQUEST = "per-request"
    HELD = "held"


class ExternalVolume(EmulatedBlockOps):
    """A peer array's LUN as a volume."""

    def __init__(self, name: str, session: PeerLun, lun: int, *, lock: LockMode = LockMode.OFF,
                 errors: tuple[type[BaseException], ...] = (Exception,), ordered_by_caller: bool = False) -> None:
        self.name = name
        self.lun = lun
        self.lock = lock
        self.session = session
        self.errors = errors
        self.ordered_by_caller = ordered_by_caller
        """The only user already holds every range it reads or writes (a pair volume's mirror):
        no second range lock per command."""
        """Other exceptions of the session that mean the command failed (OSError, a bug's): the
        outcome is unknown, so they become :class:`PeerUnreachable`."""
        self._block_size = 512
        self._num_blocks = 0
        self._active = 0
        self._reserve_lock = asyncio.Lock()
        self._reserved = False
        self.log = log.bind(volume=name, lun=lun)

    async def open(self) -> None:
        """Log in, learn the geometry, take the lock in ``held`` mode."""
        await self._call(self.session.connect())
        await self._call(self.session.clear_unit_attentions(self.lun))
        self._num_blocks, self._block_size = await self._call(self.session.read_capacity16(self.lun))
        if self.lock is LockMode.HELD:
            await self._reserve()
        self.log.info("external_volume_open", blocks=self._num_blocks, block_size=self._block_size,
                      lock=self.lock.value)

    @property
    def block_size(self) -> int:
        """The peer LUN's logical block length (learnt at open)."""
        return self._block_size

    @property
    def num_blocks(self) -> int:
        """The peer LUN's capacity in blocks (learnt at open)."""
        return self._num_blocks

    # --- locking ---------------------------------------------------------------------------------

    async def _reserve(self) -> None:
        r = await self._call(self.session.reserve6(self.lun))
        if r.status == ScsiStatus.RESERVATION_CONFLICT:
            raise PeerRefused(f"external volume {self.name}: the peer LUN is reserved by someone else",
                              status=r.status)
        self._check(r)
        self._reserved = True

    async def _release(self) -> None:
        if self._reserved:
            self._reserved = False
            self._check(await self._call(self.session.release6(self.lun)))

    async def _enter(self) -> None:
        if self.lock is not LockMode.PER_REQUEST:
            return
        async with self._reserve_lock:
            if self._active == 0 or not self._reserved:
                await self._reserve()
            self._active += 1

    async def _leave(self) -> None:
        if self.lock is not LockMode.PER_REQUEST:
            return
        async with self._reserve_lock:
            self._active -= 1
            if self._active == 0:
                await self._release()

    # --- I/O -------------------------------------------------------------------------------------------

    def _check(self, result: PeerResult) -> None:
        """Raise the peer's refusal of a command that did not end GOOD, naming this volume."""
        try:
            result.check()
        except PeerFailure as exc:
            raise with_context(exc, f"external volume {self.name}") from exc

    def _failure(self, exc: BaseException) -> BaseException:
        """A session call's failure as PeerRefused or PeerUnreachable naming this volume (others as they are)."""
        if isinstance(exc, PeerFailure):
            return with_context(exc, f"external volume {self.name}")
        if isinstance(exc, VolumeError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            return PeerUnreachable(f"external volume {self.name}: the peer did not answer in time")
        if isinstance(exc, self.errors):
            return PeerUnreachable(f"external volume {self.name}: {exc!r}")
        return exc

    async def _call(self, aw: Awaitable[Any]) -> Any:
        """Await a session call; its failure as PeerRefused or PeerUnreachable naming this volume."""
        try:
            return await aw
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = self._failure(exc)
            if failure is exc:
                raise
            raise failure from (None if isinstance(exc, asyncio.TimeoutError) else exc)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        await self._call(self._enter())
        try:
            data = await self._call(self.session.read16(self.lun, lba, nblocks, self._block_size))
        finally:
            await self._call(self._leave())
        assert isinstance(data, bytes)
        return data

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if self.lock is not LockMode.PER_REQUEST:  # nothing to take per request: one await less each way
            await self._call(self.session.write16(self.lun, lba, data, self._block_size, fua=fua))
            return
        await self._call(self._enter())
        try:
            await self._call(self.session.write16(self.lun, lba, data, self._block_size, fua=fua))
        finally:
            await self._call(self._leave())

    async def read(self, lba: int, nblocks: int) -> bytes:
        """READ(16) from the peer, range-checked here first (a bad range is ours, not the peer's)."""
        if lba < 0 or nblocks < 0 or lba + nblocks > self._num_blocks:
            raise VolumeError(f"range {lba}+{nblocks} outside volume of {self._num_blocks} blocks")
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self._raw_read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """WRITE(16) to the peer under an exclusive range hold (COMPARE AND WRITE emulation relies on it)."""
        n = len(data) // self._block_size
        if len(data) % self._block_size or lba < 0 or lba + n > self._num_blocks:
            raise VolumeError(f"write of {len(data)} bytes at {lba} does not fit the external volume")
        if self.ordered_by_caller:
            await self._raw_write(lba, data, fua)
            return
        async with self.range_lock.hold(lba, n):
            await self._raw_write(lba, data, fua)

    def write_started(self, lba: int, data: bytes | bytearray | memoryview,
                      fua: bool = False) -> asyncio.Future[None] | None:
        """:meth:`write` for a caller that orders its writes itself (``ordered_by_caller``: a pair's
        P-VOL), begun without a coroutine: the WRITE(16) goes out in this loop turn, and the future
        ends as :meth:`write` would (failing with PeerRefused or PeerUnreachable naming this
        volume).  None when it cannot begin so (a reservation per request, a session without
        ``write16_started``, not connected now): then :meth:`write`."""
        started = getattr(self.session, "write16_started", None)
        if started is None or not self.ordered_by_caller or self.lock is LockMode.PER_REQUEST:
            return None
        n = len(data) // self._block_size
        if len(data) % self._block_size or lba < 0 or lba + n > self._num_blocks:
            raise VolumeError(f"write of {len(data)} bytes at {lba} does not fit the external volume")
        first: asyncio.Future[Any] | None = started(self.lun, lba, data, self._block_size, fua)
        if first is None:
            return None
        done: asyncio.Future[None] = first.get_loop().create_future()

        def ended(f: asyncio.Future[Any]) -> None:
            if done.done():
                return
            if f.cancelled():
                done.cancel()
            elif (exc := f.exception()) is not None:
                done.set_exception(self._failure(exc))
            else:
                done.set_result(None)

        first.add_done_callback(ended)
        return done

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """COMPARE AND WRITE run at the peer, where it is atomic against the peer's other writers
        (the emulation would be atomic only against this array's); MISCOMPARE's INFORMATION is the
        offset of the first difference (SBC-3 §5.2)."""
        native = getattr(self.session, "compare_and_write", None)
        if native is None or fua:
            return await super().compare_and_write(lba, verify, data, fua=fua)
        for _ in range(5):  # a unit attention on this session (a reset at the peer) is not the answer
            result = await self._call(native(self.lun, lba, bytes(verify), bytes(data), self._block_size))
            sense = getattr(result, "sense", None)
            if sense is None or sense.key != 0x06:
                break
        if sense is not None and sense.key == 0x0E:  # MISCOMPARE
            return int(sense.information or 0)
        self._check(result)
        return None

    async def flush(self) -> None:
        """SYNCHRONIZE CACHE(16) at the peer."""
        await self._call(self.session.synchronize_cache16(self.lun))

    async def close(self) -> None:
        """Release a held reservation (a failure is logged) and log out."""
        try:
            await self._release()
        except VolumeError as exc:
            self.log.warning("external_release_failed", error=str(exc))
        await self.session.logout()

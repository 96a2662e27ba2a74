"""A pair half as the logical unit sees it: the volume wrapper of synchronous remote copy.

One module past 700 lines, on purpose: the write rules, the activity log and the copy mover share
one set of track states (``_active``, ``_entering``, ``_unmirrored``, ``_inflight``) whose
invariants are only checkable read together; the fast path mirrors the task path beside it.

A :class:`PairVolume` stands in front of the local volume of a pair (P-VOL or S-VOL; swapped
into the LU's slot under a quiesce, ``LogicalUnit.swap_volume``).  Every host write goes through
it — the device server's fast path too (:meth:`PairVolume.write_pooled`, :meth:`PairVolume.write_nowait`)
— and gets the rule
:func:`~sanlab.replication.states.host_write` gives for the half's role, state and fence:

* **mirror** (P-VOL in COPY/PAIR): the write lands on the local volume and on the S-VOL (the
  *mirror*, a volume on the peer reached through the array's initiator) concurrently, and the host
  hears GOOD only when both have it.  During COPY a track still marked different is written
  locally only: the copy mover sends it when it gets there (seed 004's copy pointer: ahead of the
  pointer writes land locally, behind it they are mirrored).
* **record**: the write lands locally and its tracks are marked different, durably first.
* **protected** / **fenced**: CHECK CONDITION (DATA PROTECT / WRITE PROTECTED; NOT READY /
  MANUAL INTERVENTION REQUIRED while the fence holds), nothing written.

A mirrored write whose S side fails is judged by the failure's type (storage/peer.py): *refused*
(the peer answered with an error) fails the host write whatever the fence — the peer has told us
it does not hold the data; *unreachable* (no answer, outcome unknown) suspends the pair (PSUE)
and the fence level decides (:func:`~sanlab.replication.states.on_mirror_lost`).  Either way the
tracks stay marked, so a resync sends them.

The difference bitmap (one bit per *track* of :data:`TRACK_BYTES`) is a
:class:`~sanlab.storage.bitmap.PersistentBitmap`.  Flush order: a track's bit is made durable
*before* any write to it starts, whether the write is recorded or mirrored.  For mirrored writes
the bit works as an activity log (DRBD's): it stays set while the track is among the
:data:`ACTIVE_TRACKS` most recently written, and is cleared (lazily) only once the track left
that set with every write to it mirrored.  So a crash of the P array while PAIR leaves at most
those tracks marked — the resync after the restart sends them, never the whole volume — and no
track that might differ is ever unmarked.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Awaitable, Callable

import structlog

from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.states import Event, LostMirror, Transition, WriteRule, host_write, on_mirror_lost, step
from sanlab.scsi.sense import Asc, ScsiError, SenseKey
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.emulated import EmulatedBlockOps
from sanlab.storage.external import ExternalVolume
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable
from sanlab.storage.range_lock import Holder
from sanlab.storage.volume import NowaitIO, SpaceExhausted, Volume, VolumeError

log = structlog.get_logger("sanlab.replication.pair")

TRACK_BYTES = 64 * 1024
"""Difference-bitmap granularity: one bit per 64 KiB of the volume (the extent, for extent pairs).
A 1 TiB volume needs a 2 MiB bitmap; a 4 KiB write dirties one track, so a resync after it sends
64 KiB."""

ACTIVE_TRACKS = 4096
"""Tracks whose bits stay set while writes to them are mirrored (the activity log, 256 MiB of hot
area): a track costs one fdatasync when it enters the set, none per write after that.  Larger costs
more after a crash (at most this many tracks are resent); smaller costs an fdatasync on more writes
(bench/pairs: with 256 tracks, random 4 KiB writes over 64 MiB paid one on most writes)."""


@dataclass(slots=True)
class PairHalf:
    """What this array knows of its half of a pair (the catalog row)."""

    name: str
    role: PairRole
    state: PairState
    fence: FenceLevel
    extent_start: int = 0
    """First block of the mirrored area (extent pairs, seed 004); 0 for a whole volume."""
    extent_blocks: int = 0
    """Blocks in the mirrored area; 0 for the whole volume."""
    s_writable: bool = False
    """An S side split with ``--rw``."""
    fence_released: bool = False
    """A P-VOL takeover lifted the fence (until the next resync)."""
    peer_marked: bool = False
    """Under fence ``status``: the S side acknowledged being marked suspended."""
    reason: str = ""
    """Why the pair is suspended (PSUE), for ``pair display``."""
    peer_initiator: str = ""
    """S side: the iSCSI name of the P array's initiator, the one nexus that writes in COPY/PAIR."""
    bidirectional: bool = False
    """Hosts write at both arrays (seed 001): the S side forwards its hosts' writes to the P-VOL."""


_writer: ContextVar[str] = ContextVar("pair_writer", default="")
"""The initiator of the write command being run (set by the write gate, which the device server
calls in the command's own task just before the handler): a bidirectional S-VOL tells its hosts'
writes, which it forwards, from its P array's, which it stores."""

StateHook = Callable[[PairHalf, Transition], Awaitable[None]]
"""Called after every transition the volume itself makes (suspension by error): persist it."""
MarkPeer = Callable[[], Awaitable[bool]]
"""Tell the S side it is suspended (fence ``status``); True when it acknowledged."""
Diverge = Callable[[], Awaitable[None]]
"""Called before a write the other half cannot see lands (a P-VOL in PSUE, an S-VOL serving on its
own): the owner starts a new generation id, so a later swap can tell a split brain."""


def _failure_of(fut: asyncio.Future[None]) -> BaseException | None:
    """A finished future's exception (a CancelledError when it was cancelled), None when it succeeded."""
    return asyncio.CancelledError() if fut.cancelled() else fut.exception()


def _settle(dst: asyncio.Future[None], src: asyncio.Future[None]) -> None:
    """Give ``dst`` the outcome of ``src`` (unless the one waiting on ``dst`` gave up)."""
    if not dst.done():
        failure = _failure_of(src)
        if isinstance(failure, asyncio.CancelledError):
            dst.cancel()
        elif failure is not None:
            dst.set_exception(failure)
        else:
            dst.set_result(None)


def _fenced() -> ScsiError:
    # NOT READY / LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED (02h/04h/03h): the write
    # fails until an operator resynchronises or takes the P-VOL over (fence data/status).
    return ScsiError(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_MANUAL_INTERVENTION_REQUIRED)


class PairVolume(EmulatedBlockOps):
    """The local volume of a pair half, wrapped with the pair's write rules."""

    def __init__(self, half: PairHalf, local: Volume, bitmap: PersistentBitmap, *,
                 mirror: Volume | None = None, on_transition: StateHook | None = None,
                 mark_peer: MarkPeer | None = None, on_diverge: Diverge | None = None) -> None:
        self.half = half
        self.local = local
        self._nowait: NowaitIO | None = local if isinstance(local, NowaitIO) else None
        """The local volume's page-cache I/O, if it has one (a Protocol's isinstance is slow: once)."""
        self.mirror = mirror
        """The S-VOL on the peer (P side only; None while no session to it exists)."""
        self.forward: Callable[[], Awaitable[Volume]] | None = None
        """S side of a bidirectional pair: the P-VOL on the peer (opened on first use)."""
        self.bitmap = bitmap
        self.track_blocks = max(1, TRACK_BYTES // local.block_size)
        self._on_transition = on_transition
        self._mark_peer = mark_peer
        self._on_diverge = on_diverge
        self._active: OrderedDict[int, None] = OrderedDict()
        self._entering: dict[int, asyncio.Future[None]] = {}
        """Tracks in the activity log whose bit is on its way to the disk: a write to one waits
        for it, and none of them counts as a difference to copy meanwhile."""
        self._inflight: dict[int, int] = {}
        """Track → mirrored writes to it running now (their bit must stay set)."""
        self._unmirrored: set[int] = set()
        """Active tracks that also took a write not mirrored: their bit is a real difference."""
        self.copied_bytes = 0
        """Bytes the last initial copy or resync sent."""
        self._writes_in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._open = asyncio.Event()
        self._open.set()
        """Cleared while a consistency group moves all its pairs at one point (:meth:`hold`)."""
        self._holds = 0
        """Holds not released yet: they nest (a swap holds across a journal's own hold and release)."""

    @property
    def thin(self) -> bool:
        """As the volume wrapped: wrapping a thin volume must not take back what hosts were told
        (LBPME, SBC-3 §4.7.3); UNMAP stays allowed and runs as zeros through this volume's write
        rules (EmulatedBlockOps.unmap), so it reaches every copy and reads back as zeros (LBPRZ)."""
        return self.local.thin

    def set_local(self, local: Volume) -> None:
        """Stand in front of ``local`` from now on (a relay's virtual volume over the same blocks,
        replication/cascade.py); the caller quiesces the LU first."""
        self.local = local
        self._nowait = local if isinstance(local, NowaitIO) else None

    # --- geometry --------------------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        """The local volume's."""
        return self.local.block_size

    @property
    def num_blocks(self) -> int:
        """The local volume's."""
        return self.local.num_blocks

    @property
    def area(self) -> tuple[int, int]:
        """(first block, blocks) of the mirrored area."""
        h = self.half
        return h.extent_start, (h.extent_blocks or self.num_blocks - h.extent_start)

    def tracks(self, lba: int, nblocks: int) -> range:
        """The bitmap units ``[lba, lba + nblocks)`` touches inside the mirrored area (maybe none)."""
        start, count = self.area
        lo, hi = max(lba, start), min(lba + nblocks, start + count)
        if lo >= hi:
            return range(0)
        return range((lo - start) // self.track_blocks, (hi - 1 - start) // self.track_blocks + 1)

    def track_range(self, unit: int) -> tuple[int, int]:
        """(first block, blocks) of track ``unit``."""
        start, count = self.area
        first = start + unit * self.track_blocks
        return first, min(self.track_blocks, start + count - first)

    @property
    def pending_bytes(self) -> int:
        """What the bitmap says still differs (``pair display``'s ``pending_bytes``)."""
        marked = sum(1 for t in self.bitmap.set_units() if self._differs(t))
        return marked * self.track_blocks * self.block_size

    # --- state ------------------------------------------------------------------------------------------

    async def apply(self, event: Event, reason: str = "") -> Transition:
        """Move the half by ``event`` (raises InvalidTransition), remember why, tell the hook."""
        h = self.half
        t = step(h.role, h.state, event)
        log.info("pair_state", pair=h.name, role=t.role.label, old=h.state.name, new=t.state.name,
                 cause=event.value, reason=reason or None)
        h.role, h.state = t.role, t.state
        if t.state is PairState.PSUE:
            h.reason = reason or h.reason
        if self._on_transition is not None:
            await self._on_transition(h, t)
        return t

    async def drain(self) -> None:
        """Wait until no host write is running through this volume (split and swap's consistent point)."""
        await self._drained.wait()

    def hold(self) -> None:
        """Make new host writes wait (before their rule is chosen) until :meth:`release`: with every
        pair of a consistency group held and drained, the group changes state at one point of the
        write stream.  Holds nest: writes go on at the last release."""
        self._holds += 1
        self._open.clear()

    def release(self) -> None:
        """Let held writes go on, under the rule of the state they now find (at the last release)."""
        self._holds -= 1
        if self._holds <= 0:
            self._holds = 0
            self._open.set()

    # --- host I/O ----------------------------------------------------------------------------------------

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Reads are always local (both halves answer host reads)."""
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self.local.read(lba, nblocks)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.local.read(lba, nblocks)

    async def _forwarded(self) -> Volume | None:
        """The P-VOL, when this write is a host's at the S side of a bidirectional pair in PAIR.

        Seed 001: such a write goes to the P side first; the P-VOL writes it and mirrors it back
        here (under the P side's range lock, so overlapping writes from both arrays land in one
        order on both copies), and only then is the host answered.  The caller takes no range hold:
        the mirrored-back write takes this volume's range lock.  WRITE SAME, UNMAP and COMPARE AND
        WRITE go the same way (the last atomic at the P side).
        """
        h = self.half
        if (h.bidirectional and h.role is PairRole.S_VOL and h.state is PairState.PAIR
                and self.forward is not None and _writer.get() != h.peer_initiator):
            return await self.forward()
        return None

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """WRITE SAME, forwarded like a write where :meth:`_forwarded` says so."""
        target = await self._forwarded()
        if target is not None:
            await target.write_same(lba, nblocks, block, unmap=unmap, fua=fua)
            return
        await super().write_same(lba, nblocks, block, unmap=unmap, fua=fua)

    async def unmap(self, lba: int, nblocks: int) -> None:
        """UNMAP (zeros here), forwarded like a write where :meth:`_forwarded` says so."""
        target = await self._forwarded()
        if target is not None:
            await target.unmap(lba, nblocks)
            return
        await super().unmap(lba, nblocks)

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """COMPARE AND WRITE; a bidirectional S side's host sends it to the P side, where it is atomic."""
        target = await self._forwarded()
        if target is not None:
            return await target.compare_and_write(lba, verify, data, fua=fua)
        return await super().compare_and_write(lba, verify, data, fua=fua)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """A host write under the pair's rules (module docstring); GOOD only when they are met."""
        target = await self._forwarded()
        if target is not None:
            await target.write(lba, data, fua)
            return
        async with self.range_lock.hold(lba, len(data) // self.block_size):
            await self._raw_write(lba, data, fua)

    # --- the device server's fast path (storage/volume.py NowaitIO) ------------------------------------

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """Reads are local: the local volume's page-cache read, when it offers one."""
        local = self._nowait
        if local is not None and not self.range_lock.would_wait(lba, nblocks, exclusive=False):
            return local.read_nowait(lba, nblocks)
        return None

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """An S-VOL's copy of its P array's write (COPY/PAIR: the write gate let only that nexus
        through) done in the local page cache; every other write goes through the pair's rules
        (mirror, record, refuse) in :meth:`write_pooled` or :meth:`write`."""
        h = self.half
        local = self._nowait
        if (h.role is not PairRole.S_VOL or h.state not in (PairState.COPY, PairState.PAIR) or h.bidirectional
                or not self._open.is_set() or local is None
                or self.range_lock.would_wait(lba, len(data) // self.block_size)):
            return False
        return local.write_nowait(lba, data)

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """The local read, started now (None when an overlapping write holds the range)."""
        if self._nowait is None or self.range_lock.would_wait(lba, nblocks, exclusive=False):
            return None
        return self._nowait.read_pooled(lba, nblocks)

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """:meth:`write` started now as a task holding its range from now on (None when the range
        is held): a P-VOL's host write skips the device server's general path (scsi/sbc.py)."""
        nblocks = len(data) // self.block_size
        h = self.half
        if self.range_lock.would_wait(lba, nblocks) or (h.bidirectional and h.role is PairRole.S_VOL):
            return None  # a bidirectional S-VOL's host writes are forwarded (:meth:`write`)
        mirrored = self._mirror_started(lba, data, nblocks)
        if mirrored is not None:
            return mirrored
        holder = self.range_lock.take(lba, nblocks)

        async def run() -> None:
            try:
                await self._raw_write(lba, data, False)
            finally:
                self.range_lock.give_back(holder)

        return asyncio.ensure_future(run())

    def _mirror_started(self, lba: int, data: bytes | bytearray | memoryview,
                        nblocks: int) -> asyncio.Future[None] | None:
        """A P-VOL's host write in PAIR, mirrored with callbacks only (no task): what most writes
        of a pair are, and what :meth:`_mirrored` does, when its tracks are all in the activity
        log already (no bitmap write to wait for) and the S-VOL's write can go out in this loop
        turn.  The range stays held, and the write counted, until both copies answered and a
        failure was judged (:meth:`_judged`), as on the task path.  None when it does not apply."""
        h = self.half
        mirror = self.mirror
        local = self._nowait
        if (h.role is not PairRole.P_VOL or h.state is not PairState.PAIR or not isinstance(mirror, ExternalVolume)
                or local is None or not self._open.is_set()
                or host_write(h.role, h.state, h.fence, s_writable=h.s_writable, fence_released=h.fence_released,
                              peer_marked=h.peer_marked) is not WriteRule.MIRROR):
            return None
        tracks = self.tracks(lba, nblocks)
        if not tracks:
            return None
        active, unmirrored, entering = self._active, self._unmirrored, self._entering
        for t in tracks:
            if t not in active or t in unmirrored or t in entering:
                return None
        start, count = self.area
        bs = self.block_size
        lo, hi = max(lba, start), min(lba + nblocks, start + count)
        remote = mirror.write_started(lo - start, memoryview(data)[(lo - lba) * bs:(hi - lba) * bs])
        if remote is None:
            return None  # the S-VOL's session is not up now: the task path waits for it
        holder = self.range_lock.take(lba, nblocks)
        inflight = self._inflight
        for t in tracks:
            active.move_to_end(t)
            inflight[t] = inflight.get(t, 0) + 1
        self._writes_in_flight += 1
        self._drained.clear()
        loop = remote.get_loop()
        answer: asyncio.Future[None] = loop.create_future()
        local_io: asyncio.Future[None] | None = None
        local_exc: BaseException | None = None
        try:
            if not local.write_nowait(lba, data):
                local_io = local.write_pooled(lba, data) or asyncio.ensure_future(self.local.write(lba, data))
        except Exception as exc:  # noqa: BLE001 - judged with the S-VOL's answer, as on the task path
            local_exc = exc

        waits = 1 if local_io is None else 2

        def both(_f: asyncio.Future[None]) -> None:
            nonlocal waits
            waits -= 1
            if waits:
                return  # the other copy's answer ends it
            self._leave_inflight(tracks)
            failures = (local_exc if local_io is None else _failure_of(local_io), _failure_of(remote))
            if failures == (None, None):
                self._write_ended(holder)
                if not answer.done():
                    answer.set_result(None)
                return
            judged = loop.create_task(self._judged(*failures, tracks, lba, nblocks))

            def ended(t: asyncio.Future[None]) -> None:
                self._write_ended(holder)
                _settle(answer, t)

            judged.add_done_callback(ended)

        remote.add_done_callback(both)
        if local_io is not None:
            local_io.add_done_callback(both)
        return answer

    def _write_ended(self, holder: Holder) -> None:
        self.range_lock.give_back(holder)
        self._writes_in_flight -= 1
        if not self._writes_in_flight:
            self._drained.set()

    def _leave_inflight(self, tracks: range) -> None:
        inflight = self._inflight
        for t in tracks:
            left = inflight[t] - 1
            if left:
                inflight[t] = left
            else:
                del inflight[t]

    async def _judged(self, local_exc: BaseException | None, remote_exc: BaseException | None, tracks: range,
                      lba: int = 0, nblocks: int = 0) -> None:
        """A mirrored write's end when a copy failed: the tracks stay marked (the copies may
        differ); a local failure is the host's answer, an S-VOL's failure is judged by the fence
        level (:meth:`_mirror_failed`); a cancelled copy (the command aborted) cancels.  When only
        the local write failed, the S-VOL has a write the P-VOL does not: it is sent the P-VOL's
        blocks of the range again first (:meth:`_realign`)."""
        self._unmirrored.update(tracks)
        if isinstance(local_exc, asyncio.CancelledError):
            raise local_exc
        if local_exc is not None:
            if remote_exc is None and nblocks and isinstance(local_exc, (VolumeError, OSError)):
                await self._realign(lba, nblocks)
            raise local_exc
        if isinstance(remote_exc, asyncio.CancelledError):
            raise remote_exc
        if remote_exc is not None:
            await self._mirror_failed(remote_exc)

    def may_write(self, initiator: str) -> None:
        """The LU's write gate (``LogicalUnit.write_gate``): who may write this half now.

        An S-VOL in COPY or PAIR takes writes from its P array's initiator only and refuses the
        hosts' (DATA PROTECT / WRITE PROTECTED, 07h/27h/00h); once it serves on its own (SSWS, or
        SSUS after ``split --rw``) it takes the hosts' and refuses the old primary's, so a P array
        that has not heard of the takeover cannot overwrite what hosts wrote here.  A P-VOL lets
        everyone through: its fence is the write path's (:meth:`write`).
        """
        _writer.set(initiator)
        h = self.half
        if h.role is PairRole.P_VOL:
            return
        from_peer = bool(h.peer_initiator) and initiator == h.peer_initiator
        if h.state in (PairState.COPY, PairState.PAIR):
            # A bidirectional S-VOL in PAIR takes its hosts' writes too (they are forwarded).
            allowed = from_peer or (h.bidirectional and h.state is PairState.PAIR)
        else:
            allowed = not from_peer and host_write(h.role, h.state, h.fence, s_writable=h.s_writable,
                                                   fence_released=h.fence_released) is WriteRule.RECORD
        if not allowed:
            raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if not self._open.is_set():
            await self._open.wait()
        h = self.half
        if h.role is PairRole.S_VOL and h.state in (PairState.COPY, PairState.PAIR):
            # The P array's mirrored or copied write (the write gate let only its nexus through).  A
            # host's write held while this half turned from P-VOL to S-VOL (a swap) passed no gate:
            # it is refused now, as the gate refuses the hosts' writes.
            if not h.peer_initiator or _writer.get() != h.peer_initiator:
                raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
            await self.local.write(lba, data, fua)
            return
        rule = host_write(h.role, h.state, h.fence, s_writable=h.s_writable,
                          fence_released=h.fence_released, peer_marked=h.peer_marked)
        if rule is WriteRule.PROTECTED:
            raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
        if rule is WriteRule.FENCED:
            raise _fenced()
        tracks = self.tracks(lba, len(data) // self.block_size)
        self._writes_in_flight += 1
        self._drained.clear()
        try:
            if rule is WriteRule.MIRROR and self.mirror is not None and tracks:
                await self._mirrored(lba, data, fua, tracks)
            else:
                if self._on_diverge is not None and (h.state is PairState.PSUE or h.role is PairRole.S_VOL):
                    await self._on_diverge()
                await self._recorded(lba, data, fua, tracks)
        finally:
            self._writes_in_flight -= 1
            if not self._writes_in_flight:
                self._drained.set()

    async def _recorded(self, lba: int, data: bytes | bytearray | memoryview, fua: bool, tracks: range) -> None:
        for t in tracks:
            if t in self._active:
                self._unmirrored.add(t)  # its bit is now a real difference, not just the activity log
            else:
                await asyncio.to_thread(self.bitmap.set, t)  # durable before the write starts
        await self._bits_durable(tracks)
        await self.local.write(lba, data, fua)

    async def _mirrored(self, lba: int, data: bytes | bytearray | memoryview, fua: bool, tracks: range) -> None:
        assert self.mirror is not None
        pending_copy = [t for t in tracks if self.bitmap.has(t) and (t not in self._active or t in self._unmirrored)]
        if pending_copy:
            # COPY: tracks the mover has not sent yet land locally; it sends them when it gets there.
            await self._recorded(lba, data, fua, tracks)
            return
        await self._enter_active(tracks)
        for t in tracks:
            self._inflight[t] = self._inflight.get(t, 0) + 1
        try:
            # Both writes at once: the S-VOL's in a task (it waits for the peer), the local one here;
            # cheaper than gather's two tasks, and the slower leg sets the latency either way.
            remote = asyncio.ensure_future(self._send(lba, data, fua))
            local_exc: BaseException | None = None
            try:
                await self.local.write(lba, data, fua)
            except Exception as exc:  # noqa: BLE001 - judged below, after the S-VOL's answer
                local_exc = exc
            except BaseException:
                # Cancelled (the command aborted): what reached either copy is unknown, so the
                # tracks stay marked for the next resync.
                self._unmirrored.update(tracks)
                remote.cancel()
                raise
            remote_exc: BaseException | None = None
            try:
                await remote
            except Exception as exc:  # noqa: BLE001 - typed below (refused / unreachable)
                remote_exc = exc
            results = (local_exc, remote_exc)
        finally:
            self._leave_inflight(tracks)
        if results != (None, None):
            await self._judged(*results, tracks, lba, len(data) // self.block_size)

    async def _realign(self, lba: int, nblocks: int) -> None:
        """The S-VOL took a write the P-VOL could not make (a full filesystem under a thin volume, a
        failing disk; found by the fault matrix's full-filesystem case) and the host is told it
        failed: send the S-VOL what the P-VOL holds in that range now, read back under the write's
        range hold, so the copies agree again.  Should that fail too, the tracks stay marked, as
        for any failed mirrored write (a resync or restart sends them)."""
        try:
            now = await self.local.read(lba, nblocks)
            await self._send(lba, now, False)
        except Exception as exc:  # noqa: BLE001 - logged; the tracks stay marked
            log.error("pair_realign_failed", pair=self.half.name, lba=lba, blocks=nblocks, error=str(exc))
            return
        log.warning("pair_realigned", pair=self.half.name, lba=lba, blocks=nblocks,
                    reason="the P-VOL's write failed after the S-VOL's succeeded")

    async def _send(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        """The part of the write inside the mirrored area, to the S-VOL (at its own block numbers)."""
        assert self.mirror is not None
        start, count = self.area
        bs = self.block_size
        lo, hi = max(lba, start), min(lba + len(data) // bs, start + count)
        view = memoryview(data)[(lo - lba) * bs:(hi - lba) * bs]
        await self.mirror.write(lo - start, view, fua)

    async def _mirror_failed(self, exc: BaseException) -> None:
        h = self.half
        if isinstance(exc, PeerRefused):
            # The peer answered: it does not hold the data.  The host write fails whatever the fence.
            log.warning("pair_mirror_refused", pair=h.name, error=str(exc))
            if h.state in (PairState.COPY, PairState.PAIR):
                # The copies differ on these tracks now: suspended by error as when the peer is lost.
                await self.apply(Event.PEER_LOST, f"S-VOL refused a write: {exc}")
            s = exc.sense
            if s is not None and (s.key, s.asc, s.ascq) == (0x7, 0x27, 0x07):
                # The S-VOL's store is full: the host hears that (DATA PROTECT, SPACE ALLOCATION
                # FAILED WRITE PROTECT, SBC-4 §4.7.3.7), not a medium error of its own array.
                raise SpaceExhausted(f"pair {h.name}: the S-VOL has no room for the write ({exc})") from exc
            raise exc
        if not isinstance(exc, (PeerUnreachable, VolumeError, OSError, asyncio.TimeoutError)):
            raise exc
        lost = await self._lose_peer(f"S-VOL unreachable: {exc}")
        if not lost.acknowledge:
            raise _fenced()

    async def _lose_peer(self, reason: str) -> LostMirror:
        """The S side cannot be reached: suspend (PSUE) and, for fence ``status``, try to mark it."""
        h = self.half
        if h.state in (PairState.COPY, PairState.PAIR):
            await self.apply(Event.PEER_LOST, reason)
            if h.fence is FenceLevel.STATUS and self._mark_peer is not None:
                try:
                    h.peer_marked = await self._mark_peer()
                except (PeerFailure, OSError, asyncio.TimeoutError):
                    h.peer_marked = False
        return on_mirror_lost(h.fence, h.peer_marked)

    async def _enter_active(self, tracks: range) -> None:
        """Put ``tracks`` in the activity log: their bits durable before the write; the oldest leave.

        A track joins the log at once and its bit goes to the disk in the background, so that a
        second write to it meanwhile finds it in the log (and waits for the same bit) instead of
        taking the set bit for a difference still to be copied and writing only locally."""
        active = self._active
        new = []
        for t in tracks:
            if t in active:
                active.move_to_end(t)
            else:
                active[t] = None
                if not self.bitmap.has(t):
                    new.append(t)
        if new:
            durable = asyncio.ensure_future(asyncio.to_thread(self._set_bits, new))
            for t in new:
                self._entering[t] = durable
            durable.add_done_callback(lambda f: self._entered(new, f))
        await self._bits_durable(tracks)
        while len(active) > ACTIVE_TRACKS:
            old = next(iter(active))
            if old in self._inflight or old in self._entering:
                break  # still being written; it leaves on a later write
            del active[old]
            if old in self._unmirrored:
                self._unmirrored.discard(old)  # a real difference: the bit stays for the resync
            else:
                self.bitmap.clear(old)  # lazily: a crash may bring it back, costing one track's copy

    def _set_bits(self, tracks: list[int]) -> None:
        """Mark ``tracks`` and make them durable (one fdatasync for all; the I/O pool runs it)."""
        for t in tracks:
            self.bitmap.mark(t)
        self.bitmap.flush()

    def _entered(self, tracks: list[int], durable: asyncio.Future[None]) -> None:
        for t in tracks:
            if self._entering.get(t) is durable:
                del self._entering[t]
        if durable.cancelled() or durable.exception() is not None:
            # Not known to be on the disk: out of the log again (a bit set after all only costs
            # that track's copy at the next resync).
            for t in tracks:
                self._active.pop(t, None)

    async def _bits_durable(self, tracks: range) -> None:
        """Wait until the bits of those of ``tracks`` entering the activity log are on the disk."""
        for t in tracks:
            durable = self._entering.get(t)
            if durable is not None:
                await asyncio.shield(durable)  # a cancelled write does not cancel the others' bit

    # --- copy mover (initial copy and resync) ---------------------------------------------------------

    async def copy(self, should_stop: Callable[[], bool] = lambda: False, *, persist_every: int = 64,
                   rate: float = 0.0, passes: int = 0) -> bool:
        """Send every marked track to the S-VOL, in order; True when none is left.

        A track is read and sent under its exclusive range hold, so a host write to it waits and is
        then mirrored (its bit is clear by then).  ``rate`` (bytes per second, 0: as fast as it
        goes) paces the copy.  A track's bit is cleared only after the S-VOL has
        it (and the clear reaches the disk in batches: a lost clear costs one track sent again).
        ``passes`` (0: no limit) ends the copy after that many passes even with tracks left (False):
        an async pair records every write meanwhile, and a busy track would keep it going for ever.
        """
        if self.mirror is None:
            raise VolumeError(f"pair {self.half.name}: no session to the S-VOL")
        start, _ = self.area
        since = 0
        unit: int | None = 0
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        done_passes = 0
        while not should_stop():
            unit = self._next_different(unit or 0)
            if unit is None:
                # A pass is over.  A write straddling a sent track and one still to send was recorded
                # whole (its tracks marked again, some behind us), and writes go on while we flush:
                # passes repeat until one ends with nothing different.
                await self.mirror.flush()
                await asyncio.to_thread(self.bitmap.flush)
                if self._next_different(0) is None:
                    return True
                done_passes += 1
                if passes and done_passes >= passes:
                    return False
                continue
            first, n = self.track_range(unit)
            async with self.range_lock.hold(first, n):
                if self.bitmap.has(unit) and self._differs(unit):
                    data = await self.local.read(first, n)
                    await self.mirror.write(first - start, data)
                    if unit in self._active:
                        self._unmirrored.discard(unit)  # the bit stays: it is in the activity log
                    else:
                        self.bitmap.clear(unit)
                    self.copied_bytes += len(data)
                    sent += len(data)
                    since += 1
            if rate > 0:
                # Copy pace (bytes per second): host I/O keeps the link while a copy runs.
                ahead = began + sent / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if since >= persist_every:
                await asyncio.to_thread(self.bitmap.flush)
                since = 0
            unit += 1
            await asyncio.sleep(0)  # host I/O between tracks
        await asyncio.to_thread(self.bitmap.flush)
        return False

    async def copy_held(self) -> None:
        """The last pass of an async pair's copy, with host writes held and drained (:meth:`hold`):
        every marked track sent, then nothing can be marked until the release.  No write runs, so
        tracks are read without their range hold (a held write keeps its hold while it waits at
        the gate: taking it here would wait for ever)."""
        if self.mirror is None:
            raise VolumeError(f"pair {self.half.name}: no session to the S-VOL")
        assert self._holds and self._drained.is_set(), "copy_held needs host writes held and drained"
        start, _ = self.area
        unit = self._next_different(0)
        while unit is not None:
            first, n = self.track_range(unit)
            data = await self.local.read(first, n)
            await self.mirror.write(first - start, data)
            if unit in self._active:
                self._unmirrored.discard(unit)
            else:
                self.bitmap.clear(unit)
            self.copied_bytes += len(data)
            unit = self._next_different(unit + 1)
        await self.mirror.flush()
        await asyncio.to_thread(self.bitmap.flush)

    def _next_different(self, start: int) -> int | None:
        """The first track at or after ``start`` whose bit is a real difference."""
        unit = self.bitmap.first_set(start)
        while unit is not None and not self._differs(unit):
            unit = self.bitmap.first_set(unit + 1)
        return unit

    def _differs(self, unit: int) -> bool:
        """A set bit that is a real difference, not only a clean track of the activity log."""
        return unit not in self._active or unit in self._unmirrored

    def mark_all(self) -> None:
        """Every track different (an initial copy), durable."""
        self.bitmap.mark_all()
        self.bitmap.flush()

    # --- the rest of the Volume protocol --------------------------------------------------------------

    async def flush(self) -> None:
        """Flush the local volume and the S-VOL's cache (a SYNCHRONIZE CACHE reaches both)."""
        await self.local.flush()
        if self.mirror is not None and self.half.state in (PairState.COPY, PairState.PAIR):
            try:
                await self.mirror.flush()
            except PeerUnreachable as exc:
                await self._lose_peer(f"S-VOL unreachable: {exc}")

    async def close(self) -> None:
        """Flush and close the bitmap; the local volume and the mirror belong to their owners."""
        await self.local.flush()
        await asyncio.to_thread(self.bitmap.flush)
        self.bitmap.close()

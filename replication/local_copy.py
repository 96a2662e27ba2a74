"""In-system copy pairs (seed 004, 7th-9th embodiments): the copy volume rules and the copy mover.

Over 700 lines and kept whole: it is one set of per-track rules (the flush and lock orders below)
applied on every I/O path — host reads, general writes, the device server's fast paths, the mover —
and a change to one rule must be made on all of them at once, in view of each other.

Every LU that is the original (P-VOL) or the copy (S-VOL) of a local copy pair has its volume
wrapped in a :class:`CopyVolume` (swapped into the LU's slot under a quiesce, as remote pairs do).
An original may have up to :data:`MAX_COPIES` copies, and a copy may be the original of further
copies (one level of cascade).  Tracks are remote pairs' (:data:`~sanlab.replication.pair.TRACK_BYTES`).

Per pair, three persistent per-track bitmaps (seed FIG. 15's three kinds of difference
information, :class:`~sanlab.storage.bitmap.PersistentBitmap`) plus an activity log:

* ``gen`` — "under-generation" (FIG. 15 1500): the copy does not hold the original's data of the
  track yet.  All set at generation (FIG. 16); cleared by the mover (FIG. 20) or by a copy-on-write.
  In COPY/PAIR a host write to a track whose bit is clear is written to both volumes (behind the
  copy pointer), to a marked track on the original only (the mover copies it when it passes).
  In PSUS a set bit means the point-in-time image of the track is still on the original: a host
  write to the original first copies it (copy-on-write, FIG. 19 steps 1909-1912), and reads of the
  copy take it from the original — the division is a quick split (FIG. 17), the division copy
  (FIG. 21) runs behind.
* ``pdiff`` — "under-division" (FIG. 15 1501): tracks the original took host writes on since division.
* ``sdiff`` — the same for the copy (hosts may write a divided copy).
* ``active`` — tracks with a write to both volumes maybe in flight (DRBD's activity log, as
  replication/pair.py): merged into ``gen`` at a restart, so a crash between the two writes of a
  mirrored write leaves no silent difference.

Resync ORs ``pdiff``/``sdiff`` into ``gen`` and copies those tracks only; a reverse resync (RCPY)
copies the tracks of ``pdiff``/``sdiff`` from the copy back to the original while the original
serves (reads of a track not yet restored come from the copy; a write restores it first).

Flush order (what survives kill -9 or power loss): a track's ``pdiff``/``sdiff``/``active`` bit is
durable before the write it guards starts; a copy-on-write's data is written to the copy with FUA
and its ``gen`` bit cleared durably before the original's overwrite starts; the division copy clears
``gen`` only after its next flush of the copy; in COPY/PAIR the mover clears ``gen`` lazily (any
flush of ``gen`` then flushes the copy first).  A write to a divided track whose clear is not
durable yet makes the pending clears durable before it writes, so a stale ``gen`` bit can never
make the mover copy newer data over a point-in-time image.  Durability is asked per track
(:meth:`~sanlab.storage.bitmap.PersistentBitmap.durable`): writes to settled tracks do not wait
for the flushes other tracks' copy-on-writes and the division copy's clears need.

Lock order (the volumes' range locks, whole tracks, :class:`~sanlab.replication.io_gate.TrackRangeLock`): for a track in COPY,
PAIR or RCPY the original's range first, then the copy's; for a divided track (PSUS) the copy's
first, then the original's (shared) — the original's writers then never wait for the copy's lock
(their copy-on-write writes the copy's own volume directly).  State changes stop the pair's mover
and hold and drain host I/O on both volumes first (:meth:`CopyVolume.hold`), so no operation spans
two orders.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import structlog

from sanlab.replication.io_gate import TrackVolume
from sanlab.replication.local_copy_states import CopyEvent, PairState, local_step
from sanlab.scsi.sense import Asc, ScsiError, SenseKey
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.group_commit import GroupCommit
from sanlab.storage.volume import NowaitIO, Volume

log = structlog.get_logger("sanlab.replication.local_copy")

MAX_COPIES = 3
"""Copies per original (ShadowImage's three S-VOLs per P-VOL at one level)."""
ACTIVE_TRACKS = 4096
"""Tracks of a pair whose ``active`` bit stays set while mirrored writes go to them (256 MiB, as
sync pairs: a crash re-copies at most that much; a write to one of them in PAIR is done on the spot)."""
FLUSH_EVERY = 64
"""The mover makes its lazy ``gen`` clears durable after this many tracks."""
MIRRORING = (PairState.COPY, PairState.PAIR, PairState.RCPY)
"""Modes in which the original's writes reach the copy (original's lock first)."""


def _protected() -> ScsiError:
    # DATA PROTECT / WRITE PROTECTED (07h/27h/00h): a copy in COPY, PAIR or RCPY belongs to the
    # pair's copy process; hosts may write it once it is divided.
    return ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)


@dataclass(slots=True)
class CopyPair:
    """One local copy pair while the array runs: its area, states and bitmaps."""

    name: str
    source: CopyVolume
    target: CopyVolume
    area_start: int
    """First block of the pair's area (track aligned); the same on both volumes."""
    area_blocks: int
    gen: PersistentBitmap
    pdiff: PersistentBitmap
    sdiff: PersistentBitmap
    active: PersistentBitmap
    state: PairState
    extent: tuple[int, int] | None = None
    """(first block, blocks) of the extent whose state differs (seed 004 9th embodiment)."""
    extent_state: PairState | None = None
    group: str = ""
    copied_bytes: int = 0
    """Bytes the last generation, resync or restore copied (mover and restore-on-write)."""
    cow_bytes: int = 0
    """Bytes copied for the point-in-time image since the last division (copy-on-write and division copy)."""
    split_time: float = 0.0
    lazy_clears: int = 0
    """``gen`` clears made after a copy write no flush of the copy has covered yet when made (the
    mover's); counted so that :meth:`settle_gen` flushes the copy only when such a clear is pending."""
    covered_clears: int = 0
    """:attr:`lazy_clears` as it was when the last completed flush of the copy started."""
    deferred_clears: list[int] = field(default_factory=list)
    """``gen`` units the division copy copied, cleared after the copy's next flush (:func:`_flush`)."""
    _commits: dict[int, GroupCommit] = field(default_factory=dict)
    """id(bitmap) → the group commit of its flushes (the writes of 32 hosts share a few fdatasyncs)."""
    _gen_settles: GroupCommit | None = None
    """The group commit of :meth:`_settle_gen_once` (``gen``'s flush, the copy's first when needed)."""
    _hot: OrderedDict[int, None] = field(default_factory=OrderedDict)
    _inflight: dict[int, int] = field(default_factory=dict)

    # --- geometry ----------------------------------------------------------------------------------

    @property
    def track_blocks(self) -> int:
        """Blocks per track."""
        return self.source.track_blocks

    @property
    def first_track(self) -> int:
        """Absolute track number of the area's first track."""
        return self.area_start // self.track_blocks

    @property
    def units(self) -> int:
        """Tracks in the area (bits of each bitmap)."""
        return self.gen.size

    def tracks(self, lba: int, nblocks: int) -> range:
        """Absolute tracks of ``[lba, lba + nblocks)`` inside the area."""
        lo, hi = max(lba, self.area_start), min(lba + nblocks, self.area_start + self.area_blocks)
        if lo >= hi:
            return range(0)
        return range(lo // self.track_blocks, (hi - 1) // self.track_blocks + 1)

    def unit(self, track: int) -> int:
        """The bitmap unit of absolute ``track``."""
        return track - self.first_track

    def span(self, track: int) -> tuple[int, int]:
        """(first block, blocks) of absolute ``track`` (the last may be short)."""
        first = track * self.track_blocks
        return first, min(self.track_blocks, self.area_start + self.area_blocks - first)

    def extent_units(self) -> range:
        """Bitmap units of the extent (empty without one)."""
        if self.extent is None:
            return range(0)
        t = self.tracks(*self.extent)
        return range(self.unit(t.start), self.unit(t.stop - 1) + 1) if t else range(0)

    def mode(self, track: int) -> PairState:
        """The state that rules absolute ``track`` (the extent's inside it)."""
        if self.extent_state is not None and self.extent is not None:
            start, n = self.extent
            if start <= track * self.track_blocks < start + n:
                return self.extent_state
        return self.state

    def region(self, extent: tuple[int, int] | None) -> range:
        """Bitmap units an operation on ``extent`` (None: the whole pair) acts on."""
        if extent is None:
            return range(self.units)
        t = self.tracks(*extent)
        return range(self.unit(t.start), self.unit(t.stop - 1) + 1) if t else range(0)

    # --- what is left ------------------------------------------------------------------------------

    def restoring(self, unit: int) -> bool:
        """Track ``unit`` waits for the reverse resync (RCPY and changed on either side)."""
        return (self.mode(unit + self.first_track) is PairState.RCPY
                and (self.pdiff.has(unit) or self.sdiff.has(unit)))

    def next_work(self, start: int) -> int | None:
        """The first unit at or after ``start`` the mover has to copy (either way), or None."""
        candidates = [u for u in (self.gen.first_set(start), self._next_restore(start)) if u is not None]
        return min(candidates) if candidates else None

    def _next_restore(self, start: int) -> int | None:
        if self.state is not PairState.RCPY and self.extent_state is not PairState.RCPY:
            return None
        found: int | None = None
        for bm in (self.pdiff, self.sdiff):
            u = bm.first_set(start)
            while u is not None and not self.restoring(u):
                u = bm.first_set(u + 1)
            if u is not None and (found is None or u < found):
                found = u
        return found

    def pending_units(self) -> int:
        """Tracks a resync (or the running copy) would copy: ``gen`` | ``pdiff`` | ``sdiff``."""
        g, p, s = self.gen.bits, self.pdiff.bits, self.sdiff.bits
        return sum(bin(g[i] | p[i] | s[i]).count("1") for i in range(len(g)))

    def division_pending(self, units: range | None = None) -> bool:
        """Divided tracks whose point-in-time data still waits on the original."""
        if units is None:
            return self.gen.first_set(0) is not None
        u = self.gen.first_set(units.start) if units else None
        return u is not None and u < units.stop

    # --- bits, durably ------------------------------------------------------------------------------

    async def set_bits(self, bitmap: PersistentBitmap, tracks: range) -> None:
        """Mark ``tracks`` (absolute) in ``bitmap``, durable before returning (before the write they
        guard).  A bit already set is durable: whoever set it held the track's range until its
        flush had returned, and so does every caller here (not for ``gen``: :meth:`mark_gen`)."""
        units = [self.unit(t) for t in tracks if not bitmap.has(self.unit(t))]
        for u in units:
            bitmap.mark(u)
        if units:
            await self.commit(bitmap)

    async def mark_gen(self, tracks: range) -> None:
        """:meth:`set_bits` for ``gen`` (a write ahead of the copy pointer): its flush also carries the
        mover's lazy clears to disk, so it goes the way of :meth:`settle_gen` (the copy flushed first
        when a clear is not covered yet)."""
        units = [self.unit(t) for t in tracks if not self.gen.has(self.unit(t))]
        for u in units:
            self.gen.mark(u)
        if units:
            await self._gen_commit()

    async def commit(self, bitmap: PersistentBitmap) -> None:
        """Every change to ``bitmap`` made before this call durable, by a flush shared with the
        callers that arrive together (storage/group_commit.py)."""
        gc = self._commits.get(id(bitmap))
        if gc is None:
            gc = self._commits[id(bitmap)] = GroupCommit(lambda: asyncio.to_thread(bitmap.flush))
        await gc()

    def settled(self, unit: int) -> bool:
        """A divided track needs nothing before a host write: its point-in-time data on the copy
        (``gen`` clear, durably: module docstring) and ``pdiff`` marked (durable: set only under the
        track's range, flushed before that is given back)."""
        byte, bit = unit >> 3, 1 << (unit & 7)
        return not self.gen.bits[byte] & bit and bool(self.pdiff.bits[byte] & bit) and self.gen.durable(unit)

    def clear_gen_lazily(self, unit: int) -> None:
        """Clear ``gen`` of ``unit`` after a copy write no copy flush has covered yet."""
        self.gen.clear(unit)
        self.lazy_clears += 1

    async def flush_copy(self) -> None:
        """Flush the copy: every copy write done before this call is durable after it."""
        upto = self.lazy_clears
        await self.target.local.flush()
        self.covered_clears = max(self.covered_clears, upto)

    async def settle_gen(self, tracks: range | None = None) -> None:
        """Make the pending ``gen`` clears durable, the copy's data they vouch for first (a clear made
        right after a copy flush is covered by it: no second flush for it).  With ``tracks``
        (absolute), only when a ``gen`` bit of theirs is not durable yet: a write to a track needs
        that track's clear on disk (a stale set bit would let the division copy carry the write
        over the point-in-time image after a crash), not the clears the mover made elsewhere."""
        if tracks is not None and all(self.gen.durable(self.unit(t)) for t in tracks):
            return
        if self.gen.pending:
            await self._gen_commit()

    async def _gen_commit(self) -> None:
        if self._gen_settles is None:
            self._gen_settles = GroupCommit(self._settle_gen_once)
        await self._gen_settles()

    async def _settle_gen_once(self) -> None:
        if self.covered_clears < self.lazy_clears:
            await self.flush_copy()
        await asyncio.to_thread(self.gen.flush)

    async def enter_active(self, tracks: range) -> None:
        """Mirrored writes are about to go to ``tracks``: their ``active`` bits durable first."""
        new = [t for t in tracks if t not in self._hot]
        for t in tracks:
            self._inflight[t] = self._inflight.get(t, 0) + 1
            if t in self._hot:
                self._hot.move_to_end(t)
            else:
                self._hot[t] = None
        for t in new:
            self.active.mark(self.unit(t))
        if new:  # a hot track's bit is durable: the write that made it hot held the track until then
            await self.commit(self.active)
        while len(self._hot) > ACTIVE_TRACKS:
            old = next(iter(self._hot))
            if old in self._inflight:
                break
            del self._hot[old]
            self.active.clear(self.unit(old))  # lazily: a crash may bring it back, costing one track's copy

    def leave_active(self, tracks: range) -> None:
        """The mirrored writes to ``tracks`` ended (both volumes have them)."""
        for t in tracks:
            left = self._inflight[t] - 1
            if left:
                self._inflight[t] = left
            else:
                del self._inflight[t]

    def bitmaps(self) -> tuple[PersistentBitmap, ...]:
        """Every bitmap file of the pair."""
        return self.gen, self.pdiff, self.sdiff, self.active

    def apply(self, event: CopyEvent, extent: bool = False) -> PairState:
        """Move the pair (or its extent) by ``event`` through the transition table."""
        if extent:
            assert self.extent_state is not None
            self.extent_state = local_step(self.extent_state, event)
            if self.extent_state is self.state:
                self.extent, self.extent_state = None, None  # the extent is like the rest again
                return self.state
            return self.extent_state
        self.state = local_step(self.state, event)
        return self.state


class CopyVolume(TrackVolume):
    """An LU's volume that is the original and/or the copy of local copy pairs (module docstring); host
    writes (WRITE, UNMAP, WRITE SAME, COMPARE AND WRITE) go through :meth:`_raw_write`."""

    def __init__(self, local: Volume, label: str) -> None:
        super().__init__(local, label)
        self.sources: list[CopyPair] = []
        """Pairs whose original this volume is."""
        self.target: CopyPair | None = None
        """The pair whose copy this volume is."""
        self._nowait: NowaitIO | None = local if isinstance(local, NowaitIO) else None

    # --- geometry ------------------------------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Some pair still uses this volume."""
        return bool(self.sources) or self.target is not None

    # --- reads -----------------------------------------------------------------------------------------

    async def read(self, lba: int, nblocks: int) -> bytes:
        """What hosts see: the point-in-time image on a divided copy, the restored image on an original."""
        async with self._op(), self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self.view(lba, nblocks)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.view(lba, nblocks)

    def _redirect(self, track: int) -> CopyPair | None:
        """The pair whose other volume holds what hosts see of ``track`` here, if any."""
        t = self.target
        if t is not None and t.mode(track) is PairState.PSUS and t.gen.has(t.unit(track)):
            return t
        for p in self.sources:
            if p.tracks(track * self.track_blocks, 1) and p.restoring(p.unit(track)):
                return p
        return None

    async def view(self, lba: int, nblocks: int) -> bytes:
        """The blocks hosts see (the caller holds this volume's range, at least shared)."""
        if not self.in_use:
            return await self.local.read(lba, nblocks)
        tb = self.track_blocks
        first, last = lba // tb, (lba + nblocks - 1) // tb
        if not any(self._redirect(t) for t in range(first, last + 1)):
            return await self.local.read(lba, nblocks)
        out = bytearray()
        pos = lba
        while pos < lba + nblocks:
            track = pos // tb
            n = min((track + 1) * tb, lba + nblocks) - pos
            out += await self._view_track_part(track, pos, n)
            pos += n
        return bytes(out)

    async def _view_track_part(self, track: int, lba: int, n: int) -> bytes:
        p = self._redirect(track)
        if p is None:
            return await self.local.read(lba, n)
        if p.target is self:
            # A divided copy's track not copied yet: the original still holds it (it copies it before
            # it overwrites it, under its range, which we take shared: FIG. 19 step 1909).
            async with p.source.range_lock.hold(lba, n, exclusive=False):
                if p.gen.has(p.unit(track)) and p.mode(track) is PairState.PSUS:
                    return await p.source.view(lba, n)
            return await self.local.read(lba, n)
        # An original's track not restored yet: the copy holds it (writes to the copy are refused in RCPY).
        return await p.target.local.read(lba, n)

    # --- writes ----------------------------------------------------------------------------------------

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        """A host write; the caller holds this volume's range exclusively."""
        if self.target is not None:
            await self._copy_side_rules(self.target, lba, len(data) // self.block_size)
        await self.write_locked(lba, data, fua)

    async def pair_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """A write by a pair's copy process or mirrored write into this copy (not a host's): the copy
        rules do not apply, this volume's own copies' rules do (cascade)."""
        async with self._op(gated=False), self.range_lock.hold(lba, len(data) // self.block_size):
            await self.write_locked(lba, data, fua)

    async def _copy_side_rules(self, p: CopyPair, lba: int, nblocks: int) -> None:
        """A host write to a copy: refused unless divided; then the point-in-time tracks it does not
        cover whole are fetched from the original first, and ``sdiff`` marked (durably)."""
        tracks = p.tracks(lba, nblocks)
        if any(p.mode(t) is not PairState.PSUS for t in tracks):
            raise _protected()
        pending = [t for t in tracks if p.gen.has(p.unit(t))]
        if pending:
            first = p.span(pending[0])[0]
            last_first, last_n = p.span(pending[-1])
            async with p.source.range_lock.hold(first, last_first + last_n - first, exclusive=False):
                for t in pending:
                    if p.gen.has(p.unit(t)):
                        start, n = p.span(t)
                        await self.local.write(start, await p.source.view(start, n), True)  # durable first
                        p.cow_bytes += n * self.block_size
                        p.gen.clear(p.unit(t))
        # Both durable before the write; neither needs the other first.
        await asyncio.gather(p.settle_gen(tracks), p.set_bits(p.sdiff, tracks))

    async def write_locked(self, lba: int, data: bytes | bytearray | memoryview, fua: bool,
                           skip: CopyPair | None = None) -> None:
        """Write ``data`` here under the rules of the pairs this volume is the original of (all but
        ``skip``); the caller holds the range exclusively."""
        nblocks = len(data) // self.block_size
        mirrors: list[tuple[CopyPair, range]] = []
        # A pair being restored goes last: the other copies' copy-on-write takes the original's
        # data before the restore replaces it.
        for p in sorted(self.sources, key=lambda q: q.state is PairState.RCPY or q.extent_state is PairState.RCPY):
            if p is skip:
                continue
            tracks = p.tracks(lba, nblocks)
            if not tracks:
                continue
            await self._source_rules(p, tracks)
            paired = [t for t in tracks if p.mode(t) in MIRRORING]
            if not paired:
                continue
            run = range(paired[0], paired[-1] + 1)
            if len(run) == len(paired) and not any(p.gen.has(p.unit(t)) for t in run):
                await p.enter_active(run)  # behind the copy pointer: both volumes get it
                mirrors.append((p, run))
            else:
                # Partly ahead of the copy pointer: it stays here, the mover copies those tracks.
                await p.mark_gen(run)
        try:
            await self.local.write(lba, data, fua)
            bs = self.block_size
            for p, run in mirrors:
                lo = max(lba, run.start * self.track_blocks, p.area_start)
                hi = min(lba + nblocks, run.stop * self.track_blocks, p.area_start + p.area_blocks)
                await p.target.pair_write(lo, memoryview(data)[(lo - lba) * bs:(hi - lba) * bs], fua)
        finally:
            for p, run in mirrors:
                p.leave_active(run)

    async def _source_rules(self, p: CopyPair, tracks: range) -> None:
        """Before the original's write to ``tracks``: copy-on-write of divided tracks (FIG. 19 steps
        1909-1912), ``pdiff`` (1906), restore-on-write of tracks still to restore."""
        divided = [t for t in tracks if p.mode(t) is PairState.PSUS]
        if divided:
            run = range(divided[0], divided[-1] + 1)

            async def copy_on_write() -> None:
                cow = [t for t in divided if p.gen.has(p.unit(t))]
                for t in cow:
                    # The copy's point-in-time data durable (FUA: this track only, not what the
                    # division copy wrote meanwhile), then its bit cleared durably, before the
                    # original's overwrite starts.
                    start, n = p.span(t)
                    await p.target.local.write(start, await self.view(start, n), True)
                    p.cow_bytes += n * self.block_size
                for t in cow:
                    p.gen.clear(p.unit(t))
                await p.settle_gen(run)
            # ``pdiff`` durable before the overwrite too; it needs nothing of the copy-on-write (a
            # bit set early costs at most a track's resync), so its flush overlaps the copy.
            await asyncio.gather(copy_on_write(), p.set_bits(p.pdiff, run))
        for t in tracks:
            u = p.unit(t)
            if p.restoring(u):
                start, n = p.span(t)
                await self.local.write(start, await p.target.local.read(start, n))
                p.copied_bytes += n * self.block_size
                p.pdiff.clear(u)
                p.sdiff.clear(u)

    # --- the device server's fast path (storage/volume.py NowaitIO) --------------------------------------

    def _rules_met(self, lba: int, nblocks: int) -> bool:
        """A host write to ``[lba, lba + nblocks)`` here needs nothing of any pair: this volume is no
        copy, and in every pair it is the original of, the tracks are outside the area or divided,
        their point-in-time data already on the copy (``gen`` clear) and ``pdiff`` already marked,
        their ``gen`` clears durable (module docstring's flush order: the division copy's clears are
        not, until its flush; bits of other tracks waiting for a flush do not concern this write).
        ``pdiff`` needs no such check: it is set only under the track's range, flushed before that
        is given back, and :meth:`write_nowait` and :meth:`write_pooled` go on only with the range free."""
        if self.target is not None or not self._open.is_set():
            return False
        tb = self.track_blocks
        track = lba // tb
        if len(self.sources) == 1 and (lba + nblocks - 1) // tb == track:
            # The common case, inline: one copy, a write within one track.
            p = self.sources[0]
            if not p.area_start <= lba < p.area_start + p.area_blocks:
                return True  # outside the (track-aligned) area: nothing of the pair
            return p.mode(track) is PairState.PSUS and p.settled(track - p.first_track)
        for p in self.sources:
            tracks = p.tracks(lba, nblocks)
            if not tracks:
                continue
            # Per host write on the device server's loop: the bits read in place, not per method call.
            whole = p.state is PairState.PSUS and p.extent_state is None
            gen, pdiff, first = p.gen.bits, p.pdiff.bits, p.first_track
            for t in tracks:
                u = t - first
                byte, bit = u >> 3, 1 << (u & 7)
                if gen[byte] & bit or not pdiff[byte] & bit or not (whole or p.mode(t) is PairState.PSUS):
                    return False
            if not p.gen.durable_units(tracks.start - first, tracks.stop - first):
                return False
        return True

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """Reads take the general path (:meth:`read`: a divided copy's view may come from the original)."""
        return None

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """As :meth:`read_nowait`."""
        return None

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """A write to an original whose divided copies hold its tracks already (the steady state of a
        divided pair, :meth:`_rules_met`), or whose copies in COPY/PAIR take it along where the
        general path would mirror it (:meth:`_mirrors`), done in the volumes' page caches; False
        otherwise (then the caller takes :meth:`write_pooled` or the general path, which writes it
        again, copies included)."""
        nblocks = len(data) // self.block_size
        local = self._nowait
        if local is None or self.range_lock.would_wait(lba, nblocks):
            return False
        if self._rules_met(lba, nblocks):
            return local.write_nowait(lba, data)
        mirrors = self._mirrors(lba, nblocks)
        if not mirrors:
            return False
        # The copies first: if one would wait, the general path writes everything again; a copy
        # ahead of its original for a write not yet answered is what the general path's order
        # (original, then copy) allows too, and a crash in between re-copies the track (hot:
        # its ``active`` bit is durable).
        track = lba // self.track_blocks
        for p, target in mirrors:
            if not target.write_nowait(lba, data):
                return False
            p._hot.move_to_end(track)
        return local.write_nowait(lba, data)

    def _mirrors(self, lba: int, nblocks: int) -> list[tuple[CopyPair, NowaitIO]]:
        """For a write within one track: the pairs whose copy the general path would write too and
        the copy volumes' own fast I/O, when every pair of this original is such a pair (COPY or PAIR,
        the track behind the copy pointer and in the activity log, the copy's range free, no copy of
        the copy) or divided with :meth:`_rules_met`'s conditions; [] when the general path is needed."""
        if self.target is not None or not self._open.is_set():
            return []
        tb = self.track_blocks
        track = lba // tb
        if (lba + nblocks - 1) // tb != track:
            return []
        out: list[tuple[CopyPair, NowaitIO]] = []
        for p in self.sources:
            if not p.area_start <= lba < p.area_start + p.area_blocks:
                continue
            u = track - p.first_track
            mode = p.mode(track)
            if mode is PairState.PSUS:
                if not p.settled(u):
                    return []
                continue
            tv = p.target
            if (mode not in (PairState.COPY, PairState.PAIR) or p.gen.has(u) or track not in p._hot
                    or tv._nowait is None or tv.sources or tv.range_lock.would_wait(lba, nblocks)):
                return []
            out.append((p, tv._nowait))
        return out

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """:meth:`write` started now as a task holding its range and counted by the I/O gate (None when
        the gate is held or the range taken): a host write skips the device server's general path;
        a refusal (a copy not divided) is its sense, as on the general path."""
        nblocks = len(data) // self.block_size
        if not self._open.is_set() or self.range_lock.would_wait(lba, nblocks):
            return None
        if self._nowait is not None and self._rules_met(lba, nblocks):
            # Nothing of the pairs to do: the wrapped volume's own pooled write, under this range.
            io = self._nowait.write_pooled(lba, data)
            if io is not None:
                held = self.range_lock.take(lba, nblocks)
                self._op_started()

                def ended(_f: asyncio.Future[None]) -> None:
                    self.range_lock.give_back(held)
                    self._op_ended()
                io.add_done_callback(ended)
                return io
        holder = self.range_lock.take(lba, nblocks)
        self._op_started()

        async def run() -> None:
            try:
                await self._raw_write(lba, data, False)
            finally:
                self.range_lock.give_back(holder)
                self._op_ended()
        return asyncio.ensure_future(run())

    # --- the rest of the Volume protocol -------------------------------------------------------------

    async def flush(self) -> None:
        """SYNCHRONIZE CACHE: the wrapped volume's (a copy's data reached its volume before GOOD)."""
        await self.local.flush()

    async def close(self) -> None:
        """The wrapped volume belongs to its owner; nothing of this wrapper needs closing."""
        await self.local.flush()

    # --- the copy mover -------------------------------------------------------------------------------

    async def copy_track(self, p: CopyPair, unit: int) -> int:
        """Copy one track of pair ``p`` (this volume is its original) the way its state says:
        original → copy for ``gen`` (FIG. 20/21), copy → original for a restore.  Bytes moved."""
        track = unit + p.first_track
        start, n = p.span(track)
        if p.mode(track) is PairState.PSUS:
            # Division copy: the copy's range first, then the original's, shared (module docstring).
            async with p.target.range_lock.hold(start, n), self.range_lock.hold(start, n, exclusive=False):
                if not (p.gen.has(unit) and p.mode(track) is PairState.PSUS):
                    return 0
                await p.target.local.write(start, await self.view(start, n))
                # Cleared after the copy's next flush (:func:`_flush`), not now: a ``gen`` clear in
                # memory is then always one whose data is durable, so a write's settling of its
                # own track's bit never has to flush the copy.  Until then reads of the track still
                # come from the original, which keeps its point-in-time data while the bit is set.
                p.deferred_clears.append(unit)
                p.cow_bytes += n * self.block_size
                return 0
        async with self.range_lock.hold(start, n):
            if p.restoring(unit):
                data = await p.target.local.read(start, n)
                await self.write_locked(start, data, False, skip=p)
                p.pdiff.clear(unit)
                p.sdiff.clear(unit)
            elif p.gen.has(unit) and p.mode(track) in MIRRORING:
                data = await self.view(start, n)
                await p.target.pair_write(start, data)
                p.clear_gen_lazily(unit)
            else:
                return 0
        p.copied_bytes += len(data)
        return len(data)


async def run_mover(p: CopyPair, stop: asyncio.Event) -> bool:
    """Copy what pair ``p`` marks, track by track beside host I/O, until nothing is left (True) or
    ``stop`` is set (False).  Passes repeat: a write straddling a copied and a marked track marks
    both again.  A failure (VolumeError, OSError: the pair goes to PSUE) drops the division copy's
    deferred clears: their copies were never flushed, and a later mover (the resync from PSUE, which
    sets every bit again) must not apply them to bits it set anew."""
    try:
        return await _move_tracks(p, stop)
    except BaseException:
        p.deferred_clears.clear()
        raise


async def _move_tracks(p: CopyPair, stop: asyncio.Event) -> bool:
    since = 0
    unit: int | None = 0
    began = time.monotonic()
    while not stop.is_set():
        unit = p.next_work(unit or 0)
        if unit is None:
            await _flush(p)
            if p.next_work(0) is None:
                log.info("local_copy_mover_done", pair=p.name, copied_bytes=p.copied_bytes,
                         seconds=round(time.monotonic() - began, 3))
                return True
            continue
        await p.source.copy_track(p, unit)
        since += 1
        if since >= FLUSH_EVERY:
            await _flush(p)
            since = 0
        unit += 1
        await asyncio.sleep(0)  # host I/O between tracks
    await _flush(p)
    return False


async def _flush(p: CopyPair) -> None:
    """The copy's data, then the division copy's deferred ``gen`` clears, then the lazy clears of
    every bitmap (restores: the original's data first)."""
    await p.flush_copy()
    done, p.deferred_clears = p.deferred_clears, []
    for unit in done:
        p.gen.clear(unit)
    await p.source.local.flush()
    for bm in (p.gen, p.pdiff, p.sdiff):
        await asyncio.to_thread(bm.flush)

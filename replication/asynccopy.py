"""Asynchronous journal copy (seed 003 FIG. 12-16, issue 15): the write path into the journal at the
primary, journal acquisition (a pull), restore and purge, journal full (PFUL/PFUS) and lag.

A :class:`JournalGroup` is one journal of this array and the pairs that share it (a consistency
group: one sequence of updates across all their volumes).  Its role comes from its pairs:

* **primary** — a host write to a P-VOL in PAIR/PFUL goes to the journal and the local volume, in
  the flush order replication/journal.py states, and is answered without any round trip to the
  secondary.  READ JOURNAL from the secondary (:meth:`JournalGroup.serve`) returns committed entries
  and, through its FROM SEQUENCE NUMBER, tells which ones the secondary holds: those are purged.
  A monitor watches the journal's use: past the threshold the pairs show PFUL; PFUL longer than the
  full timeout suspends them (PFUS) and the unsent entries become the bitmap (:meth:`to_bitmap`),
  so a resync copies only the difference and no host write ever fails for want of journal space.
* **secondary** — the acquisition mover pulls entries into the auxiliary journal (durable before
  the next pull lets the primary purge them); the restore mover applies them to the S-VOLs in
  sequence order, flushes the S-VOLs and commits *restored* to the catalog, then frees them.

The movers run under the array's task supervisor (kind :data:`JOURNAL_KIND`); each step also exists
as an operation a host can drive (seed 003 FIG. 16: ``sanlab journal acquire|restore|purge|status``).

Why one module of this size: the primary's write path, the secondary's pull and restore, and the
swap that turns them round all move one journal group's pointers (FIG. 15) under one ordering rule;
split apart, each would reach into the others' state. The on-disk layout is in ``journal.py``,
the group's pairs and operations in ``async_pairs.py``, the markers in ``delta.py``.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.journal import Journal, JournalEntry, JournalError, JournalFull, when_all
from sanlab.replication.pair import PairVolume
from sanlab.replication.pair_state import PairRole, PairState
from sanlab.replication.states import Event
from sanlab.storage.catalog import Catalog
from sanlab.storage.volume import NowaitIO, VolumeError

log = structlog.get_logger("sanlab.replication.journal")

JOURNAL_KIND = "journal"
"""The supervisor's kind for a journal's movers (tools/array.py puts it in the shutdown order)."""

READ_BYTES = 1 << 20
"""ALLOCATION LENGTH of one READ JOURNAL: at most 1 MiB of entries per pull."""

ENTRY_BYTES = 256 * 1024
"""The most data one journal entry holds: a larger host write is journaled as several entries, so
that any entry fits a READ JOURNAL of :data:`READ_BYTES` (a 1 MiB write used to make an entry no pull
could carry, and the pair stopped there)."""

POLL_SECONDS = 0.02
"""How long the acquisition mover waits after a pull that brought nothing."""

MARKER_PAIR_ID = 0
"""PAIR ID of a consistency point entry (MARK; a real pair id is never 0): its LBA is the marker's
number, its one block of zeros is never written to a volume (docs/journal.md)."""

JOURNALING = (PairState.PAIR, PairState.PFUL)
"""P-VOL states whose host writes go to the journal."""

RESTORE_SECONDS = 0.05
"""Secondary: the least time between two restores while the journal is under half full."""

PURGE_SECONDS = 0.2
"""Primary: the least time between two purges while the journal is under half its threshold."""

LAG_LOG_SECONDS = 10.0
"""How often a journal writes its lag (``journal_lag``) to the log while a pair of its group is in
PAIR or PFUL (issue 15: lag in ``pair display``, ``sanlab show --json`` and the logs)."""


MAX_SEQUENCE = 1 << 63
"""Sequence numbers a secondary accepts are below this: far beyond any journal's life, and room
for the +1s the journal's pointers take after the last one (its slots are unsigned 64-bit)."""


@dataclass(slots=True)
class JournalRecord:
    """A journal as the catalog keeps it (``journals`` table, JSON body)."""

    name: str
    journal_id: int
    size: int
    """Bytes of the journal volume."""
    path: str = ""
    """The file holding the journal (default), or empty with :attr:`volume`."""
    volume: str = ""
    """A catalog volume holding the journal (``--volume``)."""
    threshold: int = 80
    """Percent of use past which the pairs show PFUL."""
    full_timeout: float = 60.0
    """Seconds in PFUL after which the pairs suspend (PFUS)."""
    role: str = ""
    """``primary``, ``secondary`` or empty (no pair yet)."""
    journal_out: int = 1
    """Primary: the oldest entry held, as last committed (step 4 of the flush order)."""
    restored: int = 0
    """Secondary: the last entry applied to the S-VOLs and durable there."""
    peer_journal: str = ""
    """Secondary: the primary journal's name; primary: the secondary journal's."""
    peer_journal_id: int = 0
    auto: bool = True
    """Acquisition and restore run by themselves (False: only when a host asks, seed 003 FIG. 16)."""
    marker: int = 0
    """Secondary: the last consistency point (MARK) restored: every write its primary's sync P side
    made before that point is on the S-VOLs (docs/journal.md, "Cascade and three sites")."""
    standby: str = ""
    """Role ``standby``: ``TARGET/LUN`` of the volume whose writes this journal records for a delta
    resync (replication/delta.py)."""
    standby_pair_id: int = 0
    """Role ``standby``: the pair id the recorded entries carry, the id of the pair a delta resync forms."""


@dataclass(slots=True)
class PeerView:
    """Secondary: what the last READ JOURNAL said of the primary's journal."""

    journal_in: int = 0
    oldest_time: float = 0.0
    backlog_bytes: int = 0
    not_journaling: bool = True
    at: float = 0.0


@dataclass(slots=True)
class Member:
    """A pair of the group as the group sees it."""

    pair_id: int
    name: str
    volume: PairVolume


Reader = Callable[[bytes, int], Awaitable[bytes]]
"""Secondary: send a READ JOURNAL CDB to the primary, return its Data-In (raises PeerFailure)."""


class JournalGroup:
    """One journal and its pairs (module docstring)."""

    def __init__(self, record: JournalRecord, journal: Journal, catalog: Catalog) -> None:
        self.record = record
        self.journal = journal
        self.catalog = catalog
        self.members: dict[int, Member] = {}
        self.peer = PeerView()
        self.reader: Reader | None = None
        """Secondary: how READ JOURNAL reaches the primary (set by the pair manager)."""
        self.to_be_read = 0
        """Secondary: FROM SEQUENCE NUMBER of the next READ JOURNAL (0: wherever the primary is)."""
        self.to_be_restored = record.restored + 1
        self.full_since: float | None = None
        self.suspending = False
        self._compensations: set[asyncio.Future[None]] = set()
        """Suspensions :meth:`compensate` started (held so that they are not collected mid-way)."""
        self._serve_lock = asyncio.Lock()
        self._acquire_lock = asyncio.Lock()
        self._restore_lock = asyncio.Lock()
        self._wake_restore = asyncio.Event()
        self._wake_writers = asyncio.Event()
        self.peer_from = 0
        """Primary: FROM SEQUENCE NUMBER of the secondary's last READ JOURNAL (it holds all below)."""
        self._purged_at = 0.0
        self.on_suspended: Callable[[list[Member]], Awaitable[None]] | None = None
        """Primary: tell the S sides the pairs a full journal suspended (PFUS)."""
        self.last_pull_bytes = 0
        """Secondary: bytes the last READ JOURNAL brought (a small pull waits before the next)."""
        self.acquired_entries = 0
        self.restored_entries = 0
        self.purged_entries = 0
        self.lag_log_seconds = LAG_LOG_SECONDS
        self._lag_logged_at: float | None = None
        if record.role == "secondary" and journal.entries:
            self.to_be_read = journal.journal_in

    @property
    def name(self) -> str:
        """The journal's name."""
        return self.record.name

    async def save(self) -> None:
        """Commit the record (pointers included) to the catalog."""
        async with self.catalog.change() as c:
            c.put_journal(self.record.name, asdict(self.record))

    # --- the primary ----------------------------------------------------------------------------------

    async def write(self, vol: PairVolume, pair_id: int, lba: int, data: bytes | bytearray | memoryview,
                    fua: bool) -> bool:
        """A host write to P-VOL ``vol`` in journal mode: journal, then local volume, answered when
        committed (replication/journal.py's flush order).  False when the pair left journal mode
        first (the caller records the write in the bitmap instead: PFUS never fails a write)."""
        last = await self._journal(vol, pair_id, lba, data)
        if last is None:
            return False
        try:
            await vol.local.write(lba, data, fua)
        except (VolumeError, OSError):
            await self.compensate(vol, pair_id, lba, len(data) // vol.block_size)
            raise
        await self.journal.wait_committed(last)
        return True

    async def _journal(self, vol: PairVolume, pair_id: int, lba: int,
                       data: bytes | bytearray | memoryview) -> int | None:
        """Reserve and store the entries of one update (waiting for space: inflow control); the
        last entry's sequence number, or None when the pair left journal mode first."""
        bs = vol.block_size
        nblocks = len(data) // bs
        # A write larger than ENTRY_BYTES becomes several entries (in order, under the write's range
        # hold): one READ JOURNAL of READ_BYTES must be able to carry any single entry.
        step_blocks = max(1, ENTRY_BYTES // bs)
        view = memoryview(data)
        last = 0
        for first in range(0, nblocks, step_blocks):
            n = min(step_blocks, nblocks - first)
            while True:
                if self.suspending or vol.half.state not in JOURNALING:
                    return None
                try:
                    entry = self.journal.reserve(pair_id, lba + first, n, time.time())
                    break
                except JournalFull:
                    # Inflow control: wait for a purge, or for the suspension the monitor makes (PFUS).
                    self._check_full()
                    waiter = asyncio.ensure_future(self.journal.space_freed.wait())
                    woken = asyncio.ensure_future(self._wake_writers.wait())
                    await asyncio.wait((waiter, woken), timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    woken.cancel()
            await self.journal.store(entry, view[first * bs:(first + n) * bs])
            last = entry.sequence
        return last

    async def compensate(self, vol: PairVolume, pair_id: int, lba: int, nblocks: int) -> None:
        """A journaled update's local write failed (a full filesystem, a dead disk): its entry is in
        the journal, perhaps read by the secondary already, and the host is told the write failed.
        The secondary must not keep what the P-VOL could not write: journal what the P-VOL holds in
        that range now (read back under the write's range hold), so the secondary, applying entries
        in order, ends with the P-VOL's blocks (found by the fault matrix's full-filesystem case).
        If even that fails, the range is marked in the pair's bitmap (durably) and the group leaves
        journal mode (PFUS) once the write has ended: a resync then copies the P-VOL's blocks."""
        try:
            now = await vol.local.read(lba, nblocks)
            last = await self._journal(vol, pair_id, lba, now)
            if last is not None:
                await self.journal.wait_committed(last)
            log.warning("journal_update_compensated", journal=self.name, lba=lba, blocks=nblocks,
                        reason="the P-VOL's local write failed after its entry was journaled")
            return
        except (VolumeError, OSError, JournalError) as exc:
            log.error("journal_compensation_failed", journal=self.name, lba=lba, blocks=nblocks, error=str(exc))
        for t in vol.tracks(lba, nblocks):
            if t < vol.bitmap.size:
                vol.bitmap.mark(t)
        await asyncio.to_thread(vol.bitmap.flush)

        async def leave_journal_mode() -> None:
            await asyncio.sleep(0)  # after the failed write has ended (to_bitmap drains writes)
            moved = await self.to_bitmap(Event.JOURNAL_SUSPEND, "a P-VOL write failed and could not be compensated")
            if moved and self.on_suspended is not None:
                await self.on_suspended(moved)
        task = asyncio.ensure_future(leave_journal_mode())
        self._compensations.add(task)
        task.add_done_callback(self._compensations.discard)

    def write_started(self, vol: PairVolume, local: NowaitIO, pair_id: int, lba: int,
                      data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """:meth:`write` started with callbacks only, no task (the device server's pooled fast path):
        the entry reserved and stored in the journal (page cache on the loop), then the local write;
        the future ends when the local write is done and
        every entry up to this one is committed (replication/journal.py's flush order, step 3).
        The journal's writes and the local one go to the I/O pool when the page cache would make
        them wait; the local write starts only once the journal holds the update.  None, with
        nothing done, when the journal is full or failed: the caller then takes :meth:`write`'s
        path (inflow control, PFUS, the error)."""
        j = self.journal
        if self.suspending or j.nowait is None or j.failed is not None:
            return None
        try:
            entry = j.reserve(pair_id, lba, len(data) // vol.block_size, time.time())
        except (JournalFull, JournalError):
            return None
        stored = j.store_started(entry, data)
        waits: list[asyncio.Future[None]] = []
        if stored is None:
            local_done = _local_write_started(vol, local, lba, data)
            if local_done is not None:
                waits.append(self._compensated(local_done, vol, pair_id, lba, len(data) // vol.block_size))
        else:
            # The local write only once the journal holds the update (flush order step 2): a
            # crash between them must never leave the P-VOL with an update the journal lacks.
            waits.append(self._compensated(_after(stored, lambda: _local_write_started(vol, local, lba, data)),
                                           vol, pair_id, lba, len(data) // vol.block_size))
        if j.failed is None:
            committed = j.committed_future(entry.sequence)
            if committed is not None:
                waits.append(committed)
        else:
            waits.append(asyncio.ensure_future(j.wait_committed(entry.sequence)))  # raises the failure
        return when_all(waits)

    def _compensated(self, local: asyncio.Future[None], vol: PairVolume, pair_id: int, lba: int,
                     nblocks: int) -> asyncio.Future[None]:
        """``local`` (the P-VOL's write after its entry was stored), its failure answered only after
        :meth:`compensate` (callbacks only while it succeeds)."""
        out: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(f: asyncio.Future[None]) -> None:
            exc = None if f.cancelled() else f.exception()
            if f.cancelled():
                out.cancel()
            elif isinstance(exc, (VolumeError, OSError)):
                async def then(error: BaseException) -> None:
                    try:
                        await self.compensate(vol, pair_id, lba, nblocks)
                    finally:
                        if not out.done():
                            out.set_exception(error)
                task = asyncio.ensure_future(then(exc))
                self._compensations.add(task)
                task.add_done_callback(self._compensations.discard)
            elif exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(None)
        local.add_done_callback(done)
        return out

    def journaling(self) -> bool:
        """Some P-VOL of the group takes its writes into the journal."""
        return any(m.volume.half.role is PairRole.P_VOL and m.volume.half.state in JOURNALING
                   for m in self.members.values())

    async def serve(self, first: int, max_bytes: int) -> bytes:
        """READ JOURNAL at the primary: purge what the secondary holds (below ``first``), then the
        committed entries from ``first`` (seed 003 FIG. 13)."""
        async with self._serve_lock:
            j = self.journal
            self.peer_from = max(self.peer_from, first)
            if first > j.journal_out and self.record.auto and self._purge_due():
                await self.purge(first)
            flags = proto.JournalReplyFlags(0)
            if not self.journaling():
                flags |= proto.JournalReplyFlags.NOT_JOURNALING
            if 0 < first < j.journal_out:
                flags |= proto.JournalReplyFlags.GAP
            budget = max_bytes - proto.JOURNAL_REPLY_HEADER
            chosen = j.committed_entries(first, budget)
            out: list[proto.WireEntry] = []
            used = 0
            for e in chosen:
                size = proto.JOURNAL_ENTRY_HEADER + e.length * j.header.block_size
                if out and used + size > budget:
                    break
                data = await j.read_data(e)
                out.append(proto.WireEntry(e.sequence, e.time, e.pair_id, e.lba, data, e.data_crc))
                used += size
            held = j.entries_from(first)
            oldest = held[0].time if held else 0.0
            backlog = sum(e.length for e in held) * j.header.block_size
            return proto.JournalBatch(j.journal_in, j.journal_out, j.committed, oldest, backlog, flags,
                                      tuple(out)).encode()

    def _purge_due(self) -> bool:
        """Purge at most every :data:`PURGE_SECONDS` while the journal has room (each purge commits
        journal-out to the catalog: an fsync that, on a file system shared with the journal,
        stalls the host writes going into it), at once when it fills."""
        now = time.monotonic()
        if now - self._purged_at < PURGE_SECONDS and self.journal.use * 200 < self.record.threshold:
            return False
        self._purged_at = now
        return True

    async def purge(self, below: int) -> int:
        """Free the primary's entries below ``below`` (the secondary holds them): the new journal-out
        is committed to the catalog first (step 4), then the space is reused."""
        j = self.journal
        below = min(below, j.committed + 1)
        if below <= j.journal_out:
            return 0
        self.record.journal_out = below
        await self.save()
        freed = len(j.purge(below))
        self.purged_entries += freed
        self._check_full()
        return freed

    def _check_full(self) -> None:
        """Note when the journal passed its threshold (the monitor acts on it)."""
        if self.journal.use * 100 >= self.record.threshold:
            if self.full_since is None:
                self.full_since = time.monotonic()
        else:
            self.full_since = None

    async def monitor_once(self) -> None:
        """PFUL past the threshold, PAIR again below it, PFUS when PFUL lasted the full timeout."""
        if self.record.role != "primary":
            return
        self._check_full()
        for m in list(self.members.values()):
            h = m.volume.half
            if h.role is not PairRole.P_VOL:
                continue
            if self.full_since is not None and h.state is PairState.PAIR:
                await m.volume.apply(Event.JOURNAL_FULL, f"journal {self.name} past {self.record.threshold}%")
            elif self.full_since is None and h.state is PairState.PFUL:
                await m.volume.apply(Event.JOURNAL_OK, f"journal {self.name} below {self.record.threshold}%")
        if self.full_since is not None and time.monotonic() - self.full_since >= self.record.full_timeout:
            if any(m.volume.half.state is PairState.PFUL for m in self.members.values()):
                moved = await self.to_bitmap(Event.JOURNAL_SUSPEND, f"journal {self.name} full for "
                                                                    f"{self.record.full_timeout:g} s")
                if self.on_suspended is not None:
                    await self.on_suspended(moved)

    async def mark_entries(self, members: list[Member]) -> None:
        """Mark the tracks of every entry the journal holds in its pair's bitmap, durably."""
        for m in members:
            vol = m.volume
            for t in set(self.journal.tracks_of(m.pair_id, vol.track_blocks)):
                if t < vol.bitmap.size:
                    vol.bitmap.mark(t)
            await asyncio.to_thread(vol.bitmap.flush)

    async def to_bitmap(self, event: Event, reason: str) -> list[Member]:
        """Leave journal mode at one point of the write stream: hold every P-VOL of the group, drain,
        mark the tracks of every entry not yet acquired in its pair's bitmap (durably), commit the
        empty journal, then move the pairs by ``event`` (PFUS, or PSUS for a split) and let writes
        go on (recorded in the bitmap).  The members moved, for the caller to tell the peer."""
        moved: list[Member] = []
        members = [m for m in self.members.values()
                   if m.volume.half.role is PairRole.P_VOL and m.volume.half.state in JOURNALING]
        self.suspending = True
        self._wake_writers.set()
        for m in members:
            m.volume.hold()
        try:
            for m in members:
                await m.volume.drain()
            j = self.journal
            await self.mark_entries(members)
            marked = len(j.entries)
            self.record.journal_out = j.journal_in
            await self.save()
            j.discard_all()
            for m in members:
                await m.volume.apply(event, reason)
                moved.append(m)
            log.info("journal_to_bitmap", journal=self.name, entries=marked, pairs=[m.name for m in moved],
                     cause=event.value)
        finally:
            self.suspending = False
            self._wake_writers.clear()
            self.full_since = None
            for m in members:
                m.volume.release()
        return moved

    # --- a swap turns the journal's direction (seed 003 FIG. 17-21) -------------------------------------

    async def start_afresh(self, role: str, peer_journal: str) -> None:
        """Take ``role`` (``primary``/``secondary``) with an empty journal numbered from 1.  The caller
        saw to what it held: a secondary applied its entries (or the S-VOL was taken over), a primary
        turned the unsent ones into its pairs' bitmaps (:meth:`to_bitmap`).  Numbering both journals
        from 1 again keeps the new secondary from mistaking the new primary's first entries for ones
        it already holds.  Flush order: the journal is formatted (metadata slots zeroed, flushed)
        before the catalog records the role, so a crash in between finds an empty journal whatever
        the catalog says, and never scans an old entry under the new role."""
        self.journal = await Journal.format(self.journal.volume, self.record.journal_id, self.name)
        r = self.record
        r.role, r.peer_journal, r.peer_journal_id = role, peer_journal, 0
        r.journal_out, r.restored = 1, 0
        await self.save()
        self.to_be_read, self.to_be_restored, self.peer_from = 0, 1, 0
        self.peer = PeerView()
        self.full_since = None
        log.info("journal_direction", journal=self.name, role=role, peer_journal=peer_journal)

    # --- the secondary --------------------------------------------------------------------------------

    async def acquire(self) -> int:
        """One READ JOURNAL: store the entries it brings in the auxiliary journal, durably, and move
        to-be-read past them (the next pull tells the primary it may purge them).  Entries stored."""
        if self.reader is None:
            raise JournalError(f"journal {self.name}: no primary to read from")
        async with self._acquire_lock:
            raw = await self.reader(proto.ReadJournalCdb(self.to_be_read, READ_BYTES).encode(), READ_BYTES)
            self.last_pull_bytes = len(raw)
            batch = proto.JournalBatch.decode(raw)
            self._check_batch(batch)
            self.peer = PeerView(batch.journal_in, batch.oldest_time, batch.backlog_bytes,
                                 bool(batch.flags & proto.JournalReplyFlags.NOT_JOURNALING), time.time())
            j = self.journal
            stored = 0
            stores = []
            for w in batch.entries:
                if w.sequence < self.to_be_read or w.sequence < j.journal_in:
                    continue  # already held (a pull answered twice)
                if w.sequence != j.journal_in and not j.entries:
                    # A jump (the primary turned entries into its bitmap, PFUS): nothing below it will
                    # come, so restored moves up first — a restart then scans from here.
                    await self.drain_restore()
                    self.record.restored = w.sequence - 1
                    self.to_be_restored = w.sequence
                    await self.save()
                try:
                    e = j.reserve(w.pair_id, w.lba, len(w.data) // j.header.block_size, w.time, sequence=w.sequence)
                except JournalFull:
                    break  # the restore frees room; the rest comes again
                if not j.store_nowait(e, w.data):  # in the page cache on the loop: no task an entry
                    stores.append(j.store(e, w.data))
                stored += 1
            if stored:
                await asyncio.gather(*stores)
                await j.volume.flush()  # durable before the next pull lets the primary purge them
                self.to_be_read = j.journal_in
                self.acquired_entries += stored
                self._wake_restore.set()
            elif self.to_be_read == 0 and batch.journal_out:
                self.to_be_read = batch.journal_out
            elif batch.journal_out > max(self.to_be_read, j.journal_in) and not j.entries:
                # The primary holds nothing below journal_out: the entries between went to its
                # bitmap (PFUS, a split) and a resync copies them.  Move past them now, as for a
                # jump above, or this side reports them as lag (and an RPO) until the next write.
                await self.drain_restore()
                self.record.restored = batch.journal_out - 1
                self.to_be_restored = self.to_be_read = batch.journal_out
                await self.save()
            return stored

    def _check_batch(self, batch: proto.JournalBatch) -> None:
        """:class:`~sanlab.replication.protocol.MalformedReply` for an answer that decodes but cannot be
        right, before anything of it is reserved: a journal write of a part block would fail the
        journal for good, a write past an S-VOL's end would stop every restore after it."""
        bs = self.journal.header.block_size
        off = proto.JOURNAL_REPLY_HEADER
        prev: int | None = None
        for w in batch.entries:
            what = f"READ JOURNAL entry {w.sequence}"
            if not w.data or len(w.data) % bs:
                raise proto.MalformedReply(f"{what}: {len(w.data)} bytes of data, not whole {bs}-byte blocks", off)
            if w.sequence >= MAX_SEQUENCE or (prev is not None and w.sequence != prev + 1):
                raise proto.MalformedReply(f"{what}: sequence number out of order or out of range", off)
            if not math.isfinite(w.time):
                raise proto.MalformedReply(f"{what}: time {w.time} is not a time", off)
            m = self.members.get(w.pair_id)
            if m is not None:
                vol = m.volume
                if len(w.data) % vol.block_size or w.lba + len(w.data) // vol.block_size > vol.num_blocks:
                    raise proto.MalformedReply(f"{what}: LBA {w.lba} + {len(w.data)} bytes does not fit "
                                               f"pair {m.name}'s S-VOL", off)
            prev = w.sequence
            off += proto.JOURNAL_ENTRY_HEADER + len(w.data)

    async def restore(self, most: int = 4096) -> int:
        """Apply the acquired entries in sequence order to their S-VOLs, flush the S-VOLs, commit
        *restored*, free the entries (replication/journal.py's flush order).  Entries applied."""
        async with self._restore_lock:
            j = self.journal
            batch = [e for e in j.entries if e.sequence >= self.to_be_restored and e.sequence <= j.committed][:most]
            if not batch:
                return 0
            touched: dict[int, PairVolume] = {}
            try:
                await self._apply(batch, touched)
            except BaseException:
                # A write that failed (an S-VOL's filesystem full, a lost drive): the batch is
                # applied again from its first entry next time, so every volume it touched is
                # flushed before *restored* passes it (writes in order, the same bytes: idempotent).
                self.to_be_restored = batch[0].sequence
                raise
            for vol in touched.values():
                await vol.local.flush()
            self.record.restored = batch[-1].sequence
            await self.save()
            j.purge(self.record.restored + 1)
            self.restored_entries += len(batch)
            return len(batch)

    async def _apply(self, batch: list[JournalEntry], touched: dict[int, PairVolume]) -> None:
        """Write ``batch``'s entries to their S-VOLs in sequence order (``touched``: the volumes written)."""
        j = self.journal
        for e in batch:
            if e.sequence != self.to_be_restored:
                raise JournalError(f"journal {self.name}: entry {e.sequence} where {self.to_be_restored} "
                                   "was expected")
            m = self.members.get(e.pair_id)
            if e.pair_id == MARKER_PAIR_ID:
                self.record.marker = e.lba  # committed with restored below
            elif m is not None and m.volume.half.state is PairState.SSWS:
                # Taken over: the S-VOL serves hosts now; an older update must not overwrite
                # what they wrote (the takeover applied everything acquired before it).
                log.warning("journal_entry_after_takeover", journal=self.name, sequence=e.sequence,
                            pair=m.name)
            elif m is not None:
                data = await j.read_data(e)
                await m.volume.local.write(e.lba, data)
                touched[e.pair_id] = m.volume
            else:
                log.warning("journal_entry_without_pair", journal=self.name, sequence=e.sequence,
                            pair_id=e.pair_id)
            self.to_be_restored = e.sequence + 1

    async def drain_restore(self) -> None:
        """Apply every entry acquired so far (before a resync copies over the S-VOLs, or a swap)."""
        while await self.restore():
            pass

    def receiving(self) -> bool:
        """Some S-VOL of the group is in a state whose updates come from the journal."""
        return any(m.volume.half.role is PairRole.S_VOL and m.volume.half.state is PairState.PAIR
                   for m in self.members.values())

    async def run_secondary(self, stop: asyncio.Event) -> None:
        """The acquisition and restore movers of a secondary journal (until ``stop``)."""
        restorer = asyncio.ensure_future(self._restore_loop(stop))
        try:
            while not stop.is_set():
                self.log_lag()
                if not self.record.auto or not self.receiving() or self.reader is None:
                    await _sleep_or(stop, 0.2)
                    continue
                try:
                    got = await self.acquire()
                except (OSError, asyncio.TimeoutError, JournalError, proto.MalformedReply, Exception) as exc:
                    log.warning("journal_acquire_failed", journal=self.name, error=str(exc))
                    await _sleep_or(stop, 1.0)
                    continue
                if not got or self.last_pull_bytes < READ_BYTES // 2:
                    # Little came: let more gather before the next pull (each stored pull costs an
                    # fdatasync of the journal); a full pull goes on at once.
                    await _sleep_or(stop, POLL_SECONDS)
        finally:
            restorer.cancel()
            try:
                await restorer
            except asyncio.CancelledError:
                pass

    async def _restore_loop(self, stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                applied = self.record.auto and await self.restore()
            except (OSError, VolumeError, JournalError) as exc:
                # The S-VOL (or the journal) cannot be written now: an ENOSPC, a failed drive.
                # The entries stay acquired and are applied again once it can (nothing lost; the
                # journal fills meanwhile, and at the primary PFUL/PFUS takes over).  A restorer
                # that ended here would leave the pair in PAIR applying nothing until a restart.
                if not failing:
                    log.error("journal_restore_failed", journal=self.name, sequence=self.to_be_restored,
                              error=str(exc))
                failing = True
                await _sleep_or(stop, 1.0)
                continue
            if failing:
                log.info("journal_restore_resumed", journal=self.name, sequence=self.to_be_restored)
                failing = False
            if applied:
                if self.journal.use * 2 < 1:
                    # Room left: let a batch gather (each restore flushes the S-VOLs and commits
                    # *restored*); a filling journal is restored back to back.
                    await _sleep_or(stop, RESTORE_SECONDS)
                continue
            self._wake_restore.clear()
            try:
                await asyncio.wait_for(self._wake_restore.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    async def run_primary(self, stop: asyncio.Event) -> None:
        """The primary's monitor (PFUL / PFUS, the lag in the log), until ``stop``."""
        while not stop.is_set():
            try:
                await self.monitor_once()
            except Exception as exc:  # noqa: BLE001 - logged; the monitor goes on
                log.error("journal_monitor_failed", journal=self.name, error=repr(exc))
            self.log_lag()
            await _sleep_or(stop, 0.1)

    def log_lag(self, now: float | None = None) -> bool:
        """Write ``journal_lag`` (:meth:`lag`'s fields, the pairs and their states) to the log when it
        is due: at once when a pair of the group enters PAIR or PFUL, then every
        :attr:`lag_log_seconds` while one stays there; nothing while none is (a split or suspended
        group has no lag to speak of).  True when it wrote."""
        now = time.monotonic() if now is None else now
        live = {m.name: m.volume.half.state.name for m in self.members.values()
                if m.volume.half.state in JOURNALING}
        if not live:
            self._lag_logged_at = None
            return False
        if self._lag_logged_at is not None and now - self._lag_logged_at < self.lag_log_seconds:
            return False
        self._lag_logged_at = now
        log.info("journal_lag", journal=self.name, role=self.record.role or None, pairs=live, **self.lag())
        return True

    # --- views ----------------------------------------------------------------------------------------

    def lag(self) -> dict[str, Any]:
        """``lag_entries``, ``lag_bytes``, ``rpo_seconds`` and ``journal_use`` of this side."""
        j = self.journal
        now = time.time()
        use = int(round(j.use * 100))
        if self.record.role == "secondary":
            behind = max(0, max(self.peer.journal_in, j.journal_in) - 1 - self.record.restored)
            oldest = j.oldest_time() or (self.peer.oldest_time or None)
            return {"lag_entries": behind, "lag_bytes": j.used_bytes + self.peer.backlog_bytes,
                    "rpo_seconds": round(now - oldest, 3) if oldest else 0.0, "journal_use": use}
        # Entries the secondary acquired (below its last FROM) may wait a moment for their purge:
        # they are not lag.
        first = max(j.journal_out, self.peer_from)
        unsent = j.entries_from(first)
        oldest = unsent[0].time if unsent else None
        return {"lag_entries": j.journal_in - first, "lag_bytes": sum(e.length for e in unsent) * j.header.block_size,
                "rpo_seconds": round(now - oldest, 3) if oldest else 0.0, "journal_use": use}

    def status(self) -> dict[str, Any]:
        """``journal status``/``display``: pointers as seed 003 FIG. 15 names them, use, lag, pairs."""
        j, r = self.journal, self.record
        row: dict[str, Any] = {"name": r.name, "role": r.role or None, "journal_id": f"{r.journal_id:016x}",
                               "size": r.size, "volume": r.volume or None, "path": r.path or None,
                               "threshold": r.threshold, "full_timeout": r.full_timeout, "auto": r.auto,
                               "entries": len(j.entries), "used_bytes": j.used_bytes,
                               "pairs": sorted(m.name for m in self.members.values()),
                               "peer_journal": r.peer_journal or None}
        if r.role == "standby":
            row.update({"standby": r.standby, "markers": [e.lba for e in j.entries if e.pair_id == MARKER_PAIR_ID]})
        if r.role == "secondary":
            row.update({"restored": r.restored, "marker": r.marker, "to_be_restored": self.to_be_restored,
                        "read_completed": j.journal_in - 1, "to_be_read": self.to_be_read,
                        "acquired_entries": self.acquired_entries, "restored_entries": self.restored_entries,
                        "primary_seen": self.peer.at or None})
        else:
            row.update({"journal_in": j.journal_in, "journal_out": j.journal_out, "committed": j.committed,
                        "purged_entries": self.purged_entries})
        row.update(self.lag())
        return row


def _local_write_started(vol: PairVolume, local: NowaitIO, lba: int,
                         data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
    """The P-VOL's local write: done in the page cache (None), else started in the I/O pool; a
    failure on the spot (the page-cache write found the filesystem full) as a failed future."""
    try:
        if local.write_nowait(lba, data):
            return None
        pooled = local.write_pooled(lba, data)
    except (VolumeError, OSError) as exc:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
    return pooled if pooled is not None else asyncio.ensure_future(vol.local.write(lba, data))


def _after(first: asyncio.Future[None],
           then: Callable[[], asyncio.Future[None] | None]) -> asyncio.Future[None]:
    """``then()`` started once ``first`` succeeded; a future of the whole (callbacks only)."""
    out: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(f: asyncio.Future[None]) -> None:
        if out.done():
            return
        exc = None if f.cancelled() else f.exception()
        if f.cancelled():
            out.cancel()
        elif exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(None)

    def go(f: asyncio.Future[None]) -> None:
        if f.cancelled() or f.exception() is not None:
            settle(f)
            return
        try:
            nxt = then()
        except Exception as exc:  # noqa: BLE001 - handed to the waiter
            out.set_exception(exc)
            return
        if nxt is None:
            out.set_result(None)
        else:
            nxt.add_done_callback(settle)
    first.add_done_callback(go)
    return out


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


class AsyncPairVolume(PairVolume):
    """A pair half of an asynchronous pair: at the P side, writes in PAIR/PFUL go to the journal
    (:meth:`JournalGroup.write`), writes in COPY are recorded in the bitmap and sent by the copy
    mover (no synchronous mirroring at all); the S side is the sync pair's (the write gate refuses
    hosts; the restore mover writes the local volume)."""

    group: JournalGroup | None = None
    pair_id: int = 0

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """A P-VOL's host write in journal mode started with callbacks only
        (:meth:`JournalGroup.write_started`), counted in flight until it ends (a split, PFUS or
        swap drains it); anything else as the sync pair volume starts it."""
        h = self.half
        g, local = self.group, self._nowait
        nblocks = len(data) // self.block_size
        if (h.role is PairRole.P_VOL and h.state in JOURNALING and g is not None and local is not None
                and self._open.is_set() and not self.range_lock.would_wait(lba, nblocks)):
            fut = g.write_started(self, local, self.pair_id, lba, data)
            if fut is not None:
                holder = self.range_lock.take(lba, nblocks)  # an overlapping write waits for this one
                self._writes_in_flight += 1
                self._drained.clear()
                fut.add_done_callback(lambda _f: self._write_ended(holder))
                return fut
        return super().write_pooled(lba, data)

    def _mirror_started(self, lba: int, data: bytes | bytearray | memoryview,
                        nblocks: int) -> asyncio.Future[None] | None:
        """Never: an asynchronous pair's host write goes to the journal, not straight to the S-VOL."""
        return None

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if not self._open.is_set():
            await self._open.wait()
        h = self.half
        if h.role is PairRole.P_VOL and h.state in (PairState.COPY, *JOURNALING):
            self._writes_in_flight += 1
            self._drained.clear()
            try:
                g = self.group
                if h.state in JOURNALING and g is not None and await g.write(self, self.pair_id, lba, data, fua):
                    return
                await self._recorded(lba, data, fua, self.tracks(lba, len(data) // self.block_size))
            finally:
                self._writes_in_flight -= 1
                if not self._writes_in_flight:
                    self._drained.set()
            return
        await super()._raw_write(lba, data, fua)

    async def flush(self) -> None:
        """SYNCHRONIZE CACHE: the local volume and, at the P side, the journal volume."""
        await self.local.flush()
        if self.group is not None and self.half.role is PairRole.P_VOL:
            await self.group.journal.volume.flush()

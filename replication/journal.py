"""Journal volumes of asynchronous remote copy: layout, pointers, recovery (seed 003 FIG. 12-15).

A journal lives on any :class:`~sanlab.storage.volume.Volume` (a file under the data directory by
default, or a catalog volume).  Seed 003 FIG. 12 splits it in two regions; block 0 holds the
header that says where they are::

    block 0                      header (:data:`_HEADER`: magic, version, block size, journal id,
                                 metadata start and slots, data start and blocks, name)
    blocks 1 .. M                metadata region: one slot per block, entry of sequence s in slot
                                 s mod M (:data:`_ENTRY`: sequence number, time of the update,
                                 pair id, LBA, journal data address, length, data CRC, header CRC)
    blocks M+1 .. end            cyclic data region: each entry's data, contiguous, at its address

Pointers, named as the seed names them (FIG. 15).  At the primary: *journal-in* — the sequence
number the next update gets; *journal-out* — the oldest entry still held (not yet purged).  At the
secondary (the auxiliary journal): *to-be-read* — the next sequence number asked of the primary;
*read-completed* — the last entry acquired and durable here; *to-be-restored* — the next entry to
apply to its S-VOL; *restored* — the last entry applied (and durable on the S-VOLs).

Flush order (what a crash of either array may leave, and why nothing acknowledged is lost and
nothing is applied out of order):

Primary, one host write in journal mode (replication/asynccopy.py):
  1. its sequence number and journal space are reserved, in the order writes arrive (a host
     waiting for write k before it sends write k+1 gives k+1 the larger number, across every
     volume of the journal group: seed 003's consistency);
  2. data and metadata slot are written to the journal volume (both carry a CRC, so a torn one
     is detected), then the write goes to the local P-VOL: the local volume never holds an update
     its journal lacks;
  3. the host is answered only when every entry up to its own is written (*committed*): a crash
     cannot leave an acknowledged entry behind a torn one;
  4. only committed entries are given to the secondary; entries the secondary has acquired are
     purged only after the new journal-out is committed to the catalog, so the slots and data
     between journal-out and journal-in are never reused while the catalog points at them.
  At restart the metadata is scanned from the catalog's journal-out: consecutive sequence numbers
  with good CRCs (header and data) are the journal; the first bad or missing one ends it (a torn
  tail, never acknowledged) and the rest is dropped.  The entries found are written again to their
  P-VOLs in order (a crash between steps 2 and the local write is repaired; writing an entry
  again is idempotent), so P-VOL and journal agree.

Secondary:
  1. acquired entries are written to the auxiliary journal and flushed (fdatasync) before the
     next READ JOURNAL asks for the entries after them — that request is what lets the primary
     purge them (the read-completed position is piggybacked);
  2. restore applies entries strictly in sequence order, flushes the S-VOLs, then commits
     *restored* to the catalog, then frees the entries.  A crash between the apply and the commit
     applies the entries after *restored* again in the same order: the volumes end identical, and
     no entry is ever applied after a later one.
  At restart the auxiliary journal is scanned from *restored* + 1 the same way as the primary's.

Everything here is synchronous bookkeeping plus awaited volume I/O; the movers (acquisition,
restore, purge) are in replication/asynccopy.py.
"""
from __future__ import annotations

import asyncio
import itertools
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from sanlab.storage.volume import NowaitIO, Volume, VolumeError

MAGIC = b"SLJRNL01"
VERSION = 1

_HEADER = struct.Struct(">8sIIQQQQQ32s")
"""Block 0: MAGIC, VERSION, BLOCK SIZE, JOURNAL ID, METADATA START, METADATA SLOTS, DATA START,
DATA BLOCKS (blocks of the volume), NAME (UTF-8, NUL padded)."""

ENTRY_MAGIC = b"JENT"
_ENTRY = struct.Struct(">4sIQdQQQII")
"""One metadata slot: MAGIC, reserved, SEQUENCE NUMBER, TIME (seconds since the epoch), PAIR ID,
LBA (of the volume), DATA ADDRESS (block within the data region), LENGTH (blocks), DATA CRC32;
followed by HEADER CRC32 (:data:`_CRC`) over those bytes."""
_CRC = struct.Struct(">I")
ENTRY_BYTES = _ENTRY.size + _CRC.size
"""Bytes of a metadata entry (60); the slot is one block, the rest zero."""

METADATA_SHARE = 9
"""One block in this many (after the header) is metadata: a 4 KiB update on 512-byte blocks takes
8 data blocks and one slot, so both regions fill at the same pace."""


class JournalError(VolumeError):
    """A journal volume that is not one, or does not fit."""


@dataclass(slots=True)
class JournalHeader:
    """What block 0 says (seed 003 FIG. 12's regions)."""

    block_size: int
    journal_id: int
    """Random 64-bit id, chosen at create."""
    meta_start: int
    """First block of the metadata region."""
    meta_slots: int
    """Slots (blocks) of the metadata region: at most this many entries are held."""
    data_start: int
    """First block of the data region."""
    data_blocks: int
    """Blocks of the cyclic data region."""
    name: str

    def encode(self) -> bytes:
        """Block 0's bytes."""
        raw = _HEADER.pack(MAGIC, VERSION, self.block_size, self.journal_id, self.meta_start, self.meta_slots,
                           self.data_start, self.data_blocks, self.name.encode()[:32])
        return raw.ljust(self.block_size, b"\0")

    @classmethod
    def decode(cls, block: bytes) -> JournalHeader:
        """Parse block 0; :class:`JournalError` when it is not a journal of this version."""
        if len(block) < _HEADER.size:
            raise JournalError("journal header: short block")
        magic, version, bs, jid, ms, slots, ds, dblocks, name = _HEADER.unpack_from(block)
        if magic != MAGIC or version != VERSION:
            raise JournalError("not a sanlab journal (bad magic or version)")
        return cls(bs, jid, ms, slots, ds, dblocks, name.rstrip(b"\0").decode(errors="replace"))

    @classmethod
    def layout(cls, block_size: int, num_blocks: int, journal_id: int, name: str) -> JournalHeader:
        """The regions of a journal on ``num_blocks`` blocks (header, metadata, data)."""
        usable = num_blocks - 1
        slots = usable // METADATA_SHARE
        if slots < 4 or usable - slots < 16:
            raise JournalError(f"a journal needs at least {1 + 4 * METADATA_SHARE} blocks, not {num_blocks}")
        return cls(block_size, journal_id, 1, slots, 1 + slots, usable - slots, name)


@dataclass(slots=True)
class JournalEntry:
    """One update in the journal: a metadata slot's fields."""

    sequence: int
    """The group's sequence number: the order every secondary volume of the group sees."""
    time: float
    """When the host's write arrived (seconds since the epoch): the RPO is measured from it."""
    pair_id: int
    """The pair (hence the volume) the update is for."""
    lba: int
    """First block of the update on that volume."""
    data_address: int
    """First block of its data within the data region."""
    length: int
    """Blocks of data."""
    data_crc: int = 0
    """CRC32 of the data."""

    def encode(self, block_size: int) -> bytes:
        """The slot's block: fields, header CRC, zero padding."""
        raw = _ENTRY.pack(ENTRY_MAGIC, 0, self.sequence, self.time, self.pair_id, self.lba, self.data_address,
                          self.length, self.data_crc)
        return (raw + _CRC.pack(zlib.crc32(raw))).ljust(block_size, b"\0")

    @classmethod
    def decode(cls, block: bytes | bytearray | memoryview) -> JournalEntry | None:
        """The entry a slot holds; None for an empty, torn or foreign slot (bad magic or CRC)."""
        if len(block) < ENTRY_BYTES:
            return None
        raw = bytes(block[:_ENTRY.size])
        (crc,) = _CRC.unpack_from(block, _ENTRY.size)
        if zlib.crc32(raw) != crc:
            return None
        magic, _, seq, t, pid, lba, addr, length, dcrc = _ENTRY.unpack(raw)
        if magic != ENTRY_MAGIC:
            return None
        return cls(seq, t, pid, lba, addr, length, dcrc)


def when_all(futures: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """A future that ends when every one of ``futures`` has, with the first failure if one fails
    (callbacks only, no task)."""
    out: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = [len(futures)]

    def one(f: asyncio.Future[None]) -> None:
        if out.done():
            return
        exc = None if f.cancelled() else f.exception()
        if f.cancelled():
            out.cancel()
        elif exc is not None:
            out.set_exception(exc)
        else:
            left[0] -= 1
            if not left[0]:
                out.set_result(None)
    for f in futures:
        f.add_done_callback(one)
    if not futures:
        out.set_result(None)
    return out


class JournalFull(Exception):
    """No room for an update (metadata slots or data blocks)."""


class Journal:
    """A journal volume's regions and pointers (module docstring)."""

    def __init__(self, volume: Volume, header: JournalHeader) -> None:
        self.volume = volume
        self.header = header
        self.entries: deque[JournalEntry] = deque()
        """Entries held, journal-out first."""
        self.journal_in = 1
        """The sequence number of the next update (primary), or of the next entry expected (secondary)."""
        self.data_in = 0
        """Data-region block where the next update's data goes."""
        self.committed = 0
        """Every entry up to this sequence number is written (step 3 of the flush order)."""
        self._written: set[int] = set()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self.space_freed = asyncio.Event()
        """Set whenever a purge frees room (writers waiting for room wake up)."""
        self.failed: BaseException | None = None
        """A write to the journal volume failed: no entry after it can ever commit."""
        self.nowait: NowaitIO | None = volume if isinstance(volume, NowaitIO) else None
        """The journal volume's page-cache writes on the loop, when it offers them (a file): a
        thread hop or a task per entry costs more than the entry's copy (bench/README.md)."""

    # --- create / open -------------------------------------------------------------------------------

    @classmethod
    async def format(cls, volume: Volume, journal_id: int, name: str) -> Journal:
        """Write a new, empty journal on ``volume`` (its metadata slots cleared)."""
        header = JournalHeader.layout(volume.block_size, volume.num_blocks, journal_id, name)
        await volume.write(0, header.encode())
        zero = bytes(header.meta_slots * header.block_size)
        await volume.write(header.meta_start, zero)
        await volume.flush()
        return cls(volume, header)

    @classmethod
    async def open(cls, volume: Volume, first: int) -> Journal:
        """The journal on ``volume`` with its entries from sequence ``first`` (the catalog's journal-out,
        or restored + 1): consecutive entries with good CRCs; the first bad or missing one ends it."""
        header = JournalHeader.decode(await volume.read(0, 1))
        if header.block_size != volume.block_size:
            raise JournalError("journal header: block size differs from the volume's")
        j = cls(volume, header)
        meta = await volume.read(header.meta_start, header.meta_slots)
        bs = header.block_size
        seq = first
        while len(j.entries) < header.meta_slots:
            slot = seq % header.meta_slots
            e = JournalEntry.decode(memoryview(meta)[slot * bs:(slot + 1) * bs])
            if e is None or e.sequence != seq or not j._fits(e):
                break
            data = await volume.read(header.data_start + e.data_address, e.length)
            if zlib.crc32(data) != e.data_crc:
                break  # a torn tail: never acknowledged
            j.entries.append(e)
            seq += 1
        j.journal_in = seq
        j.committed = seq - 1
        j.data_in = j._end_of(j.entries[-1]) if j.entries else 0
        return j

    def _fits(self, e: JournalEntry) -> bool:
        return 0 < e.length and e.data_address + e.length <= self.header.data_blocks

    def _end_of(self, e: JournalEntry) -> int:
        end = e.data_address + e.length
        return 0 if end == self.header.data_blocks else end

    # --- pointers ------------------------------------------------------------------------------------

    @property
    def journal_out(self) -> int:
        """The oldest sequence number held (journal-in when empty)."""
        return self.entries[0].sequence if self.entries else self.journal_in

    @property
    def data_out(self) -> int:
        """Data-region block of the oldest entry held (data-in when empty)."""
        return self.entries[0].data_address if self.entries else self.data_in

    @property
    def used_blocks(self) -> int:
        """Data blocks between data-out and data-in (cyclic), including a skipped tail."""
        if not self.entries:
            return 0
        d = self.header.data_blocks
        used = (self.data_in - self.data_out) % d
        return used or d

    @property
    def used_bytes(self) -> int:
        """Bytes of data the entries held take (what a secondary still has to get or apply)."""
        return sum(e.length for e in self.entries) * self.header.block_size

    @property
    def use(self) -> float:
        """How full the journal is, 0.0-1.0 (the fuller of its two regions)."""
        return max(len(self.entries) / self.header.meta_slots, self.used_blocks / self.header.data_blocks)

    def oldest_time(self) -> float | None:
        """Time of the oldest entry held, None when empty."""
        return self.entries[0].time if self.entries else None

    # --- adding entries ------------------------------------------------------------------------------

    def _place(self, nblocks: int) -> int | None:
        """Data-region address for ``nblocks`` contiguous blocks, None when there is no room."""
        d = self.header.data_blocks
        if nblocks > d:
            return None
        if len(self.entries) >= self.header.meta_slots:
            return None
        if not self.entries:
            return self.data_in if self.data_in + nblocks <= d else 0
        din, dout = self.data_in, self.data_out
        wrapped = din < dout or din == dout
        if not wrapped:
            if din + nblocks <= d:
                return din
            return 0 if nblocks <= dout else None  # the tail after data-in is skipped
        return din if din + nblocks <= dout else None

    def reserve(self, pair_id: int, lba: int, nblocks: int, now: float, sequence: int | None = None) -> JournalEntry:
        """Room and a sequence number for an update (step 1 of the flush order); :class:`JournalFull`.

        ``sequence`` (the secondary): the primary's number; it must be journal-in, or anything
        above it when the journal is empty (entries the primary turned into its bitmap, PFUS)."""
        if self.failed is not None:
            raise JournalError(f"journal {self.header.name}: an earlier write failed: {self.failed}")
        if sequence is not None and sequence != self.journal_in:
            if self.entries or sequence < self.journal_in:
                raise JournalError(f"journal {self.header.name}: entry {sequence} out of order "
                                   f"(expected {self.journal_in})")
            self.journal_in = sequence
            self.committed = sequence - 1
        addr = self._place(nblocks)
        if addr is None:
            raise JournalFull(f"journal {self.header.name} is full")
        e = JournalEntry(self.journal_in, now, pair_id, lba, addr, nblocks)
        self.journal_in += 1
        self.data_in = self._end_of(e)
        self.entries.append(e)
        return e

    def unreserve(self, entry: JournalEntry, data_in: int) -> None:
        """Give back the newest entry's sequence number and space (``data_in`` as it was before
        :meth:`reserve`): its :meth:`store_nowait` would have waited and nothing was answered."""
        if not self.entries or self.entries[-1] is not entry:
            raise JournalError(f"journal {self.header.name}: only the newest entry can be given back")
        self.entries.pop()
        self.journal_in, self.data_in = entry.sequence, data_in

    def store_nowait(self, entry: JournalEntry, data: bytes | bytearray | memoryview) -> bool:
        """:meth:`store` done on the loop in the page cache (the host's write then needs no task at
        all); False when either write would wait — the caller gives the entry back.  A data region
        written without its slot, or a slot over data not yet its own, is never read: the entry
        is neither committed nor given to the secondary, and the next entry with that number
        overwrites both (at a restart the CRCs tell)."""
        nw = self.nowait
        if nw is None or self.failed is not None:
            return False
        h = self.header
        entry.data_crc = zlib.crc32(data)
        try:
            if not (nw.write_nowait(h.data_start + entry.data_address, data)
                    and nw.write_nowait(h.meta_start + entry.sequence % h.meta_slots, entry.encode(h.block_size))):
                return False
        except Exception as exc:
            self._fail(exc)
            raise
        self._mark_written(entry.sequence)
        return True

    def store_started(self, entry: JournalEntry,
                      data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """:meth:`store` with callbacks only: each write in the page cache on the loop when it can
        be, else started in the I/O pool; the entry counts as written (and commits in order) when
        both are done, and a failure fails every writer waiting (:meth:`committed_future`).  None
        when both are done already, else the future of the two."""
        nw = self.nowait
        if nw is None:
            raise JournalError(f"journal {self.header.name}: its volume has no page-cache writes")
        h = self.header
        entry.data_crc = zlib.crc32(data)
        pending: list[asyncio.Future[None]] = []
        for lba, buf in ((h.data_start + entry.data_address, data),
                         (h.meta_start + entry.sequence % h.meta_slots, entry.encode(h.block_size))):
            if nw.write_nowait(lba, buf):
                continue
            started = nw.write_pooled(lba, buf)
            pending.append(started if started is not None else asyncio.ensure_future(self.volume.write(lba, buf)))
        if not pending:
            self._mark_written(entry.sequence)
            return None

        def stored(done: asyncio.Future[None]) -> None:
            exc = JournalError("journal write cancelled") if done.cancelled() else done.exception()
            if exc is not None:
                self._fail(exc)
            else:
                self._mark_written(entry.sequence)
        both = when_all(pending)
        both.add_done_callback(stored)
        return both

    async def store(self, entry: JournalEntry, data: bytes | bytearray | memoryview) -> None:
        """Write ``entry``'s data and metadata slot (step 2); its CRCs make a torn one detectable.
        Each in the page cache on the loop when it can be, else through the volume."""
        h = self.header
        entry.data_crc = zlib.crc32(data)
        slot, meta = entry.sequence % h.meta_slots, entry.encode(h.block_size)
        nw = self.nowait
        try:
            if nw is None or not nw.write_nowait(h.data_start + entry.data_address, data):
                await self.volume.write(h.data_start + entry.data_address, data)
            if nw is None or not nw.write_nowait(h.meta_start + slot, meta):
                await self.volume.write(h.meta_start + slot, meta)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._mark_written(entry.sequence)

    def _fail(self, exc: BaseException) -> None:
        """A journal write failed: no later entry can commit; every writer waiting is told."""
        self.failed = exc if isinstance(exc, Exception) else JournalError("journal write cancelled")
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(JournalError(f"journal {self.header.name}: write failed: {self.failed}"))

    def _mark_written(self, sequence: int) -> None:
        """Entry ``sequence`` is written: commit it and every written one after it, in order."""
        self._written.add(sequence)
        while self.committed + 1 in self._written:
            self.committed += 1
            self._written.discard(self.committed)
            waiter = self._waiters.pop(self.committed, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_committed(self, sequence: int) -> None:
        """Return when every entry up to ``sequence`` is written (step 3: the host may be answered)."""
        fut = self.committed_future(sequence)
        if fut is not None:
            await asyncio.shield(fut)

    def committed_future(self, sequence: int) -> asyncio.Future[None] | None:
        """A future that ends when every entry up to ``sequence`` is written; None when they are."""
        if sequence <= self.committed:
            return None
        if self.failed is not None:
            raise JournalError(f"journal {self.header.name}: write failed: {self.failed}")
        fut = self._waiters.get(sequence)
        if fut is None:
            fut = self._waiters[sequence] = asyncio.get_running_loop().create_future()
        return fut

    # --- reading and freeing ----------------------------------------------------------------------------

    def committed_entries(self, first: int, max_bytes: int) -> list[JournalEntry]:
        """Committed entries from sequence ``first`` (or journal-out, if later), at most ``max_bytes``
        of data (at least one entry when there is one)."""
        out: list[JournalEntry] = []
        total = 0
        bs = self.header.block_size
        start = max(first, self.journal_out)
        for e in self.entries:
            if e.sequence < start:
                continue
            if e.sequence > self.committed or (out and total + e.length * bs > max_bytes):
                break
            out.append(e)
            total += e.length * bs
        return out

    async def read_data(self, entry: JournalEntry) -> bytes:
        """An entry's data from the data region."""
        return await self.volume.read(self.header.data_start + entry.data_address, entry.length)

    def purge(self, below: int) -> list[JournalEntry]:
        """Free every entry with a sequence number below ``below`` (the caller committed the new
        journal-out first: step 4); the entries freed, oldest first."""
        freed: list[JournalEntry] = []
        while self.entries and self.entries[0].sequence < below and self.entries[0].sequence <= self.committed:
            freed.append(self.entries.popleft())
        if freed:
            self.space_freed.set()
            self.space_freed.clear()
        return freed

    def discard_all(self) -> list[JournalEntry]:
        """Free every entry (the primary turned them into its bitmap: PFUS or split)."""
        return self.purge(self.journal_in)

    def entries_from(self, sequence: int) -> list[JournalEntry]:
        """The held entries from ``sequence`` on (all of them when it is journal-out or below)."""
        if not self.entries:
            return []
        skip = max(0, sequence - self.entries[0].sequence)
        return list(itertools.islice(self.entries, skip, None))

    def find(self, sequence: int) -> JournalEntry | None:
        """The held entry with ``sequence``, if any."""
        if not self.entries:
            return None
        i = sequence - self.entries[0].sequence
        return self.entries[i] if 0 <= i < len(self.entries) else None

    def tracks_of(self, pair_id: int, track_blocks: int) -> Iterable[int]:
        """Tracks (units of ``track_blocks`` from block 0) the held entries of ``pair_id`` touch."""
        for e in self.entries:
            if e.pair_id == pair_id:
                yield from range(e.lba // track_blocks, (e.lba + e.length - 1) // track_blocks + 1)

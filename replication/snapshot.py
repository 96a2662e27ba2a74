"""Snapshots: many space-efficient point-in-time images of a volume (issue 17, beyond seed 004).

Seed 004's division (FIG. 17-19) keeps one point-in-time image on a full-size copy volume and
copies a track of the original there before the original overwrites it.  A snapshot keeps the same
rule without the copy volume: the original's old track goes to a **pool** file shared by every
snapshot of the array, and each snapshot's **track map** says which of its tracks are in the pool
(and at which slot); a track it has no entry for is still the original's.

Sharing: when the original is about to overwrite a track, every snapshot without an entry for it
(the snapshots taken since that track was last overwritten) needs the old data — one slot is
written and all of them map it.  A slot is free when no map names it, so snapshots are deletable
in any order: a slot shared by several stays until the last one naming it is deleted.

Files under ``<data-dir>/snapshots/``: ``pool`` (slot ``s`` at byte ``s * TRACK_BYTES``) and, per
snapshot, ``<name>.map`` (:data:`MAP_ENTRY` per track: slot + 1, 0 for none).  Flush order (what
survives kill -9 or power loss): a copy-on-write's data is written to the pool and flushed, then
the map entries are written and flushed, then the original's overwrite starts.  A crash between
leaves a pool slot no map names: free again at the next start (the allocator is rebuilt from the
maps).

Lock order: the original's range lock (whole tracks) is taken exclusively by writes, shared by
snapshot reads of tracks the maps do not name; the pool is written only under the original's
exclusive range of the track.
"""
from __future__ import annotations

import asyncio
import os
import struct

from sanlab.replication.io_gate import TrackVolume
from sanlab.replication.pair import TRACK_BYTES
from sanlab.scsi.sense import Asc, ScsiError, SenseKey
from sanlab.storage.emulated import EmulatedBlockOps
from sanlab.storage.volume import Volume

MAP_ENTRY = struct.Struct("<I")
"""One track's entry of a snapshot's map file: pool slot + 1, or 0 (the original holds the track)."""


class Pool:
    """The pool file: 64 KiB slots of old tracks, shared by every snapshot (blocking I/O in threads)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.refs: dict[int, int] = {}
        """Slot → number of map entries naming it (rebuilt from the maps at start)."""
        self._free: list[int] = []
        self._next = 0

    def rebuild(self, maps: list[TrackMap]) -> None:
        """The allocator from the maps: slots nobody names are free."""
        self.refs.clear()
        for m in maps:
            for slot in m.slots.values():
                self.refs[slot] = self.refs.get(slot, 0) + 1
        self._next = max(self.refs, default=-1) + 1
        self._free = sorted(set(range(self._next)) - set(self.refs), reverse=True)

    def allocate(self, users: int) -> int:
        """A free slot, named by ``users`` map entries."""
        slot = self._free.pop() if self._free else self._next
        if slot == self._next:
            self._next += 1
        self.refs[slot] = users
        return slot

    def release(self, slot: int) -> None:
        """One map entry naming ``slot`` went; the slot is free when none is left."""
        left = self.refs[slot] - 1
        if left:
            self.refs[slot] = left
        else:
            del self.refs[slot]
            self._free.append(slot)

    @property
    def used_bytes(self) -> int:
        """Bytes of the slots in use."""
        return len(self.refs) * TRACK_BYTES

    async def write(self, slot: int, data: bytes) -> None:
        """Store a track in ``slot`` and make it durable."""
        def go() -> None:
            os.pwrite(self.fd, data, slot * TRACK_BYTES)
            os.fsync(self.fd)
        await asyncio.to_thread(go)

    async def read(self, slot: int, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` of ``slot``."""
        return await asyncio.to_thread(os.pread, self.fd, n, slot * TRACK_BYTES + offset)

    def close(self) -> None:
        """Close the pool file."""
        os.close(self.fd)


class TrackMap:
    """One snapshot's track → pool slot map and its file."""

    def __init__(self, path: str, tracks: int, fresh: bool) -> None:
        self.path = path
        self.tracks = tracks
        self.slots: dict[int, int] = {}
        if fresh:
            try:
                with open(path, "wb") as f:
                    f.truncate(tracks * MAP_ENTRY.size)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:  # a full file system: the error names the map
                raise OSError(exc.errno, exc.strerror, path) from exc
        else:
            with open(path, "rb") as f:
                raw = f.read()
            for t, (v,) in enumerate(MAP_ENTRY.iter_unpack(raw[:tracks * MAP_ENTRY.size])):
                if v:
                    self.slots[t] = v - 1
        self.fd = os.open(path, os.O_RDWR)

    def put_durably(self, entries: dict[int, int]) -> None:
        """Record ``track → slot`` entries and flush (blocking)."""
        for t, slot in entries.items():
            os.pwrite(self.fd, MAP_ENTRY.pack(slot + 1), t * MAP_ENTRY.size)
            self.slots[t] = slot
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the map file."""
        os.close(self.fd)


class Snapshot:
    """One point-in-time image of an origin volume."""

    def __init__(self, name: str, origin: SnapshotOrigin, tmap: TrackMap, created: float) -> None:
        self.name, self.origin, self.map, self.created = name, origin, tmap, created

    async def read(self, lba: int, nblocks: int) -> bytes:
        """The snapshot's blocks: pool slots where its map names one, the original's blocks elsewhere."""
        o = self.origin
        tb, bs = o.track_blocks, o.block_size
        out = bytearray()
        pos, end = lba, lba + nblocks
        while pos < end:
            t = pos // tb
            n = min((t + 1) * tb, end) - pos
            slot = self.map.slots.get(t)
            if slot is None:
                # Not overwritten since the snapshot, unless a write copies it now: the original's
                # range, shared, orders us against that copy-on-write.
                async with o.range_lock.hold(pos, n, exclusive=False):
                    slot = self.map.slots.get(t)
                    if slot is None:
                        out += await o.local.read(pos, n)
            if slot is not None:
                out += await o.pool.read(slot, (pos - t * tb) * bs, n * bs)
            pos += n
        return bytes(out)

    @property
    def own_bytes(self) -> int:
        """Pool bytes this snapshot's map names (shared slots counted for each snapshot)."""
        return len(self.map.slots) * TRACK_BYTES


class SnapshotOrigin(TrackVolume):
    """An LU's volume that has snapshots: its writes copy old tracks to the pool first (module docstring;
    WRITE, UNMAP, WRITE SAME and COMPARE AND WRITE go through :meth:`_raw_write`'s copy-on-write rule)."""

    def __init__(self, local: Volume, label: str, pool: Pool) -> None:
        super().__init__(local, label)
        self.pool = pool
        self.snapshots: list[Snapshot] = []

    @property
    def tracks(self) -> int:
        """Tracks of the volume (the last may be short)."""
        return -(-self.num_blocks // self.track_blocks)


    # --- I/O -------------------------------------------------------------------------------------------

    async def read(self, lba: int, nblocks: int) -> bytes:
        """The original's blocks (snapshots never change what the original reads)."""
        async with self._op():
            return await self.local.read(lba, nblocks)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.local.read(lba, nblocks)

    async def write_ungated(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """A write of a restore, while host I/O is held."""
        async with self._op(gated=False), self.range_lock.hold(lba, len(data) // self.block_size):
            await self._raw_write(lba, data, False)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        """The caller holds the range (whole tracks) exclusively."""
        nblocks = len(data) // self.block_size
        if self.snapshots and nblocks:
            tb = self.track_blocks
            for t in range(lba // tb, (lba + nblocks - 1) // tb + 1):
                await self._copy_on_write(t)
        await self.local.write(lba, data, fua)

    async def _copy_on_write(self, track: int) -> None:
        needers = [s for s in self.snapshots if track not in s.map.slots]
        if not needers:
            return
        tb = self.track_blocks
        start = track * tb
        n = min(tb, self.num_blocks - start)
        old = await self.local.read(start, n)
        slot = self.pool.allocate(len(needers))
        try:
            await self.pool.write(slot, old)  # durable before any map names it
            for s in needers:
                await asyncio.to_thread(s.map.put_durably, {track: slot})
        except BaseException:
            named = sum(1 for s in needers if s.map.slots.get(track) == slot)
            for _ in range(len(needers) - named):
                self.pool.release(slot)
            raise

    async def flush(self) -> None:
        """SYNCHRONIZE CACHE: the wrapped volume's."""
        await self.local.flush()

    async def close(self) -> None:
        """The wrapped volume belongs to its owner."""
        await self.local.flush()


class SnapshotView(EmulatedBlockOps):
    """A snapshot as a read-only volume (``snapshot export``): writes are refused."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    @property
    def block_size(self) -> int:
        """The origin's."""
        return self.snap.origin.block_size

    @property
    def num_blocks(self) -> int:
        """The origin's."""
        return self.snap.origin.num_blocks

    async def read(self, lba: int, nblocks: int) -> bytes:
        """The snapshot's point-in-time blocks."""
        return await self.snap.read(lba, nblocks)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.snap.read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Refused: a snapshot is a point-in-time image (DATA PROTECT / WRITE PROTECTED)."""
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)

    async def flush(self) -> None:
        """Nothing is cached here."""

    async def close(self) -> None:
        """The snapshot belongs to its manager."""

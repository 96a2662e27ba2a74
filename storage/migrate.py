"""Migratory copy: take a volume over from another array while hosts use it (seed 004, 2nd/6th embodiments).

A :class:`MigratingVolume` stands in front of the destination volume.  For
the migrated range, a *copied* bitmap (one bit per chunk) says where the data
is: copied chunks are served from the destination; a host read of a chunk not
yet copied fetches it from the source on demand (and keeps it); a host write to
such a chunk first completes the chunk from the source, lands locally, and the
chunk is marked copied — durably, before the write is acknowledged — so the
background copy can never overwrite it.  The background copy walks a copy
pointer through the range, skipping copied chunks.  Outside the range (partial
migration) I/O passes through to the source.

The copied-map is a :class:`~sanlab.storage.bitmap.PersistentBitmap`
(``migrate-<dest>.bitmap``, beside ``migrate-<dest>.json`` which holds the
range), so a restart resumes where the copy was.  Flush order: a chunk's bit is
set only after its data is flushed on the destination; the background copy
sets bits in memory and makes them durable in batches (a lost bit only costs
copying the chunk again), but before a host write to a chunk is acknowledged
every bit set so far is durable, so the background copy can never bring the
source's old data back over an acknowledged write after a crash.  When every
chunk is copied the pair is *simplex*: the source is no longer read and can be
detached.  The background copy (:meth:`MigratingVolume.run`) runs under the array's task
supervisor (storage/supervisor.py), which asks it to stop (:meth:`MigratingVolume.stop`).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import structlog

from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.durable import replace_json
from sanlab.storage.volume import Volume, VolumeError
from sanlab.storage.emulated import EmulatedBlockOps

log = structlog.get_logger("sanlab.storage.migrate")


@dataclass(slots=True)
class MigrationStatus:
    """Where a migration stands (``migrate status``)."""
    state: str
    """``copying`` or ``simplex``."""
    copied_chunks: int
    total_chunks: int
    copy_pointer: int
    """Next chunk the background copy looks at."""
    rate_bytes_per_s: float


class MigratingVolume(EmulatedBlockOps):
    """The destination volume as hosts see it during (and after) a migratory copy."""

    def __init__(self, name: str, source: Volume, dest: Volume, state_path: str, *, start: int = 0,
                 end: int | None = None, chunk_blocks: int = 2048) -> None:
        if source.block_size != dest.block_size:
            raise VolumeError("source and destination block sizes differ")
        end = source.num_blocks if end is None else end
        if not 0 <= start < end <= min(source.num_blocks, dest.num_blocks):
            raise VolumeError(f"migration range {start}:{end} does not fit source and destination")
        self.name = name
        self.source = source
        self.dest = dest
        self.start, self.end = start, end
        self.chunk = chunk_blocks
        self.state_path = state_path
        self.total = -(-(end - start) // chunk_blocks)
        self.copied = self._open_bitmap()
        """The copied-map: a bit per chunk the destination holds."""
        self.pointer = self.copied.first_clear()
        self._bytes_copied = 0
        self._t0 = time.monotonic()
        self._stop_asked = False
        self._idle = asyncio.Event()
        """Set while :meth:`run` is not running."""
        self._idle.set()

    # --- persistence --------------------------------------------------------------------------------

    def _open_bitmap(self) -> PersistentBitmap:
        bitmap_path = os.path.splitext(self.state_path)[0] + ".bitmap"
        desc = {"start": self.start, "end": self.end, "chunk": self.chunk}
        if not os.path.exists(self.state_path):
            bitmap = PersistentBitmap(bitmap_path, self.total, fresh=True)
            replace_json(self.state_path, desc)  # after the fresh bitmap: the pair is only known once both exist
            return bitmap
        with open(self.state_path) as f:
            st = json.load(f)
        if (st["start"], st["end"], st["chunk"]) != (self.start, self.end, self.chunk):
            raise VolumeError(f"migration state {self.state_path} is for another range")
        if "copied" not in st:
            return PersistentBitmap(bitmap_path, self.total)
        # An earlier release kept a byte per chunk in the JSON: carry it over, then drop it.
        bitmap = PersistentBitmap(bitmap_path, self.total, fresh=True)
        for c, flag in enumerate(bytes.fromhex(st["copied"])[:self.total]):
            if flag:
                bitmap.mark(c)
        bitmap.flush()
        replace_json(self.state_path, desc)
        return bitmap

    async def _persist(self) -> None:
        """Make every copied bit durable (PersistentBitmap serialises concurrent flushes)."""
        if self.copied.pending:
            await asyncio.get_running_loop().run_in_executor(None, self.copied.flush)

    # --- geometry ------------------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        """The destination's block length (the source's is the same)."""
        return self.dest.block_size

    @property
    def num_blocks(self) -> int:
        """The source's capacity: hosts see the volume they are taken over from."""
        return self.source.num_blocks

    @property
    def simplex(self) -> bool:
        """Every chunk is the destination's: the source is no longer read."""
        return self.copied.all_set()

    def status(self) -> MigrationStatus:
        """Copied chunks, copy pointer and rate since this object was made."""
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        return MigrationStatus("simplex" if self.simplex else "copying", self.copied.count(), self.total,
                               self.pointer, self._bytes_copied / elapsed)

    def _chunk_range(self, c: int) -> tuple[int, int]:
        first = self.start + c * self.chunk
        return first, min(self.chunk, self.end - first)

    # --- copying ------------------------------------------------------------------------------------

    async def _copy_chunk(self, c: int) -> None:
        """Bring chunk ``c`` over (caller holds its range lock)."""
        if self.copied.has(c):
            return
        first, n = self._chunk_range(c)
        data = await self.source.read(first, n)
        await self.dest.write(first, data)
        await self.dest.flush()
        self.copied.mark(c)  # after the data is on the destination; durable at the next _persist
        self._bytes_copied += len(data)

    async def run(self, persist_every: int = 16) -> bool:
        """The background copy, from the copy pointer to the end: True once the pair is simplex.

        Returns False when :meth:`stop` asked it to stop, after the chunk in hand, with every bit
        set so far durable (so the next start resumes there).
        """
        self._idle.clear()
        try:
            since = 0
            while self.pointer < self.total and not self._stop_asked:
                c = self.pointer
                first, n = self._chunk_range(c)
                if not self.copied.has(c):
                    async with self.range_lock.hold(first, n):
                        await self._copy_chunk(c)
                    since += 1
                self.pointer = c + 1
                if since >= persist_every:
                    await self._persist()
                    since = 0
                await asyncio.sleep(0)  # let host I/O in between chunks
            await self._persist()
        finally:
            self._idle.set()
        if self.pointer < self.total:
            log.info("migration_paused", volume=self.name, copied_chunks=self.copied.count(), chunks=self.total)
            return False
        log.info("migration_simplex", volume=self.name, chunks=self.total)
        return True

    async def stop(self) -> None:
        """Ask :meth:`run` to return after the chunk in hand, and wait until it has.

        A chunk's copy is never cancelled midway: its write to the destination may be running in
        an executor thread, and once the range lock was let go a host write to the chunk could be
        overtaken by it.  The background copy stays stopped (until the array starts again).
        """
        self._stop_asked = True
        await self._idle.wait()

    # --- host I/O --------------------------------------------------------------------------------------

    def _segments(self, lba: int, n: int) -> list[tuple[int | None, int, int]]:
        """(chunk or None for pass-through, first block, blocks) covering [lba, lba+n)."""
        out: list[tuple[int | None, int, int]] = []
        pos, end = lba, lba + n
        while pos < end:
            if pos < self.start:
                m = min(end, self.start) - pos
                out.append((None, pos, m))
            elif pos >= self.end:
                out.append((None, pos, end - pos))
                m = end - pos
            else:
                c = (pos - self.start) // self.chunk
                cfirst, cn = self._chunk_range(c)
                m = min(end, cfirst + cn) - pos
                out.append((c, pos, m))
            pos += m
        return out

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self.num_blocks:
            raise VolumeError(f"range {lba}+{n} outside volume of {self.num_blocks} blocks")

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        out = bytearray()
        for c, first, n in self._segments(lba, nblocks):
            if c is None:
                out += await self.source.read(first, n)
            else:
                if not self.copied.has(c):
                    await self._copy_chunk(c)  # on demand; kept, so the next read is local
                    await self._persist()
                out += await self.dest.read(first, n)
        return bytes(out)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        bs = self.block_size
        if len(data) % bs:
            raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
        self._check(lba, len(data) // bs)
        view = memoryview(data)
        for c, first, n in self._segments(lba, len(data) // bs):
            part = view[(first - lba) * bs:(first - lba + n) * bs]
            if c is None:
                await self.source.write(first, part, fua)
                continue
            if not self.copied.has(c):
                cfirst, cn = self._chunk_range(c)
                if (first, n) != (cfirst, cn):
                    await self._copy_chunk(c)  # complete the chunk before part of it is overwritten
                else:
                    await self.dest.write(first, part)
                    await self.dest.flush()
                    self.copied.mark(c)
                    continue
            await self.dest.write(first, part, fua)
        # Every chunk written here is the destination's: the background copy must never see one as
        # uncopied, even after a crash, so the copied-map (including bits the background copy set
        # and has not flushed yet) is durable before the host hears GOOD.
        await self._persist()

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Read; chunks not copied yet are copied first (exclusive hold: a read may write the destination)."""
        # Exclusive: a read may copy a chunk on demand.
        async with self.range_lock.hold(lba, nblocks):
            return await self._raw_read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Write under an exclusive hold; GOOD only once the copied-map covering it is durable."""
        async with self.range_lock.hold(lba, len(data) // self.block_size):
            await self._raw_write(lba, data, fua)

    async def flush(self) -> None:
        """Flush the destination, and the source when part of the volume still lives there."""
        await self.dest.flush()
        if self.start > 0 or self.end < self.source.num_blocks:
            await self.source.flush()

    async def close(self) -> None:
        """Stop the background copy, flush, and close the copied-map."""
        await self.stop()
        await self.flush()
        self.copied.close()

    def describe(self) -> dict[str, Any]:
        """The JSON row of ``migrate status``."""
        st = self.status()
        return {"volume": self.name, "state": st.state, "copied_chunks": st.copied_chunks,
                "total_chunks": st.total_chunks, "progress": st.copied_chunks / st.total_chunks,
                "rate_bytes_per_s": round(st.rate_bytes_per_s), "range": [self.start, self.end]}

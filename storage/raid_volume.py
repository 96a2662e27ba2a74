"""A RAID group as a :class:`~sanlab.storage.volume.Volume` of logical blocks (what an LU uses)."""
from __future__ import annotations

import asyncio

from sanlab.storage.raid import RaidGroup
from sanlab.storage.volume import VolumeError
from sanlab.storage.emulated import EmulatedBlockOps


class RaidVolume(EmulatedBlockOps):
    """A RAID group seen as a :class:`~sanlab.storage.volume.Volume` of logical blocks.

    UNMAP, WRITE SAME and COMPARE AND WRITE are the emulated ones (a RAID group
    cannot deallocate); the range lock makes COMPARE AND WRITE atomic.
    """

    def __init__(self, group: RaidGroup, block_size: int = 512) -> None:
        self.group = group
        self._block_size = block_size
        self._num_blocks = group.capacity // block_size

    @property
    def block_size(self) -> int:
        """As given at creation (512 by default)."""
        return self._block_size

    @property
    def num_blocks(self) -> int:
        """The group's capacity in whole blocks."""
        return self._num_blocks

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self._num_blocks:
            raise VolumeError(f"range {lba}+{n} outside volume of {self._num_blocks} blocks")

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        return await self.group.read(lba * self._block_size, nblocks * self._block_size)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if len(data) % self._block_size:
            raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
        self._check(lba, len(data) // self._block_size)
        await self.group.write(lba * self._block_size, data)
        if fua:
            await self.group.flush()

    async def read(self, lba: int, nblocks: int) -> bytes:
        """:meth:`RaidGroup.read` under a shared range hold; VolumeError outside the volume or when no
        member can supply a chunk."""
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self._raw_read(lba, nblocks)

    # NowaitIO (storage/volume.py): the READ/WRITE fast path of the device server.  Reads whose
    # chunks are all cached are answered on the event loop; everything else takes read/write.

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """:meth:`read` finished from the drives' page cache, or None (see RaidGroup.read_nowait).
        Not while an overlapping write holds the range: a read sees a write whole or not at all."""
        if not nblocks or self.range_lock.would_wait(lba, nblocks, exclusive=False):
            return None
        self._check(lba, nblocks)
        return self.group.read_nowait(lba * self._block_size, nblocks * self._block_size)

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """Always False: a RAID write is never done half on the loop.  A mirror or parity update
        cut short by a would-block could not be finished by :meth:`write` (a RAID 5/6
        read-modify-write would compute parity from data already new on the drive)."""
        return False

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """None: an uncached RAID read takes :meth:`read` (chunk by chunk in the pool)."""
        return None

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """None: RAID writes take :meth:`write`, under the stripe locks and write-intent bitmap."""
        return None

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """:meth:`RaidGroup.write` (data and parity) under an exclusive range hold; with ``fua`` the whole
        group is then flushed."""
        async with self.range_lock.hold(lba, len(data) // self._block_size):
            await self._raw_write(lba, data, fua)

    async def flush(self) -> None:
        """Flush the group (every member that is not FAILED)."""
        await self.group.flush()

    async def close(self) -> None:
        """Close the group: this volume owns it (an LDEV volume only flushes its shared groups)."""
        await self.group.close()

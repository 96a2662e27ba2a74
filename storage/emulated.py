"""Block operations built from read/write alone, for stores that cannot deallocate (RAID groups,
LDEV volumes, external LUNs, wrappers): UNMAP and WRITE SAME write, GET LBA STATUS says mapped,
COMPARE AND WRITE reads, compares and writes under the exclusive range hold."""
from __future__ import annotations

from sanlab.storage.range_lock import RangeLock
from sanlab.storage.volume import LbaExtent, ProvisioningStatus, VolumeError, first_mismatch


WRITE_SAME_CHUNK_BYTES = 1 << 20
"""WRITE SAME and zero-filling write at most this much per call to the backing store."""


class EmulatedBlockOps:
    """The provisioning and compare-and-write operations built from ``read``/``write`` alone.

    For volumes that cannot deallocate (RAID groups, external LUNs): ``thin`` is
    False, UNMAP writes zeros, GET LBA STATUS reports everything mapped.  The
    class that inherits this must provide ``read``/``write``/``block_size``/
    ``num_blocks`` and take :attr:`range_lock` exclusively in its own ``write``
    (and shared in ``read``): that is what makes :meth:`compare_and_write` atomic.
    """

    _range_lock: RangeLock | None = None

    @property
    def block_size(self) -> int:
        """Provided by the volume class."""
        raise NotImplementedError

    @property
    def num_blocks(self) -> int:
        """Provided by the volume class."""
        raise NotImplementedError

    @property
    def range_lock(self) -> RangeLock:
        """The volume's range lock (created on first use)."""
        if self._range_lock is None:
            self._range_lock = RangeLock()
        return self._range_lock

    @property
    def thin(self) -> bool:
        """Emulated volumes are fully provisioned."""
        return False

    @property
    def lbprz(self) -> bool:
        """UNMAP writes zeros, so unmapped blocks do read as zeros."""
        return True

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        """Read without taking the range lock (the caller holds it)."""
        raise NotImplementedError

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        """Write without taking the range lock (the caller holds it)."""
        raise NotImplementedError

    async def _fill(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, fua: bool) -> None:
        per = max(1, WRITE_SAME_CHUNK_BYTES // self.block_size)
        chunk = bytes(block) * min(per, nblocks)
        done = 0
        while done < nblocks:
            n = min(per, nblocks - done)
            await self._raw_write(lba + done, memoryview(chunk)[:n * self.block_size], fua)
            done += n

    async def unmap(self, lba: int, nblocks: int) -> None:
        """Write zeros (LBPRZ holds, nothing is deallocated)."""
        async with self.range_lock.hold(lba, nblocks):
            await self._fill(lba, nblocks, bytes(self.block_size), False)

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """``block`` written ``nblocks`` times (``unmap``: this volume cannot deallocate, so it writes)."""
        if len(block) != self.block_size:
            raise VolumeError(f"WRITE SAME block of {len(block)} bytes, block size {self.block_size}")
        async with self.range_lock.hold(lba, nblocks):
            await self._fill(lba, nblocks, block, fua)

    async def get_lba_status(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """Everything from ``lba`` to the end is mapped."""
        if not 0 <= lba < self.num_blocks:
            raise VolumeError(f"LBA {lba} outside volume of {self.num_blocks} blocks")
        return [(lba, self.num_blocks - lba, ProvisioningStatus.MAPPED)]

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """Read, compare, write under the exclusive range lock."""
        if len(verify) != len(data) or len(data) % self.block_size:
            raise VolumeError("COMPARE AND WRITE buffers must be the same whole number of blocks")
        n = len(data) // self.block_size
        async with self.range_lock.hold(lba, n):
            off = first_mismatch(await self._raw_read(lba, n), verify)
            if off is None:
                await self._raw_write(lba, data, fua)
            return off

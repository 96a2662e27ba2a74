"""The Volume protocol: what a logical unit reads and writes blocks through.

Every backing store — a plain file, a RAID group, a virtual volume, an external
LUN on a peer array, a replication wrapper — implements this protocol, so the
SCSI device server never knows which one it talks to.  A write is complete (and
may be acknowledged to the host) only when :meth:`Volume.write` returns.
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, runtime_checkable


class VolumeError(Exception):
    """An I/O failure of the backing store (becomes MEDIUM ERROR / HARDWARE ERROR)."""


@runtime_checkable
class Volume(Protocol):
    """Block storage addressed in logical blocks of :attr:`block_size` bytes."""

    @property
    def block_size(self) -> int:
        """Logical block size in bytes (512 or 4096)."""
        ...

    @property
    def num_blocks(self) -> int:
        """Capacity in logical blocks."""
        ...

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Return ``nblocks`` blocks starting at ``lba``."""
        ...

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Write whole blocks at ``lba``; with ``fua`` the data is durable on return."""
        ...

    async def flush(self) -> None:
        """Make every completed write durable (SYNCHRONIZE CACHE)."""
        ...

    async def close(self) -> None:
        """Flush and release the backing store."""
        ...


# One bounded pool for blocking file I/O (ARCHITECTURE.md convention 6: the
# loop never waits on disk).  Two cores here: a few threads overlap fsync with
# page-cache copies without thrashing.
_IO_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sanlab-io")


class FileVolume:
    """A volume backed by one (sparse) file, created at ``size_bytes`` if missing."""

    def __init__(self, path: str, size_bytes: int, block_size: int = 512, readonly: bool = False) -> None:
        if block_size not in (512, 4096):
            raise ValueError(f"block size must be 512 or 4096, not {block_size}")
        if size_bytes <= 0 or size_bytes % block_size:
            raise ValueError(f"size {size_bytes} is not a positive multiple of the block size {block_size}")
        self.path = path
        self._block_size = block_size
        self.readonly = readonly
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        self._fd = os.open(path, flags, 0o600)
        st = os.fstat(self._fd)
        if st.st_size < size_bytes and not readonly:
            os.ftruncate(self._fd, size_bytes)  # sparse: no blocks allocated
        self._num_blocks = size_bytes // block_size
        self._closed = False

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    def _check(self, lba: int, nblocks: int) -> None:
        if lba < 0 or nblocks < 0 or lba + nblocks > self._num_blocks:
            raise VolumeError(f"range {lba}+{nblocks} outside volume of {self._num_blocks} blocks")

    def read_sync(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        want = nblocks * self._block_size
        data = os.pread(self._fd, want, lba * self._block_size)
        if len(data) < want:  # a file shorter than the volume reads as zeros
            data += bytes(want - len(data))
        return data

    def write_sync(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        if self.readonly:
            raise VolumeError("volume is read-only")
        n = len(data)
        if n % self._block_size:
            raise VolumeError(f"write of {n} bytes is not whole blocks")
        self._check(lba, n // self._block_size)
        off = lba * self._block_size
        view = memoryview(data)
        while view:
            done = os.pwrite(self._fd, view, off)
            view = view[done:]
            off += done
        if fua:
            os.fdatasync(self._fd)

    async def read(self, lba: int, nblocks: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.read_sync, lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.write_sync, lba, data, fua)

    async def flush(self) -> None:
        if not self.readonly:
            await asyncio.get_running_loop().run_in_executor(_IO_POOL, os.fdatasync, self._fd)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        os.close(self._fd)
        self._closed = True

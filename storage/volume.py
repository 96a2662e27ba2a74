"""The Volume protocol: what a logical unit reads and writes blocks through.

Every backing store — a plain file, a RAID group, a virtual volume, an external
LUN on a peer array, a replication wrapper — implements this protocol, so the
SCSI device server never knows which one it talks to.  A write is complete (and
may be acknowledged to the host) only when :meth:`Volume.write` returns.

Besides READ/WRITE the protocol carries the block-level operations of logical
block provisioning and atomic read-modify-write (SBC-3 §4.7, §5.2):
:meth:`~Volume.unmap`, :meth:`~Volume.write_same`, :meth:`~Volume.get_lba_status`
and :meth:`~Volume.compare_and_write`.  A store that cannot do them natively
inherits :class:`~sanlab.storage.emulated.EmulatedBlockOps`, which builds them on
``read``/``write``.  The file-backed volume is storage/file_volume.py.

Atomicity (COMPARE AND WRITE, SBC-3 §5.2): every volume serialises operations on
*overlapping* block ranges with a :class:`~sanlab.storage.range_lock.RangeLock` — writes, WRITE SAME, UNMAP
and COMPARE AND WRITE take their range exclusively, reads take it shared — so a
compare-and-write's read, compare and write happen with no other write to the
same blocks in between, and no read sees half of it.  Operations on disjoint
ranges never wait for each other.
"""
from __future__ import annotations

import asyncio
import errno
from enum import IntEnum
from typing import Protocol, runtime_checkable





class VolumeError(Exception):
    """An I/O failure of the backing store (becomes MEDIUM ERROR / HARDWARE ERROR)."""


class SpaceExhausted(VolumeError):
    """The store has no room for blocks a write needs (ENOSPC or EDQUOT under a sparse, thin
    volume): DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (SBC-4 §4.7.3.7), not a medium error."""


def io_failure(exc: OSError, what: str) -> VolumeError:
    """The VolumeError for an OSError of the backing store: :class:`SpaceExhausted` for a full
    filesystem or quota, a plain VolumeError otherwise."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpaceExhausted(f"{what}: {exc.strerror or exc}")
    return VolumeError(f"{what}: {exc}")


class ProvisioningStatus(IntEnum):
    """PROVISIONING STATUS of an LBA status descriptor (SBC-3 §5.13)."""

    MAPPED = 0
    DEALLOCATED = 1
    ANCHORED = 2


LbaExtent = tuple[int, int, int]
"""(first LBA, number of blocks, :class:`ProvisioningStatus`) — one GET LBA STATUS extent."""


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

    @property
    def thin(self) -> bool:
        """Blocks can be deallocated (thin provisioned, SBC-3 §4.7): :meth:`unmap` frees space and
        :meth:`get_lba_status` can report deallocated extents.  False: fully provisioned."""
        ...

    @property
    def lbprz(self) -> bool:
        """Deallocated (and unmapped) blocks read as zeros (LBPRZ, SBC-3 §5.16.2)."""
        ...

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Return ``nblocks`` blocks starting at ``lba``."""
        ...

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Write whole blocks at ``lba``; with ``fua`` the data is durable on return."""
        ...

    async def unmap(self, lba: int, nblocks: int) -> None:
        """Unmap ``nblocks`` blocks at ``lba`` (SBC-3 §4.7): a thin volume deallocates what it
        can; afterwards the blocks read as zeros when :attr:`lbprz`, whatever was deallocated."""
        ...

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """Write the one block ``block`` to each of ``nblocks`` blocks at ``lba`` (SBC-3, WRITE SAME).

        With ``unmap`` a thin volume unmaps the blocks instead (they then read as deallocated
        blocks do, zeros when :attr:`lbprz`, whatever ``block`` holds); a volume that cannot
        deallocate writes ``block`` (SBC-3 §4.7)."""
        ...

    async def get_lba_status(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """Up to ``max_ranges`` extents from ``lba`` on, in order, with no gaps: the first starts at
        ``lba`` exactly (SBC-3 §5.13).  A fully provisioned volume reports everything mapped."""
        ...

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """Atomically: if the blocks at ``lba`` equal ``verify``, write ``data`` there and return
        None; else write nothing and return the byte offset of the first difference (SBC-3 §5.2).

        Atomic against every other operation of this volume on the same blocks."""
        ...

    async def flush(self) -> None:
        """Make every completed write durable (SYNCHRONIZE CACHE)."""
        ...

    async def close(self) -> None:
        """Flush and release the backing store."""
        ...


@runtime_checkable
class Resizable(Protocol):
    """A volume whose capacity can grow while hosts use it (optional beside :class:`Volume`).

    Growing keeps every existing block where it is and adds zero-filled blocks at the end, so
    data already written stays valid; shrinking is never offered (it would cut off blocks a host
    file system may hold).  The caller (the logical unit) reports the change to the initiators.
    """

    async def grow(self, num_blocks: int) -> None:
        """Make the volume ``num_blocks`` blocks long; the new blocks read as zeros.

        ``num_blocks`` equal to the current capacity changes nothing; smaller raises ValueError.
        Once this returns the new capacity is durable (it survives a crash) and I/O may use it."""
        ...


@runtime_checkable
class CryptoErasable(Protocol):
    """A volume that stores its blocks encrypted and can destroy the key (optional beside
    :class:`Volume`; storage/encrypted.py): SANITIZE CRYPTOGRAPHIC ERASE (SBC-3 §4.11.4)."""

    async def crypto_erase(self) -> None:
        """Replace the data key by a new random one, durably: every block written before is unreadable."""
        ...


async def grow_volume(volume: Volume, num_blocks: int) -> None:
    """Grow ``volume`` to ``num_blocks`` blocks, or say why it cannot (:class:`VolumeError`)."""
    if not isinstance(volume, Resizable):
        # Refusing loudly: a caller that went on would report a capacity the volume does not have.
        raise VolumeError(f"a {type(volume).__name__} cannot change its capacity")
    await volume.grow(num_blocks)



@runtime_checkable
class NowaitIO(Protocol):
    """A volume that can sometimes finish a read or write without waiting (optional beside
    :class:`Volume`): the page-cache hit of a file volume.  The device server's fast path for
    READ/WRITE calls these first and falls back to :meth:`Volume.read`/:meth:`Volume.write` on
    None/False, so wrappers that do not offer them (replication, external volumes) are never
    bypassed.  RAID volumes offer cached reads only (storage/raid_volume.py)."""

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """The blocks, or None when getting them would wait."""
        ...

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """Write (not forced unit access) done, or False when it would wait."""
        ...

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """The read started where it may wait (a thread), holding its range until it ends; None
        when it cannot start at once (an overlapping operation holds the range)."""
        ...

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """The write (not forced unit access) started where it may wait; None as for read_pooled."""
        ...


def first_mismatch(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> int | None:
    """Offset of the first byte where ``a`` and ``b`` (same length) differ, or None when equal.

    Done with C-speed operations only: the XOR of both as big integers has its
    highest set bit in the first differing byte.
    """
    if a == b:
        return None
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) - (x.bit_length() + 7) // 8

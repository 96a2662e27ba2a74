"""Logical storage devices (LDEVs) and logical volumes built from them (seed 004, 1st and 3rd embodiments).

Each RAID group's address space is cut into fixed-size chunks, the LDEVs.  An
:class:`LdevAllocator` hands them out — by policy (the group with the most free
LDEVs first, spreading a volume over groups) or by explicit designation — and a
:class:`LogicalVolume` is an ordered list of LDEVs, possibly on different RAID
groups, seen as one :class:`~sanlab.storage.volume.Volume`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from sanlab.storage.volume import VolumeError

from sanlab.storage.emulated import EmulatedBlockOps


class ByteStore(Protocol):
    """What an LDEV lives on: a RAID group's linear byte space."""

    @property
    def capacity(self) -> int:
        """Bytes addressable."""
        ...

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset``."""
        ...

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """``data`` at byte ``offset``; durable only after :meth:`flush`."""
        ...

    async def flush(self) -> None:
        """Make every completed write durable."""
        ...


@dataclass(frozen=True, slots=True)
class Ldev:
    """One LDEV: ``size`` bytes at ``offset`` of RAID group ``group``."""

    group: str
    """Name of the RAID group it is cut from."""
    index: int
    """Its number within the group (``offset // size``)."""
    offset: int
    """Byte offset in the group's address space."""
    size: int
    """Bytes (the allocator's LDEV size)."""

    @property
    def ldev_id(self) -> str:
        """The array's name for it, ``<group>:<index>``."""
        return f"{self.group}:{self.index}"


class LdevAllocator:
    """The LDEVs of every RAID group and which are in use."""

    def __init__(self, ldev_size: int) -> None:
        if ldev_size <= 0 or ldev_size % 4096:
            raise ValueError("LDEV size must be a positive multiple of 4096")
        self.ldev_size = ldev_size
        self._groups: dict[str, int] = {}
        self._used: set[tuple[str, int]] = set()

    def add_group(self, name: str, capacity: int) -> int:
        """Cut a group into LDEVs; returns how many it has."""
        if name in self._groups:
            raise ValueError(f"RAID group {name} already added")
        count = capacity // self.ldev_size
        self._groups[name] = count
        return count

    def ldev(self, group: str, index: int) -> Ldev:
        """LDEV ``index`` of ``group``, used or not; VolumeError when the group has no such LDEV."""
        if group not in self._groups or not 0 <= index < self._groups[group]:
            raise VolumeError(f"no LDEV {group}:{index}")
        return Ldev(group, index, index * self.ldev_size, self.ldev_size)

    def free(self, group: str) -> list[int]:
        """Indexes of ``group``'s LDEVs not in use, ascending (none for a group not added)."""
        return [i for i in range(self._groups.get(group, 0)) if (group, i) not in self._used]

    def mark_used(self, ldevs: list[Ldev]) -> None:
        """Claim specific LDEVs (explicit designation, or reloading the catalog)."""
        for d in ldevs:
            key = (d.group, d.index)
            if key in self._used:
                raise VolumeError(f"LDEV {d.ldev_id} is already in use")
        self._used.update((d.group, d.index) for d in ldevs)

    def release(self, ldevs: list[Ldev]) -> None:
        """Return LDEVs to the free ones (an LDEV not in use is ignored)."""
        for d in ldevs:
            self._used.discard((d.group, d.index))

    def allocate(self, size: int, groups: list[str] | None = None) -> list[Ldev]:
        """LDEVs for ``size`` bytes: each next LDEV from the group with the most free ones (levels usage)."""
        need = -(-size // self.ldev_size)
        pools = {g: self.free(g) for g in (groups or list(self._groups))}
        if sum(len(p) for p in pools.values()) < need:
            raise VolumeError(f"not enough free LDEVs for {size} bytes")
        out: list[Ldev] = []
        for _ in range(need):
            g = max(pools, key=lambda k: (len(pools[k]), k))
            out.append(self.ldev(g, pools[g].pop(0)))
        self.mark_used(out)
        return out


@dataclass(slots=True)
class LdevStats:
    """Access counters of one LDEV of a volume (seed 004, 4th embodiment: the basis of rearrangement)."""

    reads: int = 0
    """Read requests that touched the LDEV."""
    writes: int = 0
    """Write requests that touched the LDEV."""
    read_bytes: int = 0
    """Bytes of those reads: each request's whole length, also the part on another LDEV."""
    write_bytes: int = 0
    """Bytes of those writes, counted as :attr:`read_bytes` are."""
    sequential_reads: int = 0
    """Reads that started where the previous access to this LDEV ended."""
    sequential_writes: int = 0
    """Writes that started where the previous access to this LDEV ended."""
    busy: float = 0.0
    """Seconds spent with the LDEV's group on this LDEV's behalf (utilization numerator)."""
    last_end: int = -1
    """Volume byte offset where the last access touching this LDEV ended (-1: none yet)."""

    @property
    def random_reads(self) -> int:
        """Reads that were not sequential."""
        return self.reads - self.sequential_reads

    @property
    def random_writes(self) -> int:
        """Writes that were not sequential."""
        return self.writes - self.sequential_writes


class LogicalVolume(EmulatedBlockOps):
    """An ordered list of LDEVs as one volume of logical blocks.

    An LDEV can be *rearranged* onto another LDEV (another RAID group) while
    hosts keep reading and writing: a copy pointer advances through it, and every
    access is routed by the pointer — below it to the new LDEV, above it to the
    old.  Each step of the copy holds the range lock on the blocks it moves, so
    no host I/O to those blocks is in flight while they change place.
    """

    def __init__(self, ldevs: list[Ldev], groups: Mapping[str, ByteStore], block_size: int = 512,
                 size: int | None = None) -> None:
        if not ldevs:
            raise ValueError("a logical volume needs at least one LDEV")
        total = sum(d.size for d in ldevs)
        size = total if size is None else size
        if size > total or size % block_size:
            raise ValueError(f"size {size} does not fit {total} bytes of LDEVs in whole {block_size}-byte blocks")
        self.ldevs = list(ldevs)
        """The volume's LDEVs in address order, all of one size; an entry changes when :meth:`rearrange` ends."""
        self.groups = groups
        """The array's RAID groups by name, shared, not copied: a group created after this volume
        must be reachable as soon as an LDEV of it is handed to :meth:`rearrange`."""
        self._block_size = block_size
        self._num_blocks = size // block_size
        self.moving: dict[int, tuple[Ldev, int]] = {}
        """LDEV index → (destination LDEV, copy pointer in bytes) while rearranging."""
        self.stats: list[LdevStats] = [LdevStats() for _ in ldevs]
        """Access counters per LDEV, in the order of :attr:`ldevs` (kept across a rearrangement)."""

    @property
    def block_size(self) -> int:
        """As given at creation (512 by default)."""
        return self._block_size

    @property
    def num_blocks(self) -> int:
        """``size`` in blocks (``size`` defaults to all the LDEVs' bytes)."""
        return self._num_blocks

    def extents(self, offset: int, length: int) -> list[tuple[Ldev, int, int, int]]:
        """(LDEV, offset in LDEV, length, offset in request) covering a byte range of the volume.

        An LDEV being rearranged is split at its copy pointer (call with the range lock held).
        """
        out = []
        done = 0
        size = self.ldevs[0].size
        while done < length:
            pos = offset + done
            i, within = divmod(pos, size)
            n = min(size - within, length - done)
            ldev = self.ldevs[i]
            move = self.moving.get(i)
            if move is not None:
                dest, pointer = move
                if within < pointer:
                    ldev, n = dest, min(n, pointer - within)
                else:
                    n = min(n, size - within)
            out.append((ldev, within, n, done))
            done += n
        return out

    def _account(self, offset: int, length: int, write: bool, seconds: float) -> None:
        size = self.ldevs[0].size
        first, last = offset // size, (offset + length - 1) // size
        for i in range(first, last + 1):
            st = self.stats[i]
            seq = st.last_end == offset
            if write:
                st.writes += 1
                st.write_bytes += length
                st.sequential_writes += seq
            else:
                st.reads += 1
                st.read_bytes += length
                st.sequential_reads += seq
            st.busy += seconds / (last - first + 1)
            st.last_end = offset + length

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self._num_blocks:
            raise VolumeError(f"range {lba}+{n} outside volume of {self._num_blocks} blocks")

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Under a shared range hold, each LDEV extent read from its group, concurrently; VolumeError
        outside the volume."""
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self._raw_read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Under an exclusive range hold, each LDEV extent written to its group, concurrently; with ``fua``
        the groups of :attr:`ldevs` are flushed before this returns."""
        async with self.range_lock.hold(lba, len(data) // self._block_size):
            await self._raw_write(lba, data, fua)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        bs = self._block_size
        out = bytearray(nblocks * bs)
        parts = self.extents(lba * bs, nblocks * bs)
        t0 = time.monotonic()
        chunks = await asyncio.gather(*(self.groups[d.group].read(d.offset + off, n) for d, off, n, _ in parts))
        for (_, _, n, roff), chunk in zip(parts, chunks):
            out[roff:roff + n] = chunk
        if nblocks:
            self._account(lba * bs, nblocks * bs, False, time.monotonic() - t0)
        return bytes(out)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        bs = self._block_size
        if len(data) % bs:
            raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
        self._check(lba, len(data) // bs)
        view = memoryview(data)
        parts = self.extents(lba * bs, len(view))
        t0 = time.monotonic()
        await asyncio.gather(*(self.groups[d.group].write(d.offset + off, view[roff:roff + n])
                               for d, off, n, roff in parts))
        if fua:
            await self.flush()
        if len(view):
            self._account(lba * bs, len(view), True, time.monotonic() - t0)

    async def rearrange(self, index: int, dest: Ldev, step: int = 1 << 20,
                        progress: Callable[[float], None] | None = None) -> Ldev:
        """Move LDEV ``index`` onto ``dest`` online; returns the old LDEV (free once this returns)."""
        if index in self.moving:
            raise VolumeError(f"LDEV {index} of this volume is already moving")
        old = self.ldevs[index]
        if dest.size != old.size:
            raise VolumeError("LDEVs of different sizes")
        bs = self._block_size
        step = max(bs, step - step % bs)  # at least one block per step, or the copy never ends
        self.moving[index] = (dest, 0)
        try:
            pointer = 0
            while pointer < old.size:
                n = min(step, old.size - pointer)
                first = (index * old.size + pointer) // bs
                async with self.range_lock.hold(first, n // bs):
                    data = await self.groups[old.group].read(old.offset + pointer, n)
                    await self.groups[dest.group].write(dest.offset + pointer, data)
                    pointer += n
                    self.moving[index] = (dest, pointer)
                if progress is not None:
                    progress(pointer / old.size)
            await self.groups[dest.group].flush()
            self.ldevs[index] = dest
        finally:
            self.moving.pop(index, None)
        return old

    async def flush(self) -> None:
        """Flush every RAID group holding one of :attr:`ldevs` or an LDEV being moved onto (host
        writes below a move's copy pointer land there: SYNCHRONIZE CACHE and FUA must cover them),
        one after the other in name order."""
        groups = {d.group for d in self.ldevs} | {dest.group for dest, _ in self.moving.values()}
        for name in sorted(groups):
            await self.groups[name].flush()

    async def close(self) -> None:
        """Flush only: the RAID groups are the array's, shared with other volumes, and stay open."""
        await self.flush()

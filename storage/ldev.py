"""Logical storage devices (LDEVs) and logical volumes built from them (seed 004, 1st and 3rd embodiments).

Each RAID group's address space is cut into fixed-size chunks, the LDEVs.  An
:class:`LdevAllocator` hands them out — by policy (the group with the most free
LDEVs first, spreading a volume over groups) or by explicit designation — and a
:class:`LogicalVolume` is an ordered list of LDEVs, possibly on different RAID
groups, seen as one :class:`~sanlab.storage.volume.Volume`.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from sanlab.storage.volume import EmulatedBlockOps, VolumeError


class ByteStore(Protocol):
    """What an LDEV lives on: a RAID group's linear byte space."""

    @property
    def capacity(self) -> int: ...

    async def read(self, offset: int, length: int) -> bytes: ...

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Ldev:
    """One LDEV: ``size`` bytes at ``offset`` of RAID group ``group``."""

    group: str
    index: int
    offset: int
    size: int

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
        if group not in self._groups or not 0 <= index < self._groups[group]:
            raise VolumeError(f"no LDEV {group}:{index}")
        return Ldev(group, index, index * self.ldev_size, self.ldev_size)

    def free(self, group: str) -> list[int]:
        return [i for i in range(self._groups.get(group, 0)) if (group, i) not in self._used]

    def mark_used(self, ldevs: list[Ldev]) -> None:
        """Claim specific LDEVs (explicit designation, or reloading the catalog)."""
        for d in ldevs:
            key = (d.group, d.index)
            if key in self._used:
                raise VolumeError(f"LDEV {d.ldev_id} is already in use")
        self._used.update((d.group, d.index) for d in ldevs)

    def release(self, ldevs: list[Ldev]) -> None:
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


class LogicalVolume(EmulatedBlockOps):
    """An ordered list of LDEVs as one volume of logical blocks."""

    def __init__(self, ldevs: list[Ldev], groups: dict[str, ByteStore], block_size: int = 512,
                 size: int | None = None) -> None:
        if not ldevs:
            raise ValueError("a logical volume needs at least one LDEV")
        total = sum(d.size for d in ldevs)
        size = total if size is None else size
        if size > total or size % block_size:
            raise ValueError(f"size {size} does not fit {total} bytes of LDEVs in whole {block_size}-byte blocks")
        self.ldevs = list(ldevs)
        self.groups = groups
        self._block_size = block_size
        self._num_blocks = size // block_size

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    def extents(self, offset: int, length: int) -> list[tuple[Ldev, int, int, int]]:
        """(LDEV, offset in LDEV, length, offset in request) covering a byte range of the volume."""
        out = []
        done = 0
        size = self.ldevs[0].size
        while done < length:
            pos = offset + done
            i, within = divmod(pos, size)
            n = min(size - within, length - done)
            out.append((self.ldevs[i], within, n, done))
            done += n
        return out

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self._num_blocks:
            raise VolumeError(f"range {lba}+{n} outside volume of {self._num_blocks} blocks")

    async def read(self, lba: int, nblocks: int) -> bytes:
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self._raw_read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        async with self.range_lock.hold(lba, len(data) // self._block_size):
            await self._raw_write(lba, data, fua)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        bs = self._block_size
        out = bytearray(nblocks * bs)
        parts = self.extents(lba * bs, nblocks * bs)
        chunks = await asyncio.gather(*(self.groups[d.group].read(d.offset + off, n) for d, off, n, _ in parts))
        for (_, _, n, roff), chunk in zip(parts, chunks):
            out[roff:roff + n] = chunk
        return bytes(out)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        bs = self._block_size
        if len(data) % bs:
            raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
        self._check(lba, len(data) // bs)
        view = memoryview(data)
        parts = self.extents(lba * bs, len(view))
        await asyncio.gather(*(self.groups[d.group].write(d.offset + off, view[roff:roff + n])
                               for d, off, n, roff in parts))
        if fua:
            await self.flush()

    async def flush(self) -> None:
        for name in sorted({d.group for d in self.ldevs}):
            await self.groups[name].flush()

    async def close(self) -> None:
        await self.flush()

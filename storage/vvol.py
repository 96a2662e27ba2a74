"""Virtual volumes and their mapping tables (seed 002, FIG. 4-5; 7th-9th embodiments).

* **V/R table** (T1, FIG. 4(a)): per virtual volume number #V, the real volume,
  the start address allocated in it, the size, and the *multiple
  virtualization* information — whether more than one virtual volume is
  allocated on overlapping addresses of the same real volume.
* **LU/V table** (T2, FIG. 4(b)): per LU, the virtual volume, the start
  address in it and the size — an LU may expose a part of a virtual volume.

Two mappings over the same blocks show each other's data, so an overlap is
only made when it is asked for: a row carries ``multiple_virtualization=True``
when its creator asked to share blocks, and :meth:`MappingTables.map_virtual` /
:meth:`MappingTables.map_lu` refuse an overlapping row without it
(:class:`OverlapError`).  Issue 12 found an LU made by mistake over another
LU's blocks serving that LU's data byte for byte.

Addresses here are logical blocks of the real volume.  :meth:`MappingTables.lu_volume`
turns an LU row into a :class:`~sanlab.storage.volume.Volume` whose block
addresses are converted through both tables (the conversions of FIG. 5:
LU# → V#, then V address → real address).  A real volume can itself be the
volume of another LU, which stacks one virtual volume on another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sanlab.storage.atomic import AtomicWriter
from sanlab.storage.volume import LbaExtent, Volume, VolumeError


@dataclass(frozen=True, slots=True)
class VRRow:
    """V/R table row: virtual volume #V is ``size`` blocks of ``real`` starting at ``real_start``."""

    vvol: int
    """Virtual volume number #V."""
    real: str
    """Name of the real volume it is allocated on, or of an LU (a virtual volume stacked on an LU)."""
    real_start: int
    """First block of ``real`` it maps."""
    size: int
    """Length in blocks."""
    multiple_virtualization: bool = False
    """Asked for: this virtual volume may map blocks of ``real`` another one maps too."""


@dataclass(frozen=True, slots=True)
class LuVRow:
    """LU/V table row: the LU shows ``size`` blocks of virtual volume ``vvol`` from ``vstart``."""

    lu: str
    """Name of the LU."""
    vvol: int
    """Number of the virtual volume it shows."""
    vstart: int
    """First block of the virtual volume it shows."""
    size: int
    """Length in blocks (the LU's capacity)."""
    multiple_virtualization: bool = False
    """Asked for: this LU may show blocks of ``vvol`` another LU shows too."""


class OverlapError(ValueError):
    """A new mapping would share blocks with existing ones and sharing was not asked for."""


class WindowVolume:
    """``size`` blocks of ``base`` starting at block ``start`` (one address conversion).

    ``base`` may be given as a function that names the volume at each call: the mapping tables do
    so, so that a volume replaced in them (a pair's wrapper put in front of a real volume, and
    taken away again) is what every window over it uses from then on, never a stale object
    captured when the window was made (issue 13, seam 1).
    """

    def __init__(self, base: Volume | Callable[[], Volume], start: int, size: int) -> None:
        self._base: Callable[[], Volume] = base if callable(base) else (lambda: base)
        current = self._base()
        if start < 0 or size <= 0 or start + size > current.num_blocks:
            raise VolumeError(f"window {start}+{size} outside a volume of {current.num_blocks} blocks")
        self.start = start
        self._size = size

    @property
    def base(self) -> Volume:
        """The volume under the window, as of now."""
        return self._base()

    @property
    def block_size(self) -> int:
        """The base's block size."""
        return self.base.block_size

    @property
    def num_blocks(self) -> int:
        """The window's ``size``, whatever the base's capacity."""
        return self._size

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self._size:
            raise VolumeError(f"range {lba}+{n} outside volume of {self._size} blocks")

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Blocks ``lba``.. of the window, read from the base at ``start + lba``; VolumeError past the
        window's end."""
        self._check(lba, nblocks)
        return await self.base.read(self.start + lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Whole blocks written to the base at ``start + lba``; VolumeError past the window's end."""
        if len(data) % self.block_size:
            raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
        self._check(lba, len(data) // self.block_size)
        await self.base.write(self.start + lba, data, fua)

    @property
    def thin(self) -> bool:
        """The base's."""
        return self.base.thin

    @property
    def lbprz(self) -> bool:
        """The base's."""
        return self.base.lbprz

    async def unmap(self, lba: int, nblocks: int) -> None:
        """The base unmaps its blocks ``start + lba``..; a window sharing them sees them unmapped too."""
        self._check(lba, nblocks)
        await self.base.unmap(self.start + lba, nblocks)

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """The base's WRITE SAME at ``start + lba``, range-checked against the window."""
        self._check(lba, nblocks)
        await self.base.write_same(self.start + lba, nblocks, block, unmap=unmap, fua=fua)

    async def get_lba_status(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """The base's extents from ``start + lba`` in window addresses, the last one cut at the window's
        end; VolumeError when ``lba`` is not in the window."""
        self._check(lba, 1)
        out = []
        for first, count, status in await self.base.get_lba_status(self.start + lba, max_ranges):
            first -= self.start
            count = min(count, self._size - first)
            if count > 0:
                out.append((first, count, status))
        return out

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """The base's compare-and-write at ``start + lba`` (atomic as the base makes it)."""
        self._check(lba, len(data) // self.block_size)
        return await self.base.compare_and_write(self.start + lba, verify, data, fua=fua)

    @property
    def atomic_max_blocks(self) -> int:
        """The base's atomic writes, where it has them (storage/atomic.py)."""
        return self.base.atomic_max_blocks if isinstance(self.base, AtomicWriter) else 0

    async def write_atomic(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """The base's atomic write at ``start + lba``; VolumeError when the base has none."""
        if not isinstance(self.base, AtomicWriter):
            raise VolumeError("the base volume has no atomic writes")
        self._check(lba, len(data) // self.block_size)
        await self.base.write_atomic(self.start + lba, data)

    async def flush(self) -> None:
        """Flushes the whole base, not only the window's blocks."""
        await self.base.flush()

    async def close(self) -> None:
        """Flushes the base and leaves it open."""
        # The base volume is shared (other virtual volumes map it): flush, never close it here.
        await self.base.flush()


class MappingTables:
    """The V/R and LU/V tables with their consistency rules."""

    def __init__(self) -> None:
        self.real: dict[str, Volume] = {}
        """Real volumes by name: what V/R rows allocate on (besides LUs)."""
        self.vr: dict[int, VRRow] = {}
        """The V/R table (T1): #V → row."""
        self.luv: dict[str, LuVRow] = {}
        """The LU/V table (T2): LU name → row."""

    # --- real volumes ------------------------------------------------------------------

    def add_real(self, name: str, volume: Volume) -> None:
        """Register real volume ``name`` for virtual volumes to be allocated on; ValueError when a real
        volume has that name already."""
        if name in self.real:
            raise ValueError(f"real volume {name} already exists")
        self.real[name] = volume

    # --- V/R (T1) --------------------------------------------------------------------------

    def map_virtual(self, row: VRRow, *, restore: bool = False) -> None:
        """Allocate virtual volume #V on a range of a real volume (or of another LU: stacking).

        ``restore``: the row comes back from the catalog, checked when it was made.  The overlap
        rule is not applied again: whether a row had to ask depends on the rows that existed when
        it was made (an unasked #3 may later be overlapped by an asked #2), not on the order the
        rows are read back in.
        """
        if row.vvol in self.vr:
            raise ValueError(f"virtual volume #{row.vvol} already mapped")
        base = self.real_or_lu(row.real)
        if row.real_start < 0 or row.size <= 0 or row.real_start + row.size > base.num_blocks:
            raise ValueError(f"#{row.vvol}: {row.real_start}+{row.size} outside {row.real} "
                             f"({base.num_blocks} blocks)")
        if row.real in self.luv and self._depends_on(row.real, row.vvol):
            raise ValueError(f"#{row.vvol} on {row.real} would map a volume onto itself")
        others = [o.vvol for o in self.vr.values()
                  if o.real == row.real and _overlap(o.real_start, o.size, row.real_start, row.size)]
        if others and not row.multiple_virtualization and not restore:
            raise OverlapError(f"#{row.vvol}: blocks {row.real_start}-{row.real_start + row.size - 1} of {row.real} "
                               f"are already mapped by virtual volume {_list('#', others)} and multiple "
                               "virtualization was not asked for")
        self.vr[row.vvol] = row

    def unmap_virtual(self, vvol: int) -> None:
        """Remove virtual volume #``vvol`` from the V/R table; ValueError while an LU shows it, KeyError
        when there is no such row."""
        users = [r.lu for r in self.luv.values() if r.vvol == vvol]
        if users:
            raise ValueError(f"virtual volume #{vvol} is used by LU {', '.join(users)}")
        self.vr.pop(vvol)

    def multiple_virtualization(self, vvol: int) -> bool:
        """True when another virtual volume is allocated on overlapping blocks of the same real volume."""
        return bool(self.sharing_vvols(vvol))

    def sharing_vvols(self, vvol: int) -> list[int]:
        """The other virtual volumes allocated on blocks of the same real volume as #``vvol``."""
        me = self.vr[vvol]
        return sorted(o.vvol for o in self.vr.values()
                      if o.vvol != vvol and o.real == me.real and _overlap(o.real_start, o.size, me.real_start, me.size))

    def sharing_lus(self, lu: str) -> list[str]:
        """The other LUs showing blocks of the same virtual volume as ``lu``."""
        me = self.luv[lu]
        return sorted(o.lu for o in self.luv.values()
                      if o.lu != lu and o.vvol == me.vvol and _overlap(o.vstart, o.size, me.vstart, me.size))

    # --- LU/V (T2) --------------------------------------------------------------------------

    def map_lu(self, row: LuVRow, *, restore: bool = False) -> None:
        """Allocate LU ``row.lu`` on a range of a virtual volume (``restore``: as for :meth:`map_virtual`)."""
        if row.lu in self.luv or row.lu in self.real:
            raise ValueError(f"LU {row.lu} already exists")
        v = self.vr.get(row.vvol)
        if v is None:
            raise ValueError(f"no virtual volume #{row.vvol}")
        if row.vstart < 0 or row.size <= 0 or row.vstart + row.size > v.size:
            raise ValueError(f"LU {row.lu}: {row.vstart}+{row.size} outside #{row.vvol} ({v.size} blocks)")
        others = [o.lu for o in self.luv.values()
                  if o.vvol == row.vvol and _overlap(o.vstart, o.size, row.vstart, row.size)]
        if others and not row.multiple_virtualization and not restore:
            raise OverlapError(f"LU {row.lu}: blocks {row.vstart}-{row.vstart + row.size - 1} of virtual volume "
                               f"#{row.vvol} are already mapped by LU {_list('', others)} and multiple "
                               "virtualization was not asked for")
        self.luv[row.lu] = row

    def unmap_lu(self, lu: str) -> None:
        """Remove LU ``lu`` from the LU/V table; ValueError while a virtual volume is allocated on it
        (stacking), KeyError when there is no such row."""
        users = [v.vvol for v in self.vr.values() if v.real == lu]
        if users:
            raise ValueError(f"LU {lu} carries virtual volumes {users}")
        self.luv.pop(lu)

    # --- conversion --------------------------------------------------------------------------

    def real_or_lu(self, name: str) -> Volume:
        """The volume a virtual volume over ``name`` maps: a real volume, or an LU (stacking)."""
        if name in self.real:
            return self.real[name]
        if name in self.luv:
            return self.lu_volume(name)
        raise ValueError(f"no real volume or LU {name}")

    def _depends_on(self, lu: str, vvol: int) -> bool:
        seen = set()
        name = lu
        while name in self.luv and name not in seen:
            seen.add(name)
            v = self.luv[name].vvol
            if v == vvol:
                return True
            name = self.vr[v].real
        return False

    def virtual_volume(self, vvol: int) -> Volume:
        """Virtual volume #V as a volume: its blocks in the real volume (or LU) it maps, resolved by
        name at each call (see :class:`WindowVolume`)."""
        row = self.vr[vvol]
        name = row.real
        return WindowVolume(lambda: self.real_or_lu(name), row.real_start, row.size)

    def lu_volume(self, lu: str) -> Volume:
        """The LU as a volume: LU block → virtual block (T2) → real block (T1)."""
        row = self.luv[lu]
        return WindowVolume(self.virtual_volume(row.vvol), row.vstart, row.size)

    def replace_real(self, name: str, volume: Volume) -> Volume:
        """Put ``volume`` in place of real volume ``name`` (e.g. a wrapper around it) and return the
        one it replaces; every window over ``name`` uses it from its next call.  The caller quiesces
        the LUs above first (:meth:`~sanlab.scsi.lu.LogicalUnit.swap_volume` does it for one LU)."""
        old = self.real[name]
        if (volume.block_size, volume.num_blocks) != (old.block_size, old.num_blocks):
            raise VolumeError(f"a replacement for {name} must have its geometry ({old.num_blocks} blocks of "
                              f"{old.block_size} bytes)")
        self.real[name] = volume
        return old

    def resolve(self, lu: str, lba: int) -> tuple[str, int]:
        """(real volume name, block) that LU block ``lba`` lands on, following stacked LUs."""
        name, block = lu, lba
        while name in self.luv:
            r = self.luv[name]
            if not 0 <= block < r.size:
                raise VolumeError(f"block {block} outside LU {name}")
            v = self.vr[r.vvol]
            name, block = v.real, v.real_start + r.vstart + block
        return name, block


def _overlap(start_a: int, size_a: int, start_b: int, size_b: int) -> bool:
    return start_a < start_b + size_b and start_b < start_a + size_a


def _list(prefix: str, items: list[int] | list[str]) -> str:
    return ", ".join(f"{prefix}{i}" for i in items)

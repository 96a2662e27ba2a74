"""Management operations on volumes, virtual volumes (V/R table), LUs (LU/V table) and exports.

A volume is made of LDEVs of RAID groups; a virtual volume is a window of a real volume (a
volume, an external volume or an LU); an LU is a window of a virtual volume, served to hosts once
exported as a LUN of a target.  ``resize-lun`` grows a file-backed LUN of the configuration.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import structlog

from sanlab.scsi.lun import LUN_RANGE, MAX_LUN
from sanlab.storage.catalog import CatalogChange
from sanlab.storage.ldev import Ldev
from sanlab.storage.volume import VolumeError
from sanlab.storage.vvol import LuVRow, OverlapError, VRRow
from sanlab.tools.array import AdminError, ArrayState, check_lun, found, size_blocks, size_bytes

log = structlog.get_logger("sanlab.admin")

_K = TypeVar("_K", int, str)
_R = TypeVar("_R")


class VolumeOps:
    """The volume, virtual volume, LU and export operations of tools/operations.py (``Domain.VOLUMES``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array

    def load_volumes(self) -> None:
        """Open the catalog's volumes on their LDEVs (after the RAID groups)."""
        a = self.array
        for v in a.catalog.volumes():
            ldevs = [a.allocator.ldev(grp, idx) for grp, idx in v["ldevs"]]
            a.allocator.mark_used(ldevs)
            a.open_volume(v["name"], ldevs, v["block_size"], v["blocks"])

    def load_mappings(self) -> None:
        """Bring back the V/R and LU/V tables and serve the exports (after volumes and migrations)."""
        a = self.array
        for r in a.catalog.virtual_volumes():
            a.tables.map_virtual(VRRow(r["vvol"], r["real"], r["real_start"], r["size"],
                                       bool(r["multiple_virtualization"])), restore=True)
        for r in a.catalog.lus():
            a.tables.map_lu(LuVRow(r["name"], r["vvol"], r["vstart"], r["size"],
                                   bool(r["multiple_virtualization"])), restore=True)
        for e in a.catalog.exports():
            ds = a.device_servers.get(e["target"])
            if ds is None:
                log.warning("export_target_missing", target=e["target"], lun=e["lun"], lu=e["lu"])
                continue
            if not 0 <= e["lun"] <= MAX_LUN:
                # Written before export checked the range: serving it would break REPORT LUNS for
                # every host, so it stays out; `unexport` removes the row.
                log.error("export_lun_out_of_range", target=e["target"], lun=e["lun"], lu=e["lu"],
                          range=LUN_RANGE)
                continue
            ds.add_lun(e["lun"], a.logical_unit(e["lu"], e["target"], e["lun"]))

    async def create_volume(self, name: str, size: int | str, block_size: int | str = 512,
                            groups: list[str] | None = None, ldevs: list[str] | None = None) -> dict[str, Any]:
        """Volume ``name`` of ``size`` bytes (bare or with a unit) on LDEVs: allocated, from ``groups``, or ``ldevs``."""
        a = self.array
        async with a.changes:
            if name in a.volumes or name in a.tables.real or name in a.tables.luv:
                raise AdminError(f"volume {name} exists")
            block_size = size_bytes(block_size, "block_size")
            if block_size < 512 or block_size & (block_size - 1):
                raise AdminError(f"block_size={block_size} is not a power of two of at least 512 bytes")
            size = size_bytes(size, "size")
            if size <= 0 or size % block_size:
                raise AdminError(f"size={size} bytes is not a positive whole number of {block_size}-byte blocks")
            chosen = self._choose_ldevs(size, groups, ldevs)
            try:
                async with a.catalog.change() as change:
                    change.add_volume(name, block_size, size // block_size, [(d.group, d.index) for d in chosen])
            except BaseException:
                a.allocator.release(chosen)
                raise
            a.open_volume(name, chosen, block_size, size // block_size)
        return {"name": name, "ldevs": [d.ldev_id for d in chosen]}

    def _choose_ldevs(self, size: int, groups: list[str] | None, ldevs: list[str] | None) -> list[Ldev]:
        """Take LDEVs for ``size`` bytes: exactly ``ldevs`` (GROUP:INDEX), or allocated from ``groups``."""
        allocator = self.array.allocator
        try:
            if not ldevs:
                return allocator.allocate(size, groups)
            chosen = []
            for ref in ldevs:
                grp, _, idx = ref.partition(":")
                if not grp or not idx.isdigit():
                    raise AdminError(f"ldevs: {ref!r} is not GROUP:INDEX (rg0:4)")
                chosen.append(allocator.ldev(grp, int(idx)))
            if sum(d.size for d in chosen) < size:
                raise AdminError(f"{len(chosen)} LDEVs hold less than {size} bytes")
            allocator.mark_used(chosen)
            return chosen
        except VolumeError as exc:
            raise AdminError(str(exc)) from None

    async def delete_volume(self, name: str) -> dict[str, Any]:
        """Delete volume ``name`` (no virtual volume may map it) and free its LDEVs."""
        a = self.array
        async with a.changes:
            vol = found(a.volumes.get(name), f"no volume {name}")
            users = [v.vvol for v in a.tables.vr.values() if v.real == name]
            if users:
                raise AdminError(f"volume {name} carries virtual volumes {users}")
            async with a.catalog.change() as change:
                change.delete_volume(name)
            del a.volumes[name]
            del a.tables.real[name]
            a.allocator.release(vol.ldevs)
        return {"deleted": name}

    async def create_vvol(self, vvol: int, real: str, real_start: int | str, size: int | str,
                          multiple_virtualization: bool = False) -> dict[str, Any]:
        """Virtual volume #``vvol``: ``size`` blocks of ``real`` from block ``real_start``.

        Bare numbers are blocks of ``real``; with a unit they are bytes and must be whole blocks
        of it (only here is that block size known).  Blocks another virtual volume maps are
        refused unless ``multiple_virtualization`` is asked for (storage/vvol.py).
        """
        a = self.array
        async with a.changes:
            try:
                base = a.tables.real_or_lu(real)
            except ValueError as exc:
                raise AdminError(str(exc)) from None
            start_blocks = size_blocks(real_start, base.block_size, "real_start")
            count = size_blocks(size, base.block_size, "size")
            await self._map(lambda: a.tables.map_virtual(VRRow(vvol, real, start_blocks, count,
                                                               multiple_virtualization)), "map them again",
                            lambda c: c.add_vvol(vvol, real, start_blocks, count, multiple_virtualization),
                            lambda: a.tables.vr.pop(vvol, None))
        return {"vvol": vvol, "real_start": start_blocks, "size": count, "block_size": base.block_size,
                "multiple_virtualization": a.tables.multiple_virtualization(vvol),
                "shares_with": a.tables.sharing_vvols(vvol)}

    async def _map(self, add_row: Callable[[], None], again: str, record: Callable[[CatalogChange], None],
                   undo: Callable[[], object]) -> None:
        """Add a V/R or LU/V row to the running tables (they check it), then commit it; undone if that fails.

        An overlap refusal says how to ask for it (``again``: what multiple virtualization would do).
        """
        try:
            add_row()
        except OverlapError as exc:
            raise AdminError(f"{exc} (add multiple_virtualization=yes to {again})") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        await self.array.persist(record, undo)

    async def _unmap(self, table: dict[_K, _R], key: _K, remove: Callable[[_K], object], what: str,
                     record: Callable[[CatalogChange], None]) -> None:
        """Take row ``key`` out of a running mapping table (``remove`` refuses one still in use), then
        commit its removal; the row is put back if that fails."""
        try:
            row = table[key]
            remove(key)
        except (KeyError, ValueError) as exc:
            raise AdminError(f"cannot delete {what}: {exc}") from None
        await self.array.persist(record, lambda: table.__setitem__(key, row))

    async def delete_vvol(self, vvol: int) -> dict[str, Any]:
        """Delete virtual volume #``vvol`` (no LU may use it)."""
        a = self.array
        async with a.changes:
            await self._unmap(a.tables.vr, vvol, a.tables.unmap_virtual, f"virtual volume #{vvol}",
                              lambda c: c.delete_vvol(vvol))
        return {"deleted": vvol}

    async def create_lu(self, name: str, vvol: int, vstart: int | str, size: int | str,
                        multiple_virtualization: bool = False) -> dict[str, Any]:
        """LU ``name``: ``size`` blocks of virtual volume #``vvol`` from ``vstart``.

        Units as for :meth:`create_vvol`, in the blocks of the real volume under #``vvol``.
        Blocks another LU shows are refused unless ``multiple_virtualization`` is asked for.
        """
        a = self.array
        async with a.changes:
            if vvol not in a.tables.vr:
                raise AdminError(f"no virtual volume #{vvol}")
            bs = a.tables.virtual_volume(vvol).block_size
            start_blocks, count = size_blocks(vstart, bs, "vstart"), size_blocks(size, bs, "size")
            await self._map(lambda: a.tables.map_lu(LuVRow(name, vvol, start_blocks, count, multiple_virtualization)),
                            "show them twice",
                            lambda c: c.add_lu(name, vvol, start_blocks, count, multiple_virtualization),
                            lambda: a.tables.luv.pop(name, None))
        return {"lu": name, "vstart": start_blocks, "size": count, "block_size": bs,
                "shares_with": a.tables.sharing_lus(name)}

    async def delete_lu(self, name: str) -> dict[str, Any]:
        """Delete LU ``name`` (it must not be exported)."""
        a = self.array
        async with a.changes:
            if any(e["lu"] == name for e in a.catalog.exports()):
                raise AdminError(f"LU {name} is exported; unexport it first")
            await self._unmap(a.tables.luv, name, a.tables.unmap_lu, f"LU {name}", lambda c: c.delete_lu(name))
        return {"deleted": name}

    async def export(self, lu: str, target: str, lun: int) -> dict[str, Any]:
        """Serve LU ``lu`` as LUN ``lun`` of ``target``."""
        a = self.array
        async with a.changes:
            ds = found(a.device_servers.get(target), f"no target {target}")
            check_lun(lun, "LUN")
            if lu not in a.tables.luv:
                raise AdminError(f"no LU {lu}")
            if ds.has_lun(lun):
                raise AdminError(f"{target} already has LUN {lun}")
            async with a.catalog.change() as change:
                change.add_export(target, lun, lu)
            ds.add_lun(lun, a.logical_unit(lu, target, lun))
        return {"target": target, "lun": lun, "lu": lu}

    async def unexport(self, target: str, lun: int) -> dict[str, Any]:
        """Stop serving LUN ``lun`` of ``target`` (its LU stays)."""
        a = self.array
        async with a.changes:
            ds = a.device_servers.get(target)
            if ds is None or not any(e["target"] == target and e["lun"] == lun for e in a.catalog.exports()):
                raise AdminError(f"{target} LUN {lun} is not an export of the catalog")
            async with a.catalog.change() as change:
                change.delete_export(target, lun)
            if ds.has_lun(lun):  # not served when load() skipped it (out of range)
                lu = ds.remove_lun(lun)
                await lu.volume.flush()
        return {"target": target, "lun": lun}

    async def resize_lun(self, target: str, lun: int, size: int | str) -> dict[str, Any]:
        """Grow LUN ``lun`` of ``target`` to ``size`` bytes while hosts are logged in.

        Every I_T nexus gets UNIT ATTENTION / CAPACITY DATA HAS CHANGED and READ CAPACITY reports
        the new size (SBC-3 §4.5; :meth:`DeviceServer.resize_lun`).  A file-backed LUN of the
        config keeps it across restarts because the file's length wins over a smaller configured
        ``size`` (tools/assemble.py).  Shrinking is refused, as are volumes that cannot grow.
        """
        a = self.array
        ds = found(a.device_servers.get(target), f"no target {target}")
        lu = found(ds.luns.get(lun), f"{target} has no LUN {lun}")
        name = f"{target} LUN {lun}"
        export = next((e for e in a.catalog.exports() if e["target"] == target and e["lun"] == lun), None)
        if export is not None:
            # A catalog LU is a window on a virtual volume (LU/V table), which may overlap other
            # virtual volumes (multiple virtualization): widening the window would show the host
            # blocks it does not own instead of fresh zeros, so it is not offered.
            row = a.tables.luv[export["lu"]]
            raise AdminError(f"cannot resize {name}: it is catalog LU {row.lu}, a window of {row.size} blocks on "
                             f"virtual volume #{row.vvol}; only file-backed LUNs of the config can grow")
        bs = lu.block_size
        size = size_bytes(size, "size")
        if size % bs:
            raise AdminError(f"cannot resize {name}: {size} bytes is not a whole number of {bs}-byte blocks")
        old = lu.num_blocks * bs
        try:
            changed = await ds.resize_lun(lun, size // bs)
        except (ValueError, VolumeError) as exc:
            raise AdminError(f"cannot resize {name} from {old} to {size} bytes: {exc}") from None
        log.info("lun_resized", target=target, lun=lun, old_size=old, size=size, changed=changed)
        return {"target": target, "lun": lun, "old_size": old, "size": lu.num_blocks * bs,
                "blocks": lu.num_blocks, "changed": changed}

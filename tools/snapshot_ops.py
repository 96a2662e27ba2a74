"""Management operations on snapshots (``sanlab snapshot ...``), over replication/snapshots.py.

Exporting a snapshot makes a read-only LU of it (:class:`~sanlab.replication.snapshot.SnapshotView`)
at a LUN of one of this array's targets; the export is recorded with the snapshot and made again
at the next start.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import structlog

from sanlab.replication.snapshot import SnapshotView
from sanlab.replication.snapshots import SnapshotError, SnapshotManager
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.sense import ScsiError
from sanlab.storage.volume import VolumeError
from sanlab.tools.array import AdminError, ArrayState
from sanlab.tools.copy_ops import lu_key

log = structlog.get_logger("sanlab.tools.snapshot_ops")


class SnapshotOps:
    """The snapshot operations of tools/operations.py (``Domain.SNAPSHOTS``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array
        self.manager = SnapshotManager(array.data_dir, self.find_lu)

    def find_lu(self, target: str, lun: int) -> LogicalUnit | None:
        """The LU exported as ``lun`` of ``target`` on this array."""
        ds = self.array.device_servers.get(target)
        return ds.luns.get(lun) if ds is not None else None

    async def load(self) -> None:
        """The snapshots of the data directory again, and their exports."""
        await self.manager.load()
        for name, meta in self.manager.meta.items():
            if meta.get("export"):
                target, lun = meta["export"]
                try:
                    self._attach(name, str(target), int(lun))
                except AdminError as exc:
                    log.error("snapshot_export_lost", snapshot=name, error=str(exc))

    async def close(self) -> None:
        """Close the snapshots' maps and the pool."""
        await self.manager.close()

    def _attach(self, name: str, target: str, lun: int) -> None:
        ds = self.array.device_servers.get(target)
        if ds is None:
            raise AdminError(f"snapshot export {name}: no target {target} on this array")
        config = dataclasses.replace(LuConfig.for_lun(target, lun), readonly=True)
        try:
            ds.add_lun(lun, LogicalUnit(SnapshotView(self.manager.get(name)), config))
        except (ValueError, SnapshotError) as exc:
            raise AdminError(f"snapshot export {name}: {exc}") from None

    async def snapshot_create(self, name: str, vol: str) -> dict[str, Any]:
        """Take snapshot NAME of VOL: a point-in-time image at once, old tracks copied to the pool on write."""
        try:
            return await self.manager.create(name, lu_key(self.array, vol, "vol"))
        except (SnapshotError, OSError) as exc:
            raise AdminError(f"snapshot create {name}: {exc}") from None

    async def snapshot_delete(self, name: str) -> dict[str, Any]:
        """Delete snapshot NAME (any order; pool tracks other snapshots share stay)."""
        try:
            return await self.manager.delete(name)
        except SnapshotError as exc:
            raise AdminError(f"snapshot delete {name}: {exc}") from None

    async def snapshot_restore(self, name: str) -> dict[str, Any]:
        """Write snapshot NAME's image back over its volume (host I/O waits meanwhile)."""
        try:
            return await self.manager.restore(name)
        except (SnapshotError, ScsiError, VolumeError, OSError) as exc:
            # ScsiError: the volume refused the writes (a copy pair's copy not divided, ...).
            raise AdminError(f"snapshot restore {name}: {exc}") from None

    def snapshot_list(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every snapshot (or NAME): origin, time, pool use, export."""
        try:
            return self.manager.list(name)
        except SnapshotError as exc:
            raise AdminError(str(exc)) from None

    async def snapshot_export(self, name: str, target: str, lun: int) -> dict[str, Any]:
        """Serve snapshot NAME read-only as LUN of TARGET."""
        async with self.manager.lock:
            try:
                s = self.manager.get(name)
            except SnapshotError as exc:
                raise AdminError(f"snapshot export {name}: {exc}") from None
            if self.manager.meta[name].get("export"):
                raise AdminError(f"snapshot export {name}: exported already")
            self._attach(name, target, lun)
            try:
                self.manager.set_export(name, (target, lun))
            except OSError:
                self.array.device_servers[target].remove_lun(lun)
                raise
            return self.manager.describe(s)

    async def snapshot_unexport(self, name: str) -> dict[str, Any]:
        """Stop serving snapshot NAME as an LU."""
        async with self.manager.lock:
            try:
                s = self.manager.get(name)
            except SnapshotError as exc:
                raise AdminError(f"snapshot unexport {name}: {exc}") from None
            e = self.manager.meta[name].get("export")
            if not e:
                raise AdminError(f"snapshot unexport {name}: not exported")
            ds = self.array.device_servers.get(str(e[0]))
            if ds is not None and int(e[1]) in ds.luns:
                ds.remove_lun(int(e[1]))
            self.manager.set_export(name, None)
            return self.manager.describe(s)

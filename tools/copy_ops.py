"""Management operations on local copy pairs (``sanlab copy ...``), over replication/local_copies.py.

Turns the command line's words into the manager's arguments (``TARGET/LUN`` or an exported LU's
name, ``LBA:COUNT`` extents) and its refusals into :class:`~sanlab.tools.array.AdminError`.
"""
from __future__ import annotations

from typing import Any

from sanlab.replication.local_copies import CopyError, LocalCopyManager
from sanlab.scsi.lu import LogicalUnit
from sanlab.tools.array import AdminError, ArrayState


def parse_extent(text: str) -> tuple[int, int] | None:
    """``LBA:COUNT`` (COUNT > 0) or "" for none; AdminError otherwise."""
    if not text:
        return None
    a, sep, b = text.partition(":")
    if not (sep and a.isdigit() and b.isdigit() and int(b) > 0):
        raise AdminError(f"extent {text!r}: LBA:COUNT, COUNT > 0")
    return int(a), int(b)


def lu_key(array: ArrayState, text: str, what: str) -> tuple[str, int]:
    """``TARGET/LUN`` or the name of an exported catalog LU, as (target, LUN)."""
    target, sep, lun = text.rpartition("/")
    if sep and lun.isdigit():
        return target, int(lun)
    for row in array.catalog.exports():
        if row["lu"] == text:
            return str(row["target"]), int(row["lun"])
    raise AdminError(f"{what} {text!r}: not TARGET/LUN (e.g. iqn.2026-11.org.sanlab:array0/1) nor an exported LU's name")


class CopyOps:
    """The local copy operations of tools/operations.py (``Domain.COPIES``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array
        self.manager = LocalCopyManager(array.data_dir, array.catalog, array.supervisor, self.find_lu)

    def find_lu(self, target: str, lun: int) -> LogicalUnit | None:
        """The LU exported as ``lun`` of ``target`` on this array."""
        ds = self.array.device_servers.get(target)
        return ds.luns.get(lun) if ds is not None else None

    async def load(self) -> None:
        """The local copy pairs of the catalog again."""
        await self.manager.load()

    async def close(self) -> None:
        """Flush and close the pairs' bitmaps (after the supervisor stopped the movers)."""
        await self.manager.close()

    async def copy_create(self, name: str, pvol: str, svol: str, extent: str = "", group: str = "") -> dict[str, Any]:
        """Form local copy pair NAME: PVOL copied to SVOL in the background (generation)."""
        try:
            return await self.manager.create(name, lu_key(self.array, pvol, "pvol"), lu_key(self.array, svol, "svol"),
                                             parse_extent(extent), group)
        except CopyError as exc:
            raise AdminError(f"copy create {name}: {exc}") from None

    async def _op(self, op: str, name: str, extent: str, group: str) -> Any:
        method = getattr(self.manager, op)
        try:
            return await method(name, parse_extent(extent), group)
        except CopyError as exc:
            raise AdminError(f"copy {op} {name or '--group ' + group}: {exc}") from None

    async def copy_split(self, name: str = "", extent: str = "", group: str = "") -> Any:
        """Divide copy NAME (or GROUP's copies at one point): a point-in-time image at once."""
        return await self._op("split", name, extent, group)

    async def copy_resync(self, name: str = "", extent: str = "", group: str = "") -> Any:
        """Copy only the differing tracks to the copy; back to PAIR."""
        return await self._op("resync", name, extent, group)

    async def copy_restore(self, name: str = "", extent: str = "", group: str = "") -> Any:
        """Reverse resync: copy the differing tracks of the copy back over the original, online."""
        return await self._op("restore", name, extent, group)

    async def copy_delete(self, name: str = "", group: str = "") -> Any:
        """Dissolve copy NAME (or GROUP's copies): both volumes keep their data."""
        try:
            return await self.manager.delete(name, group)
        except CopyError as exc:
            raise AdminError(f"copy delete {name or '--group ' + group}: {exc}") from None

    def copy_display(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every local copy pair (or NAME): state, detail, progress, bytes."""
        try:
            return self.manager.display(name)
        except CopyError as exc:
            raise AdminError(str(exc)) from None

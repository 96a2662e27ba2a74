"""Management operations on remote-copy pairs (``sanlab pair ...``), over replication/manager.py.

The manager does the work at both arrays; this module turns the command line's words into its
arguments (``TARGET/LUN`` or a catalog LU name, ``LBA:COUNT`` extents) and its refusals into
:class:`~sanlab.tools.array.AdminError` (a message and exit status 1 at the CLI).
"""
from __future__ import annotations

from typing import Any

from sanlab.replication.control import control_rows
from sanlab.replication.manager import PairError, PairManager
from sanlab.scsi.commands import LuKind
from sanlab.scsi.kinds import DISK
from sanlab.scsi.lu import LogicalUnit
from sanlab.tools.array import AdminError, ArrayState, size_bytes


class PairManagerRef:
    """The pair manager as the device servers' command rows find it (they exist before it does)."""

    def __init__(self) -> None:
        self.manager: PairManager | None = None

    def __call__(self) -> PairManager | None:
        return self.manager

    def disk_kind(self) -> LuKind:
        """The disk LU kind with the pair-control commands added (replication/control.py)."""
        return LuKind(DISK.name, DISK.table.override(control_rows(self)), plain_io=DISK.plain_io)


class PairOps:
    """The pair operations of tools/operations.py (``Domain.PAIRS``)."""

    def __init__(self, array: ArrayState, ref: PairManagerRef | None = None) -> None:
        self.array = array

        def remote(name: str) -> Any:
            link = array.links.get(name)
            return link.remote if link is not None else None

        def primary(initiator: str) -> Any:
            # The P array is known by its initiator name; its remote here is the one whose target has
            # that name (an array's initiator and target share the name in sanlab's examples), else
            # the one remote there is.
            links = list(array.links.values())
            named = [ln.remote for ln in links if ln.remote.target == initiator]
            return named[0] if named else (links[0].remote if len(links) == 1 else None)

        self.manager = PairManager(array.data_dir, array.catalog, array.initiator_name, array.supervisor,
                                   self.find_lu, remote, find_primary=primary,
                                   find_volume=lambda name: array.volumes.get(name))
        if ref is not None:
            ref.manager = self.manager

    def find_lu(self, target: str, lun: int) -> LogicalUnit | None:
        """The LU exported as ``lun`` of ``target`` on this array."""
        ds = self.array.device_servers.get(target)
        return ds.luns.get(lun) if ds is not None else None

    def _volume(self, text: str, what: str) -> tuple[str, int]:
        """``TARGET/LUN`` (the target's IQN and a LUN) or the name of an exported catalog LU."""
        target, sep, lun = text.rpartition("/")
        if sep and lun.isdigit():
            return target, int(lun)
        for row in self.array.catalog.exports():
            if row["lu"] == text:
                return str(row["target"]), int(row["lun"])
        raise AdminError(f"{what} {text!r}: not TARGET/LUN (e.g. iqn.2026-11.org.sanlab:array-a/0) "
                         "nor an exported LU's name")

    async def load(self) -> None:
        """The pairs of the data directory again (after the remotes, whose links they use)."""
        await self.manager.load()

    async def close(self) -> None:
        """Log the pairs' sessions out (after the supervisor stopped their movers)."""
        await self.manager.close()

    async def pair_create(self, name: str, pvol: str, remote: str, svol: str, fence: str = "data", group: str = "",
                          extent: str = "", bidirectional: bool = False, no_copy: bool = False,
                          pace: float = 0.0, mode: str = "sync", journal: str = "",
                          remote_journal: str = "", delta: bool = False) -> dict[str, Any]:
        """Form pair NAME from local PVOL to SVOL on REMOTE (checked first at both arrays)."""
        rng: tuple[int, int] | None = None
        if extent:
            a, sep, b = extent.partition(":")
            if not (sep and a.isdigit() and b.isdigit() and int(b) > 0):
                raise AdminError(f"extent {extent!r}: LBA:COUNT, COUNT > 0")
            rng = (int(a), int(b))
        try:
            return await self.manager.create(name, self._volume(pvol, "pvol"), remote, self._volume(svol, "svol"),
                                             fence=fence, group=group, extent=rng, no_copy=no_copy,
                                             bidirectional=bidirectional, pace=pace, mode=mode, journal=journal,
                                             remote_journal=remote_journal, delta=delta)
        except PairError as exc:
            raise AdminError(f"pair create {name}: {exc}") from None

    @staticmethod
    def _one_of(op: str, name: str, group: str) -> str:
        if bool(name) == bool(group):
            raise AdminError(f"pair {op}: give a pair NAME or a group (--group G), not both or neither")
        return f"pair {op} {name}" if name else f"pair {op} --group {group}"

    def _names(self, group: str) -> list[str]:
        """The pairs of ``group`` whose half is here (P-VOL or S-VOL), by name."""
        names = [n for n, p in sorted(self.manager.pairs.items()) if p.record.group == group]
        if not names:
            raise PairError(f"no pair of group {group} here")
        return names

    async def pair_split(self, name: str = "", rw: bool = False, group: str = "") -> Any:
        """Split pair NAME, or every pair of GROUP at one point, consistently (``rw``: S-VOLs take writes)."""
        what = self._one_of("split", name, group)
        try:
            return await (self.manager.split_group(group, rw) if group else self.manager.split(name, rw))
        except PairError as exc:
            raise AdminError(f"{what}: {exc}") from None

    async def pair_resync(self, name: str = "", reverse: bool = False, group: str = "") -> Any:
        """Copy only what differs and return pair NAME (or every pair of GROUP) to PAIR."""
        what = self._one_of("resync", name, group)
        try:
            if reverse:
                if group:
                    return [await self.manager.resync_reverse(p.record.name) for p in self.manager.group(group)]
                return await self.manager.resync_reverse(name)
            if group:
                return [await self.manager.resync(p.record.name) for p in self.manager.group(group)]
            return await self.manager.resync(name)
        except PairError as exc:
            raise AdminError(f"{what}: {exc}") from None

    async def pair_delete(self, name: str = "", force: bool = False, group: str = "") -> Any:
        """Return both halves of pair NAME (or of every pair of GROUP) to SMPL (``force``: this side alone)."""
        what = self._one_of("delete", name, group)
        try:
            if group:
                return [await self.manager.delete(p.record.name, force) for p in self.manager.group(group)]
            return await self.manager.delete(name, force)
        except PairError as exc:
            raise AdminError(f"{what}: {exc}") from None

    async def pair_takeover(self, name: str = "", group: str = "") -> Any:
        """Serve pair NAME (or each pair of GROUP held here) from this array (horctakeover's table);
        ``exit_code`` is its exit code (for a group: the highest of its pairs')."""
        what = self._one_of("takeover", name, group)
        try:
            if group:
                rows = [await self.manager.takeover(n) for n in self._names(group)]
                return {"pairs": rows, "exit_code": max(int(r["exit_code"]) for r in rows)}
            return await self.manager.takeover(name)
        except PairError as exc:
            raise AdminError(f"{what}: {exc}") from None

    async def pair_swap(self, name: str = "", force: bool = False, group: str = "") -> Any:
        """At the S-VOL's array: exchange the roles of pair NAME (or of each pair of GROUP held here);
        the old P-VOL catches up by bitmap only."""
        what = self._one_of("swap", name, group)
        try:
            if group:
                return [await self.manager.swap(n, force) for n in self._names(group)]
            return await self.manager.swap(name, force)
        except PairError as exc:
            raise AdminError(f"{what}: {exc}") from None

    def pair_display(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every pair half at this array, or NAME's."""
        try:
            return self.manager.display(name)
        except PairError as exc:
            raise AdminError(str(exc)) from None

    # --- journals (sanlab journal ...)

    async def journal_create(self, name: str, size: int | str = 0, volume: str = "", threshold: int = 80,
                             full_timeout: float = 60.0, auto: bool = True, standby_for: str = "") -> dict[str, Any]:
        """Create journal NAME on a file of SIZE bytes in the data directory, or on catalog volume VOLUME."""
        if not volume and not size:
            raise AdminError(f"journal create {name}: give size= (or volume=)")
        nbytes = size_bytes(size, "size") if size else 0
        try:
            made = await self.manager.journal_create(name, nbytes, volume, threshold, full_timeout, auto)
            if standby_for:
                try:
                    made = await self.manager.journal_standby(name, self._volume(standby_for, "standby_for"))
                except (PairError, AdminError):
                    await self.manager.journal_delete(name)
                    raise
            return made
        except PairError as exc:
            raise AdminError(f"journal create {name}: {exc}") from None

    async def journal_acquire(self, name: str) -> dict[str, Any]:
        """One journal acquisition at the secondary (seed 003 FIG. 16)."""
        try:
            return await self.manager.journal_acquire(name)
        except PairError as exc:
            raise AdminError(str(exc)) from None

    async def journal_restore(self, name: str) -> dict[str, Any]:
        """Apply the acquired entries of journal NAME in order (secondary)."""
        try:
            return await self.manager.journal_restore(name)
        except PairError as exc:
            raise AdminError(str(exc)) from None

    async def journal_purge(self, name: str) -> dict[str, Any]:
        """Free the entries of journal NAME the secondary holds."""
        try:
            return await self.manager.journal_purge(name)
        except PairError as exc:
            raise AdminError(str(exc)) from None

    def journal_status(self, name: str) -> dict[str, Any]:
        """Pointers, use and lag of journal NAME."""
        try:
            return self.manager.journal_status(name)[0]
        except PairError as exc:
            raise AdminError(str(exc)) from None

    def journal_display(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every journal at this array, or NAME's."""
        try:
            return self.manager.journal_status(name)
        except PairError as exc:
            raise AdminError(str(exc)) from None

    def users_of_remote(self, remote: str) -> list[str]:
        """The pairs whose S-VOL is on ``remote`` (a remote they use cannot be deleted)."""
        return [f"pair {p.record.name}" for p in self.manager.pairs.values()
                if p.record.role == "P-VOL" and p.record.remote == remote]

"""Management operations of a running array, in one place (SPEC §3; issue: storage virtualization).

The management socket (``tools/mgmt.py``) and, later, the in-band command
device call these methods; each changes the catalog in one transaction and the
running objects (RAID groups, LDEV allocator, mapping tables, exported LUNs)
only after the commit succeeded, so a failure leaves both as they were.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable

import structlog

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.lun import LUN_RANGE, MAX_LUN
from sanlab.storage.catalog import Catalog
from sanlab.storage.external import ExternalVolume, LockMode, stable_isid
from sanlab.storage.ldev import Ldev, LdevAllocator, LogicalVolume
from sanlab.storage.raid import Drive, Layout, RaidGroup, RaidLevel
from sanlab.storage.raid_files import open_group, replace_drive_path
from sanlab.storage.tiering import GroupInfo, LdevLoad, plan_moves
from sanlab.storage.migrate import MigratingVolume
from sanlab.storage.volume import Volume, VolumeError
from sanlab.storage.vvol import LuVRow, MappingTables, OverlapError, VRRow
from sanlab.target.chap import ChapCredentials
from sanlab.target.initiator import InitiatorConfig, IscsiError, IscsiSession
from sanlab.tools.config import ArrayConfig, file_identity
from sanlab.tools import operations
from sanlab.tools.units import to_blocks, to_bytes

log = structlog.get_logger("sanlab.admin")

DEFAULT_LDEV_SIZE = 8 << 20

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A run-time RAID group's name: it names files (``raid-<name>.json``) and LDEVs (``<name>:<index>``)
and goes in comma-separated lists (``groups=``), so no ``/``, ``:`` or ``,``."""

ARRAY_FILES = ("catalog.db*", "raid-*", "migrate-*", "reservations.sqlite*", "sanlab.*")
"""Names the array gives its own files in the data directory (catalog, RAID descriptions and
bitmaps, migration state, persistent reservations, the management socket): never a drive."""


class AdminError(Exception):
    """A management request that cannot be carried out; the message says why."""


def _bytes(value: int | str, name: str) -> int:
    """A size whose bare number is bytes (tools/units.py: the one rule), as AdminError when it is not a size."""
    try:
        return to_bytes(value, name)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _blocks(value: int | str, block_size: int, name: str) -> int:
    """A size whose bare number is blocks; with a unit it is bytes and must be whole ``block_size`` blocks."""
    try:
        return to_blocks(value, block_size, name)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


async def connect_external(initiator_name: str, name: str, portal: tuple[str, int], target: str, lun: int, *,
                           chap: ChapCredentials | None = None, lock: str = "off",
                           timeout: float = 10.0) -> ExternalVolume:
    """Log in to a peer's LUN and open it as an external volume (config and run-time alike)."""
    icfg = InitiatorConfig(initiator_name=initiator_name, isid=stable_isid(initiator_name, name), chap=chap,
                           command_timeout=timeout, login_timeout=timeout, nop_interval=5.0, nop_timeout=timeout,
                           reconnect=True)
    session = IscsiSession(portal[0], portal[1], target, icfg)
    try:
        vol = ExternalVolume(name, session, lun, lock=LockMode(lock), errors=(IscsiError, OSError))
        await vol.open()
    except (VolumeError, ValueError) as exc:
        await session.close()
        raise VolumeError(f"external volume {name} ({portal[0]}:{portal[1]} {target} LUN {lun}): {exc}") from None
    return vol


def check_lun(lun: object, what: str) -> None:
    """Refuse a LUN number the 8-byte LUN field cannot carry (:data:`~sanlab.scsi.lun.MAX_LUN`).

    Checked before the catalog is touched: an exported LUN outside the range would make REPORT
    LUNS fail for every host of the target, and a peer's would fail every command to it.
    """
    if not isinstance(lun, int) or isinstance(lun, bool):
        raise AdminError(f"{what} {lun!r} is not a number; LUNs are {LUN_RANGE}")
    if not 0 <= lun <= MAX_LUN:
        raise AdminError(f"{what} {lun} is out of range: LUNs are {LUN_RANGE}")


class Admin:
    """The array's storage objects and the operations on them."""

    def __init__(self, data_dir: Path, device_servers: dict[str, DeviceServer] | None = None,
                 externals: dict[str, Volume] | None = None,
                 initiator_name: str = "iqn.2026-11.org.sanlab:array", config: ArrayConfig | None = None) -> None:
        self.initiator_name = initiator_name
        self.config = config
        """The TOML configuration the array runs with: its RAID groups and file LUNs use files
        (and group names) the catalog's must not."""
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(data_dir / "catalog.db")
        self.device_servers = device_servers or {}
        self.groups: dict[str, RaidGroup] = {}
        self.allocator = LdevAllocator(int(self.catalog.get_meta("ldev_size") or DEFAULT_LDEV_SIZE))
        self.tables = MappingTables()
        self.volumes: dict[str, LogicalVolume] = {}
        self._rebuilds: dict[str, asyncio.Task[None]] = {}
        self.externals = dict(externals or {})
        """External volumes (configured peers' LUNs), usable as migration sources."""
        self.migrations: dict[str, MigratingVolume] = {}
        for name, vol in self.externals.items():
            self.tables.add_real(name, vol)  # configured externals can carry virtual volumes too
        self._last_stats: dict[tuple[str, int], tuple[int, int, float]] = {}
        self._tiering: asyncio.Task[None] | None = None

    # --- startup --------------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the running objects from the catalog (after a restart)."""
        for e in self.catalog.externals():
            try:
                vol = await connect_external(self.initiator_name, e["name"], (e["host"], e["port"]), e["target"],
                                             e["lun"], lock=e["lock"], timeout=e["timeout"])
            except VolumeError as exc:
                log.error("external_volume_unavailable", name=e["name"], error=str(exc))
                continue
            self.externals[e["name"]] = vol
            self.tables.add_real(e["name"], vol)
        config_files = self._config_files()
        for g in self.catalog.groups():
            for i, p in enumerate(g.drives):
                # The configuration may have been edited since the group was created; opening one
                # file twice would serve one's data through the other.
                user = config_files.get(file_identity(p))
                if user is not None:
                    raise VolumeError(f"drive {i} of RAID group {g.name} (catalog), {p}, is also {user}")
            group = open_group(g.name, g.level, g.drives, g.drive_size, g.stripe_size, str(self.data_dir))
            if group.rebuilding is not None:
                # A crash between the state file and the catalog (flush order rule 2): catch up.
                self._record_drive(g.name, group.rebuilding, group.drives[group.rebuilding].path)
            regions, fixed = await group.recover()
            if regions:
                log.warning("raid_parity_resynced", group=g.name, regions=regions, repaired_stripes=fixed)
            self.groups[g.name] = group
            if group.rebuilding is not None:
                log.warning("rebuild_resumed", group=g.name, drive=group.rebuilding,
                            progress=round(group.rebuild_progress or 0.0, 4))
                self._rebuilds[g.name] = asyncio.create_task(self._run_rebuild(g.name, group))
            self.allocator.add_group(g.name, group.capacity)
        for v in self.catalog.volumes():
            ldevs = [self.allocator.ldev(grp, idx) for grp, idx in v["ldevs"]]
            self.allocator.mark_used(ldevs)
            self._open_volume(v["name"], ldevs, v["block_size"], v["blocks"])
        for m in self.catalog.migrations():
            if m["state"] != "detached":
                self._start_migration(m["dest"], m["source"], m["start"], m["end_block"], m["chunk"])
        for r in self.catalog.virtual_volumes():
            self.tables.map_virtual(VRRow(r["vvol"], r["real"], r["real_start"], r["size"],
                                          bool(r["multiple_virtualization"])), restore=True)
        for r in self.catalog.lus():
            self.tables.map_lu(LuVRow(r["name"], r["vvol"], r["vstart"], r["size"],
                                      bool(r["multiple_virtualization"])), restore=True)
        for e in self.catalog.exports():
            ds = self.device_servers.get(e["target"])
            if ds is None:
                log.warning("export_target_missing", target=e["target"], lun=e["lun"], lu=e["lu"])
                continue
            if not 0 <= e["lun"] <= MAX_LUN:
                # Written before export checked the range: serving it would break REPORT LUNS for
                # every host, so it stays out; `unexport` removes the row.
                log.error("export_lun_out_of_range", target=e["target"], lun=e["lun"], lu=e["lu"],
                          range=LUN_RANGE)
                continue
            ds.add_lun(e["lun"], self._logical_unit(e["lu"], e["target"], e["lun"]))

    def _open_volume(self, name: str, ldevs: list[Ldev], block_size: int, blocks: int) -> LogicalVolume:
        # The live mapping, not a copy: rearrange may move an LDEV onto a group created later.
        vol = LogicalVolume(ldevs, self.groups, block_size, blocks * block_size)
        self.volumes[name] = vol
        self.tables.add_real(name, vol)
        return vol

    def _logical_unit(self, lu: str, target: str, lun: int) -> LogicalUnit:
        return LogicalUnit(self.tables.lu_volume(lu), LuConfig.for_lun(target, lun))

    def _persist(self, sql: str, params: tuple[Any, ...], undo: Callable[[], object]) -> None:
        """One catalog statement in its own transaction; on failure the running change is undone."""
        try:
            with self.catalog.transaction() as db:
                db.execute(sql, params)
        except BaseException:
            undo()
            raise

    # --- RAID groups and drives ---------------------------------------------------------------------

    def drive_path(self, path: str) -> str:
        """A drive path as the array stores it: relative paths are relative to the data directory."""
        return path if os.path.isabs(path) else str(self.data_dir / path)

    def _config_files(self) -> dict[tuple[int, int] | str, str]:
        """:func:`file_identity` of every file the TOML configuration uses → what uses it."""
        users: dict[tuple[int, int] | str, str] = {}
        if self.config is None:
            return users
        for rg in self.config.raid_groups:
            for i, p in enumerate(rg.drives):
                users.setdefault(file_identity(p), f"drive {i} of RAID group {rg.name} of the configuration")
        for tc in self.config.targets:
            for lc in tc.luns:
                if lc.raid_group is None and lc.external is None:
                    users.setdefault(file_identity(lc.file), f"the file of LUN {lc.lun} of {tc.name} "
                                                             "in the configuration")
        return users

    def check_drive_paths(self, paths: list[str], *, exclude_group: str | None = None,
                          exclude_index: int | None = None) -> None:
        """Refuse drive files a RAID group cannot be given (AdminError saying which and why).

        Refused: a file named twice in ``paths``; a drive of any RAID group (catalog or
        configuration) or the file of a LUN of the configuration; one of the array's own files in
        the data directory (:data:`ARRAY_FILES`); a file whose directory does not exist (nothing
        creates directories for drives).  Files are compared by
        :func:`~sanlab.tools.config.file_identity` (device and inode, or the real path of a file
        not there yet), so ``./x``, ``x``, a symlink or a hard link to a drive are that drive.
        Relative paths are relative to the data directory.  Whether a path may already exist is
        the caller's rule.  ``exclude_group``: that catalog group's drives do not count as used
        (with ``exclude_index`` only that member does not: replace-drive may reuse the failed
        member's path, never another member's).
        """
        full = [self.drive_path(p) for p in paths]
        users = self._config_files()
        members: dict[tuple[str, int], str] = {}
        for row in self.catalog.groups():
            members.update({(row.name, i): p for i, p in enumerate(row.drives)})
        for gname, group in self.groups.items():  # the running objects too, should they differ
            for i, d in enumerate(group.drives):
                members.setdefault((gname, i), d.path)
        for (gname, i), p in sorted(members.items()):
            if gname == exclude_group and exclude_index in (None, i):
                continue
            users.setdefault(file_identity(p), f"drive {i} of RAID group {gname}")
        data_dir = os.path.realpath(self.data_dir)
        seen: dict[tuple[int, int] | str, int] = {}
        for i, (given, p) in enumerate(zip(paths, full)):
            key = file_identity(p)
            if key in seen:
                raise AdminError(f"drive {i} ({given}) is the same file as drive {seen[key]} "
                                 f"({paths[seen[key]]}): a drive appears twice")
            seen[key] = i
            if key in users:
                raise AdminError(f"drive {i} ({given}) is {p}, already {users[key]}")
            parent, base = os.path.split(os.path.realpath(p))
            if parent == data_dir and any(fnmatch(base, pat) for pat in ARRAY_FILES):
                raise AdminError(f"drive {i} ({given}): {base} is a name the array uses for its own files "
                                 f"in the data directory ({', '.join(ARRAY_FILES)})")
            folder = os.path.dirname(p) or "."
            if not os.path.isdir(folder):
                raise AdminError(f"drive {i} ({given}): directory {folder} does not exist (relative paths are "
                                 f"relative to the data directory {self.data_dir}; no directory is created)")

    async def create_raid_group(self, name: str, level: int, drives: list[str], drive_size: int | str,
                                stripe_size: int | str = 64 * 1024, ldev_size: int | str | None = None
                                ) -> dict[str, Any]:
        """Create RAID group ``name`` on new drive files, all or nothing.

        Everything is checked before anything is made (name, level, drive count, stripe size,
        capacity of at least one LDEV, drive paths: :meth:`check_drive_paths`, and none may exist);
        should building still fail, the drive files, ``raid-<name>.json``, the bitmap and the
        catalog row are gone again, so the same request can be retried as it is.  Sizes are
        bytes, bare or with a unit (tools/units.py).
        """
        drive_size, stripe_size = _bytes(drive_size, "drive_size"), _bytes(stripe_size, "stripe_size")
        ldev_size = None if ldev_size is None else _bytes(ldev_size, "ldev_size")
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
            raise AdminError(f"RAID group name {name!r}: letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit, at most 64")
        if name in self.groups or any(r.name == name for r in self.catalog.groups()):
            raise AdminError(f"RAID group {name} exists")
        if self.config is not None and any(rg.name == name for rg in self.config.raid_groups):
            raise AdminError(f"RAID group {name} is declared in the configuration ({self.config.source})")
        try:
            raid_level = RaidLevel(level)
        except ValueError:
            raise AdminError(f"RAID level {level} is not one of 0, 1, 5, 6, 10") from None
        try:
            layout = Layout(raid_level, len(drives), stripe_size, drive_size)  # drive count, stripe size
        except ValueError as exc:
            raise AdminError(f"cannot build RAID group {name}: {exc}") from None
        if ldev_size is not None:
            if self.groups or self.catalog.get_meta("ldev_size"):
                raise AdminError("the LDEV size is set once, with the first RAID group")
            try:
                LdevAllocator(ldev_size)
            except ValueError as exc:
                raise AdminError(f"ldev_size {ldev_size}: {exc}") from None
        ldev = self.allocator.ldev_size if ldev_size is None else ldev_size
        if layout.capacity < ldev:
            raise AdminError(f"RAID group {name} would hold {layout.capacity} bytes ({len(drives)} drives of "
                             f"{drive_size} bytes in whole {stripe_size}-byte stripes), less than one LDEV of "
                             f"{ldev} bytes: give larger or more drives")
        self.check_drive_paths(drives)  # first: "already drive 2 of rg0" says more than "exists"
        paths = [self.drive_path(p) for p in drives]
        there = [p for p in paths if os.path.lexists(p)]
        if there:
            raise AdminError("drive files already exist: " + ", ".join(there))
        meta = self.data_dir / f"raid-{name}.json"
        if meta.exists():
            raise AdminError(f"{meta} describes a RAID group {name} that is neither in the catalog nor in the "
                             "configuration (removed from the configuration?); move it away or choose another name")
        bitmap = self.data_dir / f"raid-{name}.bitmap"
        if bitmap.is_file():  # left by a deleted group (older versions kept it): stale dirty bits
            log.warning("stale_raid_bitmap_removed", path=str(bitmap))
            bitmap.unlink()
        group: RaidGroup | None = None
        try:
            with self.catalog.transaction() as db:
                if ldev_size is not None:
                    self.catalog.set_meta(db, "ldev_size", str(ldev_size))
                db.execute("INSERT INTO raid_groups VALUES (?, ?, ?, ?, ?)",
                           (name, level, stripe_size, drive_size, json.dumps(paths)))
                group = open_group(name, level, paths, drive_size, stripe_size, str(self.data_dir))
        except BaseException as exc:
            if group is not None:  # built, but the commit failed: take it apart again
                await group.close()
                self._remove_group_files(name, paths)
            if isinstance(exc, (ValueError, VolumeError, OSError)):
                raise AdminError(f"cannot build RAID group {name}: {exc}") from exc
            raise
        if ldev_size is not None:
            self.allocator = LdevAllocator(ldev_size)
        self.groups[name] = group
        count = self.allocator.add_group(name, group.capacity)
        log.info("raid_group_created", name=name, level=level, drives=len(paths), ldevs=count)
        return {"name": name, "capacity": group.capacity, "ldevs": count}

    def _remove_group_files(self, name: str, drives: list[str]) -> None:
        """Delete what a group made: its drive files, ``raid-<name>.json`` and the bitmap."""
        for p in [*drives, str(self.data_dir / f"raid-{name}.json"), str(self.data_dir / f"raid-{name}.bitmap")]:
            if os.path.lexists(p):
                os.unlink(p)

    def _group(self, name: str) -> RaidGroup:
        g = self.groups.get(name)
        if g is None:
            raise AdminError(f"no RAID group {name}")
        return g

    async def delete_raid_group(self, name: str) -> dict[str, Any]:
        group = self._group(name)
        if len(self.allocator.free(name)) != group.capacity // self.allocator.ldev_size:
            raise AdminError(f"RAID group {name} still holds LDEVs of volumes")
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM raid_groups WHERE name=?", (name,))
        await group.close()
        del self.groups[name]
        self.allocator = self._rebuild_allocator()
        os.unlink(self.data_dir / f"raid-{name}.json")
        for leftover in (f"raid-{name}.state", f"raid-{name}.bitmap"):
            (self.data_dir / leftover).unlink(missing_ok=True)
        return {"deleted": name}

    def _rebuild_allocator(self) -> LdevAllocator:
        a = LdevAllocator(self.allocator.ldev_size)
        for n, g in self.groups.items():
            a.add_group(n, g.capacity)
        for v in self.volumes.values():
            a.mark_used(v.ldevs)
        return a

    async def fail_drive(self, group: str, index: int) -> dict[str, Any]:
        g = self._group(group)
        if not 0 <= index < len(g.drives):
            raise AdminError(f"RAID group {group} has no drive {index}")
        if sum(not d.readable for d in g.drives) >= g.redundancy and g.drives[index].readable:
            raise AdminError(f"failing drive {index} would lose data of RAID group {group}")
        try:
            g.fail_drive(index)  # durable before the answer: a restart keeps the member out
        except OSError as exc:
            raise AdminError(f"drive {index} of {group} is out, but recording it failed: {exc}") from None
        log.warning("drive_failed", group=group, index=index)
        return {"group": group, "drive": index, "state": "failed"}

    async def replace_drive(self, group: str, index: int, path: str, rate: int | str = 0) -> dict[str, Any]:
        """Rebuild member ``index`` onto a new drive file, in the background.

        Everything that can be checked is checked before the answer (the path's directory
        exists, the file does not, it can be created); a failure later, in the background, shows
        in ``show`` (``rebuild_error``) and makes ``wait-rebuild`` fail.  Order (storage/raid.py,
        flush order rule 2): the replacement file, then the group's state file naming it
        REBUILDING, then the drive list in the catalog and ``raid-<name>.json``.  ``rate`` limits
        the rebuild to that many bytes of the new drive per second (0: no limit).
        """
        g = self._group(group)
        rate = _bytes(rate, "rate")  # bytes per second, bare or with a unit (tools/units.py)
        if not 0 <= index < len(g.drives):
            raise AdminError(f"RAID group {group} has no drive {index}")
        if g.rebuilding is not None:
            raise AdminError(f"RAID group {group} is already rebuilding drive {g.rebuilding}")
        if g.drives[index].readable:
            raise AdminError(f"drive {index} of {group} is online; fail it first")
        full = self.drive_path(path)
        parent = os.path.dirname(full) or "."
        if not os.path.isdir(parent):
            raise AdminError(f"directory {parent} does not exist (relative paths are in the data directory "
                             f"{self.data_dir})")
        self.check_drive_paths([path], exclude_group=group, exclude_index=index)  # not another group's drive
        if os.path.lexists(full):
            raise AdminError(f"{full} exists; a replacement drive must be a new file")
        new = Drive(full, g.layout.drive_size)
        if new.error is not None:
            raise AdminError(f"cannot create replacement drive: {new.error}")
        try:
            await g.begin_rebuild(index, new, rate)
        except VolumeError as exc:
            new.close()
            os.unlink(full)
            raise AdminError(f"cannot rebuild drive {index} of {group}: {exc}") from None
        self._record_drive(group, index, full)
        self._rebuilds[group] = asyncio.create_task(self._run_rebuild(group, g))
        log.info("rebuild_started", group=group, drive=index, path=full)
        return {"group": group, "drive": index, "path": full, "state": "rebuilding"}

    def _record_drive(self, group: str, index: int, path: str) -> None:
        """The drive list (catalog and raid-<name>.json) names ``path`` as member ``index``."""
        rows = {r.name: r for r in self.catalog.groups()}
        drives = list(rows[group].drives)
        if drives[index] == path:
            return
        drives[index] = path
        with self.catalog.transaction() as db:
            db.execute("UPDATE raid_groups SET drives=? WHERE name=?", (json.dumps(drives), group))
            replace_drive_path(str(self.data_dir), group, index, path)

    async def _run_rebuild(self, name: str, g: RaidGroup) -> None:
        index = g.rebuilding
        try:
            await g.run_rebuild()
        except VolumeError:
            log.error("rebuild_failed", group=name, drive=index, error=g.rebuild_error)
            return
        if g.rebuilding is None:
            log.info("rebuild_done", group=name, drive=index)
        else:
            log.info("rebuild_paused", group=name, drive=index, progress=g.rebuild_progress)

    async def wait_rebuild(self, group: str) -> dict[str, Any]:
        """Wait for the group's rebuild to end; an error if it failed."""
        g = self._group(group)
        t = self._rebuilds.get(group)
        if t is not None:
            await asyncio.shield(t)
        if g.rebuild_error is not None:
            raise AdminError(f"RAID group {group}: {g.rebuild_error}")
        return {"group": group, "degraded": g.degraded,
                "drives": [d.state.value for d in g.drives]}

    async def scrub(self, group: str) -> dict[str, Any]:
        return {"group": group, "repaired_stripes": await self._group(group).scrub(repair=True)}

    # --- volumes, virtual volumes, LUs ------------------------------------------------------------------

    async def create_volume(self, name: str, size: int | str, block_size: int | str = 512,
                            groups: list[str] | None = None, ldevs: list[str] | None = None) -> dict[str, Any]:
        """Volume ``name`` of ``size`` bytes (bare or with a unit) on LDEVs: allocated, from ``groups``, or ``ldevs``."""
        if name in self.volumes or name in self.tables.real or name in self.tables.luv:
            raise AdminError(f"volume {name} exists")
        block_size = _bytes(block_size, "block_size")
        if block_size < 512 or block_size & (block_size - 1):
            raise AdminError(f"block_size={block_size} is not a power of two of at least 512 bytes")
        size = _bytes(size, "size")
        if size <= 0 or size % block_size:
            raise AdminError(f"size={size} bytes is not a positive whole number of {block_size}-byte blocks")
        try:
            if ldevs:
                chosen = []
                for ref in ldevs:
                    grp, _, idx = ref.partition(":")
                    chosen.append(self.allocator.ldev(grp, int(idx)))
                if sum(d.size for d in chosen) < size:
                    raise AdminError(f"{len(chosen)} LDEVs hold less than {size} bytes")
                self.allocator.mark_used(chosen)
            else:
                chosen = self.allocator.allocate(size, groups)
        except VolumeError as exc:
            raise AdminError(str(exc)) from None
        try:
            with self.catalog.transaction() as db:
                db.execute("INSERT INTO volumes VALUES (?, ?, ?)", (name, block_size, size // block_size))
                db.executemany("INSERT INTO volume_ldevs VALUES (?, ?, ?, ?)",
                               [(name, i, d.group, d.index) for i, d in enumerate(chosen)])
        except BaseException:
            self.allocator.release(chosen)
            raise
        self._open_volume(name, chosen, block_size, size // block_size)
        return {"name": name, "ldevs": [d.ldev_id for d in chosen]}

    async def delete_volume(self, name: str) -> dict[str, Any]:
        vol = self.volumes.get(name)
        if vol is None:
            raise AdminError(f"no volume {name}")
        users = [v.vvol for v in self.tables.vr.values() if v.real == name]
        if users:
            raise AdminError(f"volume {name} carries virtual volumes {users}")
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM volumes WHERE name=?", (name,))
        del self.volumes[name]
        del self.tables.real[name]
        self.allocator.release(vol.ldevs)
        return {"deleted": name}

    async def create_vvol(self, vvol: int, real: str, real_start: int | str, size: int | str,
                          multiple_virtualization: bool = False) -> dict[str, Any]:
        """Virtual volume #``vvol``: ``size`` blocks of ``real`` from block ``real_start``.

        Bare numbers are blocks of ``real``; with a unit they are bytes and must be whole blocks
        of it (only here is that block size known).  Blocks another virtual volume maps are
        refused unless ``multiple_virtualization`` is asked for (storage/vvol.py).
        """
        try:
            base = self.tables.real_or_lu(real)
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        start_blocks = _blocks(real_start, base.block_size, "real_start")
        size_blocks = _blocks(size, base.block_size, "size")
        try:
            self.tables.map_virtual(VRRow(vvol, real, start_blocks, size_blocks, multiple_virtualization))
        except OverlapError as exc:
            raise AdminError(f"{exc} (add multiple_virtualization=yes to map them again)") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        self._persist("INSERT INTO virtual_volumes (vvol, real, real_start, size, multiple_virtualization) "
                      "VALUES (?, ?, ?, ?, ?)", (vvol, real, start_blocks, size_blocks, int(multiple_virtualization)),
                      lambda: self.tables.vr.pop(vvol, None))
        return {"vvol": vvol, "real_start": start_blocks, "size": size_blocks, "block_size": base.block_size,
                "multiple_virtualization": self.tables.multiple_virtualization(vvol),
                "shares_with": self.tables.sharing_vvols(vvol)}

    async def delete_vvol(self, vvol: int) -> dict[str, Any]:
        try:
            row = self.tables.vr[vvol]
            self.tables.unmap_virtual(vvol)
        except (KeyError, ValueError) as exc:
            raise AdminError(f"cannot delete virtual volume #{vvol}: {exc}") from None
        self._persist("DELETE FROM virtual_volumes WHERE vvol=?", (vvol,),
                      lambda: self.tables.vr.__setitem__(vvol, row))
        return {"deleted": vvol}

    async def create_lu(self, name: str, vvol: int, vstart: int | str, size: int | str,
                        multiple_virtualization: bool = False) -> dict[str, Any]:
        """LU ``name``: ``size`` blocks of virtual volume #``vvol`` from ``vstart``.

        Units as for :meth:`create_vvol`, in the blocks of the real volume under #``vvol``.
        Blocks another LU shows are refused unless ``multiple_virtualization`` is asked for.
        """
        if vvol not in self.tables.vr:
            raise AdminError(f"no virtual volume #{vvol}")
        bs = self.tables.virtual_volume(vvol).block_size
        start_blocks, size_blocks = _blocks(vstart, bs, "vstart"), _blocks(size, bs, "size")
        try:
            self.tables.map_lu(LuVRow(name, vvol, start_blocks, size_blocks, multiple_virtualization))
        except OverlapError as exc:
            raise AdminError(f"{exc} (add multiple_virtualization=yes to show them twice)") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        self._persist("INSERT INTO lus (name, vvol, vstart, size, multiple_virtualization) VALUES (?, ?, ?, ?, ?)",
                      (name, vvol, start_blocks, size_blocks, int(multiple_virtualization)),
                      lambda: self.tables.luv.pop(name, None))
        return {"lu": name, "vstart": start_blocks, "size": size_blocks, "block_size": bs,
                "shares_with": self.tables.sharing_lus(name)}

    async def delete_lu(self, name: str) -> dict[str, Any]:
        if any(e["lu"] == name for e in self.catalog.exports()):
            raise AdminError(f"LU {name} is exported; unexport it first")
        try:
            row = self.tables.luv[name]
            self.tables.unmap_lu(name)
        except (KeyError, ValueError) as exc:
            raise AdminError(f"cannot delete LU {name}: {exc}") from None
        self._persist("DELETE FROM lus WHERE name=?", (name,), lambda: self.tables.luv.__setitem__(name, row))
        return {"deleted": name}

    async def export(self, lu: str, target: str, lun: int) -> dict[str, Any]:
        ds = self.device_servers.get(target)
        if ds is None:
            raise AdminError(f"no target {target}")
        check_lun(lun, "LUN")
        if lu not in self.tables.luv:
            raise AdminError(f"no LU {lu}")
        if ds.has_lun(lun):
            raise AdminError(f"{target} already has LUN {lun}")
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO exports VALUES (?, ?, ?)", (target, lun, lu))
        ds.add_lun(lun, self._logical_unit(lu, target, lun))
        return {"target": target, "lun": lun, "lu": lu}

    async def unexport(self, target: str, lun: int) -> dict[str, Any]:
        ds = self.device_servers.get(target)
        if ds is None or not any(e["target"] == target and e["lun"] == lun for e in self.catalog.exports()):
            raise AdminError(f"{target} LUN {lun} is not an export of the catalog")
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM exports WHERE target=? AND lun=?", (target, lun))
        if ds.has_lun(lun):  # not served when load() skipped it (out of range)
            lu = ds.remove_lun(lun)
            await lu.volume.flush()
        return {"target": target, "lun": lun}

    async def resize_lun(self, target: str, lun: int, size: int | str) -> dict[str, Any]:
        """Grow LUN ``lun`` of ``target`` to ``size`` bytes while hosts are logged in.

        Every I_T nexus gets UNIT ATTENTION / CAPACITY DATA HAS CHANGED and READ CAPACITY reports
        the new size (SBC-3 §4.5; :meth:`DeviceServer.resize_lun`).  A file-backed LUN of the
        config keeps it across restarts because the file's length wins over a smaller configured
        ``size`` (tools/cli.py).  Shrinking is refused, as are volumes that cannot grow.
        """
        ds = self.device_servers.get(target)
        if ds is None:
            raise AdminError(f"no target {target}")
        lu = ds.luns.get(lun)
        if lu is None:
            raise AdminError(f"{target} has no LUN {lun}")
        name = f"{target} LUN {lun}"
        export = next((e for e in self.catalog.exports() if e["target"] == target and e["lun"] == lun), None)
        if export is not None:
            # A catalog LU is a window on a virtual volume (LU/V table), which may overlap other
            # virtual volumes (multiple virtualization): widening the window would show the host
            # blocks it does not own instead of fresh zeros, so it is not offered.
            row = self.tables.luv[export["lu"]]
            raise AdminError(f"cannot resize {name}: it is catalog LU {row.lu}, a window of {row.size} blocks on "
                             f"virtual volume #{row.vvol}; only file-backed LUNs of the config can grow")
        bs = lu.block_size
        size = _bytes(size, "size")
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

    # --- rearrangement ----------------------------------------------------------------------------------

    async def rearrange(self, volume: str, index: int, group: str | None = None,
                        ldev: str | None = None) -> dict[str, Any]:
        """Move LDEV ``index`` of ``volume`` onto another RAID group (or a designated LDEV), online."""
        vol = self.volumes.get(volume)
        if vol is None:
            raise AdminError(f"no volume {volume}")
        if not 0 <= index < len(vol.ldevs):
            raise AdminError(f"volume {volume} has no LDEV {index}")
        try:
            if ldev is not None:
                grp, _, idx = ldev.partition(":")
                dest = self.allocator.ldev(grp, int(idx))
                self.allocator.mark_used([dest])
            else:
                if group is None or group not in self.groups:
                    raise AdminError(f"no RAID group {group}")
                dest = self.allocator.allocate(self.allocator.ldev_size, [group])[0]
        except VolumeError as exc:
            raise AdminError(str(exc)) from None
        try:
            old = await vol.rearrange(index, dest)
        except BaseException:
            self.allocator.release([dest])
            raise
        with self.catalog.transaction() as db:
            db.execute("UPDATE volume_ldevs SET grp=?, idx=? WHERE volume=? AND seq=?",
                       (dest.group, dest.index, volume, index))
        self.allocator.release([old])
        log.info("ldev_rearranged", volume=volume, index=index, source=old.ldev_id, dest=dest.ldev_id)
        return {"volume": volume, "index": index, "from": old.ldev_id, "to": dest.ldev_id}

    def ldev_loads(self, seconds: float) -> list[LdevLoad]:
        """Rates since the previous call (the statistics are cumulative counters)."""
        now: dict[tuple[str, int], tuple[int, int, float]] = {}
        loads = []
        for name, vol in self.volumes.items():
            for i, st in enumerate(vol.stats):
                seq = st.sequential_reads + st.sequential_writes
                rnd = st.reads + st.writes - seq
                now[(name, i)] = (rnd, seq, st.busy)
                r0, s0, b0 = self._last_stats.get((name, i), (0, 0, 0.0))
                loads.append(LdevLoad(name, i, vol.ldevs[i].group, (rnd - r0) / seconds, (seq - s0) / seconds,
                                      (st.busy - b0) / seconds))
        self._last_stats = now
        return loads

    async def tiering_round(self, seconds: float = 1.0) -> dict[str, Any]:
        """Sample the statistics, plan and carry out the moves the policy proposes."""
        loads = self.ldev_loads(seconds)
        groups = [GroupInfo(n, int(g.level), len(self.allocator.free(n))) for n, g in self.groups.items()]
        done = []
        for m in plan_moves(loads, groups):
            done.append(await self.rearrange(m.volume, m.index, group=m.dest) | {"reason": m.reason})
        return {"moves": done}

    async def auto_tiering(self, enable: bool = True, interval: float = 60.0) -> dict[str, Any]:
        """Run :meth:`tiering_round` every ``interval`` seconds (or stop doing so)."""
        if self._tiering is not None:
            self._tiering.cancel()
            self._tiering = None
        if enable:
            async def loop() -> None:
                self.ldev_loads(interval)
                while True:
                    await asyncio.sleep(interval)
                    try:
                        await self.tiering_round(interval)
                    except Exception:  # noqa: BLE001 - logged; the next round tries again
                        log.exception("tiering_round_failed")
            self._tiering = asyncio.create_task(loop())
        return {"auto_tiering": enable, "interval": interval}

    # --- external volumes -------------------------------------------------------------------------------

    async def add_external(self, name: str, portal: str, target: str, lun: int = 0, lock: str = "off",
                           timeout: float = 10.0) -> dict[str, Any]:
        """Map a peer array's LUN as a real volume of this array (no CHAP at run time yet)."""
        if name in self.externals or name in self.tables.real or name in self.tables.luv:
            raise AdminError(f"a volume called {name} exists")
        host, _, port = portal.rpartition(":")
        if not host or not port.isdigit():
            raise AdminError(f"portal {portal!r} is not HOST:PORT")
        if lock not in ("off", "per-request", "held"):
            raise AdminError("lock is off, per-request or held")
        check_lun(lun, "the peer's LUN")
        try:
            vol = await connect_external(self.initiator_name, name, (host.strip("[]"), int(port)), target, lun,
                                         lock=lock, timeout=timeout)
        except VolumeError as exc:
            raise AdminError(str(exc)) from None
        try:
            with self.catalog.transaction() as db:
                db.execute("INSERT INTO externals VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (name, host.strip("[]"), int(port), target, lun, lock, timeout))
        except BaseException:
            await vol.close()
            raise
        self.externals[name] = vol
        self.tables.add_real(name, vol)
        return {"name": name, "blocks": vol.num_blocks, "block_size": vol.block_size}

    async def remove_external(self, name: str) -> dict[str, Any]:
        vol = self.externals.get(name)
        if vol is None or not any(e["name"] == name for e in self.catalog.externals()):
            raise AdminError(f"no run-time external volume {name}")
        if any(v.real == name for v in self.tables.vr.values()):
            raise AdminError(f"external volume {name} carries virtual volumes")
        if any(r["source"] == name for r in self.catalog.migrations() if r["state"] != "detached"):
            raise AdminError(f"external volume {name} is a migration source")
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM externals WHERE name=?", (name,))
        del self.externals[name]
        self.tables.real.pop(name, None)
        await vol.close()
        return {"removed": name}

    # --- migratory copy ---------------------------------------------------------------------------------

    def _source(self, name: str) -> Volume:
        if name in self.externals:
            return self.externals[name]
        if name in self.volumes:
            return self.volumes[name]
        raise AdminError(f"no external volume or volume {name} to migrate from")

    def _start_migration(self, dest: str, source: str, start: int, end: int, chunk: int) -> MigratingVolume:
        mv = MigratingVolume(dest, self._source(source), self.volumes[dest],
                             str(self.data_dir / f"migrate-{dest}.json"), start=start, end=end, chunk_blocks=chunk)
        self.migrations[dest] = mv
        self.tables.real[dest] = mv
        if not mv.simplex:
            mv.start_background()
        return mv

    async def migrate_start(self, source: str, dest: str, start: int | str = 0, end: int | str | None = None,
                            chunk: int | str = 2048) -> dict[str, Any]:
        """Take ``source`` over into volume ``dest``: hosts use ``dest`` at once, the copy runs behind.

        ``start``, ``end`` and ``chunk`` are blocks of ``dest`` when bare, bytes with a unit.
        """
        if dest not in self.volumes:
            raise AdminError(f"no volume {dest}")
        bs = self.volumes[dest].block_size
        start, chunk = _blocks(start, bs, "start"), _blocks(chunk, bs, "chunk")
        end = None if end is None else _blocks(end, bs, "end")
        if dest in self.migrations:
            raise AdminError(f"volume {dest} is already a migration destination")
        if any(v.real == dest for v in self.tables.vr.values()):
            raise AdminError(f"volume {dest} is already mapped by virtual volumes; migrate into a fresh volume")
        src = self._source(source)
        end = src.num_blocks if end is None else end
        if src.num_blocks > self.volumes[dest].num_blocks:
            raise AdminError(f"{source} ({src.num_blocks} blocks) is larger than {dest}")
        try:
            mv = self._start_migration(dest, source, start, end, chunk)
        except VolumeError as exc:
            raise AdminError(str(exc)) from None
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO migrations VALUES (?, ?, ?, ?, ?, 'copying')", (dest, source, start, end, chunk))
        return mv.describe()

    async def migrate_status(self) -> list[dict[str, Any]]:
        """One entry per migration of the catalog, in its order: the catalog's state wins.

        A migration detached at run time still has its (simplex) MigratingVolume in
        :attr:`migrations` until the next start, so the catalog row decides, not that object.
        """
        out = []
        for r in self.catalog.migrations():
            if r["state"] == "detached":
                out.append({"volume": r["dest"], "source": r["source"], "state": "detached", "progress": 1.0})
            elif (mv := self.migrations.get(r["dest"])) is not None:
                out.append(mv.describe() | {"source": r["source"]})
        return out

    async def migrate_detach(self, dest: str) -> dict[str, Any]:
        """Forget the source of a finished (simplex) whole-volume migration."""
        mv = self.migrations.get(dest)
        if mv is None:
            raise AdminError(f"no migration into {dest}")
        if not mv.simplex:
            raise AdminError(f"migration into {dest} is not finished")
        if mv.start != 0 or mv.end < mv.source.num_blocks:
            raise AdminError("a partial-area migration keeps using its source outside the range")
        with self.catalog.transaction() as db:
            db.execute("UPDATE migrations SET state='detached' WHERE dest=?", (dest,))
        return {"volume": dest, "state": "detached"}

    # --- views ----------------------------------------------------------------------------------------

    def show(self) -> dict[str, Any]:
        """Every table in the array's own terms."""
        groups = []
        for name, g in sorted(self.groups.items()):
            groups.append({
                "name": name, "level": int(g.level), "stripe_size": g.layout.chunk, "capacity": g.capacity,
                "degraded": g.degraded, "rebuild_progress": g.rebuild_progress,
                "rebuild_rate": g.rebuild_rate, "rebuild_eta": g.rebuild_eta, "rebuild_error": g.rebuild_error,
                "rebuilding_drive": g.rebuilding,
                "drives": [{"index": i, "path": d.path, "state": d.state.value} for i, d in enumerate(g.drives)],
                "ldevs": g.capacity // self.allocator.ldev_size, "ldevs_free": len(self.allocator.free(name))})
        return {
            "ldev_size": self.allocator.ldev_size,
            "raid_groups": groups,
            "volumes": [{"name": n, "blocks": v.num_blocks, "block_size": v.block_size,
                         "ldevs": [d.ldev_id for d in v.ldevs],
                         "moving": {i: {"to": d.ldev_id, "copied": p} for i, (d, p) in v.moving.items()},
                         "ldev_stats": [{"reads": st.reads, "writes": st.writes, "random": st.random_reads
                                         + st.random_writes, "busy": round(st.busy, 3)} for st in v.stats]}
                        for n, v in sorted(self.volumes.items())],
            # Addresses and sizes in these tables are blocks of block_size bytes; multiple_virtualization
            # is the seed's decision information (the blocks are shared now), _asked what was asked for.
            "vr_table": [{"vvol": r.vvol, "real": r.real, "real_start": r.real_start, "size": r.size,
                          "multiple_virtualization": self.tables.multiple_virtualization(r.vvol),
                          "multiple_virtualization_asked": r.multiple_virtualization,
                          "shares_with": self.tables.sharing_vvols(r.vvol),
                          "block_size": self._block_size_of(r.real)}
                         for r in sorted(self.tables.vr.values(), key=lambda r: r.vvol)],
            "luv_table": [{"lu": r.lu, "vvol": r.vvol, "vstart": r.vstart, "size": r.size,
                           "multiple_virtualization": bool(self.tables.sharing_lus(r.lu)),
                           "multiple_virtualization_asked": r.multiple_virtualization,
                           "shares_with": self.tables.sharing_lus(r.lu),
                           "block_size": self._block_size_of(r.lu)}
                          for r in sorted(self.tables.luv.values(), key=lambda r: r.lu)],
            "exports": self.catalog.exports(),
            "external_volumes": [{"name": n, "blocks": v.num_blocks, "block_size": v.block_size}
                                 for n, v in sorted(self.externals.items())],
        }

    def _block_size_of(self, name: str) -> int | None:
        """Block size of a real volume or LU, None when it is gone (an external volume that did not log in)."""
        try:
            return self.tables.real_or_lu(name).block_size
        except (ValueError, KeyError):
            return None

    async def close(self) -> None:
        if self._tiering is not None:
            self._tiering.cancel()
        for mv in self.migrations.values():
            await mv.stop_background()
        for name in [e["name"] for e in self.catalog.externals()]:
            vol = self.externals.pop(name, None)
            if vol is not None:
                await vol.close()
        for g in self.groups.values():
            await g.close()  # a rebuild stops after its stripe in hand, its watermark recorded
        for t in self._rebuilds.values():
            await asyncio.gather(t, return_exceptions=True)
        self.catalog.close()

    OPERATIONS = tuple(operations.OPERATIONS)
    """What the management socket may call: the operations declared in tools/operations.py."""

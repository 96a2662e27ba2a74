"""Management operations on RAID groups and their drives: create, delete, fail, replace (rebuild), scrub.

A rebuild and a scrub run under the array's task supervisor (storage/supervisor.py): a rebuild
in the background from ``replace-drive`` (or from the start, when a restart interrupted one), a
scrub for as long as its request waits for it.  Flush order of a replacement (storage/raid.py,
rule 2): the new drive file, then the group's state file naming it REBUILDING, then the drive list
in the catalog and ``raid-<name>.json`` — one transaction, the JSON file written before the commit.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from fnmatch import fnmatch
from typing import Any

import structlog

from sanlab.storage.ldev import LdevAllocator
from sanlab.storage.raid import Drive, Layout, RaidGroup, RaidLevel
from sanlab.storage.raid_files import open_group, replace_drive_path
from sanlab.storage.supervisor import SupervisorError, TaskState
from sanlab.storage.volume import VolumeError
from sanlab.tools.array import AdminError, ArrayState, found, size_bytes
from sanlab.tools.config import file_identity

log = structlog.get_logger("sanlab.admin")

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A run-time RAID group's name: it names files (``raid-<name>.json``) and LDEVs (``<name>:<index>``)
and goes in comma-separated lists (``groups=``), so no ``/``, ``:`` or ``,``."""

ARRAY_FILES = ("catalog.db*", "raid-*", "migrate-*", "reservations.sqlite*", "sanlab.*")
"""Names the array gives its own files in the data directory (catalog, RAID descriptions and
bitmaps, migration state, persistent reservations, the management socket): never a drive."""


class RaidOps:
    """The RAID-group operations of tools/operations.py (``Domain.RAID``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array

    async def load(self) -> None:
        """Open the catalog's groups (after a restart): parity resynchronised, rebuilds resumed."""
        a = self.array
        config_files = a.config_files()
        for g in a.catalog.groups():
            for i, p in enumerate(g.drives):
                # The configuration may have been edited since the group was created; opening one
                # file twice would serve one's data through the other.
                user = config_files.get(file_identity(p))
                if user is not None:
                    raise VolumeError(f"drive {i} of RAID group {g.name} (catalog), {p}, is also {user}")
            group = open_group(g.name, g.level, g.drives, g.drive_size, g.stripe_size, str(a.data_dir))
            if group.rebuilding is not None:
                # A crash between the state file and the catalog (flush order rule 2): catch up.
                await self._record_drive(g.name, group.rebuilding, group.drives[group.rebuilding].path)
            regions, fixed = await group.recover()
            if regions:
                log.warning("raid_parity_resynced", group=g.name, regions=regions, repaired_stripes=fixed)
            a.groups[g.name] = group
            if group.rebuilding is not None:
                log.warning("rebuild_resumed", group=g.name, drive=group.rebuilding,
                            progress=round(group.rebuild_progress or 0.0, 4))
                self._start_rebuild(g.name, group)
            a.allocator.add_group(g.name, group.capacity)
        for name, group in a.config_groups.items():  # opened by the server; a rebuild goes on here
            if group.rebuilding is not None:
                log.warning("rebuild_resumed", group=name, drive=group.rebuilding,
                            progress=round(group.rebuild_progress or 0.0, 4))
                self._start_rebuild(name, group)

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
        a = self.array
        full = [a.drive_path(p) for p in paths]
        users = a.config_files()
        members: dict[tuple[str, int], str] = {}
        for row in a.catalog.groups():
            members.update({(row.name, i): p for i, p in enumerate(row.drives)})
        for gname, group in a.groups.items():  # the running objects too, should they differ
            for i, d in enumerate(group.drives):
                members.setdefault((gname, i), d.path)
        for (gname, i), p in sorted(members.items()):
            if gname == exclude_group and exclude_index in (None, i):
                continue
            users.setdefault(file_identity(p), f"drive {i} of RAID group {gname}")
        data_dir = os.path.realpath(a.data_dir)
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
                                 f"relative to the data directory {a.data_dir}; no directory is created)")

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
        a = self.array
        drive_size, stripe_size = size_bytes(drive_size, "drive_size"), size_bytes(stripe_size, "stripe_size")
        ldev_size = None if ldev_size is None else size_bytes(ldev_size, "ldev_size")
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
            raise AdminError(f"RAID group name {name!r}: letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit, at most 64")
        async with a.changes:
            if name in a.groups or any(r.name == name for r in a.catalog.groups()):
                raise AdminError(f"RAID group {name} exists")
            if a.config is not None and any(rg.name == name for rg in a.config.raid_groups):
                raise AdminError(f"RAID group {name} is declared in the configuration ({a.config.source})")
            try:
                raid_level = RaidLevel(level)
            except ValueError:
                raise AdminError(f"RAID level {level} is not one of 0, 1, 5, 6, 10") from None
            try:
                layout = Layout(raid_level, len(drives), stripe_size, drive_size)  # drive count, stripe size
            except ValueError as exc:
                raise AdminError(f"cannot build RAID group {name}: {exc}") from None
            if ldev_size is not None:
                if a.groups or a.catalog.get_meta("ldev_size"):
                    raise AdminError("the LDEV size is set once, with the first RAID group")
                try:
                    LdevAllocator(ldev_size)
                except ValueError as exc:
                    raise AdminError(f"ldev_size {ldev_size}: {exc}") from None
            ldev = a.allocator.ldev_size if ldev_size is None else ldev_size
            if layout.capacity < ldev:
                raise AdminError(f"RAID group {name} would hold {layout.capacity} bytes ({len(drives)} drives of "
                                 f"{drive_size} bytes in whole {stripe_size}-byte stripes), less than one LDEV of "
                                 f"{ldev} bytes: give larger or more drives")
            self.check_drive_paths(drives)  # first: "already drive 2 of rg0" says more than "exists"
            paths = [a.drive_path(p) for p in drives]
            there = [p for p in paths if os.path.lexists(p)]
            if there:
                raise AdminError("drive files already exist: " + ", ".join(there))
            meta = a.data_dir / f"raid-{name}.json"
            if meta.exists():
                raise AdminError(f"{meta} describes a RAID group {name} that is neither in the catalog nor in the "
                                 "configuration (removed from the configuration?); move it away or choose another "
                                 "name")
            bitmap = a.data_dir / f"raid-{name}.bitmap"
            if bitmap.is_file():  # left by a deleted group (older versions kept it): stale dirty bits
                log.warning("stale_raid_bitmap_removed", path=str(bitmap))
                bitmap.unlink()
            group: RaidGroup | None = None
            try:
                async with a.catalog.change() as change:
                    if ldev_size is not None:
                        change.set_meta("ldev_size", str(ldev_size))
                    change.add_group(name, level, stripe_size, drive_size, paths)
                    # In the transaction: a group that cannot be built commits nothing.
                    group = await asyncio.to_thread(open_group, name, level, paths, drive_size, stripe_size,
                                                    str(a.data_dir))
            except BaseException as exc:
                if group is not None:  # built, but the commit failed: take it apart again
                    await group.close()
                    self._remove_group_files(name, paths)
                if isinstance(exc, (ValueError, VolumeError, OSError)):
                    raise AdminError(f"cannot build RAID group {name}: {exc}") from exc
                raise
            if ldev_size is not None:
                a.allocator = LdevAllocator(ldev_size)
            a.groups[name] = group
            count = a.allocator.add_group(name, group.capacity)
        log.info("raid_group_created", name=name, level=level, drives=len(paths), ldevs=count)
        return {"name": name, "capacity": group.capacity, "ldevs": count}

    def _remove_group_files(self, name: str, drives: list[str]) -> None:
        """Delete what a group made: its drive files, ``raid-<name>.json`` and the bitmap."""
        data_dir = self.array.data_dir
        for p in [*drives, str(data_dir / f"raid-{name}.json"), str(data_dir / f"raid-{name}.bitmap")]:
            if os.path.lexists(p):
                os.unlink(p)

    def _group(self, name: str) -> RaidGroup:
        """Group ``name``: the catalog's, or the configuration's (drive operations only)."""
        a = self.array
        return found(a.groups.get(name) or a.config_groups.get(name), f"no RAID group {name}")

    async def delete_raid_group(self, name: str) -> dict[str, Any]:
        """Delete group ``name`` (none of its LDEVs in use), its description, state and bitmap."""
        a = self.array
        async with a.changes:
            group = self._group(name)
            if name in a.config_groups:
                raise AdminError(f"RAID group {name} is declared in the configuration: remove it there (and its LUN)")
            if len(a.allocator.free(name)) != group.capacity // a.allocator.ldev_size:
                raise AdminError(f"RAID group {name} still holds LDEVs of volumes")
            async with a.catalog.change() as change:
                change.delete_group(name)
            await group.close()
            del a.groups[name]
            a.allocator = self._rebuild_allocator()
            os.unlink(a.data_dir / f"raid-{name}.json")
            for leftover in (f"raid-{name}.state", f"raid-{name}.bitmap"):
                (a.data_dir / leftover).unlink(missing_ok=True)
        return {"deleted": name}

    def _rebuild_allocator(self) -> LdevAllocator:
        a = self.array
        allocator = LdevAllocator(a.allocator.ldev_size)
        for n, g in a.groups.items():
            allocator.add_group(n, g.capacity)
        for v in a.volumes.values():
            allocator.mark_used(v.ldevs)
        return allocator

    async def fail_drive(self, group: str, index: int) -> dict[str, Any]:
        """Take member ``index`` out of service (refused when that would lose data)."""
        async with self.array.changes:
            g = self._group(group)
            if not 0 <= index < len(g.drives):
                raise AdminError(f"RAID group {group} has no drive {index}")
            if sum(not d.readable for d in g.drives) >= g.redundancy and g.drives[index].readable:
                raise AdminError(f"failing drive {index} would lose data of RAID group {group}")
            try:
                await g.take_out(index)  # durable before the answer: a restart keeps the member out
            except OSError as exc:
                raise AdminError(f"drive {index} of {group} is out, but recording it failed: {exc}") from None
        log.warning("drive_failed", group=group, index=index)
        return {"group": group, "drive": index, "state": "failed"}

    async def replace_drive(self, group: str, index: int, path: str = "", rate: int | str = 0) -> dict[str, Any]:
        """Rebuild member ``index`` onto a new drive file, in the background.

        A group of the TOML configuration keeps the drive paths the configuration names (a new
        disk in the same slot): the replacement is made at the member's configured path, the dead
        file moved aside first to ``<path>.failed-<unix time>``, so the configuration stays right
        for the next start; ``path``, if given, must be that path.  A catalog group's replacement
        is a new file at ``path``.

        Everything that can be checked is checked before the answer (the path's directory
        exists, the file does not, it can be created); a failure later, in the background, shows
        in ``show`` (``rebuild_error``) and makes ``wait-rebuild`` fail.  Order (storage/raid.py,
        flush order rule 2): the replacement file, then the group's state file naming it
        REBUILDING, then the drive list in the catalog and ``raid-<name>.json``.  ``rate`` limits
        the rebuild to that many bytes of the new drive per second (0: no limit).
        """
        a = self.array
        rate = size_bytes(rate, "rate")  # bytes per second, bare or with a unit (tools/units.py)
        async with a.changes:
            g = self._group(group)
            if not 0 <= index < len(g.drives):
                raise AdminError(f"RAID group {group} has no drive {index}")
            if g.rebuilding is not None:
                raise AdminError(f"RAID group {group} is already rebuilding drive {g.rebuilding}")
            if g.drives[index].readable:
                raise AdminError(f"drive {index} of {group} is online; fail it first")
            config = group in a.config_groups
            if config:
                slot = g.drives[index].path
                if path and os.path.realpath(a.drive_path(path)) != os.path.realpath(slot):
                    raise AdminError(f"RAID group {group} is the configuration's: drive {index} is replaced at "
                                     f"its configured path {slot} (leave out path=)")
                full = slot
                if os.path.lexists(full):
                    aside = f"{full}.failed-{int(time.time())}"
                    try:
                        os.replace(full, aside)
                    except OSError as exc:
                        raise AdminError(f"cannot move the dead drive {full} aside: {exc}") from None
                    log.warning("dead_drive_moved_aside", group=group, drive=index, path=full, to=aside)
            else:
                if not path:
                    raise AdminError(f"RAID group {group}: path= names the new drive file")
                full = a.drive_path(path)
                parent = os.path.dirname(full) or "."
                if not os.path.isdir(parent):
                    raise AdminError(f"directory {parent} does not exist (relative paths are in the data directory "
                                     f"{a.data_dir})")
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
            if not config:  # a configuration group's drive list is the configuration's, unchanged
                await self._record_drive(group, index, full)
            self._start_rebuild(group, g)
        log.info("rebuild_started", group=group, drive=index, path=full)
        return {"group": group, "drive": index, "path": full, "state": "rebuilding"}

    async def _record_drive(self, group: str, index: int, path: str) -> None:
        """The drive list (catalog and raid-<name>.json) names ``path`` as member ``index``."""
        a = self.array
        rows = {r.name: r for r in a.catalog.groups()}
        drives = list(rows[group].drives)
        if drives[index] == path:
            return
        drives[index] = path
        async with a.catalog.change() as change:
            change.set_group_drives(group, drives)
            await asyncio.to_thread(replace_drive_path, str(a.data_dir), group, index, path)

    def _start_rebuild(self, name: str, g: RaidGroup) -> None:
        """Run the group's rebuild under the supervisor; stopping it keeps its watermark."""
        try:
            self.array.supervisor.start("rebuild", name, self._rebuild(name, g), stop=g.stop_rebuild,
                                        group=name, drive=g.rebuilding)
        except SupervisorError as exc:  # shutting down: the state file resumes it at the next start
            log.warning("rebuild_not_started", group=name, drive=g.rebuilding, reason=str(exc))

    async def _rebuild(self, name: str, g: RaidGroup) -> None:
        """The rebuild task: a failure (VolumeError, ``g.rebuild_error``) is the supervisor's to log."""
        index = g.rebuilding
        await g.run_rebuild()
        if g.rebuilding is None:
            log.info("rebuild_done", group=name, drive=index)
        else:
            log.info("rebuild_paused", group=name, drive=index, progress=g.rebuild_progress)

    async def wait_rebuild(self, group: str) -> dict[str, Any]:
        """Wait for the group's rebuild to end; an error if it failed."""
        g = self._group(group)
        await self.array.supervisor.wait("rebuild", group)
        if g.rebuild_error is not None:
            raise AdminError(f"RAID group {group}: {g.rebuild_error}")
        return {"group": group, "degraded": g.degraded,
                "drives": [d.state.value for d in g.drives]}

    async def scrub(self, group: str) -> dict[str, Any]:
        """Check the group's redundancy stripe by stripe and repair it, as a supervised task."""
        g = self._group(group)
        stop = asyncio.Event()
        try:
            self.array.supervisor.start("scrub", group, g.scrub(repair=True, stop=stop), stop=stop, group=group)
        except SupervisorError as exc:
            raise AdminError(f"cannot scrub RAID group {group}: {exc}") from None
        job = await self.array.supervisor.wait("scrub", group)
        assert job is not None
        if job.state is TaskState.FAILED:
            raise AdminError(f"scrub of RAID group {group} failed: {job.error}")
        if job.state is TaskState.STOPPED:
            raise AdminError(f"scrub of RAID group {group} stopped before the end: the array is shutting down")
        return {"group": group, "repaired_stripes": job.result()}

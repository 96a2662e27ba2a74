"""The array's running storage objects and its catalog, shared by the management operations.

The operations are split by domain (tools/raid_ops.py, volume_ops.py, tiering_ops.py,
migration_ops.py, external_ops.py; tools/operations.py declares them); each domain is a class
holding an :class:`ArrayState`, the one set of running objects they all change.  The rule every
operation keeps (module docstring of tools/admin.py): the catalog changes in one transaction
(:meth:`~sanlab.storage.catalog.Catalog.change`), and the running objects only after its commit
succeeded — or, where they change first, they are put back when it fails (:meth:`ArrayState.persist`).
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable, TypeVar

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.lun import LUN_RANGE, MAX_LUN
from sanlab.replication.link import Link
from sanlab.storage.catalog import Catalog, CatalogChange
from sanlab.storage.ldev import Ldev, LdevAllocator, LogicalVolume
from sanlab.storage.migrate import MigratingVolume
from sanlab.storage.raid import RaidGroup
from sanlab.storage.supervisor import Supervisor
from sanlab.storage.volume import Volume
from sanlab.storage.vvol import MappingTables
from sanlab.tools.config import ArrayConfig, file_identity
from sanlab.tools.mgmt_client import AdminError as AdminError  # defined with the client (light), raised here
from sanlab.tools.units import to_blocks, to_bytes

DEFAULT_LDEV_SIZE = 8 << 20

SHUTDOWN_ORDER = ("backup", "tiering", "local-copy", "journal", "pair-copy", "migration", "scrub", "rebuild", "link")
"""The kinds of background task, in the order they stop (storage/supervisor.py says why this one).
Backup jobs (``backup``) go first: they read and write through local copies' volumes.
Local copy movers (``local-copy``) write through remote pairs' volumes, so they stop before
those pairs' movers.  Replication's copy movers (``pair-copy``) go before ``migration``: they read volumes on RAID groups.
The links to remotes (replication/link.py) stop last: everything before them may still be sending
to a peer through one (a copy mover, a pair's write draining), and a link writes no local volume."""


_T = TypeVar("_T")


def found(value: _T | None, missing: str) -> _T:
    """``value``, or AdminError(``missing``) when the array has none by the name the request gave."""
    if value is None:
        raise AdminError(missing)
    return value


def size_bytes(value: int | str, name: str) -> int:
    """A size whose bare number is bytes (tools/units.py: the one rule), as AdminError when it is not a size."""
    try:
        return to_bytes(value, name)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def size_blocks(value: int | str, block_size: int, name: str) -> int:
    """A size whose bare number is blocks; with a unit it is bytes and must be whole ``block_size`` blocks."""
    try:
        return to_blocks(value, block_size, name)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def check_lun(lun: object, what: str) -> None:
    """Refuse a LUN number the 8-byte LUN field cannot carry (:data:`~sanlab.scsi.lun.MAX_LUN`).

    Checked before the catalog is touched: an exported LUN outside the range would make REPORT
    LUNS fail for every host of the target, and a peer's would fail every command to it.
    """
    if not isinstance(lun, int) or isinstance(lun, bool):
        raise AdminError(f"{what} {lun!r} is not a number; LUNs are {LUN_RANGE}")
    if not 0 <= lun <= MAX_LUN:
        raise AdminError(f"{what} {lun} is out of range: LUNs are {LUN_RANGE}")


class ArrayState:
    """What the operations of every domain read and change: catalog, groups, volumes, tables, tasks."""

    def __init__(self, data_dir: Path, device_servers: dict[str, DeviceServer] | None = None,
                 externals: dict[str, Volume] | None = None,
                 initiator_name: str = "iqn.2026-11.org.sanlab:array", config: ArrayConfig | None = None) -> None:
        self.initiator_name = initiator_name
        """This array's iSCSI name as an initiator (logging in to peers' LUNs)."""
        self.config = config
        """The TOML configuration the array runs with: its RAID groups and file LUNs use files
        (and group names) the catalog's must not."""
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(data_dir / "catalog.db")
        self.device_servers = device_servers or {}
        """The array's targets by name: where exports add their LUNs."""
        self.groups: dict[str, RaidGroup] = {}
        self.config_groups: dict[str, RaidGroup] = {}
        """The TOML configuration's RAID groups (each the whole of a config LUN: no LDEVs on them);
        their drives are managed as the catalog's are (fail, replace onto the configured path, rebuild)."""
        """The catalog's RAID groups, running."""
        self.allocator = LdevAllocator(int(self.catalog.get_meta("ldev_size") or DEFAULT_LDEV_SIZE))
        self.tables = MappingTables()
        """The V/R and LU/V tables, and the real volumes they map."""
        self.volumes: dict[str, LogicalVolume] = {}
        """The catalog's volumes (on LDEVs), running."""
        self.externals = dict(externals or {})
        """External volumes (configured peers' LUNs and run-time ones), usable as migration sources."""
        for name, vol in self.externals.items():
            self.tables.add_real(name, vol)  # configured externals can carry virtual volumes too
        self.migrations: dict[str, MigratingVolume] = {}
        """Migrations by destination volume (a detached one stays until the next start)."""
        self.supervisor = Supervisor(SHUTDOWN_ORDER)
        """Every background task: rebuilds, scrubs, migrations' copies, the tiering loop, the links."""
        self.links: dict[str, Link] = {}
        """The link to each remote (peer array) by the remote's name (tools/remote_ops.py keeps it);
        pairs send their traffic on ``links[name].session``."""
        self.changes = asyncio.Lock()
        """Held by an operation from its checks to the update of the running objects, around the
        awaited commit: another operation then never acts on checks this one is about to make
        untrue (as when commits ran on the event loop and nothing could come in between)."""

    def drive_path(self, path: str) -> str:
        """A drive path as the array stores it: relative paths are relative to the data directory."""
        return path if os.path.isabs(path) else str(self.data_dir / path)

    def config_files(self) -> dict[tuple[int, int] | str, str]:
        """:func:`file_identity` of every file the TOML configuration uses → what uses it."""
        users: dict[tuple[int, int] | str, str] = {}
        if self.config is None:
            return users
        for rg in self.config.raid_groups:
            for i, p in enumerate(rg.drives):
                users.setdefault(file_identity(p), f"drive {i} of RAID group {rg.name} of the configuration")
        for tc in self.config.targets:
            for lc in tc.luns:
                if lc.raid_group is None and lc.external is None and not lc.command_device:
                    users.setdefault(file_identity(lc.file), f"the file of LUN {lc.lun} of {tc.name} "
                                                             "in the configuration")
        return users

    def open_volume(self, name: str, ldevs: list[Ldev], block_size: int, blocks: int) -> LogicalVolume:
        """Make volume ``name`` on ``ldevs`` a running, mappable real volume."""
        # The live mapping, not a copy: rearrange may move an LDEV onto a group created later.
        vol = LogicalVolume(ldevs, self.groups, block_size, blocks * block_size)
        self.volumes[name] = vol
        self.tables.add_real(name, vol)
        return vol

    def logical_unit(self, lu: str, target: str, lun: int) -> LogicalUnit:
        """The SCSI logical unit serving LU ``lu`` as LUN ``lun`` of ``target``."""
        return LogicalUnit(self.tables.lu_volume(lu), LuConfig.for_lun(target, lun))

    async def persist(self, record: Callable[[CatalogChange], None], undo: Callable[[], object]) -> None:
        """Commit what ``record`` puts in a change; should that fail, ``undo`` the running change made first."""
        try:
            async with self.catalog.change() as change:
                record(change)
        except BaseException:
            undo()
            raise

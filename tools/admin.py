"""Management of a running array: the operations' domains wired to one state (SPEC §3; storage virtualization).

tools/operations.py declares every operation and the domain it belongs to; each domain is a class
in a module of its own (:data:`Admin.DOMAINS`), and :meth:`Admin.handler` is how the management
socket (tools/mgmt.py) and, later, the command device find an operation's method.  Every
operation changes the catalog in one transaction, committed off the event loop
(storage/catalog.py), and the running objects (RAID groups, LDEV allocator, mapping tables,
exported LUNs) only after the commit succeeded — or puts back what it changed first when the
commit fails — so a failure leaves both as they were.  Background work (rebuilds, scrubs,
migrations' copies, the tiering loop) runs under one supervisor (storage/supervisor.py), which
``show`` lists and :meth:`Admin.close` stops in order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Final

from sanlab.scsi.device_server import DeviceServer
from sanlab.storage.raid import RaidGroup
from sanlab.storage.volume import Volume
from sanlab.tools import operations
from sanlab.tools.array import AdminError, ArrayState
from sanlab.tools.cmddev_ops import CommandDeviceOps, CommandDeviceRef
from sanlab.tools.config import ArrayConfig
from sanlab.tools.backup_ops import BackupOps
from sanlab.tools.capture import CaptureOps
from sanlab.tools.copy_ops import CopyOps
from sanlab.tools.external_ops import ExternalOps
from sanlab.tools.migration_ops import MigrationOps
from sanlab.tools.pair_ops import PairManagerRef, PairOps
from sanlab.tools.raid_ops import RaidOps
from sanlab.tools.remote_ops import RemoteOps
from sanlab.tools.snapshot_ops import SnapshotOps
from sanlab.tools.tiering_ops import TieringOps
from sanlab.tools.volume_ops import VolumeOps

__all__ = ["Admin", "AdminError"]


class Admin(ArrayState):
    """The array's storage objects (:class:`ArrayState`) and the operations on them, by domain."""

    DOMAINS: Final[dict[operations.Domain, type]] = {
        operations.Domain.RAID: RaidOps,
        operations.Domain.VOLUMES: VolumeOps,
        operations.Domain.TIERING: TieringOps,
        operations.Domain.MIGRATION: MigrationOps,
        operations.Domain.EXTERNALS: ExternalOps,
        operations.Domain.REMOTES: RemoteOps,
        operations.Domain.PAIRS: PairOps,
        operations.Domain.COPIES: CopyOps,
        operations.Domain.BACKUP: BackupOps,
        operations.Domain.SNAPSHOTS: SnapshotOps,
        operations.Domain.COMMAND_DEVICES: CommandDeviceOps,
        operations.Domain.CAPTURE: CaptureOps,
    }
    """The class whose methods are each domain's operations; ``Domain.VIEWS`` is :class:`Admin` itself."""

    OPERATIONS = tuple(operations.OPERATIONS)
    """What the management socket may call: the operations declared in tools/operations.py."""

    def __init__(self, data_dir: Path, device_servers: dict[str, DeviceServer] | None = None,
                 externals: dict[str, Volume] | None = None,
                 initiator_name: str = "iqn.2026-11.org.sanlab:array", config: ArrayConfig | None = None,
                 pairs: PairManagerRef | None = None, cmddevs: CommandDeviceRef | None = None,
                 config_groups: dict[str, RaidGroup] | None = None) -> None:
        super().__init__(data_dir, device_servers, externals, initiator_name, config)
        self.config_groups = dict(config_groups or {})
        self.raid_ops = RaidOps(self)
        self.volume_ops = VolumeOps(self)
        self.tiering_ops = TieringOps(self)
        self.migration_ops = MigrationOps(self)
        self.external_ops = ExternalOps(self)
        self.remote_ops = RemoteOps(self)
        self.pair_ops = PairOps(self, pairs)
        self.remote_ops.users_of = self.pair_ops.users_of_remote
        self.copy_ops = CopyOps(self)
        self.backup_ops = BackupOps(self, self.copy_ops)
        self.snapshot_ops = SnapshotOps(self)
        self.cmddev_ops = CommandDeviceOps(self, self.handler, cmddevs, config.array_name if config else None)
        self.capture_ops = CaptureOps(self)
        self._domains: dict[operations.Domain, object] = {
            operations.Domain.RAID: self.raid_ops, operations.Domain.VOLUMES: self.volume_ops,
            operations.Domain.TIERING: self.tiering_ops, operations.Domain.MIGRATION: self.migration_ops,
            operations.Domain.EXTERNALS: self.external_ops, operations.Domain.REMOTES: self.remote_ops,
            operations.Domain.PAIRS: self.pair_ops, operations.Domain.COPIES: self.copy_ops,
            operations.Domain.BACKUP: self.backup_ops, operations.Domain.SNAPSHOTS: self.snapshot_ops,
            operations.Domain.COMMAND_DEVICES: self.cmddev_ops, operations.Domain.CAPTURE: self.capture_ops,
            operations.Domain.VIEWS: self}

    def handler(self, op: operations.Operation) -> Callable[..., Any]:
        """The bound method that carries out ``op`` (a coroutine function, or a plain one for views)."""
        method: Callable[..., Any] = getattr(self._domains[op.domain], op.name)
        return method

    async def load(self) -> None:
        """Rebuild the running objects from the catalog (after a restart), in dependency order."""
        await self.external_ops.load()
        await self.raid_ops.load()
        self.volume_ops.load_volumes()
        self.migration_ops.load()  # before the V/R table: a virtual volume maps the migrating volume
        self.volume_ops.load_mappings()
        await self.remote_ops.load()  # the links log in in the background; nothing waits for a peer
        await self.pair_ops.load()  # after the remotes: a P side's session uses its remote's portals
        await self.copy_ops.load()  # after the pairs: a copy may wrap a remote pair's volume
        await self.snapshot_ops.load()  # after the copies: a snapshot origin wraps a copy's volume
        await self.cmddev_ops.load()

    def show(self) -> dict[str, Any]:
        """Every table in the array's own terms, and the background tasks."""
        groups = []
        for name, g in sorted([*self.groups.items(), *self.config_groups.items()]):
            config = name in self.config_groups
            groups.append({
                "name": name, "level": int(g.level), "stripe_size": g.layout.chunk, "capacity": g.capacity,
                "degraded": g.degraded, "rebuild_progress": g.rebuild_progress,
                "rebuild_rate": g.rebuild_rate, "rebuild_eta": g.rebuild_eta, "rebuild_error": g.rebuild_error,
                "rebuilding_drive": g.rebuilding, "config": config,
                "drives": [{"index": i, "path": d.path, "state": d.state.value} for i, d in enumerate(g.drives)],
                "ldevs": 0 if config else g.capacity // self.allocator.ldev_size,
                "ldevs_free": 0 if config else len(self.allocator.free(name))})
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
            "background_tasks": self.supervisor.describe(),
            # Async pairs (issue 15): each journal's pointers, use and lag; each pair's mode and lag.
            "journals": self.pair_ops.manager.journal_status(),
            "pairs": self.pair_ops.manager.display(),
            # Relays of a cascade (replication/cascade.py): the virtual volumes the pairs built on one LU.
            "relays": self.pair_ops.manager.relay_status(),
        }

    def _block_size_of(self, name: str) -> int | None:
        """Block size of a real volume or LU, None when it is gone (an external volume that did not log in)."""
        try:
            return self.tables.real_or_lu(name).block_size
        except (ValueError, KeyError):
            return None

    async def close(self) -> None:
        """Stop the background work in order, then close migrations, run-time externals, groups and the catalog.

        The supervisor stops tiering, then migrations' copies, then scrubs and rebuilds (each after
        the unit in hand; a rebuild records its watermark), then the links to remotes (each logs
        out); only then is the change lock taken, so
        an operation still running finishes first — a tiering round's move takes that lock too.
        """
        await self.supervisor.shutdown()
        await self.pair_ops.close()
        await self.copy_ops.close()
        await self.snapshot_ops.close()
        try:
            async with self.changes:
                for mv in self.migrations.values():
                    mv.copied.close()  # the copy has stopped: its bits are flushed, the file closes
                await self.external_ops.close()
                for g in self.groups.values():
                    await g.close()
                await self.catalog.close()
        finally:
            await self.capture_ops.close()  # last: the links' logouts and FINs are in the file

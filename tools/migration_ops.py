"""Management operations of the migratory copy: take a volume over from an external volume (or a volume).

The destination serves hosts at once through a :class:`~sanlab.storage.migrate.MigratingVolume`;
its background copy runs under the array's task supervisor (kind ``migration``, named for the
destination) and is stopped, after the chunk in hand, only at shutdown.
"""
from __future__ import annotations

import os
from typing import Any

from sanlab.storage.migrate import MigratingVolume
from sanlab.storage.supervisor import SupervisorError
from sanlab.storage.volume import Volume, VolumeError
from sanlab.tools.array import AdminError, ArrayState, found, size_blocks


class MigrationOps:
    """The migration operations of tools/operations.py (``Domain.MIGRATION``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array

    def load(self) -> None:
        """Put the catalog's migrations back in front of their volumes; unfinished copies resume."""
        for m in self.array.catalog.migrations():
            if m["state"] != "detached":
                self._install(self._open(m["dest"], m["source"], m["start"], m["end_block"], m["chunk"]),
                              m["source"])

    def _source(self, name: str) -> Volume:
        a = self.array
        if name in a.externals:
            return a.externals[name]
        if name in a.volumes:
            return a.volumes[name]
        raise AdminError(f"no external volume or volume {name} to migrate from")

    def _open(self, dest: str, source: str, start: int, end: int, chunk: int) -> MigratingVolume:
        """The migration into ``dest``: its state files are made when new, read when there."""
        a = self.array
        return MigratingVolume(dest, self._source(source), a.volumes[dest], str(a.data_dir / f"migrate-{dest}.json"),
                               start=start, end=end, chunk_blocks=chunk)

    def _install(self, mv: MigratingVolume, source: str) -> None:
        """Put ``mv`` in front of its volume and, unless it is simplex, its copy under the supervisor."""
        a = self.array
        a.migrations[mv.name] = mv
        a.tables.real[mv.name] = mv
        if not mv.simplex:
            try:
                a.supervisor.start("migration", mv.name, mv.run(), stop=mv.stop, volume=mv.name, source=source)
            except SupervisorError:  # shutting down: the copied-map resumes it at the next start
                pass

    async def migrate_start(self, source: str, dest: str, start: int | str = 0, end: int | str | None = None,
                            chunk: int | str = 2048) -> dict[str, Any]:
        """Take ``source`` over into volume ``dest``: hosts use ``dest`` at once, the copy runs behind.

        ``start``, ``end`` and ``chunk`` are blocks of ``dest`` when bare, bytes with a unit.
        """
        a = self.array
        async with a.changes:
            if dest not in a.volumes:
                raise AdminError(f"no volume {dest}")
            bs = a.volumes[dest].block_size
            first, chunk_blocks = size_blocks(start, bs, "start"), size_blocks(chunk, bs, "chunk")
            last = None if end is None else size_blocks(end, bs, "end")
            if dest in a.migrations:
                raise AdminError(f"volume {dest} is already a migration destination")
            if any(v.real == dest for v in a.tables.vr.values()):
                raise AdminError(f"volume {dest} is already mapped by virtual volumes; migrate into a fresh volume")
            src = self._source(source)
            last = src.num_blocks if last is None else last
            if src.num_blocks > a.volumes[dest].num_blocks:
                raise AdminError(f"{source} ({src.num_blocks} blocks) is larger than {dest}")
            try:
                mv = self._open(dest, source, first, last, chunk_blocks)
            except VolumeError as exc:
                raise AdminError(str(exc)) from None
            try:
                async with a.catalog.change() as change:
                    change.add_migration(dest, source, first, last, chunk_blocks)
            except BaseException:
                # No migration without its row: the state files go, or a retry would resume them.
                mv.copied.remove()
                os.unlink(mv.state_path)
                raise
            self._install(mv, source)
        return mv.describe()

    async def migrate_status(self) -> list[dict[str, Any]]:
        """One entry per migration of the catalog, in its order: the catalog's state wins.

        A migration detached at run time still has its (simplex) MigratingVolume in
        ``migrations`` until the next start, so the catalog row decides, not that object.
        """
        out = []
        for r in self.array.catalog.migrations():
            if r["state"] == "detached":
                out.append({"volume": r["dest"], "source": r["source"], "state": "detached", "progress": 1.0})
            elif (mv := self.array.migrations.get(r["dest"])) is not None:
                out.append(mv.describe() | {"source": r["source"]})
        return out

    async def migrate_detach(self, dest: str) -> dict[str, Any]:
        """Forget the source of a finished (simplex) whole-volume migration."""
        a = self.array
        async with a.changes:
            mv = found(a.migrations.get(dest), f"no migration into {dest}")
            if not mv.simplex:
                raise AdminError(f"migration into {dest} is not finished")
            if mv.start != 0 or mv.end < mv.source.num_blocks:
                raise AdminError("a partial-area migration keeps using its source outside the range")
            async with a.catalog.change() as change:
                change.set_migration_state(dest, "detached")
        return {"volume": dest, "state": "detached"}

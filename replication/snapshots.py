"""The snapshots of this array: create, delete (any order), restore, list, and their files.

One :class:`SnapshotManager` per array (built by tools/snapshot_ops.py).  A snapshot is
``<data-dir>/snapshots/<name>.json`` (origin, creation time, where it is exported) and its track
map ``<name>.map`` (replication/snapshot.py states the pool, the maps and their flush order).  A
snapshot exists once its JSON file does: the map is made (durably) first, the JSON written to a
temporary file and renamed; a delete removes the JSON first, so a crash leaves at most a map no
JSON names, removed at the next start.

Creation and restore hold new host I/O on the origin and drain what runs, so a snapshot is one
point of the origin's write stream and a restore is not mixed with host writes.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import structlog

from sanlab.replication.io_gate import held, unwrap_lu
from sanlab.replication.snapshot import Pool, Snapshot, SnapshotOrigin, TrackMap
from sanlab.scsi.lu import LogicalUnit

log = structlog.get_logger("sanlab.replication.snapshots")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
LuKey = tuple[str, int]


class SnapshotError(Exception):
    """An instruction refused, with the reason for the user."""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # a full file system: the error names the file, none is left half-written
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotManager:
    """Every snapshot of this array (module docstring)."""

    def __init__(self, data_dir: Path, find_lu: Callable[[str, int], LogicalUnit | None]) -> None:
        self.dir = Path(data_dir) / "snapshots"
        self.find_lu = find_lu
        self.snapshots: dict[str, Snapshot] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.origins: dict[LuKey, SnapshotOrigin] = {}
        self._lus: dict[LuKey, LogicalUnit] = {}
        self._pool: Pool | None = None
        self.lock = asyncio.Lock()
        """Held by every operation (tools/snapshot_ops.py holds it around an export too)."""

    @property
    def pool(self) -> Pool:
        """The pool file, opened on first use."""
        if self._pool is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._pool = Pool(str(self.dir / "pool"))
        return self._pool

    async def _wrap(self, key: LuKey) -> SnapshotOrigin:
        o = self.origins.get(key)
        if o is not None:
            return o
        lu = self.find_lu(*key)
        if lu is None:
            raise SnapshotError(f"no LU {key[0]}/{key[1]} on this array")
        o = SnapshotOrigin(lu.volume, f"{key[0]}/{key[1]}", self.pool)
        await lu.swap_volume(lambda _old: o)
        self.origins[key], self._lus[key] = o, lu
        return o

    async def _unwrap(self, key: LuKey) -> None:
        o = self.origins[key]
        if o.snapshots:
            return
        lu = self._lus.pop(key)
        del self.origins[key]
        await unwrap_lu(lu, o, o.local, "snapshot_origin_replaced", o.label)

    @staticmethod
    def _key(meta: dict[str, Any]) -> LuKey:
        return str(meta["target"]), int(meta["lun"])

    def get(self, name: str) -> Snapshot:
        """Snapshot ``name``; SnapshotError when there is none."""
        s = self.snapshots.get(name)
        if s is None:
            raise SnapshotError(f"no snapshot called {name}")
        return s

    async def load(self) -> None:
        """The snapshots of the data directory again: origins wrapped, maps read, the pool's allocator rebuilt."""
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            meta = json.loads(path.read_text())
            name = str(meta["name"])
            try:
                o = await self._wrap(self._key(meta))
            except SnapshotError as exc:
                log.error("snapshot_origin_missing", snapshot=name, error=str(exc))
                continue
            tmap = await asyncio.to_thread(TrackMap, str(self.dir / f"{name}.map"), o.tracks, False)
            s = Snapshot(name, o, tmap, float(meta["created"]))
            o.snapshots.append(s)
            self.snapshots[name], self.meta[name] = s, meta
        for m in self.dir.glob("*.map"):
            if m.stem not in self.meta:
                log.warning("snapshot_orphan_map_removed", path=str(m))
                m.unlink()
        for o in self.origins.values():
            o.snapshots.sort(key=lambda s: s.created)
        self.pool.rebuild([s.map for s in self.snapshots.values()])
        log.info("snapshots_loaded", count=len(self.snapshots), pool_bytes=self.pool.used_bytes)

    async def create(self, name: str, key: LuKey) -> dict[str, Any]:
        """Take snapshot ``name`` of LU ``key`` at one point of its write stream."""
        async with self.lock:
            if not NAME_RE.match(name):
                raise SnapshotError(f"name {name!r}: 1-32 letters, digits, . _ - (not first)")
            if name in self.snapshots:
                raise SnapshotError(f"snapshot {name} exists")
            o = await self._wrap(key)
            try:
                tmap = await asyncio.to_thread(TrackMap, str(self.dir / f"{name}.map"), o.tracks, True)
            except OSError:
                with contextlib.suppress(FileNotFoundError):  # a map it could not fill is no map
                    await asyncio.to_thread(os.unlink, self.dir / f"{name}.map")
                await self._unwrap(key)
                raise
            try:
                async with held([o]):
                    created = time.time()
                    meta: dict[str, Any] = {"name": name, "target": key[0], "lun": key[1], "created": created,
                                            "export": None}
                    s = Snapshot(name, o, tmap, created)
                    await asyncio.to_thread(_write_json, self.dir / f"{name}.json", meta)
                    o.snapshots.append(s)
            except OSError:
                # Its description could not be written (a full file system): no snapshot, no files.
                with contextlib.suppress(OSError):
                    tmap.close()
                for leftover in (str(self.dir / f"{name}.json"), str(self.dir / f"{name}.json.tmp"), tmap.path):
                    with contextlib.suppress(FileNotFoundError):
                        await asyncio.to_thread(os.unlink, leftover)
                await self._unwrap(key)
                raise
            self.snapshots[name], self.meta[name] = s, meta
            log.info("snapshot_created", snapshot=name, origin=o.label)
            return self.describe(s)

    async def delete(self, name: str) -> dict[str, Any]:
        """Delete snapshot ``name``: the pool slots only it names are free again."""
        async with self.lock:
            s = self.get(name)
            if self.meta[name].get("export"):
                e = self.meta[name]["export"]
                raise SnapshotError(f"snapshot {name} is exported as {e[0]}/{e[1]}: unexport it first")
            o = s.origin
            # No copy-on-write in flight may still be naming slots in this map.
            async with held([o]):
                o.snapshots.remove(s)
            await asyncio.to_thread(self._remove_files, name)
            for slot in s.map.slots.values():
                self.pool.release(slot)
            s.map.close()
            await asyncio.to_thread(os.unlink, s.map.path)
            del self.snapshots[name], self.meta[name]
            key = next(k for k, v in self.origins.items() if v is o)
            await self._unwrap(key)
            log.info("snapshot_deleted", snapshot=name, pool_bytes=self.pool.used_bytes)
            return {"name": name, "deleted": True, "pool_bytes": self.pool.used_bytes}

    def _remove_files(self, name: str) -> None:
        os.unlink(self.dir / f"{name}.json")
        _sync_dir(self.dir)

    async def restore(self, name: str) -> dict[str, Any]:
        """Write snapshot ``name``'s image back over its origin (the other snapshots keep theirs)."""
        async with self.lock:
            s = self.get(name)
            o = s.origin
            tb, bs = o.track_blocks, o.block_size
            moved = 0
            async with held([o]):
                for t, slot in sorted(s.map.slots.items()):
                    start = t * tb
                    n = min(tb, o.num_blocks - start)
                    # Through the copy-on-write rule: the other snapshots keep the track they see.
                    await o.write_ungated(start, await self.pool.read(slot, 0, n * bs))
                    moved += n * bs
                await o.flush()
            log.info("snapshot_restored", snapshot=name, origin=o.label, bytes=moved)
            return {**self.describe(s), "restored_bytes": moved}

    def set_export(self, name: str, where: LuKey | None) -> None:
        """Record where snapshot ``name`` is exported (None: nowhere), durably (the caller holds :attr:`lock`)."""
        meta = self.meta[name]
        meta["export"] = list(where) if where is not None else None
        _write_json(self.dir / f"{name}.json", meta)

    def describe(self, s: Snapshot) -> dict[str, Any]:
        """``snapshot list``'s row."""
        meta = self.meta.get(s.name, {})
        e = meta.get("export")
        return {"name": s.name, "origin": s.origin.label, "created": s.created,
                "pool_tracks": len(s.map.slots), "pool_bytes": s.own_bytes,
                "export": f"{e[0]}/{e[1]}" if e else None}

    def list(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every snapshot (or ``name``), oldest first, with the pool's use."""
        snaps = [self.get(name)] if name else sorted(self.snapshots.values(), key=lambda s: s.created)
        return [self.describe(s) for s in snaps]

    async def close(self) -> None:
        """Close the maps and the pool (host I/O has stopped)."""
        for s in self.snapshots.values():
            s.map.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

"""Snapshot copy-on-write, pool sharing and the map files (replication/snapshot.py), without an array."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sanlab.replication.pair import TRACK_BYTES
from sanlab.replication.snapshot import MAP_ENTRY, Pool, Snapshot, SnapshotOrigin, SnapshotView, TrackMap
from sanlab.scsi.sense import ScsiError
from tests.storage.test_volume import MemoryVolume

BS = 512
TB = TRACK_BYTES // BS
TRACKS = 8


def _origin(tmp: Path) -> SnapshotOrigin:
    vol = MemoryVolume(TRACKS * TRACK_BYTES, BS)
    vol.buf[:] = bytes([0x10]) * len(vol.buf)
    return SnapshotOrigin(vol, "t/0", Pool(str(tmp / "pool")))


def _snap(o: SnapshotOrigin, tmp: Path, name: str, fresh: bool = True) -> Snapshot:
    s = Snapshot(name, o, TrackMap(str(tmp / f"{name}.map"), o.tracks, fresh), 0.0)
    o.snapshots.append(s)
    return s


def test_one_slot_for_every_snapshot_that_needs_the_track_and_freed_by_the_last(tmp_path: Path) -> None:
    async def go() -> None:
        o = _origin(tmp_path)
        s1 = _snap(o, tmp_path, "s1")
        await o.write(0, bytes([0x21]) * TRACK_BYTES)  # s1 alone needs track 0
        s2, s3 = _snap(o, tmp_path, "s2"), _snap(o, tmp_path, "s3")
        await o.write(TB, bytes([0x32]) * 512)  # track 1: one slot for s1, s2, s3
        await o.write(10, bytes([0x43]) * 512)  # track 0: one slot for s2, s3
        assert len(o.pool.refs) == 3 and s1.map.slots[1] == s2.map.slots[1] == s3.map.slots[1]
        assert s2.map.slots[0] == s3.map.slots[0] != s1.map.slots[0]
        assert await s1.read(0, 2 * TB) == bytes([0x10]) * 2 * TRACK_BYTES
        want = bytes([0x21]) * TRACK_BYTES + bytes([0x10]) * TRACK_BYTES
        assert await s2.read(0, 2 * TB) == await s3.read(0, 2 * TB) == want
        # Delete s2: nothing freed (s3 still names its slots); s3 then s1: all free.
        o.snapshots.remove(s2)
        for slot in s2.map.slots.values():
            o.pool.release(slot)
        assert len(o.pool.refs) == 3
        await o.write(2 * TB, bytes([0x54]) * 512)  # a new slot, not one s3 names
        assert await s3.read(0, 2 * TB) == want
        for s in (s3, s1):
            o.snapshots.remove(s)
            for slot in s.map.slots.values():
                o.pool.release(slot)
        assert not o.pool.refs
        assert await SnapshotView(s1).read(0, TB) == bytes([0x10]) * TRACK_BYTES
    asyncio.run(go())


def test_maps_come_back_and_an_unnamed_slot_is_free_after_a_crash(tmp_path: Path) -> None:
    async def go() -> None:
        o = _origin(tmp_path)
        s1 = _snap(o, tmp_path, "s1")
        await o.write(3 * TB, bytes([0x77]) * TRACK_BYTES)
        await o.pool.write(5, bytes(TRACK_BYTES))  # a copy-on-write cut short before its map entry
        raw = (tmp_path / "s1.map").read_bytes()
        assert len(raw) == TRACKS * MAP_ENTRY.size and MAP_ENTRY.unpack_from(raw, 3 * MAP_ENTRY.size) == (1,)
        again = TrackMap(str(tmp_path / "s1.map"), TRACKS, False)
        assert again.slots == s1.map.slots == {3: 0}
        pool = Pool(str(tmp_path / "pool"))
        pool.rebuild([again])
        assert pool.refs == {0: 1} and [pool.allocate(1) for _ in range(3)] == [1, 2, 3]
    asyncio.run(go())


def test_a_snapshot_view_refuses_writes(tmp_path: Path) -> None:
    o = _origin(tmp_path)
    v = SnapshotView(_snap(o, tmp_path, "s1"))
    with pytest.raises(ScsiError):
        asyncio.run(v.write(0, bytes(BS)))
    assert o.local.buf[:BS] == bytes([0x10]) * BS  # type: ignore[attr-defined]

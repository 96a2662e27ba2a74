"""LDEV allocation and logical volumes over several RAID groups, against a flat model."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.storage.ldev import Ldev, LdevAllocator, LogicalVolume
from sanlab.storage.raid import Drive, RaidGroup, RaidLevel
from sanlab.storage.volume import VolumeError

LDEV = 8192


def groups(tmp: Path) -> dict[str, RaidGroup]:
    g5 = RaidGroup(RaidLevel.RAID5, [Drive(str(tmp / f"a{i}.img"), 32768) for i in range(3)], 1024)
    g1 = RaidGroup(RaidLevel.RAID1, [Drive(str(tmp / f"b{i}.img"), 32768) for i in range(2)], 1024)
    return {"rg5": g5, "rg1": g1}


def test_allocator_spreads_and_designates() -> None:
    a = LdevAllocator(LDEV)
    assert a.add_group("g1", 10 * LDEV + 100) == 10
    assert a.add_group("g2", 4 * LDEV) == 4
    got = a.allocate(5 * LDEV - 1)
    assert len(got) == 5
    # Most-free group first: the allocation levels the groups' free counts.
    assert [d.group for d in got] == ["g1"] * 5
    more = a.allocate(4 * LDEV)
    assert abs(len(a.free("g1")) - len(a.free("g2"))) <= 1 and {d.group for d in more} == {"g1", "g2"}
    a.release(more)
    explicit = [a.ldev("g2", i) for i in a.free("g2")[:1]]
    a.mark_used(explicit)
    with pytest.raises(VolumeError):
        a.mark_used(explicit)
    with pytest.raises(VolumeError):
        a.allocate(100 * LDEV)
    a.release(got)
    assert len(a.free("g1")) + len(a.free("g2")) == 13


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(list(range(7))), ops=st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(1, 40), st.integers(0, 255)), min_size=1, max_size=10))
def test_logical_volume_over_two_groups_matches_model(tmp_path_factory: pytest.TempPathFactory, order: list[int],
                                                      ops: list[tuple[int, int, int]]) -> None:
    tmp = tmp_path_factory.mktemp("lv")

    async def go() -> None:
        gs = groups(tmp)
        a = LdevAllocator(LDEV)
        for name, g in gs.items():
            a.add_group(name, g.capacity)
        pool = [a.ldev("rg5", i) for i in range(4)] + [a.ldev("rg1", i) for i in range(3)]
        ldevs = [pool[i] for i in order]  # explicit designation, in any order, across groups
        a.mark_used(ldevs)
        vol = LogicalVolume(ldevs, dict(gs), 512)
        model = bytearray(vol.num_blocks * 512)
        for lba, n, fill in ops:
            lba %= vol.num_blocks
            n = min(n, vol.num_blocks - lba)
            data = bytes([fill]) * (n * 512)
            await vol.write(lba, data)
            model[lba * 512:(lba + n) * 512] = data
        assert await vol.read(0, vol.num_blocks) == bytes(model)
        # Every byte is where the LDEV list says: check through the groups directly.
        for i, d in enumerate(ldevs):
            assert await gs[d.group].read(d.offset, LDEV) == bytes(model[i * LDEV:(i + 1) * LDEV])
        for g in gs.values():
            await g.close()

    asyncio.run(go())


async def test_logical_volume_bounds(tmp_path: Path) -> None:
    gs = groups(tmp_path)
    vol = LogicalVolume([Ldev("rg1", 0, 0, LDEV)], dict(gs), 512, size=4096)
    assert vol.num_blocks == 8
    with pytest.raises(VolumeError):
        await vol.read(7, 2)
    with pytest.raises(ValueError):
        LogicalVolume([Ldev("rg1", 0, 0, LDEV)], dict(gs), 512, size=LDEV + 512)
    await vol.write(0, os.urandom(4096), fua=True)
    for g in gs.values():
        await g.close()


async def test_a_flush_during_a_move_covers_the_destination_group(tmp_path: Path) -> None:
    """Host writes below a move's copy pointer land on the destination LDEV's group: SYNCHRONIZE
    CACHE (and FUA) must flush that group too, not only the groups the volume held before."""
    gs = groups(tmp_path)
    alloc = LdevAllocator(LDEV)
    for name, g in gs.items():
        alloc.add_group(name, g.capacity)
    src = [d for d in alloc.allocate(LDEV, ["rg5"])]
    vol = LogicalVolume(src, gs, 512, LDEV)  # type: ignore[arg-type]
    dest = alloc.allocate(LDEV, ["rg1"])[0]
    flushed: list[str] = []
    for name, g in gs.items():
        orig = g.flush

        async def spy(name: str = name, orig=orig) -> None:  # type: ignore[no-untyped-def]
            flushed.append(name)
            await orig()
        g.flush = spy  # type: ignore[method-assign]
    gate = asyncio.Event()
    move = asyncio.create_task(vol.rearrange(0, dest, step=512, progress=lambda f: gate.set()))
    await gate.wait()
    assert vol.moving
    flushed.clear()
    await vol.flush()
    assert "rg1" in flushed and "rg5" in flushed
    await move

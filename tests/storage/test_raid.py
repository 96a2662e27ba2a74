"""RAID groups: address arithmetic against a flat model, parity, degraded mode, rebuild, scrub, crash resync."""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.storage.raid import (
    Drive, DriveState, Layout, RaidGroup, RaidLevel, RaidVolume, gf_inv, gf_mul, gf_mul_scalar, gf_pow2,
)
from sanlab.storage.volume import VolumeError

CHUNK = 1024
DRIVE = 16 * 1024
LEVELS = [(RaidLevel.RAID0, 3), (RaidLevel.RAID1, 2), (RaidLevel.RAID5, 4), (RaidLevel.RAID6, 5),
          (RaidLevel.RAID10, 4)]


def make(tmp: Path, level: RaidLevel, n: int, bitmap: bool = True) -> RaidGroup:
    drives = [Drive(str(tmp / f"d{i}.img"), DRIVE) for i in range(n)]
    return RaidGroup(level, drives, CHUNK, str(tmp / "wil.bitmap") if bitmap else None)


# --- GF(2^8) -------------------------------------------------------------------------------------------


@given(st.integers(1, 255), st.integers(1, 255))
def test_gf_field_laws(a: int, b: int) -> None:
    assert gf_mul_scalar(a, gf_inv(a)) == 1
    assert gf_mul_scalar(a, b) == gf_mul_scalar(b, a)
    assert int(gf_mul(np.array([a], dtype=np.uint8), b)[0]) == gf_mul_scalar(a, b)
    assert gf_pow2(255) == 1


# --- layout --------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(level_n=st.sampled_from([(RaidLevel.RAID0, 2), (RaidLevel.RAID0, 5), (RaidLevel.RAID1, 3),
                                (RaidLevel.RAID5, 3), (RaidLevel.RAID5, 6), (RaidLevel.RAID6, 4),
                                (RaidLevel.RAID6, 7), (RaidLevel.RAID10, 6)]),
       chunk_blocks=st.integers(1, 8), stripes=st.integers(1, 9))
def test_layout_maps_every_logical_byte_to_distinct_places(level_n: tuple[RaidLevel, int], chunk_blocks: int,
                                                           stripes: int) -> None:
    level, n = level_n
    lay = Layout(level, n, chunk_blocks * 512, stripes * chunk_blocks * 512)
    assert lay.capacity == stripes * lay.data_chunks * lay.chunk
    seen: dict[tuple[int, int], int] = {}
    for stripe, index, coff, length, roff in lay.segments(0, lay.capacity):
        assert length == lay.chunk and coff == 0
        places = lay.data_drives(stripe, index)
        assert not set(places) & set(lay.parity_drives(stripe))
        for d in places:
            key = (d, stripe)
            assert key not in seen, f"chunk {roff} and {seen[key]} share drive {d} stripe {stripe}"
            seen[key] = roff
    if level in (RaidLevel.RAID5, RaidLevel.RAID6):
        # Parity rotates: every drive carries parity somewhere once there are n stripes.
        if stripes >= n:
            assert {lay.parity_drives(s)[0] for s in range(n)} == set(range(n))


def test_layout_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        Layout(RaidLevel.RAID5, 2, 1024, 8192)
    with pytest.raises(ValueError):
        Layout(RaidLevel.RAID10, 5, 1024, 8192)
    with pytest.raises(ValueError):
        Layout(RaidLevel.RAID0, 2, 1000, 8192)


# --- data path against a flat model ------------------------------------------------------------------


_ops = st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 5000), st.binary(min_size=1, max_size=1)),
                min_size=1, max_size=12)


@pytest.mark.parametrize("level,n", LEVELS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_random_writes_match_flat_model(tmp_path_factory: pytest.TempPathFactory, level: RaidLevel, n: int,
                                        ops: list[tuple[int, int, bytes]]) -> None:
    tmp = tmp_path_factory.mktemp("raid")

    async def go() -> None:
        g = make(tmp, level, n)
        model = bytearray(g.capacity)
        for off, length, fill in ops:
            off %= g.capacity
            length = min(length, g.capacity - off)
            data = bytes([(fill[0] + i) & 0xFF for i in range(length)])
            await g.write(off, data)
            model[off:off + length] = data
        assert await g.read(0, g.capacity) == bytes(model)
        assert await g.scrub(repair=False) == 0  # parity consistent after every kind of write
        await g.close()

    asyncio.run(go())


@pytest.mark.parametrize("level,n", LEVELS)
async def test_out_of_range(tmp_path: Path, level: RaidLevel, n: int) -> None:
    g = make(tmp_path, level, n)
    with pytest.raises(VolumeError):
        await g.read(g.capacity - 10, 11)
    await g.close()


# --- degraded mode, rebuild, scrub -----------------------------------------------------------------------


async def _fill(g: RaidGroup) -> bytearray:
    model = bytearray(os.urandom(g.capacity))
    await g.write(0, model)
    return model


@pytest.mark.parametrize("level,n,lost", [(RaidLevel.RAID1, 2, (0,)), (RaidLevel.RAID5, 4, (0,)),
                                          (RaidLevel.RAID5, 4, (3,)), (RaidLevel.RAID6, 5, (1, 3)),
                                          (RaidLevel.RAID6, 5, (4,)), (RaidLevel.RAID10, 4, (1, 2))])
async def test_degraded_read_and_write(tmp_path: Path, level: RaidLevel, n: int, lost: tuple[int, ...]) -> None:
    g = make(tmp_path, level, n)
    model = await _fill(g)
    for d in lost:
        g.fail_drive(d)
    assert g.degraded
    assert await g.read(0, g.capacity) == bytes(model)
    rng = random.Random(7)
    for _ in range(30):  # small and large writes while degraded
        off = rng.randrange(g.capacity)
        data = os.urandom(min(rng.choice([100, 1024, 5000]), g.capacity - off))
        await g.write(off, data)
        model[off:off + len(data)] = data
    assert await g.read(0, g.capacity) == bytes(model)
    await g.close()


async def test_missing_drive_file_at_start_is_degraded(tmp_path: Path) -> None:
    g = make(tmp_path, RaidLevel.RAID5, 4)
    model = await _fill(g)
    await g.close()
    os.unlink(tmp_path / "d2.img")
    drives = [Drive(str(tmp_path / f"d{i}.img"), DRIVE, create=i != 2) for i in range(4)]
    assert drives[2].state is DriveState.FAILED
    g2 = RaidGroup(RaidLevel.RAID5, drives, CHUNK, str(tmp_path / "wil.bitmap"))
    assert await g2.read(0, g2.capacity) == bytes(model)
    await g2.close()


def test_too_many_failures_refused(tmp_path: Path) -> None:
    drives = [Drive(str(tmp_path / f"d{i}.img"), DRIVE) for i in range(4)]
    drives[0].fail()
    drives[1].fail()
    with pytest.raises(VolumeError):
        RaidGroup(RaidLevel.RAID5, drives, CHUNK)


@pytest.mark.parametrize("level,n,victim", [(RaidLevel.RAID5, 4, 1), (RaidLevel.RAID6, 5, 0),
                                            (RaidLevel.RAID1, 3, 2), (RaidLevel.RAID10, 4, 3)])
async def test_rebuild_while_io_goes_on(tmp_path: Path, level: RaidLevel, n: int, victim: int) -> None:
    g = make(tmp_path, level, n)
    model = await _fill(g)
    g.fail_drive(victim)
    progress: list[float] = []
    new = Drive(str(tmp_path / "spare.img"), DRIVE)

    async def io() -> None:
        rng = random.Random(3)
        for _ in range(40):
            off = rng.randrange(g.capacity - 3000)
            data = os.urandom(rng.choice([512, 3000]))
            await g.write(off, data)
            model[off:off + len(data)] = data
            assert await g.read(off, len(data)) == data
            await asyncio.sleep(0)

    await asyncio.gather(g.rebuild(victim, new, progress.append), io())
    assert progress[-1] == 1.0 and new.state is DriveState.ONLINE
    assert await g.scrub(repair=False) == 0
    # The rebuilt member carries real data: lose a different member and read everything back.
    other = (victim + 1) % n
    g.fail_drive(other)
    assert await g.read(0, g.capacity) == bytes(model)
    await g.close()


async def test_scrub_finds_and_repairs_parity(tmp_path: Path) -> None:
    g = make(tmp_path, RaidLevel.RAID6, 5)
    model = await _fill(g)
    p = g.layout.parity_drives(2)[0]
    g.drives[p].pwrite(b"\xff" * 10, 2 * CHUNK + 5)
    assert await g.scrub(repair=False) == 1
    assert await g.scrub(repair=True) == 1
    assert await g.scrub(repair=False) == 0
    assert await g.read(0, g.capacity) == bytes(model)
    await g.close()


async def test_crash_mid_write_resyncs_dirty_regions(tmp_path: Path) -> None:
    g = make(tmp_path, RaidLevel.RAID5, 4)
    model = await _fill(g)
    await g.flush()
    # A crash after a data chunk reached its drive but before parity did: the region was marked dirty.
    assert g.bitmap is not None
    g.bitmap.set(0)
    d = g.layout.data_drives(1, 0)[0]
    g.drives[d].pwrite(b"\x11" * CHUNK, 1 * CHUNK)
    model_off = 1 * g.layout.data_chunks * CHUNK
    model[model_off:model_off + CHUNK] = b"\x11" * CHUNK
    for drive in g.drives:
        drive.close()  # no clean close: the bitmap stays dirty on disk
    drives = [Drive(str(tmp_path / f"d{i}.img"), DRIVE) for i in range(4)]
    g2 = RaidGroup(RaidLevel.RAID5, drives, CHUNK, str(tmp_path / "wil.bitmap"))
    assert g2.bitmap is not None and g2.bitmap.dirty() == [0]
    regions, repaired = await g2.recover()
    assert regions == 1 and repaired >= 1
    assert g2.bitmap.dirty() == []
    assert await g2.scrub(repair=False) == 0
    # Parity now matches the data: losing any drive still reads back what is on the data drives.
    g2.fail_drive(d)
    assert await g2.read(0, g2.capacity) == bytes(model)
    await g2.close()


async def test_raid_volume_blocks(tmp_path: Path) -> None:
    v = RaidVolume(make(tmp_path, RaidLevel.RAID5, 4), 512)
    assert v.num_blocks * 512 == v.group.capacity
    data = os.urandom(4096)
    await v.write(3, data, fua=True)
    assert await v.read(3, 8) == data
    with pytest.raises(VolumeError):
        await v.read(v.num_blocks, 1)
    await v.close()


# --- page-cache reads (the device server's fast path) ---------------------------------------------


@pytest.mark.parametrize("level,n", LEVELS)
async def test_read_nowait_gives_what_read_gives(tmp_path: Path, level: RaidLevel, n: int) -> None:
    g = make(tmp_path, level, n)
    model = await _fill(g)
    assert await g.read(0, g.capacity) == bytes(model)  # every chunk now in the page cache
    rng = random.Random(3)
    for _ in range(50):
        off = rng.randrange(g.capacity - 1)
        length = min(rng.choice([1, 512, 1500, 4096, 3 * CHUNK + 7]), g.capacity - off)
        assert g.read_nowait(off, length) == model[off:off + length], (off, length)
    await g.close()


@pytest.mark.parametrize("level,n,lost,served", [
    (RaidLevel.RAID1, 2, 0, True),     # the other mirror has it
    (RaidLevel.RAID10, 4, 2, True),
    (RaidLevel.RAID5, 4, 1, False),    # would need reconstruction: the ordinary read does that
    (RaidLevel.RAID6, 5, 0, False),
    (RaidLevel.RAID0, 3, 1, False),
])
async def test_read_nowait_never_reconstructs(tmp_path: Path, level: RaidLevel, n: int, lost: int,
                                              served: bool) -> None:
    g = make(tmp_path, level, n)
    model = await _fill(g)
    await g.read(0, g.capacity)
    g.fail_drive(lost)
    got = g.read_nowait(0, g.capacity)
    if served:
        assert got == model
    else:
        assert got is None
        assert level is RaidLevel.RAID0 or await g.read(0, g.capacity) == bytes(model)
    await g.close()


async def test_read_nowait_skips_a_rebuilding_drive_beyond_its_mark(tmp_path: Path) -> None:
    g = make(tmp_path, RaidLevel.RAID5, 4)
    model = await _fill(g)
    await g.read(0, g.capacity)
    g.drives[0].state = DriveState.REBUILDING
    g.drives[0].rebuilt_to = 0
    # Stripe 0 has parity on drive 3 and data chunks 0, 1, 2 on drives 0, 1, 2.  Chunk 1 is
    # served; chunk 0 is not valid on drive 0 yet, so a read touching it goes the ordinary way.
    assert g.read_nowait(CHUNK, CHUNK) == model[CHUNK:2 * CHUNK]
    assert g.read_nowait(0, CHUNK) is None
    assert g.read_nowait(0, g.capacity) is None
    assert await g.read(0, CHUNK) == bytes(model[:CHUNK])  # which reconstructs it
    await g.close()


async def test_raid_volume_nowait_reads_only(tmp_path: Path) -> None:
    from sanlab.storage.volume import NowaitIO
    v = RaidVolume(make(tmp_path, RaidLevel.RAID6, 5), 512)
    assert isinstance(v, NowaitIO)
    data = os.urandom(8192)
    await v.write(8, data)
    await v.read(8, 16)
    assert v.read_nowait(8, 16) == data
    assert v.write_nowait(8, data) is False
    assert v.read_pooled(8, 16) is None and v.write_pooled(8, data) is None
    with pytest.raises(VolumeError):
        v.read_nowait(v.num_blocks, 1)
    async with v.range_lock.hold(10, 2):  # a write in flight over part of it
        assert v.read_nowait(8, 16) is None
        assert v.read_nowait(0, 8) == bytes(await v.read(0, 8))
    await v.close()

"""Migratory copy: on-demand reads, host writes never overwritten, resume after restart, partial range."""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from sanlab.storage.migrate import MigratingVolume
from sanlab.storage.file_volume import FileVolume

BLOCKS = 4096


def vols(tmp: Path) -> tuple[FileVolume, FileVolume, bytearray]:
    src = FileVolume(str(tmp / "src.img"), BLOCKS * 512)
    data = bytearray(os.urandom(BLOCKS * 512))
    src.write_sync(0, data)
    dst = FileVolume(str(tmp / "dst.img"), BLOCKS * 512)
    return src, dst, data


async def test_migration_under_host_writes(tmp_path: Path) -> None:
    src, dst, model = vols(tmp_path)
    mv = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), chunk_blocks=64)
    # Before any copy: reads come from the source (on demand) and are kept locally.
    assert await mv.read(100, 8) == bytes(model[100 * 512:108 * 512])
    assert mv.copied.has(100 // 64)
    task = asyncio.create_task(mv.run())
    rng = random.Random(5)
    for _ in range(150):
        lba = rng.randrange(BLOCKS - 100)
        n = rng.randint(1, 100)
        if rng.random() < 0.5:
            d = os.urandom(n * 512)
            await mv.write(lba, d)
            model[lba * 512:(lba + n) * 512] = d
        else:
            assert await mv.read(lba, n) == bytes(model[lba * 512:(lba + n) * 512])
        await asyncio.sleep(0)
    await task
    assert mv.simplex and mv.describe()["state"] == "simplex"
    assert dst.read_sync(0, BLOCKS) == bytes(model)  # the destination holds source + host writes


async def test_restart_resumes_from_persisted_bitmap(tmp_path: Path) -> None:
    src, dst, model = vols(tmp_path)
    mv = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), chunk_blocks=64)
    await mv.write(0, b"\x01" * 512)  # host write to an uncopied chunk: durable before GOOD
    model[0:512] = b"\x01" * 512
    for c in range(1, 20):
        async with mv.range_lock.hold(c * 64, 64):
            await mv._copy_chunk(c)
    mv.pointer = 20
    await mv._persist()
    # "Crash": a new MigratingVolume over the same files resumes at the pointer.
    mv2 = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), chunk_blocks=64)
    assert mv2.pointer == 20 and mv2.copied.count() == 20
    await mv2.run()
    assert dst.read_sync(0, BLOCKS) == bytes(model)  # the host's write at block 0 survived


async def test_a_host_write_behind_the_background_copy_survives_a_crash(tmp_path: Path) -> None:
    """The background copy flushes its bits in batches; a host write to a chunk it copied must not
    be acknowledged before that chunk's bit is durable, or a restart copies the source over it."""
    src, dst, model = vols(tmp_path)
    mv = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), chunk_blocks=64)
    async with mv.range_lock.hold(5 * 64, 64):
        await mv._copy_chunk(5)  # the background copy's bit: in memory only, for now
    await mv.write(5 * 64 + 3, b"\x07" * 1024)
    model[(5 * 64 + 3) * 512:(5 * 64 + 5) * 512] = b"\x07" * 1024
    mv2 = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), chunk_blocks=64)  # kill -9, restart
    assert mv2.copied.has(5)
    await mv2.run()
    assert dst.read_sync(0, BLOCKS) == bytes(model)


async def test_an_older_json_copied_map_is_carried_over(tmp_path: Path) -> None:
    import json
    src, dst, model = vols(tmp_path)
    total = -(-BLOCKS // 64)
    copied = bytes(1 if c % 3 == 0 else 0 for c in range(total))
    (tmp_path / "m.json").write_text(json.dumps({"start": 0, "end": BLOCKS, "chunk": 64, "pointer": 0,
                                                 "copied": copied.hex()}))
    mv = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), chunk_blocks=64)
    assert [mv.copied.has(c) for c in range(total)] == [bool(b) for b in copied]
    assert "copied" not in json.loads((tmp_path / "m.json").read_text())
    assert (tmp_path / "m.bitmap").exists()
    await mv.close()


async def test_partial_range(tmp_path: Path) -> None:
    src, dst, model = vols(tmp_path)
    mv = MigratingVolume("v", src, dst, str(tmp_path / "m.json"), start=1000, end=2000, chunk_blocks=100)
    await mv.run()
    assert dst.read_sync(1000, 1000) == bytes(model[1000 * 512:2000 * 512])
    assert dst.read_sync(0, 1000) == bytes(1000 * 512)  # outside the range nothing was copied
    # Outside the range, I/O passes through to the source.
    await mv.write(10, b"\x09" * 512)
    assert src.read_sync(10, 1) == b"\x09" * 512
    assert await mv.read(2500, 1) == bytes(model[2500 * 512:2501 * 512])

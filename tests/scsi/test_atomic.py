"""WRITE ATOMIC(16) through DeviceServer.execute: on file volumes (journalled) and on a RAID volume
(which has no atomic writes, so the command does not exist there)."""
from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.storage.raid_files import open_group
from sanlab.storage.raid_volume import RaidVolume
from tests.scsi.helpers import TARGET, Run, inquiry
from tests.scsi.test_provisioning import (BLOCKS, INVALID_OPCODE, LBA_OUT_OF_RANGE, WRITE_PROTECTED, fill, good,
                                          invalid_cdb, make, read, sense, serve)
from tests.scsi.test_rsoc import descriptors, rsoc


def wa16(lba: int, blocks: int, flags: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", 0x9C, flags, lba, 0, blocks, group, 0)


def atomic_limits(res_data: bytes) -> tuple[int, int, int, int, int]:
    """MAXIMUM ATOMIC TRANSFER LENGTH … MAXIMUM ATOMIC BOUNDARY SIZE from a Block Limits page."""
    assert res_data[1] == 0xB0 and struct.unpack_from(">H", res_data, 2)[0] == 0x3C
    return struct.unpack_from(">IIIII", res_data, 44)


async def test_write_atomic_writes_and_reports_limits(tmp_path: Path) -> None:
    run = await serve(make(tmp_path))
    res = await run(wa16(7, 3), data_out=b"a" * 512 + b"b" * 512 + b"c" * 512)
    good(res)
    assert res.transfer_length == 1536 and res.data_out_direction
    assert await read(run, 7, 3) == b"a" * 512 + b"b" * 512 + b"c" * 512
    good(await run(wa16(0, 0)))  # zero blocks: nothing to do
    good(await run(wa16(BLOCKS - 1, 1, flags=0x18), data_out=b"z" * 512))  # DPO+FUA accepted
    assert await read(run, BLOCKS - 1, 1) == b"z" * 512
    assert atomic_limits(bytes((await run(inquiry(True, 0xB0))).data_in)) == (2048, 0, 0, 0, 0)
    ops = {(op, sa) for op, sa, _, _ in descriptors(bytes((await run(rsoc(0))).data_in), False)}
    assert (0x9C, 0) in ops


async def test_write_atomic_errors(tmp_path: Path) -> None:
    run = await serve(make(tmp_path))
    await fill(run, 0, 4, 0x41)
    for wrprotect in range(1, 8):
        assert sense(await run(wa16(0, 1, flags=wrprotect << 5), data_out=bytes(512))) == invalid_cdb(1, 7)
    assert sense(await run(wa16(BLOCKS - 1, 2), data_out=bytes(1024))) == LBA_OUT_OF_RANGE
    assert sense(await run(wa16(1 << 63, 1), data_out=bytes(512))) == LBA_OUT_OF_RANGE
    assert sense(await run(wa16(BLOCKS + 1, 0))) == LBA_OUT_OF_RANGE
    assert sense(await run(wa16(0, 2049), data_out=bytes(2049 * 512))) == invalid_cdb(12)
    # Short Data-Out: an atomic write is all of it or nothing, so nothing is written.
    assert sense(await run(wa16(0, 4), data_out=b"x" * 1536)) == invalid_cdb(12)
    assert sense(await run(wa16(0, 1, group=0x20), data_out=bytes(512))) == invalid_cdb(14, 7)
    assert await read(run, 0, 4) == b"A" * 2048


async def test_write_atomic_read_only(tmp_path: Path) -> None:
    run = await serve(make(tmp_path, readonly=True))
    assert sense(await run(wa16(0, 1), data_out=bytes(512))) == WRITE_PROTECTED


async def test_no_atomic_writes_on_raid(tmp_path: Path) -> None:
    drives = [str(tmp_path / f"d{i}.img") for i in range(3)]
    vol = RaidVolume(open_group("rg", 5, drives, 1 << 20, 64 << 10, str(tmp_path)))
    run = await serve(LogicalUnit(vol, LuConfig.for_lun(TARGET, 0)))
    assert sense(await run(wa16(0, 1), data_out=bytes(512))) == INVALID_OPCODE
    assert atomic_limits(bytes((await run(inquiry(True, 0xB0))).data_in)) == (0, 0, 0, 0, 0)
    ops = {op for op, _, _, _ in descriptors(bytes((await run(rsoc(0))).data_in), False)}
    assert 0x9C not in ops and 0x8A in ops


async def test_readers_never_see_half_an_atomic_write(tmp_path: Path) -> None:
    """Reads of the range while atomic writes of alternating patterns go on: each read is one pattern."""
    run: Run = await serve(make(tmp_path))
    patterns = [bytes([0x11]) * (256 * 512), bytes([0xEE]) * (256 * 512)]
    good(await run(wa16(100, 256), data_out=patterns[0]))
    seen: set[bytes] = set()

    async def writer() -> None:
        for i in range(20):
            good(await run(wa16(100, 256), data_out=patterns[i % 2]))

    async def reader() -> None:
        while not done.is_set():
            data = await read(run, 100, 256)
            assert data in patterns, "a read saw part of an atomic write"
            seen.add(data[:1])
            await asyncio.sleep(0)

    done = asyncio.Event()
    r = asyncio.create_task(reader())
    await writer()
    done.set()
    await r
    assert seen  # the reader really ran between the writes

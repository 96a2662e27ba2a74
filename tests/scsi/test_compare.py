"""COMPARE AND WRITE and ORWRITE(16) through DeviceServer.execute on real FileVolumes."""
from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from sanlab.scsi.task import ScsiResult
from tests.scsi.helpers import Run, cdb10, cdb16
from tests.scsi.test_provisioning import (BLOCKS, LBA_OUT_OF_RANGE, WRITE_PROTECTED, fill, fixed, good, invalid_cdb,
                                          make, read, sense, serve)


@pytest.fixture
async def run(tmp_path: Path) -> Run:
    return await serve(make(tmp_path))


def caw(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, blocks, 0, 0)


def miscompare(offset: int) -> bytes:
    """MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION, VALID with INFORMATION = offset."""
    return fixed(0xE, 0x1D, 0x00, info=offset)


async def test_compare_and_write(run: Run) -> None:
    await fill(run, 10, 2, 0x41)
    res = await run(caw(10, 2), data_out=b"A" * 1024 + b"B" * 1024)
    good(res)
    assert res.transfer_length == 2048 and res.data_out_direction
    assert await read(run, 10, 2) == b"B" * 1024
    # DPO and FUA are accepted (MODE SENSE reports DPOFUA).
    good(await run(caw(10, 1, 0x18), data_out=b"B" * 512 + b"C" * 512))
    assert await read(run, 10, 2) == b"C" * 512 + b"B" * 512


async def test_miscompare_writes_nothing(run: Run) -> None:
    await fill(run, 0, 4, 0x41)
    verify = bytearray(b"A" * 2048)
    verify[1500] = 0x43
    res = await run(caw(0, 4), data_out=bytes(verify) + b"B" * 2048)
    assert sense(res) == miscompare(1500)
    assert await read(run, 0, 4) == b"A" * 2048
    # Unwritten blocks read as zeros: any non-zero verify data miscompares at its first byte.
    assert sense(await run(caw(100, 1), data_out=b"%" * 512 + b"B" * 512)) == miscompare(0)


async def test_miscompare_descriptor_sense(tmp_path: Path) -> None:
    lu = make(tmp_path)
    lu.d_sense = True
    run = await serve(lu)
    res = await run(caw(0, 1), data_out=bytes(511) + b"x" + bytes(512))
    # 72h, MISCOMPARE, 1Dh/00h, information descriptor (VALID) with offset 511.
    assert sense(res) == bytes.fromhex("72 0e 1d 00 000000 0c 00 0a 80 00 00000000000001ff")


async def test_compare_and_write_checks(run: Run, tmp_path: Path) -> None:
    good(await run(caw(0, 0)))  # zero blocks, no data: nothing to do
    assert sense(await run(caw(0, 0), data_out=bytes(1024))) == invalid_cdb(13)
    for length in (512, 1536, 4096):  # Data-Out is not verify + write of the CDB's blocks
        assert sense(await run(caw(0, 1), data_out=bytes(length))) == invalid_cdb(13)
    for lba, n in [(BLOCKS, 1), (BLOCKS - 1, 2), (2**64 - 1, 1)]:
        assert sense(await run(caw(lba, n), data_out=bytes(2 * n * 512))) == LBA_OUT_OF_RANGE
    for wrprotect in range(1, 8):
        assert sense(await run(caw(0, 1, wrprotect << 5), data_out=bytes(1024))) == invalid_cdb(1, 7)
    good(await run(caw(0, 255), data_out=bytes(255 * 1024)))
    ro = await serve(make(tmp_path, "ro", readonly=True))
    assert sense(await ro(caw(0, 1), data_out=bytes(1024))) == WRITE_PROTECTED


async def test_compare_and_write_atomic_under_concurrent_writes(run: Run) -> None:
    """Many initiators increment one counter with read + COMPARE AND WRITE while plain WRITEs overlap
    the counter's blocks; without atomicity increments would be lost."""
    lba, workers, rounds = 64, 20, 5

    async def increment() -> None:
        for _ in range(rounds):
            while True:
                cur = await read(run, lba, 2)
                new = (int.from_bytes(cur[:8], "big") + 1).to_bytes(8, "big") * 128
                res = await run(caw(lba, 2), data_out=cur + new)
                if res.status == 0:
                    break
                assert sense(res)[2] == 0xE  # MISCOMPARE: someone else won, try again

    async def overlap() -> None:
        for _ in range(rounds * 3):
            cur = await read(run, lba + 1, 1)
            good(await run(cdb10(0x2A, lba + 1, 1), data_out=cur))

    await fill(run, lba, 2, 0)
    await asyncio.gather(*(increment() for _ in range(workers)), overlap(), overlap())
    assert int.from_bytes((await read(run, lba, 1))[:8], "big") == workers * rounds


# --- ORWRITE(16) --------------------------------------------------------------------------------------


def orwrite(lba: int, blocks: int, flags: int = 0) -> bytes:
    return cdb16(0x8B, lba, blocks, flags)


async def test_orwrite(run: Run) -> None:
    await fill(run, 0, 2, 0x0F)
    res = await run(orwrite(0, 2, 0x18), data_out=b"\xa0" * 512 + b"\x11" * 512)
    good(res)
    assert res.transfer_length == 1024 and res.data_out_direction
    assert await read(run, 0, 3) == b"\xaf" * 512 + b"\x1f" * 512 + bytes(512)
    good(await run(orwrite(0, 0)))
    # Short Data-Out: the whole blocks that arrived, the rest is the transport's residual.
    res = await run(orwrite(10, 4), data_out=b"\x01" * 700)
    good(res)
    assert res.transfer_length == 2048 and await read(run, 10, 2) == b"\x01" * 512 + bytes(512)


async def test_orwrite_checks(run: Run, tmp_path: Path) -> None:
    for lba, n in [(BLOCKS, 1), (BLOCKS + 1, 0), (BLOCKS - 1, 2), (2**63, 1), (2**64 - 1, 1)]:
        assert sense(await run(orwrite(lba, n), data_out=bytes(n * 512))) == LBA_OUT_OF_RANGE
    for p in range(1, 8):
        assert sense(await run(orwrite(0, 1, p << 5), data_out=bytes(512))) == invalid_cdb(1, 7)
    ro = await serve(make(tmp_path, "ro", readonly=True))
    assert sense(await ro(orwrite(0, 1), data_out=bytes(512))) == WRITE_PROTECTED


async def test_orwrite_concurrent_bits_all_land(run: Run) -> None:
    """Eight ORWRITEs each set one bit of the same block at once: all eight bits end up set."""
    async def set_bit(bit: int) -> ScsiResult:
        return await run(orwrite(5, 1), data_out=bytes([1 << bit]) * 512)

    for res in await asyncio.gather(*(set_bit(b) for b in range(8))):
        good(res)
    assert await read(run, 5, 1) == b"\xff" * 512

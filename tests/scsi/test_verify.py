"""VERIFY, WRITE AND VERIFY and PRE-FETCH through DeviceServer.execute on real FileVolumes."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.storage.volume import VolumeError
from sanlab.storage.file_volume import FileVolume
from tests.scsi.helpers import TARGET, Run, cdb10, cdb12, cdb16
from tests.scsi.test_provisioning import (BLOCKS, LBA_OUT_OF_RANGE, WRITE_PROTECTED, fixed, good, invalid_cdb, make,
                                          read, sense, serve)

VERIFY = {10: 0x2F, 12: 0xAF, 16: 0x8F}
WRITE_AND_VERIFY = {10: 0x2E, 12: 0xAE, 16: 0x8E}
BUILD = {10: cdb10, 12: cdb12, 16: cdb16}
BYTCHK_01, BYTCHK_11, DPO = 0x02, 0x06, 0x10


@pytest.fixture
async def run(tmp_path: Path) -> Run:
    return await serve(make(tmp_path))


def miscompare(offset: int) -> bytes:
    return fixed(0xE, 0x1D, 0x00, info=offset)


@pytest.mark.parametrize("size", [10, 12, 16])
async def test_verify(run: Run, size: int) -> None:
    cdb = BUILD[size]
    data = os.urandom(8 * 512)
    good(await run(cdb10(0x2A, 20, 8), data_out=data))
    assert good(await run(cdb(VERIFY[size], 20, 8))) == b""  # BYTCHK 00b: medium only
    res = await run(cdb(VERIFY[size], 20, 8, BYTCHK_01 | DPO), data_out=data)
    good(res)
    assert res.transfer_length == 4096 and res.data_out_direction
    bad = bytearray(data)
    bad[3001] ^= 0x58
    assert sense(await run(cdb(VERIFY[size], 20, 8, BYTCHK_01), data_out=bytes(bad))) == miscompare(3001)
    good(await run(cdb(VERIFY[size], 0, 0, BYTCHK_01)))


async def test_verify_one_block_against_the_range(run: Run) -> None:
    good(await run(cdb10(0x2A, 0, 4), data_out=b"\x5a" * 2048))
    res = await run(cdb16(0x8F, 0, 4, BYTCHK_11), data_out=b"\x5a" * 512)
    good(res)
    assert res.transfer_length == 512
    # Offsets count from the start of the range, as if the one block were repeated.
    assert sense(await run(cdb16(0x8F, 0, 5, BYTCHK_11), data_out=b"\x5a" * 512)) == miscompare(2048)


async def test_verify_short_data_out_compares_what_arrived(run: Run) -> None:
    good(await run(cdb10(0x2A, 0, 2), data_out=b"\x11" * 1024))
    res = await run(cdb10(0x2F, 0, 4, BYTCHK_01), data_out=b"\x11" * 1100)
    good(res)
    assert res.transfer_length == 2048  # the transport reports the underflow


async def test_verify_checks(run: Run) -> None:
    assert sense(await run(cdb10(0x2F, 0, 1, 0x04), data_out=bytes(512))) == invalid_cdb(1, 2)  # BYTCHK 10b
    for p in range(1, 8):
        assert sense(await run(cdb10(0x2F, 0, 1, (p << 5) | BYTCHK_01), data_out=bytes(512))) == invalid_cdb(1, 7)
    for lba, n in [(BLOCKS, 1), (BLOCKS + 1, 0), (BLOCKS - 1, 2), (0xFFFFFFFF, 1)]:
        assert sense(await run(cdb10(0x2F, lba, n, BYTCHK_01), data_out=bytes(n * 512))) == LBA_OUT_OF_RANGE
    assert sense(await run(cdb16(0x8F, 2**64 - 1, 1))) == LBA_OUT_OF_RANGE


class UnreadableVolume(FileVolume):
    """Every read fails, as a bad medium would."""

    async def read(self, lba: int, nblocks: int) -> bytes:
        raise VolumeError("injected read failure")


async def test_verify_read_error_is_medium_error(tmp_path: Path) -> None:
    vol = UnreadableVolume(str(tmp_path / "bad.img"), 64 * 512)
    run = await serve(LogicalUnit(vol, LuConfig.for_lun(TARGET, 0)))
    assert sense(await run(cdb10(0x2F, 0, 8))) == fixed(3, 0x11, 0x00)
    assert sense(await run(cdb10(0x2E, 0, 1), data_out=bytes(512))) == fixed(3, 0x0C, 0x00)  # WRITE ERROR


@pytest.mark.parametrize("size", [10, 12, 16])
async def test_write_and_verify(run: Run, size: int) -> None:
    cdb = BUILD[size]
    data = os.urandom(3 * 512)
    res = await run(cdb(WRITE_AND_VERIFY[size], 7, 3, BYTCHK_01 | DPO), data_out=data)
    good(res)
    assert res.transfer_length == 1536 and res.data_out_direction
    assert await read(run, 7, 3) == data
    good(await run(cdb(WRITE_AND_VERIFY[size], 7, 1), data_out=b"x" * 512))
    assert await read(run, 7, 1) == b"x" * 512
    good(await run(cdb(WRITE_AND_VERIFY[size], 0, 0)))


async def test_write_and_verify_residuals(run: Run) -> None:
    """As WRITE: no data → nothing written, GOOD; whole blocks that arrived are written."""
    good(await run(cdb10(0x2A, 0, 2), data_out=b"a" * 1024))
    res = await run(cdb10(0x2E, 0, 1, BYTCHK_01))
    good(res)
    assert res.transfer_length == 512 and await read(run, 0, 1) == b"a" * 512
    res = await run(cdb10(0x2E, 0, 2, BYTCHK_01), data_out=b"b" * 512)
    good(res)
    assert res.transfer_length == 1024 and await read(run, 0, 2) == b"b" * 512 + b"a" * 512
    res = await run(cdb10(0x2E, 0, 1, BYTCHK_01), data_out=b"c" * 1024)
    good(res)
    assert res.transfer_length == 512 and await read(run, 0, 2) == b"c" * 512 + b"a" * 512


async def test_write_and_verify_checks(run: Run, tmp_path: Path) -> None:
    for p in range(1, 8):
        assert sense(await run(cdb10(0x2E, 0, 1, p << 5), data_out=bytes(512))) == invalid_cdb(1, 7)
    assert sense(await run(cdb10(0x2E, 0, 1, 0x04), data_out=bytes(512))) == invalid_cdb(1, 2)
    for lba, n in [(BLOCKS, 1), (BLOCKS + 1, 0), (BLOCKS - 1, 2), (0x80000000, 1)]:
        assert sense(await run(cdb12(0xAE, lba, n), data_out=bytes(n * 512))) == LBA_OUT_OF_RANGE
    ro = await serve(make(tmp_path, "ro", readonly=True))
    assert sense(await ro(cdb16(0x8E, 0, 1), data_out=bytes(512))) == WRITE_PROTECTED


def prefetch10(lba: int, blocks: int, flags: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x34, flags, lba, group, blocks, 0)


def prefetch16(lba: int, blocks: int, flags: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x90, flags, lba, blocks, group, 0)


@pytest.mark.parametrize("prefetch", [prefetch10, prefetch16])
async def test_pre_fetch(run: Run, prefetch: object) -> None:
    assert callable(prefetch)
    for lba, n, flags in [(0, 1, 0), (0, 0, 0), (BLOCKS - 256, 256, 0), (0, 1, 0x02), (BLOCKS, 0, 0)]:
        res = await run(prefetch(lba, n, flags, 3))
        assert res.status == 0 and res.data_in == b""  # GOOD, never CONDITION MET: no cache to promise
    for lba, n in [(BLOCKS, 1), (BLOCKS + 1, 0), (BLOCKS - 1, 2), (0xFFFFFFFF, 1)]:
        assert sense(await run(prefetch(lba, n))) == LBA_OUT_OF_RANGE
    assert sense(await run(prefetch16(2**64 - 1, 1))) == LBA_OUT_OF_RANGE

"""UNMAP, WRITE SAME, GET LBA STATUS and the provisioning bits of READ CAPACITY(16) / VPD B0h, B2h.

Driven through DeviceServer.execute with byte CDBs on real FileVolumes; holes are checked with
SEEK_DATA/SEEK_HOLE on the backing file.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.sense import parse_sense
from sanlab.scsi.task import ScsiResult, ScsiStatus
from sanlab.storage.file_volume import FileVolume
from tests.scsi.helpers import TARGET, Run, cdb10, inquiry, ready_server, runner

BLOCKS = 4096
"""512-byte blocks of the test LUs (2 MiB)."""


def good(res: ScsiResult) -> bytes:
    assert res.status == ScsiStatus.GOOD, parse_sense(res.sense) if res.sense else res
    return bytes(res.data_in)


def sense(res: ScsiResult) -> bytes:
    assert res.status == ScsiStatus.CHECK_CONDITION, res
    return res.sense


def fixed(key: int, asc: int, ascq: int, sks: bytes = bytes(3), info: int | None = None) -> bytes:
    """The 18 bytes of fixed-format sense we expect."""
    b0 = 0xF0 if info is not None else 0x70
    return struct.pack(">BBBIBIBBB3s", b0, 0, key, info or 0, 10, 0, asc, ascq, 0, sks)


INVALID_OPCODE = fixed(5, 0x20, 0x00, bytes([0xC0, 0, 0]))
LBA_OUT_OF_RANGE = fixed(5, 0x21, 0x00)
PARAMETER_LIST_LENGTH_ERROR = fixed(5, 0x1A, 0x00)
WRITE_PROTECTED = fixed(7, 0x27, 0x00)


def invalid_cdb(byte: int, bit: int | None = None) -> bytes:
    b0 = 0xC0 | (0x08 | bit if bit is not None else 0)
    return fixed(5, 0x24, 0x00, bytes([b0]) + byte.to_bytes(2, "big"))


def invalid_param(byte: int) -> bytes:
    return fixed(5, 0x26, 0x00, bytes([0x80]) + byte.to_bytes(2, "big"))


def make(tmp_path: Path, name: str = "lu", *, thin: bool = True, blocks: int = BLOCKS, block_size: int = 512,
         readonly: bool = False) -> LogicalUnit:
    path = str(tmp_path / f"{name}.img")
    if readonly:
        FileVolume(path, blocks * block_size, block_size, thin=thin)
    vol = FileVolume(path, blocks * block_size, block_size, thin=thin, readonly=readonly)
    return LogicalUnit(vol, LuConfig.for_lun(TARGET, 0, thin=thin, readonly=readonly))


async def serve(lu: LogicalUnit) -> Run:
    return runner(await ready_server({0: lu}))


@pytest.fixture
def thin_lu(tmp_path: Path) -> LogicalUnit:
    return make(tmp_path)


@pytest.fixture
async def thin(thin_lu: LogicalUnit) -> Run:
    return await serve(thin_lu)


@pytest.fixture
async def thick(tmp_path: Path) -> Run:
    return await serve(make(tmp_path, "thick", thin=False))


def fd(lu: LogicalUnit) -> int:
    assert isinstance(lu.volume, FileVolume)
    return lu.volume._fd


def data_extents(lu: LogicalUnit) -> list[tuple[int, int]]:
    """(first block, end block) of every data extent of the backing file, from SEEK_DATA/SEEK_HOLE."""
    out, off, end = [], 0, lu.num_blocks * 512
    while off < end:
        try:
            data = os.lseek(fd(lu), off, os.SEEK_DATA)
        except OSError:
            break
        hole = os.lseek(fd(lu), data, os.SEEK_HOLE)
        out.append((data // 512, hole // 512))
        off = hole
    return out


def write10(lba: int, data: bytes) -> tuple[bytes, bytes]:
    return cdb10(0x2A, lba, len(data) // 512), data


async def fill(run: Run, lba: int, blocks: int, byte: int = 0xA5) -> None:
    cdb, data = write10(lba, bytes([byte]) * (blocks * 512))
    good(await run(cdb, data_out=data))


async def read(run: Run, lba: int, blocks: int) -> bytes:
    return good(await run(cdb10(0x28, lba, blocks)))


# --- READ CAPACITY(16), Block Limits, Logical Block Provisioning ---------------------------------------


def rc16() -> bytes:
    return bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)


async def test_read_capacity_16_lbpme_lbprz(thin: Run, thick: Run) -> None:
    assert good(await thin(rc16()))[12:16] == bytes([0, 0, 0xC0, 0])  # LBPME|LBPRZ, LBPPBE 0
    assert good(await thick(rc16()))[12:16] == bytes(4)


async def test_block_limits(thin: Run, thick: Run, tmp_path: Path) -> None:
    data = good(await thin(inquiry(True, 0xB0)))
    assert data[:4] == bytes([0, 0xB0, 0, 0x3C]) and len(data) == 64
    assert data[4] == 0 and data[5] == 255  # WSNZ=0, MAXIMUM COMPARE AND WRITE LENGTH
    assert struct.unpack_from(">IIII", data, 20) == (1 << 20, 256, 8, 0x80000000)
    assert struct.unpack_from(">Q", data, 36)[0] == (64 << 20) // 512
    data = good(await thick(inquiry(True, 0xB0)))
    assert struct.unpack_from(">IIII", data, 20) == (0, 0, 0, 0) and data[5] == 255
    big = await serve(make(tmp_path, "4k", block_size=4096, blocks=64))
    data = good(await big(inquiry(True, 0xB0)))
    assert struct.unpack_from(">IIII", data, 20) == (1 << 20, 256, 1, 0x80000000)
    assert struct.unpack_from(">Q", data, 36)[0] == (64 << 20) // 4096


async def test_logical_block_provisioning_vpd(thin: Run, thick: Run) -> None:
    # LBPU|LBPWS|LBPWS10|LBPRZ, PROVISIONING TYPE 010b (thin); nothing for a thick LU.
    assert good(await thin(inquiry(True, 0xB2))) == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0])
    assert good(await thick(inquiry(True, 0xB2))) == bytes([0, 0xB2, 0, 4, 0, 0, 0, 0])


async def test_config_thin_on_a_volume_that_cannot_deallocate(tmp_path: Path) -> None:
    """A thin LuConfig on a thick volume is fully provisioned: LBPME follows the volume too."""
    vol = FileVolume(str(tmp_path / "t.img"), BLOCKS * 512, thin=False)
    run = await serve(LogicalUnit(vol, LuConfig.for_lun(TARGET, 0, thin=True)))
    assert good(await run(rc16()))[14] == 0
    assert sense(await run(unmap_cdb(24), data_out=unmap_params((0, 8)))) == INVALID_OPCODE


# --- UNMAP ------------------------------------------------------------------------------------------


def unmap_cdb(length: int, anchor: bool = False) -> bytes:
    return struct.pack(">BB4xBHB", 0x42, int(anchor), 0, length, 0)


def unmap_params(*ranges: tuple[int, int], bd_length: int | None = None) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    bdl = len(body) if bd_length is None else bd_length
    return struct.pack(">HH4x", bdl + 6, bdl) + body


async def unmap(run: Run, *ranges: tuple[int, int]) -> ScsiResult:
    params = unmap_params(*ranges)
    return await run(unmap_cdb(len(params)), data_out=params)


async def test_unmap_punches_holes(thin: Run, thin_lu: LogicalUnit) -> None:
    await fill(thin, 0, 256)
    assert data_extents(thin_lu) == [(0, 256)]
    res = await unmap(thin, (8, 16), (64, 64), (200, 0))
    good(res)
    assert res.transfer_length == 8 + 3 * 16 and res.data_out_direction
    assert data_extents(thin_lu) == [(0, 8), (24, 64), (128, 256)]
    data = await read(thin, 0, 256)
    assert data[8 * 512:24 * 512] == bytes(16 * 512) and data[64 * 512:128 * 512] == bytes(64 * 512)
    assert data[:8 * 512] == b"\xa5" * 4096 and data[128 * 512:] == b"\xa5" * (128 * 512)


async def test_unmap_unaligned_reads_zero(thin: Run, thin_lu: LogicalUnit) -> None:
    await fill(thin, 0, 16)
    good(await unmap(thin, (3, 2)))  # inside one 4 KiB file-system block: zeroed, not a hole
    assert data_extents(thin_lu) == [(0, 16)]
    assert await read(thin, 0, 16) == b"\xa5" * (3 * 512) + bytes(1024) + b"\xa5" * (11 * 512)


async def test_unmap_empty_lists(thin: Run) -> None:
    assert good(await thin(unmap_cdb(0))) == b""
    good(await thin(unmap_cdb(8), data_out=unmap_params()))
    good(await unmap(thin, (BLOCKS, 0)))  # zero blocks at the end of the medium is not an error
    # A truncated last descriptor is ignored (SBC-3 §5.28).
    params = unmap_params((0, 1), (8, 8))[:-4]
    good(await thin(unmap_cdb(len(params)), data_out=params))


@pytest.mark.parametrize("length", [1, 7])
async def test_unmap_short_parameter_list(thin: Run, length: int) -> None:
    assert sense(await thin(unmap_cdb(length), data_out=bytes(length))) == PARAMETER_LIST_LENGTH_ERROR


async def test_unmap_anchor_refused(thin: Run) -> None:
    params = unmap_params((0, 1))
    assert sense(await thin(unmap_cdb(len(params), anchor=True), data_out=params)) == invalid_cdb(1, 0)


async def test_unmap_out_of_range_unmaps_nothing(thin: Run, thin_lu: LogicalUnit) -> None:
    await fill(thin, 0, 16)
    for bad in [(BLOCKS - 1, 2), (BLOCKS + 1, 0), (2**64 - 1, 1)]:
        assert sense(await unmap(thin, (0, 16), bad)) == LBA_OUT_OF_RANGE
    assert data_extents(thin_lu) == [(0, 16)]


async def test_unmap_limits(thin: Run, tmp_path: Path) -> None:
    params = unmap_params(*[(i, 1) for i in range(257)])
    assert sense(await thin(unmap_cdb(len(params)), data_out=params)) == invalid_param(2)
    good(await unmap(thin, *[(i, 1) for i in range(256)]))
    big = await serve(make(tmp_path, "big", blocks=(1 << 20) + 16))
    good(await unmap(big, (0, 1 << 20)))
    assert sense(await unmap(big, (0, 1 << 19), (1 << 19, (1 << 19) + 1))) == invalid_param(8 + 16 + 8)


async def test_unmap_thick_and_readonly(thick: Run, tmp_path: Path) -> None:
    assert sense(await unmap(thick, (0, 1))) == INVALID_OPCODE
    ro = await serve(make(tmp_path, "ro", readonly=True))
    assert sense(await unmap(ro, (0, 1))) == WRITE_PROTECTED


# --- WRITE SAME ---------------------------------------------------------------------------------------


def ws10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x41, flags, lba, 0, blocks, 0)


def ws16(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x93, flags, lba, blocks, 0, 0)


UNMAP, ANCHOR, NDOB = 0x08, 0x10, 0x01
BLOCK = bytes(range(256)) * 2


@pytest.mark.parametrize("ws", [ws10, ws16])
async def test_write_same_pattern(thin: Run, ws: object) -> None:
    assert callable(ws)
    res = await thin(ws(10, 300), data_out=BLOCK)
    good(res)
    assert res.transfer_length == 512 and res.data_out_direction
    assert await read(thin, 9, 302) == bytes(512) + BLOCK * 300 + bytes(512)
    good(await thin(ws(BLOCKS - 1, 1), data_out=BLOCK))
    assert await read(thin, BLOCKS - 1, 1) == BLOCK


@pytest.mark.parametrize("ws", [ws10, ws16])
async def test_write_same_unmap_punches_holes(thin: Run, thin_lu: LogicalUnit, ws: object) -> None:
    assert callable(ws)
    await fill(thin, 0, 64)
    good(await thin(ws(16, 32, UNMAP), data_out=bytes(512)))
    assert data_extents(thin_lu) == [(0, 16), (48, 64)]
    # Non-zero Data-Out with UNMAP: still unmapped, and the blocks read as zeros (LBPRZ).
    good(await thin(ws(0, 8, UNMAP), data_out=BLOCK))
    assert data_extents(thin_lu) == [(8, 16), (48, 64)] and await read(thin, 0, 8) == bytes(4096)


async def test_write_same_zero_blocks_to_the_end(thin: Run, thin_lu: LogicalUnit) -> None:
    await fill(thin, BLOCKS - 64, 64)
    good(await thin(ws10(BLOCKS - 32, 0, UNMAP), data_out=bytes(512)))
    assert data_extents(thin_lu) == [(BLOCKS - 64, BLOCKS - 32)]
    good(await thin(ws16(BLOCKS - 3, 0), data_out=BLOCK))
    assert await read(thin, BLOCKS - 4, 4) == bytes(512) + BLOCK * 3
    good(await thin(ws16(BLOCKS, 0), data_out=BLOCK))  # nothing left to write: not an error


async def test_write_same_ndob(thin: Run, thin_lu: LogicalUnit) -> None:
    await fill(thin, 0, 32)
    res = await thin(ws16(0, 8, NDOB))
    good(res)
    assert res.transfer_length == 0 and await read(thin, 0, 8) == bytes(4096)
    good(await thin(ws16(8, 24, NDOB | UNMAP)))
    assert data_extents(thin_lu) == [(0, 8)]


async def test_write_same_maximum_length(tmp_path: Path) -> None:
    limit = (64 << 20) // 512
    run = await serve(make(tmp_path, "big", blocks=limit + 16))
    good(await run(ws16(16, limit, UNMAP), data_out=bytes(512)))
    assert sense(await run(ws16(0, limit + 1, UNMAP), data_out=bytes(512))) == invalid_cdb(10)
    assert sense(await run(ws16(0, 0, UNMAP), data_out=bytes(512))) == invalid_cdb(10)
    good(await run(ws10(16, 0, UNMAP), data_out=bytes(512)))
    assert sense(await run(ws10(15, 0, UNMAP), data_out=bytes(512))) == invalid_cdb(7)


async def test_write_same_refusals(thin: Run, thick: Run, tmp_path: Path) -> None:
    for flags in (0x20, 0x40, 0x80):
        assert sense(await thin(ws10(0, 1, flags), data_out=BLOCK)) == invalid_cdb(1, 7)  # WRPROTECT
    assert sense(await thin(ws10(0, 1, 0x02), data_out=BLOCK)) == invalid_cdb(1, 1)  # LBDATA
    assert sense(await thin(ws16(0, 1, 0x04), data_out=BLOCK)) == invalid_cdb(1, 2)  # PBDATA
    assert sense(await thin(ws10(0, 1, ANCHOR), data_out=BLOCK)) == invalid_cdb(1, 4)
    assert sense(await thin(ws16(0, 1, ANCHOR | UNMAP), data_out=BLOCK)) == invalid_cdb(1, 4)
    assert sense(await thick(ws16(0, 1, UNMAP), data_out=bytes(512))) == invalid_cdb(1, 3)
    for data in (bytes(256), bytes(1024), b""):
        assert sense(await thin(ws10(0, 1), data_out=data)) == fixed(5, 0x24, 0)
    for lba, n in [(BLOCKS, 1), (BLOCKS - 1, 2), (BLOCKS + 1, 0), (0xFFFFFFFF, 1)]:
        assert sense(await thin(ws10(lba, n), data_out=BLOCK)) == LBA_OUT_OF_RANGE
    assert sense(await thin(ws16(2**64 - 1, 1), data_out=BLOCK)) == LBA_OUT_OF_RANGE
    ro = await serve(make(tmp_path, "ro", readonly=True))
    assert sense(await ro(ws16(0, 1), data_out=BLOCK)) == WRITE_PROTECTED
    # Thick LUs still run WRITE SAME without UNMAP.
    good(await thick(ws16(0, 4), data_out=BLOCK))
    assert await read(thick, 0, 4) == BLOCK * 4


# --- GET LBA STATUS ---------------------------------------------------------------------------------


def get_lba_status(lba: int, alloc: int = 8 + 16 * 8) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


def descriptors(data: bytes) -> list[tuple[int, int, int]]:
    (length,) = struct.unpack_from(">I", data)
    assert length == len(data) - 4 and (length - 4) % 16 == 0
    return [struct.unpack_from(">QIB3x", data, 8 + 16 * i) for i in range((length - 4) // 16)]


async def test_get_lba_status(thin: Run) -> None:
    assert descriptors(good(await thin(get_lba_status(5)))) == [(5, BLOCKS - 5, 1)]
    await fill(thin, 16, 8)
    await fill(thin, 40, 16)
    data = good(await thin(get_lba_status(0)))
    assert data == bytes.fromhex("0000 0054 0000 0000") + b"".join(
        struct.pack(">QIB3x", *d) for d in [(0, 16, 1), (16, 8, 0), (24, 16, 1), (40, 16, 0),
                                           (56, BLOCKS - 56, 1)])
    assert descriptors(good(await thin(get_lba_status(18))))[:2] == [(18, 6, 0), (24, 16, 1)]
    # The ALLOCATION LENGTH bounds the descriptors; 24 bytes: exactly one.
    res = await thin(get_lba_status(0, 24))
    assert good(res) == bytes.fromhex("0000 0014 0000 0000") + struct.pack(">QIB3x", 0, 16, 1)
    assert good(await thin(get_lba_status(0, 4))) == bytes.fromhex("0000 0014")
    good(await unmap(thin, (40, 16)))
    assert descriptors(good(await thin(get_lba_status(24)))) == [(24, BLOCKS - 24, 1)]


async def test_get_lba_status_thick_and_range(thick: Run) -> None:
    assert descriptors(good(await thick(get_lba_status(7)))) == [(7, BLOCKS - 7, 0)]
    good(await thick(get_lba_status(BLOCKS - 1)))
    for lba in (BLOCKS, BLOCKS + 1, 2**63, 2**64 - 1):
        assert sense(await thick(get_lba_status(lba))) == LBA_OUT_OF_RANGE

"""Block commands through DeviceServer.execute on a real FileVolume (and a fake for edge capacities)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.sense import parse_sense
from sanlab.scsi.task import ScsiResult, ScsiStatus
from sanlab.storage.file_volume import FileVolume
from tests.scsi.helpers import (BLOCKS, TARGET, FakeVolume, Run, cdb6, cdb10, cdb12, cdb16, make_lu, ready_server,
                                runner)

FUA = 0x08
DPO = 0x10


def good(res: ScsiResult) -> bytes:
    assert res.status == ScsiStatus.GOOD, parse_sense(res.sense) if res.sense else res
    return bytes(res.data_in)


def check(res: ScsiResult, key: int, asc_ascq: int) -> None:
    assert res.status == ScsiStatus.CHECK_CONDITION
    s = parse_sense(res.sense)
    assert (s.key, s.asc_ascq) == (key, asc_ascq), s


def pattern(blocks: int, seed: int = 1) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(blocks * 512))


async def fake_server(num_blocks: int, **cfg: bool) -> tuple[Run, FakeVolume]:
    vol = FakeVolume(num_blocks)
    server = await ready_server({0: LogicalUnit(vol, LuConfig.for_lun(TARGET, 0, **cfg))})
    vol.calls.clear()
    return runner(server), vol


# --- READ CAPACITY ------------------------------------------------------------------------------------


async def test_read_capacity_10(run: Run) -> None:
    res = await run(bytes([0x25]) + bytes(9))
    assert good(res) == struct.pack(">II", BLOCKS - 1, 512) and res.transfer_length == 8
    assert good(await run(bytes([0x25, 0, 0, 0, 0, 5, 0, 0, 1, 0])))[:4] == (BLOCKS - 1).to_bytes(4, "big")
    check(await run(bytes([0x25, 0, 0, 0, 0, 5, 0, 0, 0, 0])), 5, 0x2400)  # LBA without PMI


async def test_read_capacity_10_beyond_32_bits() -> None:
    run, _ = await fake_server((1 << 32) + 10)
    assert good(await run(bytes([0x25]) + bytes(9)))[:4] == b"\xff\xff\xff\xff"
    rc16 = good(await run(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)))
    assert int.from_bytes(rc16[:8], "big") == (1 << 32) + 9
    run, _ = await fake_server(1 << 32)  # last LBA FFFFFFFFh still fits
    assert good(await run(bytes([0x25]) + bytes(9)))[:4] == b"\xff\xff\xff\xff"


def rc16(alloc: int = 32) -> bytes:
    return bytes([0x9E, 0x10]) + bytes(8) + alloc.to_bytes(4, "big") + bytes(2)


async def test_read_capacity_16(run: Run) -> None:
    res = await run(rc16())
    data = good(res)
    assert len(data) == 32 and res.transfer_length == 32
    assert data[:12] == struct.pack(">QI", BLOCKS - 1, 512)
    # No protection, one logical block per physical block; a thin LU: LBPME and LBPRZ (SBC-3 §5.16.2).
    assert data[12:14] == bytes(2) and data[14] == 0xC0 and data[15:] == bytes(17)
    res = await run(rc16(12))
    assert good(res) == struct.pack(">QI", BLOCKS - 1, 512) and res.transfer_length == 12
    assert good(await run(rc16(0))) == b""


async def test_read_capacity_16_4k(tmp_path: Path) -> None:
    run = runner(await ready_server({0: make_lu(tmp_path, blocks=64, block_size=4096)}))
    assert good(await run(rc16()))[:12] == struct.pack(">QI", 63, 4096)


async def test_unknown_service_action(run: Run) -> None:
    res = await run(bytes([0x9E, 0x11]) + bytes(14))
    check(res, 5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xCC, 0, 1])  # byte 1 bit 4


# --- READ / WRITE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("build, rop, wop", [
    (cdb10, Opcode.READ_10, Opcode.WRITE_10),
    (cdb12, Opcode.READ_12, Opcode.WRITE_12),
    (cdb16, Opcode.READ_16, Opcode.WRITE_16),
    (cdb6, Opcode.READ_6, Opcode.WRITE_6),
])
async def test_write_then_read_back(run: Run, lu: LogicalUnit, build: object, rop: int, wop: int) -> None:
    assert callable(build)
    data = pattern(4, rop)
    res = await run(build(wop, 100, 4), data_out=data)
    good(res)
    assert res.transfer_length == len(data) and res.data_out_direction
    res = await run(build(rop, 100, 4))
    assert good(res) == data and res.transfer_length == len(data)
    assert lu.volume.read_sync(100, 4) == data  # type: ignore[attr-defined]
    assert good(await run(build(rop, 99, 1))) == bytes(512)


async def test_write_fua_reaches_volume() -> None:
    run, vol = await fake_server(100)
    good(await run(cdb10(Opcode.WRITE_10, 1, 1, FUA), data_out=pattern(1)))
    good(await run(cdb16(Opcode.WRITE_16, 2, 1, FUA | DPO), data_out=pattern(1)))
    good(await run(cdb10(Opcode.WRITE_10, 3, 1, DPO), data_out=pattern(1)))
    assert vol.calls == [("write", 1, 1, True), ("write", 2, 1, True), ("write", 3, 1, False)]
    good(await run(cdb10(Opcode.READ_10, 1, 1, FUA | DPO)))


async def test_fua_write_on_file_volume(run: Run, lu: LogicalUnit) -> None:
    good(await run(cdb16(Opcode.WRITE_16, BLOCKS - 1, 1, FUA), data_out=pattern(1, 9)))
    assert good(await run(cdb16(Opcode.READ_16, BLOCKS - 1, 1))) == pattern(1, 9)


LBA_OOR = bytes.fromhex("70 00 05 00000000 0a 00000000 21 00 00 000000")


@pytest.mark.parametrize("cdb", [
    cdb10(Opcode.READ_10, BLOCKS, 1), cdb10(Opcode.READ_10, BLOCKS - 1, 2), cdb16(Opcode.READ_16, 1 << 63, 1),
    cdb16(Opcode.READ_16, (1 << 64) - 1, 2), cdb12(Opcode.READ_12, BLOCKS + 1, 0), cdb6(Opcode.READ_6, BLOCKS, 1),
])
async def test_read_out_of_range(run: Run, cdb: bytes) -> None:
    res = await run(cdb)
    assert res.status == ScsiStatus.CHECK_CONDITION and res.sense == LBA_OOR and res.data_in == b""


async def test_write_out_of_range_writes_nothing() -> None:
    run, vol = await fake_server(100)
    res = await run(cdb10(Opcode.WRITE_10, 99, 2), data_out=pattern(2))
    assert res.sense == LBA_OOR and vol.calls == []


async def test_zero_length_is_a_no_op() -> None:
    run, vol = await fake_server(100)
    res = await run(cdb10(Opcode.READ_10, 5, 0))
    assert good(res) == b"" and res.transfer_length == 0
    res = await run(cdb16(Opcode.WRITE_16, 100, 0))  # LBA == capacity, no blocks: not an error
    good(res)
    assert res.transfer_length == 0 and vol.calls == []


async def test_six_byte_zero_means_256_blocks() -> None:
    run, vol = await fake_server(1000)
    res = await run(cdb6(Opcode.READ_6, 7, 0))
    assert len(good(res)) == 256 * 512 and vol.calls == [("read", 7, 256, False)]


async def test_protect_fields_rejected(run: Run) -> None:
    for cdb in (cdb10(Opcode.READ_10, 0, 1, 0x20), cdb16(Opcode.WRITE_16, 0, 1, 0xE0)):
        res = await run(cdb, data_out=pattern(1))
        check(res, 5, 0x2400)
        assert parse_sense(res.sense).sks == bytes([0xCF, 0, 1])  # byte 1 bit 7


async def test_readonly_write_is_data_protect(tmp_path: Path) -> None:
    lu = make_lu(tmp_path, readonly=True)
    run = runner(await ready_server({0: lu}))
    for cdb in (cdb10(Opcode.WRITE_10, 0, 1), cdb6(Opcode.WRITE_6, 0, 1), cdb16(Opcode.WRITE_16, 0, 1)):
        res = await run(cdb, data_out=pattern(1))
        assert res.sense == bytes.fromhex("70 00 07 00000000 0a 00000000 27 00 00 000000")
    assert lu.volume.read_sync(0, 1) == bytes(512)  # type: ignore[attr-defined]
    good(await run(cdb10(Opcode.READ_10, 0, 1)))


async def test_short_data_out_writes_whole_received_blocks(run: Run, lu: LogicalUnit) -> None:
    # The CDB asks for 4 blocks; the initiator's EDTL covered 2.5 of them.
    sent = pattern(3)[:2 * 512 + 256]
    res = await run(cdb10(Opcode.WRITE_10, 10, 4), data_out=sent)
    good(res)
    assert res.transfer_length == 4 * 512 and res.data_out_direction
    vol = lu.volume
    assert vol.read_sync(10, 2) == sent[:1024]  # type: ignore[attr-defined]
    assert vol.read_sync(12, 2) == bytes(1024)  # type: ignore[attr-defined]


async def test_short_data_out_less_than_a_block() -> None:
    run, vol = await fake_server(100)
    res = await run(cdb10(Opcode.WRITE_10, 10, 1), data_out=b"x" * 100)
    good(res)
    assert res.transfer_length == 512 and vol.calls == []


async def test_long_data_out_writes_only_the_cdb_length() -> None:
    run, vol = await fake_server(100)
    res = await run(cdb10(Opcode.WRITE_10, 10, 1), data_out=pattern(3))
    good(res)
    assert res.transfer_length == 512 and vol.calls == [("write", 10, 1, False)]
    assert vol.blocks == {10: pattern(3)[:512]}


async def test_transfer_length_above_block_limits() -> None:
    run, vol = await fake_server(1 << 20)
    res = await run(cdb16(Opcode.READ_16, 0, (64 << 20) // 512 + 1))
    check(res, 5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xC0, 0, 10])
    good(await run(cdb16(Opcode.READ_16, 0, (64 << 20) // 512)))
    assert vol.calls == [("read", 0, (64 << 20) // 512, False)]


async def test_volume_errors_are_medium_errors() -> None:
    run, vol = await fake_server(100)
    vol.fail = "read"
    check(await run(cdb10(Opcode.READ_10, 0, 1)), 3, 0x1100)
    vol.fail = "write"
    res = await run(cdb10(Opcode.WRITE_10, 0, 1), data_out=pattern(1))
    check(res, 3, 0x0C00)
    assert res.data_out_direction


async def test_a_full_store_is_space_allocation_failed_not_a_medium_error() -> None:
    """A thin LU whose file's filesystem is full: DATA PROTECT, SPACE ALLOCATION FAILED WRITE
    PROTECT (07h/27h/07h, SBC-4 §4.7.3.7), which tells the host no block went bad."""
    run, vol = await fake_server(100)
    vol.fail = "full"
    res = await run(cdb10(Opcode.WRITE_10, 0, 1), data_out=pattern(1))
    check(res, 7, 0x2707)


def test_enospc_from_a_file_volume_is_space_exhausted() -> None:
    """The file volume's OSErrors become VolumeErrors; ENOSPC and EDQUOT the SpaceExhausted kind."""
    import errno
    from sanlab.storage.volume import SpaceExhausted, VolumeError, io_failure
    assert isinstance(io_failure(OSError(errno.ENOSPC, "No space left on device"), "write failed"), SpaceExhausted)
    assert isinstance(io_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), "write failed"), SpaceExhausted)
    eio = io_failure(OSError(errno.EIO, "Input/output error"), "write failed")
    assert isinstance(eio, VolumeError) and not isinstance(eio, SpaceExhausted)


# --- SYNCHRONIZE CACHE -----------------------------------------------------------------------------


async def test_synchronize_cache() -> None:
    run, vol = await fake_server(100)
    good(await run(cdb10(Opcode.SYNCHRONIZE_CACHE_10, 0, 0)))
    good(await run(cdb10(Opcode.SYNCHRONIZE_CACHE_10, 90, 10, 0x02)))  # IMMED accepted
    good(await run(cdb16(Opcode.SYNCHRONIZE_CACHE_16, 0, 100)))
    assert [c[0] for c in vol.calls] == ["flush"] * 3
    vol.calls.clear()
    assert (await run(cdb16(Opcode.SYNCHRONIZE_CACHE_16, 99, 2))).sense == LBA_OOR
    assert (await run(cdb10(Opcode.SYNCHRONIZE_CACHE_10, 101, 0))).sense == LBA_OOR
    assert vol.calls == []
    vol.fail = "flush"
    check(await run(cdb10(Opcode.SYNCHRONIZE_CACHE_10)), 3, 0x0C00)


async def test_synchronize_cache_file_volume_durable(run: Run, lu: LogicalUnit) -> None:
    good(await run(cdb10(Opcode.WRITE_10, 0, 1), data_out=pattern(1, 3)))
    good(await run(cdb10(Opcode.SYNCHRONIZE_CACHE_10)))
    with open(lu.volume.path, "rb") as f:  # type: ignore[attr-defined]
        assert f.read(512) == pattern(1, 3)
    assert os.path.getsize(lu.volume.path) == BLOCKS * 512  # type: ignore[attr-defined]


async def test_read_capacity_16_reports_the_physical_block(tmp_path: Path) -> None:
    """physical_block_size 4096 on a 512-byte LU: LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT 3 (512e)."""
    for pbs, exponent in ((0, 0), (512, 0), (4096, 3)):
        vol = FileVolume(str(tmp_path / f"p{pbs}.img"), 1 << 20, 512)
        server = await ready_server({0: LogicalUnit(vol, LuConfig.for_lun(TARGET, 0, physical_block_size=pbs))})
        res = await runner(server)(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2))
        assert res.status == ScsiStatus.GOOD
        assert bytes(res.data_in)[13] & 0x0F == exponent and bytes(res.data_in)[14:16] == b"\xc0\x00"

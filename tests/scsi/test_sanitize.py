"""SANITIZE (SBC-3 §5.19): OVERWRITE, BLOCK ERASE, EXIT FAILURE MODE on a real FileVolume."""
from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import ScsiStatus
from tests.scsi.helpers import Run, cdb10, cdb16


def fixed(key: int, asc_ascq: int, sks: bytes = bytes(3)) -> bytes:
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc_ascq >> 8, asc_ascq & 0xFF, 0]) + sks


def sanitize(sa: int, length: int = 0, immed: bool = False) -> bytes:
    return struct.pack(">BB5xHB", 0x48, (0x80 if immed else 0) | sa, length, 0)


def overwrite_params(pattern: bytes, count: int = 1) -> bytes:
    return struct.pack(">BxH", count, len(pattern)) + pattern


async def test_overwrite_fills_medium(run: Run, lu: LogicalUnit) -> None:
    params = overwrite_params(b"\xaa\x55")
    assert (await run(sanitize(1, len(params)), data_out=params)).status == ScsiStatus.GOOD
    assert await lu.volume.read(0, 1) == b"\xaa\x55" * 256
    assert await lu.volume.read(lu.num_blocks - 1, 1) == b"\xaa\x55" * 256


async def test_overwrite_parameter_checks(run: Run) -> None:
    for length in range(5):
        assert (await run(sanitize(1, length), data_out=bytes(8))).sense == fixed(0x05, 0x2400,
                                                                                  bytes([0xC0, 0, 7]))
    bad = overwrite_params(b"\x01", count=0)
    assert (await run(sanitize(1, len(bad)), data_out=bad)).sense == fixed(0x05, 0x2600, bytes([0x8C, 0, 0]))
    too_long = struct.pack(">BxH", 1, 513) + bytes(513)
    assert (await run(sanitize(1, len(too_long)), data_out=too_long)).sense == fixed(0x05, 0x2600,
                                                                                     bytes([0x80, 0, 2]))
    short = overwrite_params(b"\x01\x02")
    assert (await run(sanitize(1, len(short) + 1), data_out=short + b"\0")).sense == fixed(0x05, 0x2400,
                                                                                           bytes([0xC0, 0, 7]))


async def test_block_erase_unmaps(run: Run, lu: LogicalUnit) -> None:
    assert (await run(cdb16(0x8A, 0, 8), data_out=b"x" * 4096)).status == ScsiStatus.GOOD
    assert (await run(sanitize(2))).status == ScsiStatus.GOOD
    assert await lu.volume.read(0, 8) == bytes(4096)
    assert (await run(sanitize(2, 8), data_out=bytes(8))).sense == fixed(0x05, 0x2400, bytes([0xC0, 0, 7]))
    bad = bytearray(sanitize(2))
    bad[3] = 1
    assert (await run(bytes(bad))).sense == fixed(0x05, 0x2400, bytes([0xC0, 0, 3]))


async def test_crypto_erase_unsupported_exit_failure_mode_ok(run: Run) -> None:
    assert (await run(sanitize(3))).sense == fixed(0x05, 0x2400, bytes([0xCC, 0, 1]))
    assert (await run(sanitize(0x1F))).status == ScsiStatus.GOOD


async def test_not_ready_while_running(run: Run, lu: LogicalUnit) -> None:
    params = overwrite_params(b"\x00\x01")
    assert (await run(sanitize(1, len(params), immed=True), data_out=params)).status == ScsiStatus.GOOD
    assert lu.sanitizing
    assert (await run(bytes(6))).sense == fixed(0x02, 0x041B)
    assert (await run(bytes([0x12, 0, 0, 0, 36, 0]))).status == ScsiStatus.GOOD
    while lu.sanitizing:
        await asyncio.sleep(0.01)
    assert (await run(cdb10(0x28, 0, 1))).data_in == b"\x00\x01" * 256


async def test_crypto_erase_on_an_encrypted_lu(tmp_path: Path) -> None:
    """CRYPTOGRAPHIC ERASE on an LU whose volume encrypts (storage/encrypted.py): listed by REPORT
    SUPPORTED OPERATION CODES, WACEREQ 01b, a parameter list refused, then the old data unreadable."""
    from sanlab.scsi.device_server import DeviceServer
    from sanlab.scsi.lu import LuConfig
    from sanlab.storage.encrypted import open_encrypted
    from sanlab.storage.file_volume import FileVolume
    from tests.scsi.helpers import NX, TARGET, runner
    vol = open_encrypted(FileVolume(str(tmp_path / "e.img"), 1 << 20, 512), str(tmp_path / "e.crypt"),
                         bytes(32), may_create=True, what="test")
    lu = LogicalUnit(vol, LuConfig.for_lun(TARGET, 0))
    ds = DeviceServer(TARGET, {0: lu})
    ds.nexus_added(NX)
    run = runner(ds)
    await run(bytes(6))  # the power-on unit attention
    one = bytes((await run(struct.pack(">BBBBHIxB", 0xA3, 0x0C, 2, 0x48, 0x03, 64, 0))).data_in)
    assert one[1] & 0x07 == 0x03, "SANITIZE CRYPTOGRAPHIC ERASE is supported on this LU"
    vpd = bytes((await run(bytes([0x12, 1, 0xB1, 0, 64, 0]))).data_in)
    assert vpd[7] & 0x30 == 0x10  # WACEREQ 01b
    assert (await run(sanitize(3, 8), data_out=bytes(8))).sense == fixed(0x05, 0x2400, bytes([0xC0, 0, 7]))
    await vol.write(0, b"a" * 4096)
    assert (await run(sanitize(3))).status == ScsiStatus.GOOD
    after = await vol.read(0, 8)
    assert after != b"a" * 4096 and vol.generation == 1
    await ds.close()

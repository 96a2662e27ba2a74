"""EXTENDED COPY(LID1) and RECEIVE COPY RESULTS (SPC-4 §6.4, §6.18) between two FileVolume LUs."""
from __future__ import annotations

import struct
from pathlib import Path

from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import ScsiStatus
from tests.scsi.helpers import Run, cdb16, make_lu, ready_server, runner


def fixed(key: int, asc_ascq: int, sks: bytes = bytes(3)) -> bytes:
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc_ascq >> 8, asc_ascq & 0xFF, 0]) + sks


def target(lu: LogicalUnit, typ: int = 0xE4) -> bytes:
    desig = bytes([0x01, 0x03, 0, 16]) + lu.config.naa
    return bytes([typ, 0, 0, 0]) + desig + bytes(5) + (512).to_bytes(3, "big")


def segment(src: int, dst: int, blocks: int, src_lba: int, dst_lba: int, typ: int = 0x02) -> bytes:
    return struct.pack(">BBHHH2xHQQ", typ, 0, 0x18, src, dst, blocks, src_lba, dst_lba)


def plist(targets: list[bytes], segments: list[bytes], list_id: int = 1, usage: int = 0) -> bytes:
    t, s = b"".join(targets), b"".join(segments)
    return struct.pack(">BBH4xII", list_id, usage << 3, len(t), len(s), 0) + t + s


def xcopy(params: bytes) -> bytes:
    return struct.pack(">BB8xIxB", 0x83, 0, len(params), 0)


def rcr(sa: int, list_id: int = 0) -> bytes:
    return struct.pack(">BBB7xIxB", 0x84, sa, list_id, 255, 0)


async def two_lus(tmp_path: Path) -> tuple[Run, LogicalUnit, LogicalUnit]:
    a, b = make_lu(tmp_path, "a", lun=0), make_lu(tmp_path, "b", lun=1)
    return runner(await ready_server({0: a, 1: b})), a, b


async def test_copy_between_lus_and_status(tmp_path: Path) -> None:
    run, a, b = await two_lus(tmp_path)
    assert (await run(cdb16(0x8A, 0, 8), data_out=b"A" * 4096)).status == ScsiStatus.GOOD
    params = plist([target(a), target(b)], [segment(0, 1, 8, 0, 100)], list_id=7)
    assert (await run(xcopy(params), data_out=params)).status == ScsiStatus.GOOD
    assert await b.volume.read(100, 8) == b"A" * 4096
    assert (await run(rcr(0, 7))).data_in == struct.pack(">IBHBI", 8, 0x01, 1, 0, 4096)
    assert (await run(rcr(0, 8))).sense == fixed(0x05, 0x2400, bytes([0xC0, 0, 2]))


async def test_operating_parameters(run: Run) -> None:
    data = bytes((await run(rcr(3))).data_in)
    assert struct.unpack_from(">I", data)[0] == len(data) - 4
    assert struct.unpack_from(">HHI", data, 8) == (8, 64, 8 * 32 + 64 * 28)
    assert data[43] == 2 and data[44:46] == bytes([0x02, 0xE4])


async def test_list_checks(run: Run, lu: LogicalUnit) -> None:
    params = plist([target(lu)] * 9, [segment(0, 0, 1, 0, 1)])
    assert (await run(xcopy(params), data_out=params)).sense == fixed(0x05, 0x2606)
    params = plist([target(lu)], [segment(0, 0, 1, 0, 1)] * 65)
    assert (await run(xcopy(params), data_out=params)).sense == fixed(0x05, 0x2608)
    params = plist([target(lu, 0xE0)], [segment(0, 0, 1, 0, 1)])
    assert (await run(xcopy(params), data_out=params)).sense == fixed(0x05, 0x2607)
    params = plist([target(lu)], [segment(0, 0, 1, 0, 1, typ=0x03)])
    assert (await run(xcopy(params), data_out=params)).sense == fixed(0x05, 0x2609)
    params = plist([target(lu)], [segment(0, 0, 1, 0, 1)])
    assert (await run(xcopy(params), data_out=params[:-1])).sense == fixed(0x05, 0x1A00)
    assert (await run(xcopy(b""))).status == ScsiStatus.GOOD


async def test_copy_aborted(run: Run, lu: LogicalUnit) -> None:
    params = plist([target(lu)], [segment(0, 1, 1, 0, 1)])
    assert (await run(xcopy(params), data_out=params)).sense == fixed(0x0A, 0x0D02)
    params = plist([target(lu)], [segment(0, 0, 16, 0, lu.num_blocks - 1)])
    assert (await run(xcopy(params), data_out=params)).sense == fixed(0x0A, 0x0000)

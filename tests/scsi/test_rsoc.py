"""REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS (SPC-4 §6.35, §6.36)."""
from __future__ import annotations

import struct

from sanlab.scsi.kinds import DISK
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import ScsiStatus
from tests.scsi.helpers import Run


def fixed(key: int, asc_ascq: int, sks: bytes = bytes(3)) -> bytes:
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc_ascq >> 8, asc_ascq & 0xFF, 0]) + sks


def rsoc(option: int, opcode: int = 0, sa: int = 0, rctd: bool = False, alloc: int = 65535) -> bytes:
    return struct.pack(">BBBBHIxB", 0xA3, 0x0C, (0x80 if rctd else 0) | option, opcode, sa, alloc, 0)


def descriptors(data: bytes, rctd: bool) -> list[tuple[int, int, int, int]]:
    n = struct.unpack_from(">I", data)[0]
    out, off, size = [], 4, 20 if rctd else 8
    while off < 4 + n:
        op, sa, flags, length = struct.unpack_from(">BxHxBH", data, off)
        out.append((op, sa, flags, length))
        off += size
    return out


async def test_all_commands_come_from_the_table(run: Run, lu: LogicalUnit) -> None:
    res = await run(rsoc(0))
    descs = descriptors(bytes(res.data_in), False)
    # Every row the LU can do: a service action with an ``available`` rule only where it holds
    # (SANITIZE CRYPTOGRAPHIC ERASE needs an encrypted volume, which this LU has not).
    expected = sum(sum(1 for a in s.service_actions.values() if a.available is None or a.available(lu))
                   if s.handler is None else 1 for _, s in DISK.table.items())
    assert len(descs) == expected
    assert (0x48, 0x03, 0, 10) not in descs
    assert (0x28, 0, 0, 10) in descs and (0x9E, 0x10, 0x01, 16) in descs and (0xA3, 0x0C, 0x01, 12) in descs


async def test_rctd_adds_timeouts(run: Run) -> None:
    data = bytes((await run(rsoc(0, rctd=True))).data_in)
    for _, _, flags, _ in descriptors(data, True):
        assert flags & 0x02
    assert data[12:14] == b"\x00\x0a"


async def test_one_command(run: Run) -> None:
    data = bytes((await run(rsoc(1, 0x28))).data_in)
    assert data[:4] == bytes([0, 0x03, 0, 10]) and data[4] == 0x28 and data[13] == 0x00
    assert bytes((await run(rsoc(1, 0xFF))).data_in) == bytes([0, 0x01, 0, 0])
    assert (await run(rsoc(1, 0x9E))).sense == fixed(0x05, 0x2400, bytes([0xC0, 0, 3]))
    data = bytes((await run(rsoc(2, 0xA3, 0x0C, rctd=True))).data_in)
    assert data[:4] == bytes([0, 0x83, 0, 12]) and data[4:6] == b"\xa3\x0c" and len(data) == 16 + 12
    assert (await run(rsoc(2, 0x28))).sense == fixed(0x05, 0x2400, bytes([0xC0, 0, 3]))
    assert bytes((await run(rsoc(3, 0x28))).data_in)[1] == 0x03
    assert (await run(rsoc(5))).sense == fixed(0x05, 0x2400, bytes([0xCA, 0, 2]))


async def test_block_erase_only_on_thin_lbprz(run: Run) -> None:
    data = bytes((await run(rsoc(0))).data_in)
    ops = {(op, sa) for op, sa, _, _ in descriptors(data, False)}
    assert (0x48, 0x01) in ops and (0x48, 0x1F) in ops and (0x48, 0x03) not in ops


async def test_report_supported_tmfs(run: Run) -> None:
    res = await run(struct.pack(">BBB3xIxB", 0xA3, 0x0D, 0, 255, 0))
    assert res.status == ScsiStatus.GOOD and bytes(res.data_in) == bytes([0xDA, 0, 0, 0])
    res = await run(struct.pack(">BBB3xIxB", 0xA3, 0x0D, 0x80, 255, 0))
    assert bytes(res.data_in) == bytes([0xDA, 0, 0, 0x0C]) + bytes(12)

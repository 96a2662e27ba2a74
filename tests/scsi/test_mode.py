"""MODE SELECT(6)/(10) and the changeable mode page fields (SPC-4 §6.9-6.10, §7.5.8; SBC-3 §6.4.5)."""
from __future__ import annotations

import struct

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import ScsiStatus
from tests.scsi.helpers import NX, NX2, Run, cdb10, ready_server, runner


def fixed(key: int, asc_ascq: int, sks: bytes = bytes(3)) -> bytes:
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc_ascq >> 8, asc_ascq & 0xFF, 0]) + sks


def mode_select6(params: bytes, pf: bool = True, sp: bool = False) -> bytes:
    return bytes([0x15, (0x10 if pf else 0) | (0x01 if sp else 0), 0, 0, len(params), 0])


def mode_select10(params: bytes) -> bytes:
    return struct.pack(">BB5xHB", 0x55, 0x10, len(params), 0)


def control_page(d_sense: bool = False, swp: bool = False) -> bytes:
    p = bytearray(12)
    p[0], p[1], p[3] = 0x0A, 0x0A, 0x10
    p[2] = 0x04 if d_sense else 0
    p[4] = 0x08 if swp else 0
    p[8:10] = b"\xff\xff"
    return bytes(p)


def caching_page(wce: bool) -> bytes:
    p = bytearray(20)
    p[0], p[1], p[2] = 0x08, 0x12, 0x04 if wce else 0
    return bytes(p)


HDR6 = bytes(4)


async def test_changeable_masks(run: Run) -> None:
    res = await run(bytes([0x1A, 0x08, 0x40 | 0x0A, 0, 255, 0]))
    assert res.data_in[4:] == bytes([0x0A, 0x0A, 0x04, 0, 0x08]) + bytes(7)  # D_SENSE, SWP


async def test_d_sense_switches_sense_format(run: Run, lu: LogicalUnit) -> None:
    res = await run(mode_select6(HDR6 + control_page(d_sense=True)), data_out=HDR6 + control_page(d_sense=True))
    assert res.status == ScsiStatus.GOOD and lu.d_sense
    res = await run(cdb10(0x28, lba=0xFFFFFFFF, blocks=1))
    assert res.sense == bytes([0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0])


async def test_swp_write_protects(run: Run, lu: LogicalUnit) -> None:
    params = HDR6 + control_page(swp=True)
    assert (await run(mode_select6(params), data_out=params)).status == ScsiStatus.GOOD
    ms = await run(bytes([0x1A, 0x08, 0x0A, 0, 255, 0]))
    assert ms.data_in[2] & 0x80 and ms.data_in[8] & 0x08  # WP in the header, SWP in the page
    res = await run(cdb10(0x2A, 0, 1), data_out=bytes(512))
    assert res.sense == fixed(0x07, 0x2702)
    assert (await run(cdb10(0x28, 0, 1))).status == ScsiStatus.GOOD
    params = HDR6 + control_page(swp=False)
    assert (await run(mode_select6(params), data_out=params)).status == ScsiStatus.GOOD
    assert (await run(cdb10(0x2A, 0, 1), data_out=bytes(512))).status == ScsiStatus.GOOD


async def test_wce_changeable_mode_select10(run: Run, lu: LogicalUnit) -> None:
    params = bytes(8) + caching_page(False)
    assert (await run(mode_select10(params), data_out=params)).status == ScsiStatus.GOOD
    assert lu.wce is False
    ms = await run(bytes([0x1A, 0x08, 0x08, 0, 255, 0]))
    assert ms.data_in[6] & 0x04 == 0


async def test_unchangeable_field_points_at_it(run: Run) -> None:
    page = bytearray(control_page())
    page[3] = 0x00  # QUEUE ALGORITHM MODIFIER is not changeable
    params = HDR6 + bytes(page)
    res = await run(mode_select6(params), data_out=params)
    assert res.sense == fixed(0x05, 0x2600, bytes([0x88 | 4, 0, 4 + 3]))  # C/D=0, BPV, bit 4, byte 7


async def test_bad_page_length_and_unknown_page(run: Run) -> None:
    page = bytearray(control_page())
    page[1] = 0x0B
    params = HDR6 + bytes(page) + b"\0"
    assert (await run(mode_select6(params), data_out=params)).sense == fixed(0x05, 0x2600, bytes([0x80, 0, 5]))
    params = HDR6 + bytes([0x19, 0x06]) + bytes(6)
    assert (await run(mode_select6(params), data_out=params)).sense == fixed(0x05, 0x2600,
                                                                             bytes([0x88 | 5, 0, 4]))


async def test_sp_and_truncated_list(run: Run) -> None:
    params = HDR6 + control_page()
    assert (await run(mode_select6(params, sp=True), data_out=params)).sense == fixed(0x05, 0x2400,
                                                                                      bytes([0xC8, 0, 1]))
    assert (await run(mode_select6(params), data_out=params[:10])).sense == fixed(0x05, 0x1A00)
    assert (await run(mode_select6(b""))).status == ScsiStatus.GOOD


async def test_block_descriptor_must_match(run: Run) -> None:
    params = bytes([0, 0, 0, 8]) + struct.pack(">IxBH", 0, 0, 4096) + control_page()
    assert (await run(mode_select6(params), data_out=params)).sense == fixed(0x05, 0x2600, bytes([0x80, 0, 9]))
    params = bytes([0, 0, 0, 8]) + struct.pack(">IxBH", 0, 0, 512) + control_page()
    assert (await run(mode_select6(params), data_out=params)).status == ScsiStatus.GOOD


async def test_change_sets_ua_for_other_nexus(lu: LogicalUnit) -> None:
    server: DeviceServer = await ready_server({0: lu}, NX, NX2)
    run = runner(server)
    params = HDR6 + control_page(swp=True)
    assert (await run(mode_select6(params), data_out=params)).status == ScsiStatus.GOOD
    assert (await run(bytes(6))).status == ScsiStatus.GOOD
    assert (await run(bytes(6), nexus=NX2)).sense == fixed(0x06, 0x2A01)
    assert (await run(mode_select6(params), data_out=params)).status == ScsiStatus.GOOD  # no change: no UA
    assert (await run(bytes(6), nexus=NX2)).status == ScsiStatus.GOOD

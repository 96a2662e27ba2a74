"""Primary commands through DeviceServer.execute: INQUIRY + VPD, REPORT LUNS, REQUEST SENSE, MODE SENSE."""
from __future__ import annotations

import struct
from pathlib import Path

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import SANLAB_COMPANY_ID, LogicalUnit, LuConfig
from sanlab.scsi.sense import parse_sense
from sanlab.scsi.task import ScsiResult, ScsiStatus, ScsiTask
from tests.scsi.helpers import BLOCKS, NX, NX2, TARGET, Run, inquiry, make_lu, ready_server, runner


def good(res: ScsiResult) -> bytes:
    assert res.status == ScsiStatus.GOOD, parse_sense(res.sense) if res.sense else res
    return bytes(res.data_in)


def check(res: ScsiResult, key: int, asc_ascq: int) -> None:
    assert res.status == ScsiStatus.CHECK_CONDITION
    s = parse_sense(res.sense)
    assert (s.key, s.asc_ascq) == (key, asc_ascq), s


# --- INQUIRY ----------------------------------------------------------------------------------------


async def test_standard_inquiry_layout(run: Run, lu: LogicalUnit) -> None:
    res = await run(inquiry(alloc=255))
    data = good(res)
    assert len(data) == 96 and res.transfer_length == 96
    assert data[0] == 0x00  # qualifier 000b, direct access block device
    assert data[1] == 0x00  # not removable
    assert data[2] == 0x06  # SPC-4
    assert data[3] == 0x12  # HiSup, response data format 2
    assert data[4] == 91
    assert data[5] == 0 and data[7] == 0x02  # TPGS 0, CmdQue
    assert data[8:16] == b"SANLAB  "
    assert data[16:32] == b"VIRTUAL-DISK    "
    assert data[32:36] == lu.config.revision.encode()
    assert struct.unpack(">4H", data[58:66]) == (0x00A0, 0x0960, 0x0460, 0x04C0)
    assert data[66:] == bytes(30)


async def test_inquiry_allocation_length_truncates(run: Run) -> None:
    res = await run(inquiry(alloc=36))
    assert len(good(res)) == 36 and res.transfer_length == 36
    res = await run(inquiry(alloc=0))
    assert good(res) == b"" and res.transfer_length == 0
    res = await run(inquiry(True, 0x83, alloc=4))
    assert good(res)[:2] == b"\x00\x83" and len(res.data_in) == 4


async def test_inquiry_removable(tmp_path: Path) -> None:
    server = await ready_server({0: make_lu(tmp_path, removable=True)})
    assert good(await runner(server)(inquiry()))[1] == 0x80


async def test_inquiry_missing_lun_reports_no_device(run: Run) -> None:
    data = good(await run(inquiry(), lun=7))
    assert data[0] == 0x7F  # qualifier 011b, type 1Fh
    check(await run(inquiry(True, 0x80), lun=7), 5, 0x2400)


async def test_inquiry_invalid_fields(run: Run) -> None:
    res = await run(inquiry(flags=0x02))
    check(res, 5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xC9, 0, 1])  # byte 1 bit 1
    check(await run(inquiry(False, 0x83)), 5, 0x2400)
    res = await run(inquiry(True, 0x99))
    check(res, 5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xC0, 0, 2])


async def test_vpd_supported_pages(run: Run) -> None:
    data = good(await run(inquiry(True, 0x00)))
    assert data[:4] == bytes([0, 0, 0, 7])
    assert list(data[4:]) == [0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2]
    for page in data[4:]:  # every listed page answers
        got = good(await run(inquiry(True, page)))
        assert got[1] == page and len(got) == 4 + int.from_bytes(got[2:4], "big")


async def test_vpd_unit_serial(run: Run, lu: LogicalUnit) -> None:
    data = good(await run(inquiry(True, 0x80)))
    assert data[:4] == bytes([0, 0x80, 0, 16])
    assert data[4:] == lu.config.serial.encode()
    assert len(lu.config.serial) == 16


def designators(page: bytes) -> list[tuple[int, int, int, bytes]]:
    """(protocol|code set, piv|assoc|type, length, value) of each designation descriptor."""
    out, pos = [], 4
    while pos < len(page):
        b0, b1, n = page[pos], page[pos + 1], page[pos + 3]
        out.append((b0, b1, n, page[pos + 4:pos + 4 + n]))
        pos += 4 + n
    assert pos == len(page)
    return out


async def test_vpd_device_identification(run: Run, lu: LogicalUnit) -> None:
    data = good(await run(inquiry(True, 0x83)))
    assert data[:2] == b"\x00\x83" and int.from_bytes(data[2:4], "big") == len(data) - 4
    ds = designators(data)
    naa = ds[0]
    assert naa[:3] == (0x01, 0x03, 16) and naa[3] == lu.config.naa
    assert naa[3][0] >> 4 == 6  # NAA IEEE Registered Extended
    assert int.from_bytes(naa[3][:4], "big") >> 4 & 0xFFFFFF == SANLAB_COMPANY_ID
    assert ds[1][:2] == (0x02, 0x01) and ds[1][3] == b"SANLAB  " + lu.config.serial.encode()
    assert ds[2] == (0x51, 0x94, 4, b"\x00\x00\x00\x01")  # relative target port 1
    assert ds[3] == (0x51, 0x95, 4, b"\x00\x00\x00\x01")  # target port group 1
    port = ds[4]
    assert port[:2] == (0x53, 0x98) and port[2] % 4 == 0
    assert port[3].rstrip(b"\0") == f"{TARGET},t,0x0001".encode()
    dev = ds[5]
    assert dev[:2] == (0x53, 0xA8) and dev[2] % 4 == 0 and dev[3].rstrip(b"\0") == TARGET.encode()


def test_identity_is_stable_and_unique() -> None:
    a = LuConfig.for_lun(TARGET, 0)
    assert a == LuConfig.for_lun(TARGET, 0)
    others = [LuConfig.for_lun(TARGET, 1), LuConfig.for_lun(TARGET + "x", 0)]
    assert all(o.naa != a.naa and o.serial != a.serial for o in others)
    assert len(a.naa) == 16 and a.vendor == "SANLAB" and a.product == "VIRTUAL-DISK" and len(a.revision) == 4


async def test_vpd_extended_inquiry(run: Run) -> None:
    data = good(await run(inquiry(True, 0x86)))
    assert data[:4] == bytes([0, 0x86, 0, 0x3C])
    assert data[5] == 0x07 and data[6] == 0x01  # HEADSUP|ORDSUP|SIMPSUP, V_SUP


async def test_vpd_block_limits(run: Run) -> None:
    data = good(await run(inquiry(True, 0xB0)))
    assert data[:4] == bytes([0, 0xB0, 0, 0x3C])
    max_len, opt_len = struct.unpack_from(">II", data, 8)
    assert max_len == (64 << 20) // 512 and opt_len == (1 << 20) // 512
    assert struct.unpack_from(">II", data, 20) == (1 << 20, 256)  # MAXIMUM UNMAP LBA / DESCRIPTOR COUNT


async def test_vpd_block_device_characteristics(run: Run) -> None:
    data = good(await run(inquiry(True, 0xB1)))
    assert data[:4] == bytes([0, 0xB1, 0, 0x3C]) and data[4:6] == b"\x00\x01"


async def test_vpd_logical_block_provisioning(run: Run, tmp_path: Path) -> None:
    thin = good(await run(inquiry(True, 0xB2)))
    assert thin == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0])  # LBPU, LBPWS, LBPWS10, LBPRZ, thin provisioned
    server = await ready_server({0: make_lu(tmp_path, "full", thin=False)})
    full = good(await runner(server)(inquiry(True, 0xB2)))
    assert full == bytes([0, 0xB2, 0, 4, 0, 0, 0, 0])


# --- REPORT LUNS ------------------------------------------------------------------------------------


def report_luns(select: int = 0, alloc: int = 4096) -> bytes:
    return bytes([0xA0, 0, select, 0, 0, 0]) + alloc.to_bytes(4, "big") + bytes(2)


async def test_report_luns_lists_every_lun(tmp_path: Path) -> None:
    luns = {n: make_lu(tmp_path, f"l{n}", lun=n) for n in (300, 0, 1)}
    run = runner(await ready_server(luns))
    for select in (0, 2):
        res = await run(report_luns(select))
        data = good(res)
        assert data[:8] == bytes([0, 0, 0, 24, 0, 0, 0, 0])
        assert data[8:] == bytes.fromhex("0000000000000000" "0001000000000000" "412c000000000000")
        assert res.transfer_length == 32
    assert good(await run(report_luns(1))) == bytes(8)


async def test_report_luns_any_lun_and_truncation(run: Run) -> None:
    assert good(await run(report_luns(), lun=9))[:4] == bytes([0, 0, 0, 8])
    res = await run(report_luns(alloc=16))
    assert good(res) == bytes([0, 0, 0, 8]) + bytes(12) and res.transfer_length == 16


async def test_report_luns_invalid(run: Run) -> None:
    res = await run(report_luns(alloc=15))
    check(res, 5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xC0, 0, 6])
    check(await run(report_luns(select=3)), 5, 0x2400)


async def test_report_luns_does_not_clear_ua(ds: DeviceServer) -> None:
    ds.nexus_added(NX2)
    run = runner(ds)
    good(await run(report_luns(), nexus=NX2))
    good(await run(inquiry(), nexus=NX2))
    check(await run(bytes(6), nexus=NX2), 6, 0x2900)


# --- TEST UNIT READY / REQUEST SENSE -------------------------------------------------------------------


async def test_test_unit_ready(run: Run) -> None:
    res = await run(bytes(6))
    assert res.status == ScsiStatus.GOOD and res.data_in == b"" and res.sense == b""


async def test_request_sense_reports_and_clears_ua(ds: DeviceServer) -> None:
    ds.nexus_added(NX2)
    run = runner(ds)
    res = await run(bytes([0x03, 0, 0, 0, 252, 0]), nexus=NX2)
    data = good(res)
    assert data == bytes.fromhex("70 00 06 00000000 0a 00000000 29 00 00 000000")
    assert res.transfer_length == 18
    assert good(await run(bytes([0x03, 0, 0, 0, 252, 0]), nexus=NX2))[2] == 0  # NO SENSE now
    good(await run(bytes(6), nexus=NX2))  # and no UA left


async def test_request_sense_descriptor_and_truncation(ds: DeviceServer) -> None:
    ds.nexus_added(NX2)
    run = runner(ds)
    data = good(await run(bytes([0x03, 1, 0, 0, 252, 0]), nexus=NX2))
    assert data == bytes.fromhex("72 06 29 00 000000 00")
    no_sense = good(await run(bytes([0x03, 0, 0, 0, 8, 0]), nexus=NX2))
    assert no_sense == bytes.fromhex("70 00 00 00000000 0a")


async def test_request_sense_kept_sense(ds: DeviceServer, lu: LogicalUnit) -> None:
    kept = bytes.fromhex("71 00 03 00000000 0a 00000000 0c 00 00 000000")
    lu.set_sense(NX, kept)
    run = runner(ds)
    assert good(await run(bytes([0x03, 0, 0, 0, 252, 0]))) == kept
    assert good(await run(bytes([0x03, 0, 0, 0, 252, 0])))[2] == 0


async def test_request_sense_missing_lun(run: Run) -> None:
    data = good(await run(bytes([0x03, 0, 0, 0, 252, 0]), lun=5))
    s = parse_sense(data)
    assert (s.key, s.asc_ascq) == (5, 0x2500)


# --- MODE SENSE ----------------------------------------------------------------------------------------


def mode_sense6(page: int = 0x3F, pc: int = 0, dbd: bool = False, alloc: int = 255, sub: int = 0) -> bytes:
    return bytes([0x1A, 0x08 if dbd else 0, (pc << 6) | page, sub, alloc, 0])


def mode_sense10(page: int = 0x3F, pc: int = 0, dbd: bool = False, llbaa: bool = False, alloc: int = 1024) -> bytes:
    return bytes([0x5A, (0x08 if dbd else 0) | (0x10 if llbaa else 0), (pc << 6) | page, 0, 0, 0, 0]) + \
        alloc.to_bytes(2, "big") + b"\0"


async def test_mode_sense_6_all_pages(run: Run) -> None:
    data = good(await run(mode_sense6()))
    assert data[0] == len(data) - 1 == 3 + 8 + 12 + 20 + 12 + 40 + 12
    assert data[1] == 0 and data[2] == 0x10 and data[3] == 8  # DPOFUA, one short block descriptor
    assert data[4:12] == BLOCKS.to_bytes(4, "big") + b"\0" + (512).to_bytes(3, "big")
    pages = data[12:]
    assert pages[0:2] == b"\x01\x0a"  # read-write error recovery
    assert pages[12:14] == b"\x08\x12" and pages[14] & 0x04  # caching, WCE
    assert pages[32:34] == b"\x0a\x0a" and pages[34] & 0x04 == 0 and pages[36] & 0x08 == 0  # control
    assert pages[44:46] == b"\x1a\x26"  # power condition
    assert pages[84:86] == b"\x1c\x0a"


async def test_mode_sense_6_single_page_dbd_and_truncation(run: Run) -> None:
    data = good(await run(mode_sense6(0x08, dbd=True)))
    assert data[:4] == bytes([3 + 20, 0, 0x10, 0]) and data[4] == 0x08 and len(data) == 24
    res = await run(mode_sense6(alloc=4))
    assert len(good(res)) == 4 and res.transfer_length == 4 and res.data_in[0] == 107


async def test_mode_sense_page_control(run: Run) -> None:
    changeable = good(await run(mode_sense6(0x08, pc=1, dbd=True)))
    assert changeable[4:6] == b"\x08\x12" and changeable[6:] == b"\x04" + bytes(17)  # WCE only
    default = good(await run(mode_sense6(0x0A, pc=2, dbd=True)))
    assert default[4:6] == b"\x0a\x0a"
    res = await run(mode_sense6(0x08, pc=3))
    check(res, 5, 0x3900)


async def test_mode_sense_invalid_page(run: Run) -> None:
    res = await run(mode_sense6(0x19))
    check(res, 5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xCD, 0, 2])
    check(await run(mode_sense6(0x08, sub=0x01)), 5, 0x2400)
    assert good(await run(mode_sense6(0x3F, sub=0xFF)))[0] == 107


async def test_mode_sense_write_protect(tmp_path: Path) -> None:
    run = runner(await ready_server({0: make_lu(tmp_path, readonly=True)}))
    assert good(await run(mode_sense6()))[2] == 0x90  # WP | DPOFUA
    assert good(await run(mode_sense10()))[3] == 0x90


async def test_mode_sense_10_lengths(run: Run) -> None:
    data = good(await run(mode_sense10()))
    assert int.from_bytes(data[0:2], "big") == len(data) - 2 == 6 + 8 + 96
    assert data[3] == 0x10 and data[4] == 0 and int.from_bytes(data[6:8], "big") == 8
    long = good(await run(mode_sense10(llbaa=True)))
    assert long[4] == 0x01 and int.from_bytes(long[6:8], "big") == 16
    assert long[8:24] == BLOCKS.to_bytes(8, "big") + bytes(4) + (512).to_bytes(4, "big")
    no_bd = good(await run(mode_sense10(0x1C, dbd=True, llbaa=True)))
    assert no_bd[4] == 0 and no_bd[6:8] == b"\0\0" and no_bd[8:10] == b"\x1c\x0a" and len(no_bd) == 20


async def test_mode_sense_descriptor_sense_when_d_sense(ds: DeviceServer, lu: LogicalUnit) -> None:
    lu.d_sense = True
    run = runner(ds)
    assert good(await run(mode_sense6(0x0A, dbd=True)))[6] & 0x04
    res = await run(mode_sense6(0x19))
    assert res.sense[0] == 0x72


async def test_execute_accepts_bytearray_cdb(ds: DeviceServer) -> None:
    res = await ds.execute(ScsiTask(NX, 0, bytearray(inquiry(alloc=8))))  # type: ignore[arg-type]
    assert len(good(res)) == 8

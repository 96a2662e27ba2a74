"""Primary commands (SPC-4): INQUIRY, REPORT LUNS, TEST UNIT READY, REQUEST SENSE, MODE SENSE."""
from __future__ import annotations

import struct

from sanlab.scsi.cdb import allocation_length
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lun import encode_lun
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, build_sense, invalid_field
from sanlab.scsi.task import ScsiResult

PERIPHERAL_DISK = 0x00
SPC4 = 0x06
MAX_TRANSFER_BYTES = 64 << 20
"""Largest READ/WRITE we accept; equals the transport's per-task buffer (connection.MAX_TASK_BUFFER)."""
OPTIMAL_TRANSFER_BYTES = 1 << 20

# Version descriptors (SPC-4 table 31 / T10 list): SAM-5, iSCSI (no version claimed), SPC-4, SBC-3.
VERSION_DESCRIPTORS = (0x00A0, 0x0960, 0x0460, 0x04C0)
PROTOCOL_ISCSI = 0x5

# --- INQUIRY (SPC-4 §6.4) -----------------------------------------------------------------


def standard_inquiry(ctx: Ctx) -> bytes:
    lu = ctx.lu
    if lu is None:
        # Peripheral qualifier 011b, type 1Fh: no logical unit here (SPC-4 §6.4.2).
        first = 0x7F
        removable = 0
        vendor, product, rev = "SANLAB", "NO-LUN", "0000"
    else:
        first = PERIPHERAL_DISK
        removable = 0x80 if lu.config.removable else 0
        vendor, product, rev = lu.config.vendor, lu.config.product, lu.config.revision
    body = bytearray(66)
    body[0] = first
    body[1] = removable
    body[2] = SPC4
    body[3] = 0x10 | 0x02  # HiSup, response data format 2
    body[4] = len(body) - 5
    body[7] = 0x02  # CmdQue
    body[8:16] = vendor.encode().ljust(8)[:8]
    body[16:32] = product.encode().ljust(16)[:16]
    body[32:36] = rev.encode().ljust(4)[:4]
    for i, d in enumerate(VERSION_DESCRIPTORS):
        struct.pack_into(">H", body, 58 + 2 * i, d)
    return bytes(body)


def _vpd(page: int, payload: bytes) -> bytes:
    return bytes([PERIPHERAL_DISK, page]) + len(payload).to_bytes(2, "big") + payload


def _designator(code_set: int, piv_assoc_type: int, value: bytes, protocol: int = 0) -> bytes:
    return bytes([(protocol << 4) | code_set, piv_assoc_type, 0, len(value)]) + value


def _name_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return raw + bytes(-len(raw) & 3)  # null-terminated, padded to 4 (SPC-4 §7.8.6.11)


def vpd_device_identification(ctx: Ctx) -> bytes:
    lu = ctx.need_lu()
    nx = ctx.task.nexus
    d = b""
    d += _designator(1, 0x03, lu.config.naa)  # NAA, associated with the LU
    d += _designator(2, 0x01, lu.config.vendor.encode().ljust(8) + lu.config.serial.encode())  # T10 vendor ID
    d += _designator(1, 0x94, (1).to_bytes(4, "big"), PROTOCOL_ISCSI)  # relative target port 1
    d += _designator(1, 0x95, (1).to_bytes(4, "big"), PROTOCOL_ISCSI)  # target port group 1
    if nx.target_name:
        d += _designator(3, 0x98, _name_string(nx.target_port), PROTOCOL_ISCSI)  # SCSI name: target port
        d += _designator(3, 0xA8, _name_string(nx.target_name), PROTOCOL_ISCSI)  # SCSI name: target device
    return _vpd(0x83, d)


def vpd_unit_serial(ctx: Ctx) -> bytes:
    return _vpd(0x80, ctx.need_lu().config.serial.encode())


def vpd_block_limits(ctx: Ctx) -> bytes:
    bs = ctx.need_lu().block_size
    p = bytearray(0x3C)
    struct.pack_into(">I", p, 4, MAX_TRANSFER_BYTES // bs)  # MAXIMUM TRANSFER LENGTH
    struct.pack_into(">I", p, 8, OPTIMAL_TRANSFER_BYTES // bs)  # OPTIMAL TRANSFER LENGTH
    # MAXIMUM UNMAP LBA COUNT / BLOCK DESCRIPTOR COUNT stay 0: UNMAP is not offered (LBPU=0).
    return _vpd(0xB0, bytes(p))


def vpd_block_characteristics(ctx: Ctx) -> bytes:
    p = bytearray(0x3C)
    struct.pack_into(">H", p, 0, 1)  # MEDIUM ROTATION RATE: non-rotating (SBC-3 §6.6.2)
    return _vpd(0xB1, bytes(p))


def vpd_supported(ctx: Ctx) -> bytes:
    return _vpd(0x00, bytes(sorted(VPD_PAGES)))


VPD_PAGES = {
    0x00: vpd_supported,
    0x80: vpd_unit_serial,
    0x83: vpd_device_identification,
    0xB0: vpd_block_limits,
    0xB1: vpd_block_characteristics,
}
"""VPD page code → builder."""


async def inquiry(ctx: Ctx) -> ScsiResult:
    cdb = ctx.cdb
    if cdb[1] & 0x02:
        raise invalid_field(1, 1)  # CmdDt is obsolete
    if cdb[1] & 0xFC:
        raise invalid_field(1)
    alloc = allocation_length(cdb)
    if not cdb[1] & 0x01:
        if cdb[2]:
            raise invalid_field(2)
        return data_in(standard_inquiry(ctx), alloc)
    builder = VPD_PAGES.get(cdb[2])
    if builder is None or ctx.lu is None:
        raise invalid_field(2)
    return data_in(builder(ctx), alloc)


# --- REPORT LUNS (SPC-4 §6.33) ---------------------------------------------------------------


async def report_luns(ctx: Ctx) -> ScsiResult:
    cdb = ctx.cdb
    select = cdb[2]
    alloc = allocation_length(cdb)
    if select not in (0x00, 0x01, 0x02):
        raise invalid_field(2)
    if alloc < 16:
        raise invalid_field(6)
    luns = [] if select == 0x01 else sorted(ctx.server.luns)  # 01h: well-known LUs only; we have none
    body = b"".join(encode_lun(n) for n in luns)
    return data_in(len(body).to_bytes(4, "big") + bytes(4) + body, alloc)


# --- TEST UNIT READY / REQUEST SENSE --------------------------------------------------------------


async def test_unit_ready(ctx: Ctx) -> ScsiResult:
    return ScsiResult()


async def request_sense(ctx: Ctx) -> ScsiResult:
    cdb = ctx.cdb
    if cdb[1] & 0xFE:
        raise invalid_field(1)
    desc = bool(cdb[1] & 0x01)
    nexus = ctx.task.nexus
    if ctx.lu is None:
        # SPC-4 §6.39: for an unsupported LUN, report LOGICAL UNIT NOT SUPPORTED as GOOD sense data.
        sense = build_sense(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, descriptor=desc)
    else:
        ua = ctx.lu.take_ua(nexus)
        if ua is not None:
            sense = build_sense(SenseKey.UNIT_ATTENTION, ua, descriptor=desc)
        else:
            ctx.lu.take_sense(nexus)
            sense = build_sense(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE, descriptor=desc)
    return data_in(sense, allocation_length(cdb))


# --- MODE SENSE (SPC-4 §6.11-6.12, pages §7.5) -----------------------------------------------------


def _caching_page(ctx: Ctx, pc: int) -> bytes:
    p = bytearray(20)
    p[0], p[1] = 0x08, 0x12
    if pc != 1:
        p[2] = 0x04  # WCE: writes are cached until SYNCHRONIZE CACHE or FUA (SBC-3 §6.4.5)
    return bytes(p)


def _control_page(ctx: Ctx, pc: int) -> bytes:
    p = bytearray(12)
    p[0], p[1] = 0x0A, 0x0A
    if pc != 1:
        lu = ctx.need_lu()
        p[2] = 0x04 if (lu.d_sense and pc == 0) else 0  # TST=000b (one task set), D_SENSE
        p[3] = 0x10  # QUEUE ALGORITHM MODIFIER 1: unrestricted reordering allowed; QErr 00b
        p[5] = 0x40  # TAS: aborted tasks of other nexuses report TASK ABORTED
        p[8:10] = b"\xff\xff"  # BUSY TIMEOUT PERIOD: unlimited
    return bytes(p)


def _informational_exceptions_page(ctx: Ctx, pc: int) -> bytes:
    p = bytearray(12)
    p[0], p[1] = 0x1C, 0x0A
    return bytes(p)


MODE_PAGES = {0x08: _caching_page, 0x0A: _control_page, 0x1C: _informational_exceptions_page}
"""Mode page code → builder (PC: 0 current, 1 changeable, 2 default)."""


def _mode_pages(ctx: Ctx) -> bytes:
    cdb = ctx.cdb
    pc, page, sub = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
    if pc == 3:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED)
    if page == 0x3F:
        if sub not in (0x00, 0xFF):
            raise invalid_field(3)
        return b"".join(build(ctx, pc) for _, build in sorted(MODE_PAGES.items()))
    if page not in MODE_PAGES:
        raise invalid_field(2, 5)
    if sub not in (0x00, 0xFF):
        raise invalid_field(3)
    return MODE_PAGES[page](ctx, pc)


def _device_specific(ctx: Ctx) -> int:
    lu = ctx.need_lu()
    return (0x80 if lu.config.readonly else 0) | 0x10  # WP, DPOFUA (SBC-3 §6.4.1)


async def mode_sense_6(ctx: Ctx) -> ScsiResult:
    cdb = ctx.cdb
    lu = ctx.need_lu()
    pages = _mode_pages(ctx)
    bd = b""
    if not cdb[1] & 0x08:  # DBD clear: one short block descriptor (SBC-3 §6.4.2)
        bd = min(lu.num_blocks, 0xFFFFFFFF).to_bytes(4, "big") + b"\0" + lu.block_size.to_bytes(3, "big")
    hdr = bytes([3 + len(bd) + len(pages), 0, _device_specific(ctx), len(bd)])
    return data_in(hdr + bd + pages, allocation_length(cdb))


async def mode_sense_10(ctx: Ctx) -> ScsiResult:
    cdb = ctx.cdb
    lu = ctx.need_lu()
    pages = _mode_pages(ctx)
    bd = b""
    longlba = bool(cdb[1] & 0x10)
    if not cdb[1] & 0x08:
        if longlba:
            bd = lu.num_blocks.to_bytes(8, "big") + bytes(4) + lu.block_size.to_bytes(4, "big")
        else:
            bd = min(lu.num_blocks, 0xFFFFFFFF).to_bytes(4, "big") + b"\0" + lu.block_size.to_bytes(3, "big")
    hdr = struct.pack(">HBBBBH", 6 + len(bd) + len(pages), 0, _device_specific(ctx), 0x01 if bd and longlba else 0,
                      0, len(bd))
    return data_in(hdr + bd + pages, allocation_length(cdb))

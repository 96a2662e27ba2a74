"""Primary commands (SPC-4): INQUIRY, REPORT LUNS, TEST UNIT READY, REQUEST SENSE, MODE SENSE.

Parameter data is built by plain functions (one per page) registered in tables
(:data:`VPD_PAGES`, :data:`MODE_PAGES`); the ``async`` handlers only decode the
CDB, pick the builder and cut the result to the ALLOCATION LENGTH.
"""
from __future__ import annotations

import struct
from typing import Callable

from sanlab.scsi.cdb import InquiryCdb, ModeSenseCdb, Opcode, PageControl, ReportLunsCdb, RequestSenseCdb
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.lun import encode_lun
from sanlab.scsi.reservation_state import ALLOWED, PR_ALLOWED, READ
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, build_sense, invalid_field
from sanlab.scsi.task import ScsiResult
from sanlab.storage.atomic import AtomicWriter
from sanlab.storage.volume import CryptoErasable

PERIPHERAL_DISK = 0x00
"""PERIPHERAL DEVICE TYPE 00h: direct access block device (SPC-4 table 141)."""
NO_LU = 0x7F
"""PERIPHERAL QUALIFIER 011b + type 1Fh: no logical unit at this LUN (SPC-4 §6.4.2)."""
VERSION_SPC4 = 0x06
RESPONSE_DATA_FORMAT = 0x02
PROTOCOL_ISCSI = 0x5
"""PROTOCOL IDENTIFIER for iSCSI (SPC-4 §7.6.1, table 362)."""

MAX_TRANSFER_BYTES = 64 << 20
"""Largest READ/WRITE we accept; equals the transport's per-task buffer (connection.MAX_TASK_BUFFER)."""
OPTIMAL_TRANSFER_BYTES = 1 << 20

VERSION_DESCRIPTORS = (0x00A0, 0x0960, 0x0460, 0x04C0)
"""SAM-5 (no version claimed), iSCSI (no version claimed), SPC-4, SBC-3 (SPC-4 table 146)."""

# --- INQUIRY standard data (SPC-4 §6.4.2) -----------------------------------------------------------

STANDARD_INQUIRY = struct.Struct(">BBBBBBBB8s16s4s20sBx8H22x")
"""Standard INQUIRY data, 96 bytes (SPC-4 §6.4.2, table 140): qualifier|type, RMB, VERSION,
NORMACA|HISUP|RESPONSE DATA FORMAT, ADDITIONAL LENGTH, SCCS..PROTECT, ENCSERV..ADDR16,
WBUS16..CMDQUE, T10 VENDOR IDENTIFICATION, PRODUCT IDENTIFICATION, PRODUCT REVISION LEVEL,
vendor specific (20), CLOCKING|QAS|IUS, reserved, VERSION DESCRIPTOR 1-8, reserved (22)."""
HISUP = 0x10
CMDQUE = 0x02


def _ascii(s: str, n: int) -> bytes:
    """Left-aligned ASCII padded with spaces to ``n`` bytes (SPC-4 §4.4.1)."""
    return s.encode("ascii", "replace")[:n].ljust(n)


def standard_inquiry(ctx: Ctx) -> bytes:
    """Standard INQUIRY data; qualifier 011b / type 1Fh when there is no LU."""
    lu = ctx.lu
    if lu is None:
        return STANDARD_INQUIRY.pack(NO_LU, 0, VERSION_SPC4, HISUP | RESPONSE_DATA_FORMAT,
                                     STANDARD_INQUIRY.size - 5, 0, 0, CMDQUE, bytes(8), bytes(16), bytes(4),
                                     bytes(20), 0, *VERSION_DESCRIPTORS, 0, 0, 0, 0)
    cfg = lu.config
    return STANDARD_INQUIRY.pack(
        PERIPHERAL_DISK, 0x80 if cfg.removable else 0, VERSION_SPC4, HISUP | RESPONSE_DATA_FORMAT,
        STANDARD_INQUIRY.size - 5,
        0,  # SCCS, ACC, TPGS=00b (no ALUA), 3PC, PROTECT all zero
        0,  # ENCSERV, MULTIP
        CMDQUE,  # full task management model: tagged commands queue
        _ascii(cfg.vendor, 8), _ascii(cfg.product, 16), _ascii(cfg.revision, 4), bytes(20), 0,
        *VERSION_DESCRIPTORS, 0, 0, 0, 0)


# --- VPD pages (SPC-4 §7.8, SBC-3 §6.6) ------------------------------------------------------------

VPD_HEADER = struct.Struct(">BBH")
"""VPD page header: qualifier|type, PAGE CODE, PAGE LENGTH (SPC-4 §7.8.1)."""
DESIGNATION_HEADER = struct.Struct(">BBxB")
"""Designation descriptor header: PROTOCOL IDENTIFIER|CODE SET, PIV|ASSOCIATION|TYPE, length (SPC-4 §7.8.6.1)."""


def _vpd(page: int, payload: bytes) -> bytes:
    return VPD_HEADER.pack(PERIPHERAL_DISK, page, len(payload)) + payload


class CodeSet:
    """CODE SET values (SPC-4 table 459)."""

    BINARY = 1
    ASCII = 2
    UTF8 = 3


class Association:
    """ASSOCIATION values (SPC-4 table 460), already shifted into bits 5-4."""

    LOGICAL_UNIT = 0x00
    TARGET_PORT = 0x10
    TARGET_DEVICE = 0x20


class DesignatorType:
    """DESIGNATOR TYPE values (SPC-4 table 461)."""

    T10_VENDOR_ID = 0x1
    NAA = 0x3
    RELATIVE_TARGET_PORT = 0x4
    TARGET_PORT_GROUP = 0x5
    SCSI_NAME_STRING = 0x8


PIV = 0x80
"""The PROTOCOL IDENTIFIER field is valid (only with port/device associations)."""


def designator(code_set: int, association: int, typ: int, value: bytes, protocol: int | None = None) -> bytes:
    """One designation descriptor (SPC-4 §7.8.6.1)."""
    b0 = ((protocol or 0) << 4) | code_set
    b1 = (PIV if protocol is not None else 0) | association | typ
    return DESIGNATION_HEADER.pack(b0, b1, len(value)) + value


def scsi_name(s: str) -> bytes:
    """SCSI NAME STRING: UTF-8, null-terminated, padded with nulls to a multiple of 4 (SPC-4 §7.8.6.11)."""
    raw = s.encode() + b"\0"
    return raw + bytes(-len(raw) & 3)


def vpd_supported_pages(ctx: Ctx) -> bytes:
    """00h: the page codes in :data:`VPD_PAGES`, ascending (SPC-4 §7.8.13)."""
    return _vpd(0x00, bytes(sorted(VPD_PAGES)))


def vpd_unit_serial(ctx: Ctx) -> bytes:
    """80h: PRODUCT SERIAL NUMBER (SPC-4 §7.8.15)."""
    return _vpd(0x80, ctx.need_lu().config.serial.encode("ascii"))


def vpd_device_identification(ctx: Ctx) -> bytes:
    """83h: designators for the LU, the target port and the target device (SPC-4 §7.8.6).

    The LU: its NAA 6h name and a T10 vendor ID (vendor + serial).  The target
    port (association 01b): relative target port, target port group, and the
    iSCSI port name ``iqn...,t,0xTPGT``.  The target device (10b): the iSCSI name.
    """
    cfg = ctx.need_lu().config
    nx = ctx.task.nexus
    relative_port = nx.tpgt or 1  # 0 is reserved (SPC-4 §7.8.6.7); one port per portal group
    parts = [
        designator(CodeSet.BINARY, Association.LOGICAL_UNIT, DesignatorType.NAA, cfg.naa),
        designator(CodeSet.ASCII, Association.LOGICAL_UNIT, DesignatorType.T10_VENDOR_ID,
                   _ascii(cfg.vendor, 8) + cfg.serial.encode("ascii")),
        designator(CodeSet.BINARY, Association.TARGET_PORT, DesignatorType.RELATIVE_TARGET_PORT,
                   struct.pack(">2xH", relative_port), PROTOCOL_ISCSI),
        designator(CodeSet.BINARY, Association.TARGET_PORT, DesignatorType.TARGET_PORT_GROUP,
                   struct.pack(">2xH", 1), PROTOCOL_ISCSI),
    ]
    if nx.target_name:
        parts.append(designator(CodeSet.UTF8, Association.TARGET_PORT, DesignatorType.SCSI_NAME_STRING,
                                scsi_name(nx.target_port), PROTOCOL_ISCSI))
        parts.append(designator(CodeSet.UTF8, Association.TARGET_DEVICE, DesignatorType.SCSI_NAME_STRING,
                                scsi_name(nx.target_name), PROTOCOL_ISCSI))
    return _vpd(0x83, b"".join(parts))


EXTENDED_INQUIRY = struct.Struct(">BBBBB55x")
"""86h payload (SPC-4 §7.8.7): ACTIVATE MICROCODE|SPT|GRD_CHK.., UASK_SUP..SIMPSUP, WU_SUP..V_SUP,
P_I_I_SUP.., LUICLR.. ; page length 3Ch."""


def vpd_extended_inquiry(ctx: Ctx) -> bytes:
    """86h: HEADSUP/ORDSUP/SIMPSUP (task attributes we accept) and V_SUP (volatile cache)."""
    return _vpd(0x86, EXTENDED_INQUIRY.pack(0, 0x07, 0x01, 0, 0))


BLOCK_LIMITS = struct.Struct(">BBHIIIIIIIQIIIII")
"""B0h payload (SBC-3 §6.6.3, table 191): WSNZ, MAXIMUM COMPARE AND WRITE LENGTH, OPTIMAL TRANSFER
LENGTH GRANULARITY, MAXIMUM TRANSFER LENGTH, OPTIMAL TRANSFER LENGTH, MAXIMUM PREFETCH LENGTH,
MAXIMUM UNMAP LBA COUNT, MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, OPTIMAL UNMAP GRANULARITY,
UGAVALID|UNMAP GRANULARITY ALIGNMENT, MAXIMUM WRITE SAME LENGTH, then (SBC-4 §6.6.4) MAXIMUM ATOMIC
TRANSFER LENGTH, ATOMIC ALIGNMENT, ATOMIC TRANSFER LENGTH GRANULARITY, MAXIMUM ATOMIC TRANSFER LENGTH
WITH ATOMIC BOUNDARY, MAXIMUM ATOMIC BOUNDARY SIZE; 3Ch bytes."""


def max_transfer_blocks(block_size: int) -> int:
    """MAXIMUM TRANSFER LENGTH in logical blocks, enforced by READ/WRITE (SBC-3 §6.6.3)."""
    return MAX_TRANSFER_BYTES // block_size


# Limits of the commands that take block ranges (SBC-3 §6.6.3): the handlers enforce exactly these.
MAX_COMPARE_AND_WRITE_BLOCKS = 255
"""MAXIMUM COMPARE AND WRITE LENGTH: the largest the one-byte NUMBER OF LOGICAL BLOCKS can say."""
MAX_UNMAP_LBA_COUNT = 1 << 20
"""MAXIMUM UNMAP LBA COUNT: blocks one UNMAP may deallocate, over all its descriptors."""
MAX_UNMAP_BLOCK_DESCRIPTORS = 256
"""MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT."""
MAX_WRITE_SAME_BYTES = 64 << 20
"""MAXIMUM WRITE SAME LENGTH in bytes (as much as one WRITE may carry), converted per block size."""
UNMAP_GRANULARITY_BYTES = 4096
"""OPTIMAL UNMAP GRANULARITY in bytes: the file-system block, the unit a hole can be punched in."""


def max_write_same_blocks(block_size: int) -> int:
    """MAXIMUM WRITE SAME LENGTH in logical blocks (SBC-3 §6.6.3)."""
    return MAX_WRITE_SAME_BYTES // block_size


def thin_provisioned(lu: LogicalUnit) -> bool:
    """LBPME (SBC-3 §4.7.3): configured thin *and* on a volume that can deallocate.

    A volume written against the original protocol (no ``thin`` property) counts as fully
    provisioned.
    """
    return lu.config.thin and bool(getattr(lu.volume, "thin", False))


def lbprz(lu: LogicalUnit) -> bool:
    """LBPRZ: a thin LU whose deallocated blocks read as zeros (SBC-3 §5.16.2)."""
    return thin_provisioned(lu) and bool(getattr(lu.volume, "lbprz", False))


def atomic_max_blocks(lu: LogicalUnit) -> int:
    """MAXIMUM ATOMIC TRANSFER LENGTH (SBC-4 §6.6.4): 0 when the LU's volume has no atomic writes."""
    vol = lu.volume
    return vol.atomic_max_blocks if isinstance(vol, AtomicWriter) else 0


def vpd_block_limits(ctx: Ctx) -> bytes:
    """B0h: WSNZ=0 (WRITE SAME with zero blocks runs to the last LBA), the COMPARE AND WRITE, transfer
    and WRITE SAME limits; the UNMAP limits only on a thin LU (zero means no UNMAP, SBC-3 §6.6.3)."""
    lu = ctx.need_lu()
    bs = lu.block_size
    if thin_provisioned(lu):
        unmap_lbas, unmap_descriptors = MAX_UNMAP_LBA_COUNT, MAX_UNMAP_BLOCK_DESCRIPTORS
        granularity, alignment = max(1, UNMAP_GRANULARITY_BYTES // bs), 0x80000000  # UGAVALID, LBA 0
    else:
        unmap_lbas = unmap_descriptors = granularity = alignment = 0
    # Atomic writes (scsi/atomic.py): any alignment and granularity; no atomic boundaries.
    atomic = atomic_max_blocks(lu)
    return _vpd(0xB0, BLOCK_LIMITS.pack(0, MAX_COMPARE_AND_WRITE_BLOCKS, 1, max_transfer_blocks(bs),
                                        OPTIMAL_TRANSFER_BYTES // bs, 0, unmap_lbas, unmap_descriptors,
                                        granularity, alignment, max_write_same_blocks(bs),
                                        atomic, 0, 0, 0, 0))


BLOCK_DEVICE_CHARACTERISTICS = struct.Struct(">HBB56x")
"""B1h payload (SBC-3 §6.6.2): MEDIUM ROTATION RATE, PRODUCT TYPE, WABEREQ|WACEREQ|NOMINAL FORM FACTOR."""


WABEREQ_GOOD = 0x40
"""WABEREQ 01b: a read of a block erased by SANITIZE BLOCK ERASE completes GOOD (SBC-3 §6.6.2)."""


WACEREQ_GOOD = 0x10
"""WACEREQ 01b: a read of a block after SANITIZE CRYPTOGRAPHIC ERASE completes GOOD (SBC-3 §6.6.2):
it returns the old ciphertext decrypted with the new key, i.e. noise."""


def vpd_block_device_characteristics(ctx: Ctx) -> bytes:
    """B1h: MEDIUM ROTATION RATE 0001h (non-rotating medium), form factor not reported; WABEREQ 01b where
    SANITIZE BLOCK ERASE is offered (a thin LU reading deallocated blocks as zeros), WACEREQ 01b where
    CRYPTOGRAPHIC ERASE is (an encrypted volume), else 00b."""
    lu = ctx.need_lu()
    wabereq = WABEREQ_GOOD if thin_provisioned(lu) and lbprz(lu) else 0
    wacereq = WACEREQ_GOOD if isinstance(lu.volume, CryptoErasable) else 0
    return _vpd(0xB1, BLOCK_DEVICE_CHARACTERISTICS.pack(1, 0, wabereq | wacereq))


LOGICAL_BLOCK_PROVISIONING = struct.Struct(">BBBB")
"""B2h payload (SBC-3 §6.6.4): THRESHOLD EXPONENT, LBPU|LBPWS|LBPWS10|LBPRZ|ANC_SUP|DP,
PROVISIONING TYPE, reserved."""
PROVISIONING_THIN = 0x2
PROVISIONING_FULL = 0x0
LBPRZ = 0x04


LBPU, LBPWS, LBPWS10 = 0x80, 0x40, 0x20


def vpd_logical_block_provisioning(ctx: Ctx) -> bytes:
    """B2h (SBC-3 §6.6.4): a thin LU unmaps through UNMAP (LBPU) and WRITE SAME(16)/(10) with the UNMAP
    bit (LBPWS/LBPWS10) and reads deallocated blocks as zero (LBPRZ); no anchored state (ANC_SUP=0),
    no provisioning group descriptor (DP=0).  A fully provisioned LU reports none of it."""
    lu = ctx.need_lu()
    if not thin_provisioned(lu):
        return _vpd(0xB2, LOGICAL_BLOCK_PROVISIONING.pack(0, 0, PROVISIONING_FULL, 0))
    flags = LBPU | LBPWS | LBPWS10 | (LBPRZ if lbprz(lu) else 0)
    return _vpd(0xB2, LOGICAL_BLOCK_PROVISIONING.pack(0, flags, PROVISIONING_THIN, 0))


PageBuilder = Callable[[Ctx], bytes]

VPD_PAGES: dict[int, PageBuilder] = {
    0x00: vpd_supported_pages,
    0x80: vpd_unit_serial,
    0x83: vpd_device_identification,
    0x86: vpd_extended_inquiry,
    0xB0: vpd_block_limits,
    0xB1: vpd_block_device_characteristics,
    0xB2: vpd_logical_block_provisioning,
}
"""VPD page code → builder."""


async def inquiry(ctx: Ctx) -> ScsiResult:
    """INQUIRY (SPC-4 §6.4): standard data or one VPD page."""
    cdb = InquiryCdb.parse(ctx.cdb)
    if not cdb.evpd:
        return data_in(standard_inquiry(ctx), cdb.allocation_length)
    builder = VPD_PAGES.get(cdb.page_code)
    if builder is None or ctx.lu is None:
        raise invalid_field(2)
    return data_in(builder(ctx), cdb.allocation_length)


# --- REPORT LUNS (SPC-4 §6.33) ----------------------------------------------------------------------

REPORT_LUNS_HEADER = struct.Struct(">I4x")
"""LUN LIST LENGTH, reserved (SPC-4 table 250)."""


async def report_luns(ctx: Ctx) -> ScsiResult:
    """REPORT LUNS: every LU of the target, 8-byte LUNs via :func:`encode_lun`."""
    cdb = ReportLunsCdb.parse(ctx.cdb)
    # 00h and 02h: all LUs (we have no well-known LUs); 01h: well-known LUs only, i.e. none.
    luns = [] if cdb.select_report == 0x01 else sorted(ctx.server.luns)
    body = b"".join(encode_lun(n) for n in luns)
    return data_in(REPORT_LUNS_HEADER.pack(len(body)) + body, cdb.allocation_length)


# --- TEST UNIT READY / REQUEST SENSE ---------------------------------------------------------------


async def test_unit_ready(ctx: Ctx) -> ScsiResult:
    """TEST UNIT READY (SPC-4 §6.47): ready once the UA, sanitize and medium checks of the device
    server passed."""
    return ScsiResult()


async def request_sense(ctx: Ctx) -> ScsiResult:
    """REQUEST SENSE (SPC-4 §6.39): pending UA (cleared), else kept sense, else NO SENSE."""
    cdb = RequestSenseCdb.parse(ctx.cdb)
    nexus = ctx.task.nexus
    desc = cdb.desc
    if ctx.lu is None:
        # SPC-4 §6.39.2: an incorrect LUN gets GOOD with LOGICAL UNIT NOT SUPPORTED sense data.
        sense = build_sense(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, descriptor=desc)
    else:
        ua = ctx.lu.take_ua(nexus)
        kept = ctx.lu.take_sense(nexus) if ua is None else None
        if ua is not None:
            sense = build_sense(SenseKey.UNIT_ATTENTION, ua, descriptor=desc)
        elif kept is not None:
            sense = kept
        else:
            sense = build_sense(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE, descriptor=desc)
    return data_in(sense, cdb.allocation_length)


# --- MODE SENSE (SPC-4 §6.11-6.12, pages §7.5, SBC-3 §6.4) ------------------------------------------


WCE = 0x04
"""Caching page byte 2: WRITE CACHE ENABLE (SBC-3 §6.4.5)."""
D_SENSE = 0x04
"""Control page byte 2: descriptor format sense data (SPC-4 §7.5.8)."""
SWP = 0x08
"""Control page byte 4: software write protect (SPC-4 §7.5.8)."""


def _read_write_error_recovery_page(ctx: Ctx, pc: PageControl) -> bytes:
    """01h Read-Write Error Recovery (SBC-3 §6.4.7): no retries to report, no automatic reallocation
    (the backing store hides its own), nothing changeable."""
    p = bytearray(12)
    p[0], p[1] = 0x01, 0x0A
    return bytes(p)


def _caching_page(ctx: Ctx, pc: PageControl) -> bytes:
    """08h Caching (SBC-3 §6.4.5): WCE — with WCE=1 writes complete into the page cache and are made
    durable by SYNCHRONIZE CACHE or FUA; MODE SELECT may clear it, then every write is written through.
    RCD=0.  WCE is the one changeable field."""
    p = bytearray(20)
    p[0], p[1] = 0x08, 0x12
    if pc == PageControl.CURRENT:
        p[2] = WCE if ctx.need_lu().wce else 0
    else:
        p[2] = WCE  # default: write cache enabled; changeable: the WCE bit
    return bytes(p)


def _control_page(ctx: Ctx, pc: PageControl) -> bytes:
    """0Ah Control (SPC-4 §7.5.8): TST 000b (one task set for all nexuses), D_SENSE and SWP from the
    LU, QUEUE ALGORITHM MODIFIER 1 (unrestricted reordering), QErr 00b, TAS 0, busy timeout unlimited.
    D_SENSE and SWP are changeable."""
    p = bytearray(12)
    p[0], p[1] = 0x0A, 0x0A
    if pc == PageControl.CHANGEABLE:
        p[2], p[4] = D_SENSE, SWP
        return bytes(p)
    p[3] = 0x10
    p[8:10] = b"\xff\xff"
    if pc == PageControl.CURRENT:
        lu = ctx.need_lu()
        p[2] = D_SENSE if lu.d_sense else 0
        p[4] = SWP if lu.swp else 0
    return bytes(p)


def _power_condition_page(ctx: Ctx, pc: PageControl) -> bytes:
    """1Ah Power Condition (SPC-4 §7.5.13): no idle or standby timers (a virtual disk has no spindle)."""
    p = bytearray(40)
    p[0], p[1] = 0x1A, 0x26
    return bytes(p)


def _informational_exceptions_page(ctx: Ctx, pc: PageControl) -> bytes:
    """1Ch Informational Exceptions Control (SPC-4 §7.5.11): DEXCPT=1, we report no failure prediction."""
    p = bytearray(12)
    p[0], p[1] = 0x1C, 0x0A
    if pc != PageControl.CHANGEABLE:
        p[2] = 0x08
    return bytes(p)


ModePageBuilder = Callable[[Ctx, PageControl], bytes]

MODE_PAGES: dict[int, ModePageBuilder] = {
    0x01: _read_write_error_recovery_page,
    0x08: _caching_page,
    0x0A: _control_page,
    0x1A: _power_condition_page,
    0x1C: _informational_exceptions_page,
}
"""Mode page code → builder (subpage 0 only)."""
ALL_PAGES = 0x3F


def mode_pages(ctx: Ctx, cdb: ModeSenseCdb) -> bytes:
    """The mode pages a MODE SENSE asks for."""
    if cdb.pc == PageControl.SAVED:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED, field_pointer=2, bit=7)
    # Subpage 00h: the page_0 format page; FFh: the page and all its subpages (we have none).
    if cdb.subpage_code not in (0x00, 0xFF):
        raise invalid_field(3)
    if cdb.page_code == ALL_PAGES:
        return b"".join(build(ctx, cdb.pc) for _, build in sorted(MODE_PAGES.items()))
    build = MODE_PAGES.get(cdb.page_code)
    if build is None:
        raise invalid_field(2, 5)
    return build(ctx, cdb.pc)


WP = 0x80
DPOFUA = 0x10

MODE_HEADER_6 = struct.Struct(">BBBB")
"""MODE DATA LENGTH, MEDIUM TYPE, DEVICE-SPECIFIC PARAMETER, BLOCK DESCRIPTOR LENGTH (SPC-4 §7.5.5)."""
MODE_HEADER_10 = struct.Struct(">HBBBxH")
"""MODE DATA LENGTH, MEDIUM TYPE, DEVICE-SPECIFIC PARAMETER, LONGLBA, reserved, BLOCK DESCRIPTOR LENGTH."""
SHORT_BLOCK_DESCRIPTOR = struct.Struct(">IxBH")
"""NUMBER OF LOGICAL BLOCKS, reserved, LOGICAL BLOCK LENGTH (24 bits as B+H) (SBC-3 §6.4.2.2)."""
LONG_BLOCK_DESCRIPTOR = struct.Struct(">Q4xI")
"""NUMBER OF LOGICAL BLOCKS, reserved, LOGICAL BLOCK LENGTH (SBC-3 §6.4.2.3)."""


def device_specific_parameter(ctx: Ctx) -> int:
    """WP when read-only or software write protected (SWP); DPOFUA: DPO and FUA are supported
    (SBC-3 §6.4.1)."""
    lu = ctx.need_lu()
    return (WP if lu.config.readonly or lu.swp else 0) | DPOFUA


def block_descriptor(ctx: Ctx, long_lba: bool) -> bytes:
    """One block descriptor with the capacity and block length."""
    lu = ctx.need_lu()
    if long_lba:
        return LONG_BLOCK_DESCRIPTOR.pack(lu.num_blocks, lu.block_size)
    bs = lu.block_size
    # A capacity beyond 32 bits reads FFFFFFFFh: use MODE SENSE(10) with LLBAA (SBC-3 §6.4.2.2).
    return SHORT_BLOCK_DESCRIPTOR.pack(min(lu.num_blocks, 0xFFFFFFFF), bs >> 16, bs & 0xFFFF)


async def mode_sense(ctx: Ctx) -> ScsiResult:
    """MODE SENSE(6)/(10): header, optional block descriptor, pages; cut to ALLOCATION LENGTH."""
    cdb = ModeSenseCdb.parse(ctx.cdb)
    pages = mode_pages(ctx, cdb)
    long_lba = cdb.ten and cdb.llbaa
    bd = b"" if cdb.dbd else block_descriptor(ctx, long_lba)
    dsp = device_specific_parameter(ctx)
    if cdb.ten:
        # MODE DATA LENGTH excludes itself (2 bytes): 6 more header bytes.
        hdr = MODE_HEADER_10.pack(6 + len(bd) + len(pages), 0, dsp, 0x01 if bd and long_lba else 0, len(bd))
    else:
        hdr = MODE_HEADER_6.pack(3 + len(bd) + len(pages), 0, dsp, len(bd))
    return data_in(hdr + bd + pages, cdb.allocation_length)


COMMANDS: dict[int, CommandSpec] = {
    # SPC-4 §5.9.1 table 60: TEST UNIT READY passes persistent reservations (ALLOW COMMANDS 011b) but
    # not an SPC-2 one (SPC-2 annex B); the reports about the device and the nexus pass everything.
    Opcode.TEST_UNIT_READY: CommandSpec("TEST UNIT READY", test_unit_ready, reservation=PR_ALLOWED),
    Opcode.REQUEST_SENSE: CommandSpec("REQUEST SENSE", request_sense, any_lun=True, keeps_ua=True,
                                      reservation=ALLOWED, allowed_without_medium=True),
    Opcode.INQUIRY: CommandSpec("INQUIRY", inquiry, any_lun=True, keeps_ua=True, reservation=ALLOWED,
                                allowed_without_medium=True),
    Opcode.REPORT_LUNS: CommandSpec("REPORT LUNS", report_luns, any_lun=True, keeps_ua=True,
                                    reservation=ALLOWED, allowed_without_medium=True),
    Opcode.MODE_SENSE_6: CommandSpec("MODE SENSE(6)", mode_sense, allowed_without_medium=True, reservation=READ),
    Opcode.MODE_SENSE_10: CommandSpec("MODE SENSE(10)", mode_sense, allowed_without_medium=True, reservation=READ),
}
"""The primary commands of the command table (every kind has them: scsi/kinds.py)."""

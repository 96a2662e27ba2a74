"""Operation codes and CDB layouts (SPC-4 §4.2, SBC-3 §5), each declared once.

Every CDB the device server decodes has one :class:`struct.Struct` and one
frozen dataclass with a ``parse`` classmethod.  ``parse`` checks the fields the
standard reserves or this device server does not support and raises
:class:`~sanlab.scsi.sense.ScsiError` (ILLEGAL REQUEST / INVALID FIELD IN CDB
with a field pointer, SPC-4 §4.5.2.4.2).  Reserved fields we are lenient about
(the ones real initiators are known to leave dirty) are said so where they are.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field


class Opcode(IntEnum):
    """SCSI operation codes, named as SPC-4/SBC-3 name them (SPC-4 annex E)."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    FORMAT_UNIT = 0x04
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    RECEIVE_DIAGNOSTIC_RESULTS = 0x1C
    SEND_DIAGNOSTIC = 0x1D
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_DEFECT_DATA_10 = 0x37
    WRITE_BUFFER = 0x3B
    READ_BUFFER = 0x3C
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    SANITIZE = 0x48
    LOG_SELECT = 0x4C
    LOG_SENSE = 0x4D
    MODE_SELECT_10 = 0x55
    RESERVE_10 = 0x56
    RELEASE_10 = 0x57
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    VARIABLE_LENGTH = 0x7F
    EXTENDED_COPY = 0x83
    RECEIVE_COPY_RESULTS = 0x84
    ATA_PASS_THROUGH_16 = 0x85
    READ_16 = 0x88
    COMPARE_AND_WRITE = 0x89
    WRITE_16 = 0x8A
    ORWRITE_16 = 0x8B
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    WRITE_ATOMIC_16 = 0x9C
    SERVICE_ACTION_IN_16 = 0x9E
    SERVICE_ACTION_OUT_16 = 0x9F
    REPORT_LUNS = 0xA0
    ATA_PASS_THROUGH_12 = 0xA1
    SECURITY_PROTOCOL_IN = 0xA2
    MAINTENANCE_IN = 0xA3
    MAINTENANCE_OUT = 0xA4
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    WRITE_AND_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF
    READ_DEFECT_DATA_12 = 0xB7
    SECURITY_PROTOCOL_OUT = 0xB5


class ServiceActionIn16(IntEnum):
    """SERVICE ACTION IN(16) service actions (SBC-3 §5.16, §5.13)."""

    READ_CAPACITY_16 = 0x10
    GET_LBA_STATUS = 0x12


class MaintenanceIn(IntEnum):
    """MAINTENANCE IN service actions (SPC-4 §6.x)."""

    REPORT_IDENTIFYING_INFORMATION = 0x05
    REPORT_TARGET_PORT_GROUPS = 0x0A
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C
    REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS = 0x0D
    REPORT_TIMESTAMP = 0x0F


class PersistentReserveIn(IntEnum):
    """PERSISTENT RESERVE IN service actions (SPC-4 §6.13)."""

    READ_KEYS = 0x00
    READ_RESERVATION = 0x01
    REPORT_CAPABILITIES = 0x02
    READ_FULL_STATUS = 0x03


class PersistentReserveOut(IntEnum):
    """PERSISTENT RESERVE OUT service actions (SPC-4 §6.14)."""

    REGISTER = 0x00
    RESERVE = 0x01
    RELEASE = 0x02
    CLEAR = 0x03
    PREEMPT = 0x04
    PREEMPT_AND_ABORT = 0x05
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
    REGISTER_AND_MOVE = 0x07


# CDB length by GROUP CODE, the top three bits of the operation code (SPC-4 §4.2.5.1, table 8).
# Group 3 is reserved (7Fh: variable length) and groups 6/7 are vendor specific: no fixed length.
_GROUP_LENGTH: dict[int, int] = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}


def cdb_length(opcode: int) -> int | None:
    """CDB length from the group code (SPC-4 §4.2.5.1); None for reserved/vendor groups."""
    return _GROUP_LENGTH.get(opcode >> 5)


def control_offset(opcode: int) -> int:
    """Index of the CONTROL byte: the last byte of the CDB (SPC-4 §4.2.5.7)."""
    return (cdb_length(opcode) or 16) - 1


def check_control(cdb: bytes) -> None:
    """Reject a CONTROL byte asking for what we do not offer (SAM-5 §5.10, SPC-4 §4.2.5.7).

    NACA=1 asks for ACA, which this device server does not support (Control mode
    page reports no ACA): INVALID FIELD IN CDB.  LINK (bit 0) is obsolete.
    """
    length = cdb_length(cdb[0])
    if length is None:
        return
    if len(cdb) < length:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field_pointer=len(cdb))
    off = length - 1
    if cdb[off] & 0x04:
        raise invalid_field(off, 2)
    if cdb[off] & 0x01:
        raise invalid_field(off, 0)


def service_action(cdb: bytes) -> int:
    """SERVICE ACTION field: byte 1 bits 4-0 (SPC-4 §4.2.5.3)."""
    return cdb[1] & 0x1F


# --- SPC-4 commands ------------------------------------------------------------------------------

_INQUIRY = struct.Struct(">BBBHB")  # opcode, CMDDT|EVPD, PAGE CODE, ALLOCATION LENGTH, CONTROL


@dataclass(frozen=True, slots=True)
class InquiryCdb:
    """INQUIRY (SPC-4 §6.4.1, table 142)."""

    evpd: bool
    """EVPD: return VPD page ``page_code`` instead of the standard data."""
    page_code: int
    allocation_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> InquiryCdb:
        """Decode the CDB; ScsiError INVALID FIELD IN CDB for CMDDT (obsolete), another reserved bit of
        byte 1, or a PAGE CODE without EVPD (SPC-4 §6.4.1)."""
        _, flags, page, alloc, _ = _INQUIRY.unpack_from(cdb)
        if flags & 0x02:
            raise invalid_field(1, 1)  # CMDDT is obsolete in SPC-4: command support data is not offered
        if flags & 0xFC:
            raise invalid_field(1, 7)
        evpd = bool(flags & 0x01)
        if not evpd and page:
            raise invalid_field(2)  # PAGE CODE must be zero for standard data (SPC-4 §6.4.1)
        return cls(evpd, page, alloc)


_REPORT_LUNS = struct.Struct(">BBB3xIBB")  # opcode, rsvd, SELECT REPORT, rsvd, ALLOCATION LENGTH, rsvd, CONTROL


@dataclass(frozen=True, slots=True)
class ReportLunsCdb:
    """REPORT LUNS (SPC-4 §6.33, table 248)."""

    select_report: int
    """SELECT REPORT: 01h asks for the well-known LUs only, 00h and 02h for every LU."""
    allocation_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> ReportLunsCdb:
        """Decode the CDB; ScsiError INVALID FIELD IN CDB for a SELECT REPORT other than 00h-02h or an
        ALLOCATION LENGTH under 16 (SPC-4 §6.33)."""
        _, _, select, alloc, _, _ = _REPORT_LUNS.unpack_from(cdb)
        if select not in (0x00, 0x01, 0x02):
            raise invalid_field(2)
        if alloc < 16:
            raise invalid_field(6)  # SPC-4 §6.33: fewer than 16 bytes is an error
        return cls(select, alloc)


_REQUEST_SENSE = struct.Struct(">BB2xBB")  # opcode, DESC, rsvd, ALLOCATION LENGTH, CONTROL


@dataclass(frozen=True, slots=True)
class RequestSenseCdb:
    """REQUEST SENSE (SPC-4 §6.39, table 294)."""

    desc: bool
    """DESC: descriptor-format sense data wanted."""
    allocation_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> RequestSenseCdb:
        """Decode the CDB; ScsiError INVALID FIELD IN CDB for a reserved bit of byte 1."""
        _, flags, alloc, _ = _REQUEST_SENSE.unpack_from(cdb)
        if flags & 0xFE:
            raise invalid_field(1, 7)
        return cls(bool(flags & 0x01), alloc)


_MODE_SENSE_6 = struct.Struct(">BBBBBB")  # opcode, DBD, PC|PAGE CODE, SUBPAGE CODE, ALLOCATION LENGTH, CONTROL
_MODE_SENSE_10 = struct.Struct(">BBBB3xHB")  # opcode, LLBAA|DBD, PC|PAGE, SUBPAGE, rsvd, ALLOCATION LENGTH, CONTROL


class PageControl(IntEnum):
    """MODE SENSE PC field (SPC-4 §6.11.1, table 99)."""

    CURRENT = 0
    CHANGEABLE = 1
    DEFAULT = 2
    SAVED = 3


@dataclass(frozen=True, slots=True)
class ModeSenseCdb:
    """MODE SENSE(6) (SPC-4 §6.11) and MODE SENSE(10) (§6.12)."""

    ten: bool
    """MODE SENSE(10): 8-byte header, LLBAA possible."""
    dbd: bool
    """DBD: no block descriptors."""
    llbaa: bool
    """LLBAA: a long (16-byte) block descriptor may be returned (MODE SENSE(10) only)."""
    pc: PageControl
    """PC: which values of the pages to report."""
    page_code: int
    subpage_code: int
    allocation_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> ModeSenseCdb:
        """Decode MODE SENSE(6) or (10), told apart by the opcode; ScsiError INVALID FIELD IN CDB for a
        reserved bit of byte 1.  PC, page and subpage are checked when the pages are looked up."""
        if cdb[0] == Opcode.MODE_SENSE_10:
            _, flags, pcpage, sub, alloc, _ = _MODE_SENSE_10.unpack_from(cdb)
            if flags & 0xE7:
                raise invalid_field(1, 7)
            llbaa = bool(flags & 0x10)
        else:
            _, flags, pcpage, sub, alloc, _ = _MODE_SENSE_6.unpack_from(cdb)
            if flags & 0xF7:
                raise invalid_field(1, 7)
            llbaa = False
        return cls(cdb[0] == Opcode.MODE_SENSE_10, bool(flags & 0x08), llbaa, PageControl(pcpage >> 6),
                   pcpage & 0x3F, sub, alloc)


# --- SBC-3 commands ------------------------------------------------------------------------------

_READ_CAPACITY_10 = struct.Struct(">BBIHBB")  # opcode, rsvd|obsolete, LBA, rsvd, PMI, CONTROL
_READ_CAPACITY_16 = struct.Struct(">BBQIBB")  # opcode, SA, LBA, ALLOCATION LENGTH, PMI, CONTROL


@dataclass(frozen=True, slots=True)
class ReadCapacityCdb:
    """READ CAPACITY(10) (SBC-3 §5.15) and READ CAPACITY(16) (SBC-3 §5.16)."""

    lba: int
    """LOGICAL BLOCK ADDRESS: zero unless PMI is set."""
    pmi: bool
    """PMI: asks for the last LBA before a substantial delay (here always the last LBA)."""
    allocation_length: int
    """ALLOCATION LENGTH of READ CAPACITY(16); 8 for READ CAPACITY(10)."""

    @classmethod
    def parse(cls, cdb: bytes) -> ReadCapacityCdb:
        """Decode READ CAPACITY(10) or (16), told apart by the opcode; ScsiError INVALID FIELD IN CDB for
        RELADR (10), a reserved bit beside PMI, or a nonzero LBA with PMI zero (SBC-3 §5.15.1)."""
        if cdb[0] == Opcode.READ_CAPACITY_10:
            _, b1, lba, _, pmi, _ = _READ_CAPACITY_10.unpack_from(cdb)
            if b1 & 0x01:
                raise invalid_field(1, 0)  # obsolete RELADR
            alloc = 8
        else:
            _, _, lba, alloc, pmi, _ = _READ_CAPACITY_16.unpack_from(cdb)
        if pmi & 0xFE:
            raise invalid_field(8 if cdb[0] == Opcode.READ_CAPACITY_10 else 14, 7)
        if not pmi & 0x01 and lba:
            # SBC-3 §5.15.1: with PMI zero the LOGICAL BLOCK ADDRESS field shall be zero.
            raise invalid_field(2)
        return cls(lba, bool(pmi & 0x01), alloc)


_RW6 = struct.Struct(">BBHBB")  # opcode, rsvd|LBA(20:16), LBA(15:0), TRANSFER LENGTH, CONTROL
_RW10 = struct.Struct(">BBIBHB")  # opcode, flags, LBA, GROUP NUMBER, TRANSFER LENGTH, CONTROL
_RW12 = struct.Struct(">BBIIBB")  # opcode, flags, LBA, TRANSFER LENGTH, GROUP NUMBER, CONTROL
_RW16 = struct.Struct(">BBQIBB")  # opcode, flags, LBA, TRANSFER LENGTH, GROUP NUMBER, CONTROL

TRANSFER_LENGTH_OFFSET: dict[int, int] = {0: 4, 1: 7, 5: 6, 4: 10}
"""Byte offset of TRANSFER LENGTH by CDB group code, for field pointers."""


@dataclass(frozen=True, slots=True)
class ReadWriteCdb:
    """READ/WRITE 6/10/12/16 (SBC-3 §5.7-§5.11, §5.27-§5.31)."""

    lba: int
    transfer_length: int
    """In logical blocks (READ(6)/WRITE(6): 0 already turned into 256)."""
    fua: bool
    """FUA: a write is on the medium before GOOD; a read comes from the medium."""
    dpo: bool
    """DPO: a cache retention hint."""
    protect: int
    """RDPROTECT or WRPROTECT."""
    group_number: int

    @classmethod
    def parse(cls, cdb: bytes) -> ReadWriteCdb:
        """Decode the 6-, 10-, 12- or 16-byte layout the opcode's group code selects; ScsiError INVALID
        FIELD IN CDB for the reserved bits of READ(6)/WRITE(6) byte 1 and for RELADR (10, 12).
        Protection, range and transfer length are the handlers' checks."""
        group = cdb[0] >> 5
        if group == 0:
            _, hi, lo, length, _ = _RW6.unpack_from(cdb)
            if hi & 0xE0:
                raise invalid_field(1, 7)  # reserved (formerly the LUN field)
            # SBC-3 §5.8: a TRANSFER LENGTH of zero in READ(6)/WRITE(6) means 256 blocks.
            return cls(((hi & 0x1F) << 16) | lo, length or 256, False, False, 0, 0)
        if group == 1:
            _, flags, lba, grp, length, _ = _RW10.unpack_from(cdb)
        elif group == 5:
            _, flags, lba, length, grp, _ = _RW12.unpack_from(cdb)
        else:
            _, flags, lba, length, grp, _ = _RW16.unpack_from(cdb)
        if flags & 0x01 and group != 4:
            raise invalid_field(1, 0)  # obsolete RELADR (READ(16)/WRITE(16): reserved/DLD2; ignored)
        return cls(lba, length, bool(flags & 0x08), bool(flags & 0x10), flags >> 5, grp & 0x1F)


_SYNC_CACHE_10 = struct.Struct(">BBIBHB")  # opcode, IMMED, LBA, GROUP NUMBER, NUMBER OF BLOCKS, CONTROL
_SYNC_CACHE_16 = struct.Struct(">BBQIBB")  # opcode, IMMED, LBA, NUMBER OF BLOCKS, GROUP NUMBER, CONTROL


@dataclass(frozen=True, slots=True)
class SynchronizeCacheCdb:
    """SYNCHRONIZE CACHE(10) (SBC-3 §5.22) and (16) (§5.23)."""

    lba: int
    number_of_blocks: int
    """0: to the end of the medium."""
    immed: bool
    """IMMED: GOOD may come before the cache is flushed (it does not here, see sbc.synchronize_cache)."""

    @classmethod
    def parse(cls, cdb: bytes) -> SynchronizeCacheCdb:
        """Decode SYNCHRONIZE CACHE(10) or (16), told apart by the opcode; ScsiError INVALID FIELD IN CDB
        for the obsolete RELADR bit."""
        if cdb[0] == Opcode.SYNCHRONIZE_CACHE_16:
            _, flags, lba, blocks, _, _ = _SYNC_CACHE_16.unpack_from(cdb)
        else:
            _, flags, lba, _, blocks, _ = _SYNC_CACHE_10.unpack_from(cdb)
        # SYNC_NV (bit 2) is obsolete in SBC-3 and ignored; bit 0 was RELADR.
        if flags & 0x01:
            raise invalid_field(1, 0)
        return cls(lba, blocks, bool(flags & 0x02))

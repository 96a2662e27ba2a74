"""Operation codes and CDB layouts (SPC-4 §4.2, SBC-3 §5), each declared once."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from sanlab.scsi.sense import invalid_field


class Opcode(IntEnum):
    """SCSI operation codes, named as SPC-4/SBC-3 name them."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    MODE_SELECT_10 = 0x55
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    EXTENDED_COPY = 0x83
    RECEIVE_COPY_RESULTS = 0x84
    COMPARE_AND_WRITE = 0x89
    READ_16 = 0x88
    WRITE_16 = 0x8A
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    READ_12 = 0xA8
    WRITE_12 = 0xAA


class ServiceActionIn16(IntEnum):
    """SERVICE ACTION IN(16) service actions (SBC-3 §5.16, §5.13)."""

    READ_CAPACITY_16 = 0x10
    GET_LBA_STATUS = 0x12


def cdb_length(opcode: int) -> int:
    """CDB length from the group code (SPC-4 §4.2.5.1)."""
    group = opcode >> 5
    return {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(group, 16)


@dataclass(frozen=True, slots=True)
class ReadWrite:
    """READ/WRITE 6/10/12/16 decoded."""

    lba: int
    blocks: int
    fua: bool
    dpo: bool
    protect: int
    """RDPROTECT or WRPROTECT."""


_RW10 = struct.Struct(">BBIBHB")
_RW12 = struct.Struct(">BBIIBB")
_RW16 = struct.Struct(">BBQIBB")


def parse_rw(cdb: bytes) -> ReadWrite:
    """Decode any READ/WRITE CDB; reserved and obsolete bits set are INVALID FIELD IN CDB."""
    op = cdb[0]
    group = op >> 5
    if group == 0:  # 6-byte: 21-bit LBA, length 0 means 256 blocks (SBC-3 §5.8)
        if cdb[1] & 0xE0:
            raise invalid_field(1)
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        return ReadWrite(lba, cdb[4] or 256, False, False, 0)
    if group == 1:
        _, flags, lba, _, blocks, _ = _RW10.unpack_from(cdb)
    elif group == 5:
        _, flags, lba, blocks, _, _ = _RW12.unpack_from(cdb)
    else:
        _, flags, lba, blocks, _, _ = _RW16.unpack_from(cdb)
    if flags & 0x01 and group != 4:
        raise invalid_field(1, 0)  # obsolete RELADR
    return ReadWrite(lba, blocks, bool(flags & 0x08), bool(flags & 0x10), flags >> 5)


def allocation_length(cdb: bytes) -> int:
    """ALLOCATION LENGTH of INQUIRY/MODE SENSE/REPORT LUNS/... by CDB layout."""
    op = cdb[0]
    if op == Opcode.INQUIRY:
        return int.from_bytes(cdb[3:5], "big")
    if op in (Opcode.MODE_SENSE_6, Opcode.REQUEST_SENSE):
        return cdb[4]
    if op == Opcode.MODE_SENSE_10:
        return int.from_bytes(cdb[7:9], "big")
    if op in (Opcode.REPORT_LUNS, Opcode.MAINTENANCE_IN):
        return int.from_bytes(cdb[6:10], "big")
    if op == Opcode.SERVICE_ACTION_IN_16:
        return int.from_bytes(cdb[10:14], "big")
    raise ValueError(f"no allocation length in opcode {op:02x}")

"""Sense data (SPC-4 §4.5) and the exception that carries it.

A handler raises :class:`ScsiError`; the device server turns it into CHECK
CONDITION with sense in the format the logical unit's Control mode page asks
for (D_SENSE, SPC-4 §7.5.8): fixed (70h) or descriptor (72h).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class SenseKey(IntEnum):
    """SPC-4 §4.5.6, table 27."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


class Asc(IntEnum):
    """Additional sense code and qualifier as one 16-bit value (ASC << 8 | ASCQ), SPC-4 annex D."""

    NO_ADDITIONAL_SENSE = 0x0000
    WRITE_ERROR = 0x0C00
    UNRECOVERED_READ_ERROR = 0x1100
    PARAMETER_LIST_LENGTH_ERROR = 0x1A00
    INVALID_COMMAND_OPERATION_CODE = 0x2000
    LBA_OUT_OF_RANGE = 0x2100
    INVALID_FIELD_IN_CDB = 0x2400
    LOGICAL_UNIT_NOT_SUPPORTED = 0x2500
    INVALID_FIELD_IN_PARAMETER_LIST = 0x2600
    WRITE_PROTECTED = 0x2700
    POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED = 0x2900
    POWER_ON_OCCURRED = 0x2901
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = 0x2903
    I_T_NEXUS_LOSS_OCCURRED = 0x2907
    PARAMETERS_CHANGED = 0x2A00
    MODE_PARAMETERS_CHANGED = 0x2A01
    CAPACITY_DATA_HAS_CHANGED = 0x2A09
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = 0x2F00
    SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900
    MEDIUM_NOT_PRESENT = 0x3A00
    INTERNAL_TARGET_FAILURE = 0x4400
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = 0x0E03


FIXED_LEN = 18
_FIXED = struct.Struct(">BBBIBIBBB3s")


def _sks_field_pointer(field_pointer: int, bit: int | None, in_cdb: bool) -> bytes:
    """Sense-key specific bytes for ILLEGAL REQUEST: the offending byte/bit (SPC-4 §4.5.2.4.2)."""
    b0 = 0x80 | (0x40 if in_cdb else 0)
    if bit is not None:
        b0 |= 0x08 | (bit & 7)
    return bytes([b0]) + field_pointer.to_bytes(2, "big")


def build_sense(key: int, asc_ascq: int, *, descriptor: bool = False, information: int | None = None,
                sks: bytes | None = None) -> bytes:
    """Sense data in fixed (70h) or descriptor (72h) format."""
    asc, ascq = asc_ascq >> 8, asc_ascq & 0xFF
    if not descriptor:
        valid = 0x80 if information is not None and information <= 0xFFFFFFFF else 0
        info = (information or 0) & 0xFFFFFFFF if valid else 0
        return _FIXED.pack(0x70 | valid, 0, key & 0xF, info, FIXED_LEN - 8, 0, asc, ascq, 0, sks or bytes(3))
    descs = b""
    if information is not None:
        # Information descriptor, type 00h (SPC-4 §4.5.2.2).
        descs += bytes([0x00, 0x0A, 0x80, 0]) + information.to_bytes(8, "big")
    if sks is not None:
        # Sense key specific descriptor, type 02h (SPC-4 §4.5.2.4).
        descs += bytes([0x02, 0x06, 0, 0]) + sks + b"\0"
    return bytes([0x72, key & 0xF, asc, ascq, 0, 0, 0, len(descs)]) + descs


class ScsiError(Exception):
    """A command ends in CHECK CONDITION with this sense."""

    def __init__(self, key: SenseKey, asc_ascq: int, *, information: int | None = None,
                 field_pointer: int | None = None, bit: int | None = None, in_cdb: bool = True) -> None:
        super().__init__(f"{key.name} {asc_ascq:04x}")
        self.key = key
        self.asc_ascq = asc_ascq
        self.information = information
        self.sks = _sks_field_pointer(field_pointer, bit, in_cdb) if field_pointer is not None else None

    def sense(self, descriptor: bool = False) -> bytes:
        return build_sense(self.key, self.asc_ascq, descriptor=descriptor, information=self.information,
                           sks=self.sks)


def invalid_field(byte: int, bit: int | None = None) -> ScsiError:
    """ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at ``byte`` (and ``bit``)."""
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field_pointer=byte, bit=bit)


@dataclass(frozen=True, slots=True)
class Sense:
    """Decoded sense data (either format)."""

    key: int
    asc: int
    ascq: int
    information: int | None = None
    sks: bytes | None = None
    descriptor: bool = False


def parse_sense(data: bytes) -> Sense:
    """Decode fixed or descriptor sense data."""
    if len(data) < 8:
        raise ValueError("sense data shorter than 8 bytes")
    code = data[0] & 0x7F
    if code in (0x70, 0x71):
        if len(data) < 14:
            raise ValueError("fixed sense shorter than 14 bytes")
        info = int.from_bytes(data[3:7], "big") if data[0] & 0x80 else None
        sks = bytes(data[15:18]) if len(data) >= 18 and data[15] & 0x80 else None
        return Sense(data[2] & 0xF, data[12], data[13], info, sks)
    if code in (0x72, 0x73):
        info = sks = None
        pos, end = 8, min(len(data), 8 + data[7])
        while pos + 2 <= end:
            typ, ln = data[pos], data[pos + 1]
            body = data[pos + 2:pos + 2 + ln]
            if typ == 0x00 and len(body) >= 10:
                info = int.from_bytes(body[2:10], "big")
            elif typ == 0x02 and len(body) >= 5:
                sks = bytes(body[2:5])
            pos += 2 + ln
        return Sense(data[1] & 0xF, data[2], data[3], info, sks, True)
    raise ValueError(f"unknown sense response code {code:02x}")

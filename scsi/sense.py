"""Sense data (SPC-4 §4.5) and the exception that carries it.

A handler raises :class:`ScsiError`; the device server turns it into CHECK
CONDITION with sense in the format the logical unit's Control mode page asks
for (D_SENSE, SPC-4 §7.5.8): fixed (70h, §4.5.3) or descriptor (72h, §4.5.2).
:func:`parse_sense` decodes both, for tests and for the initiator side.
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
    COMPLETED = 0xF


class Asc(IntEnum):
    """Additional sense code and qualifier as one 16-bit value (ASC << 8 | ASCQ), SPC-4 annex D.

    Names follow SPC-4 table D.1 (punctuation dropped).  Where SPC-4 renamed a
    code the older name is kept as an alias.
    """

    NO_ADDITIONAL_SENSE = 0x0000
    PERIPHERAL_DEVICE_WRITE_FAULT = 0x0300
    LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE = 0x0400
    LOGICAL_UNIT_NOT_READY_MANUAL_INTERVENTION_REQUIRED = 0x0403
    SANITIZE_IN_PROGRESS = 0x041B
    """LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS."""
    UNREACHABLE_COPY_TARGET = 0x0804
    COPY_TARGET_DEVICE_NOT_REACHABLE = 0x0D02
    WRITE_ERROR = 0x0C00
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = 0x0E03
    LOGICAL_BLOCK_GUARD_CHECK_FAILED = 0x1001
    UNRECOVERED_READ_ERROR = 0x1100
    PARAMETER_LIST_LENGTH_ERROR = 0x1A00
    MISCOMPARE_DURING_VERIFY_OPERATION = 0x1D00
    INVALID_COMMAND_OPERATION_CODE = 0x2000
    LBA_OUT_OF_RANGE = 0x2100
    """LOGICAL BLOCK ADDRESS OUT OF RANGE."""
    INVALID_FIELD_IN_CDB = 0x2400
    LOGICAL_UNIT_NOT_SUPPORTED = 0x2500
    INVALID_FIELD_IN_PARAMETER_LIST = 0x2600
    PARAMETER_VALUE_INVALID = 0x2602
    TOO_MANY_TARGET_DESCRIPTORS = 0x2606
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = 0x2607
    TOO_MANY_SEGMENT_DESCRIPTORS = 0x2608
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = 0x2609
    WRITE_PROTECTED = 0x2700
    LOGICAL_UNIT_SOFTWARE_WRITE_PROTECTED = 0x2702
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = 0x2707
    """A thin volume's store had no room for a write (SBC-4 §4.7.3.7)."""
    NOT_READY_TO_READY_CHANGE_MEDIUM_MAY_HAVE_CHANGED = 0x2800
    POWER_ON_RESET_OCCURRED = 0x2900
    """POWER ON, RESET, OR BUS DEVICE RESET OCCURRED."""
    POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED = 0x2900
    POWER_ON_OCCURRED = 0x2901
    SCSI_BUS_RESET_OCCURRED = 0x2902
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = 0x2903
    DEVICE_INTERNAL_RESET = 0x2904
    I_T_NEXUS_LOSS_OCCURRED = 0x2907
    PARAMETERS_CHANGED = 0x2A00
    MODE_PARAMETERS_CHANGED = 0x2A01
    RESERVATIONS_PREEMPTED = 0x2A03
    RESERVATIONS_RELEASED = 0x2A04
    REGISTRATIONS_PREEMPTED = 0x2A05
    CAPACITY_DATA_HAS_CHANGED = 0x2A09
    COMMAND_SEQUENCE_ERROR = 0x2C00
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = 0x2F00
    COMMANDS_CLEARED_BY_DEVICE_SERVER = 0x2F02
    SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900
    MEDIUM_NOT_PRESENT = 0x3A00
    MEDIUM_REMOVAL_PREVENTED = 0x5302
    INQUIRY_DATA_HAS_CHANGED = 0x3F03
    REPORTED_LUNS_DATA_HAS_CHANGED = 0x3F0E
    INTERNAL_TARGET_FAILURE = 0x4400
    INVALID_MESSAGE_ERROR = 0x4900
    PROTOCOL_SERVICE_CRC_ERROR = 0x4705
    """A data digest failed (RFC 7143 §7.8, §11.17.1)."""
    DATA_PHASE_ERROR = 0x4B00
    INSUFFICIENT_REGISTRATION_RESOURCES = 0x5504


FIXED_LEN = 18
"""Length of the fixed-format sense data we build (ADDITIONAL SENSE LENGTH 0Ah)."""

FIXED_FORMAT = struct.Struct(">BBBIBIBBB3s")
"""Fixed format (SPC-4 §4.5.3, table 26): RESPONSE CODE|VALID, obsolete, flags|SENSE KEY,
INFORMATION, ADDITIONAL SENSE LENGTH, COMMAND-SPECIFIC INFORMATION, ASC, ASCQ, FRU code,
SENSE KEY SPECIFIC."""

DESCRIPTOR_HEADER = struct.Struct(">BBBB3xB")
"""Descriptor format header (SPC-4 §4.5.2.1, table 12): RESPONSE CODE, SENSE KEY, ASC, ASCQ,
reserved, ADDITIONAL SENSE LENGTH."""

INFORMATION_DESCRIPTOR = struct.Struct(">BBB1xQ")
"""Information sense data descriptor, type 00h (SPC-4 §4.5.2.2): type, length 0Ah, VALID, INFORMATION."""

SKS_DESCRIPTOR = struct.Struct(">BB2x3s1x")
"""Sense key specific sense data descriptor, type 02h (SPC-4 §4.5.2.4): type, length 06h, SKS."""

FIELD_POINTER = struct.Struct(">BH")
"""Field pointer sense-key specific bytes (SPC-4 §4.5.2.4.2, table 18)."""

RESPONSE_FIXED_CURRENT = 0x70
RESPONSE_DESCRIPTOR_CURRENT = 0x72


@dataclass(frozen=True, slots=True)
class FieldPointer:
    """Sense-key specific field pointer for ILLEGAL REQUEST (SPC-4 §4.5.2.4.2).

    Points at the byte (and optionally the bit) of the CDB or parameter list that
    the device server rejected.
    """

    field_pointer: int
    """Byte offset of the offending field (its most significant byte)."""
    bit_pointer: int | None = None
    """Bit (7..0) of the offending field's most significant bit; None: BPV=0."""
    in_cdb: bool = True
    """C/D: 1 the error is in the CDB, 0 in the parameter data."""

    def encode(self) -> bytes:
        """The three SENSE KEY SPECIFIC bytes, SKSV set."""
        b0 = 0x80 | (0x40 if self.in_cdb else 0)
        if self.bit_pointer is not None:
            b0 |= 0x08 | (self.bit_pointer & 7)  # BPV
        return FIELD_POINTER.pack(b0, self.field_pointer & 0xFFFF)

    @classmethod
    def decode(cls, sks: bytes) -> FieldPointer | None:
        """Decode three SENSE KEY SPECIFIC bytes; None when SKSV is clear."""
        b0, fp = FIELD_POINTER.unpack(sks[:3])
        if not b0 & 0x80:
            return None
        return cls(fp, (b0 & 7) if b0 & 0x08 else None, bool(b0 & 0x40))


def build_sense(key: int, asc_ascq: int, *, descriptor: bool = False, information: int | None = None,
                field_pointer: FieldPointer | None = None, sks: bytes | None = None) -> bytes:
    """Current-error sense data in fixed (70h) or descriptor (72h) format.

    ``information`` fills the INFORMATION field (fixed: only when it fits 32 bits,
    else VALID stays 0, SPC-4 §4.5.3); ``field_pointer`` (or raw ``sks`` bytes)
    fills the sense-key specific field with SKSV set.
    """
    asc, ascq = (asc_ascq >> 8) & 0xFF, asc_ascq & 0xFF
    if field_pointer is not None:
        sks = field_pointer.encode()
    if not descriptor:
        valid = information is not None and 0 <= information <= 0xFFFFFFFF
        return FIXED_FORMAT.pack(RESPONSE_FIXED_CURRENT | (0x80 if valid else 0), 0, key & 0xF,
                                 information if valid and information is not None else 0,
                                 FIXED_LEN - 8, 0, asc, ascq, 0, sks or bytes(3))
    descs = bytearray()
    if information is not None:
        descs += INFORMATION_DESCRIPTOR.pack(0x00, 0x0A, 0x80, information & 0xFFFFFFFFFFFFFFFF)
    if sks is not None:
        descs += SKS_DESCRIPTOR.pack(0x02, 0x06, sks)
    return DESCRIPTOR_HEADER.pack(RESPONSE_DESCRIPTOR_CURRENT, key & 0xF, asc, ascq, len(descs)) + bytes(descs)


class ScsiError(Exception):
    """A command ends in CHECK CONDITION with this sense.

    Raised by CDB parsers and handlers; the device server is the one place that
    turns it into a :class:`~sanlab.scsi.task.ScsiResult`.
    """

    def __init__(self, key: SenseKey, asc_ascq: int, *, information: int | None = None,
                 field_pointer: int | None = None, bit: int | None = None, in_cdb: bool = True) -> None:
        super().__init__(f"{key.name} {asc_ascq:04x}")
        self.key = key
        """Sense key."""
        self.asc_ascq = asc_ascq
        """ASC << 8 | ASCQ."""
        self.information = information
        """INFORMATION field, or None."""
        self.field_pointer = (FieldPointer(field_pointer, bit, in_cdb) if field_pointer is not None else None)
        """Sense-key specific field pointer (ILLEGAL REQUEST), or None."""

    def sense(self, descriptor: bool = False) -> bytes:
        """The sense data in fixed (default) or descriptor format."""
        return build_sense(self.key, self.asc_ascq, descriptor=descriptor, information=self.information,
                           field_pointer=self.field_pointer)


def invalid_field(byte: int, bit: int | None = None) -> ScsiError:
    """ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at ``byte`` (and ``bit``)."""
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field_pointer=byte, bit=bit)


def invalid_parameter(byte: int, bit: int | None = None) -> ScsiError:
    """ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at ``byte`` (and ``bit``)."""
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, field_pointer=byte,
                     bit=bit, in_cdb=False)


@dataclass(frozen=True, slots=True)
class Sense:
    """Decoded sense data (either format)."""

    key: int
    asc: int
    ascq: int
    information: int | None = None
    """INFORMATION when VALID (fixed) or an information descriptor (descriptor format) is present."""
    sks: bytes | None = None
    """SENSE KEY SPECIFIC bytes when SKSV is set."""
    descriptor: bool = False
    """Descriptor format (72h/73h)."""
    deferred: bool = False
    """Deferred error (71h/73h)."""

    @property
    def asc_ascq(self) -> int:
        """ASC << 8 | ASCQ."""
        return (self.asc << 8) | self.ascq

    @property
    def field_pointer(self) -> FieldPointer | None:
        """The sense-key specific bytes read as a field pointer."""
        return FieldPointer.decode(self.sks) if self.sks is not None else None


def parse_sense(data: bytes | bytearray | memoryview) -> Sense:
    """Decode fixed or descriptor sense data; :class:`ValueError` when it is neither."""
    data = bytes(data)
    if len(data) < 8:
        raise ValueError("sense data shorter than 8 bytes")
    code = data[0] & 0x7F
    if code in (0x70, 0x71):
        if len(data) < 14:
            raise ValueError("fixed sense shorter than 14 bytes")
        fixed_info = int.from_bytes(data[3:7], "big") if data[0] & 0x80 else None
        fixed_sks = data[15:18] if len(data) >= 18 and data[15] & 0x80 else None
        return Sense(data[2] & 0xF, data[12], data[13], fixed_info, fixed_sks, False, code == 0x71)
    if code in (0x72, 0x73):
        info: int | None = None
        sks: bytes | None = None
        pos, end = 8, min(len(data), 8 + data[7])
        while pos + 2 <= end:
            typ, ln = data[pos], data[pos + 1]
            body = data[pos + 2:pos + 2 + ln]
            if typ == 0x00 and len(body) >= 10 and body[0] & 0x80:
                info = int.from_bytes(body[2:10], "big")
            elif typ == 0x02 and len(body) >= 5 and body[2] & 0x80:
                sks = body[2:5]
            pos += 2 + ln
        return Sense(data[1] & 0xF, data[2], data[3], info, sks, True, code == 0x73)
    raise ValueError(f"unknown sense response code {code:02x}")

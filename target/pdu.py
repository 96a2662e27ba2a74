"""iSCSI PDU codec (RFC 7143 §11): every opcode's Basic Header Segment, AHS,
data segment padding and CRC32C digests.

Sans-IO: :class:`PduFramer` is fed bytes and yields :class:`RawPdu` frames;
:func:`decode` turns a frame into the opcode's dataclass; :func:`encode` turns a
dataclass back into the buffers to write (header, data, padding + digests),
so the target and the initiator share one codec.

Each BHS layout is declared once: a ``struct.Struct`` next to the dataclass that
names the fields as RFC 7143 does.  Bytes 4-7 (TotalAHSLength and
DataSegmentLength) are common to every PDU and are computed by :func:`encode`
from the AHS and data actually carried.

Why one module of ~1,000 lines: it is the one place the wire format of RFC 7143
§11 is declared — eighteen PDU layouts, each a short struct + dataclass pair
read side by side with the RFC's figures, and the framer that must agree with
them on lengths, padding and digests.  Splitting the layouts would scatter that
table without making any part simpler; the framer and digests are the next
candidates to move out if the module grows.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar, Iterator, TypeAlias

import crc32c as _crc32c

from sanlab.target.errors import ProtocolError, RejectReason

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF
"""The reserved ITT/TTT value (RFC 7143 §11.1: 0xffffffff)."""

Buffer: TypeAlias = bytes | bytearray | memoryview


def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC32C (Castagnoli) as iSCSI digests use it, RFC 7143 §13.1 / Appendix A."""
    return int(_crc32c.crc32c(data, value))


def digest_bytes(*parts: Buffer) -> bytes:
    """The 4-byte digest of the concatenation of ``parts``.

    RFC 7143 §11.1 places digests as the CRC's 32-bit value in little-endian
    byte order (the CRC is computed over the bits as transmitted, so its bytes
    go out least significant first).
    """
    value = 0
    for p in parts:
        value = _crc32c.crc32c(p, value)
    return struct.pack("<I", value)


def pad_len(n: int) -> int:
    """Bytes of padding after a segment of ``n`` bytes (to a 4-byte boundary)."""
    return -n & 3


class Opcode(IntEnum):
    """PDU opcodes, RFC 7143 §11.1.1."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    SCSI_DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    SCSI_DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


INITIATOR_OPCODES = frozenset(op for op in Opcode if op < 0x20)
TARGET_OPCODES = frozenset(op for op in Opcode if op >= 0x20)


class TmfFunction(IntEnum):
    """Task management function codes, RFC 7143 §11.5.1."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(IntEnum):
    """Task management response codes, RFC 7143 §11.6.1."""

    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED = 4
    TMF_NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    FUNCTION_REJECTED = 255


class LogoutReason(IntEnum):
    """Logout Request reason codes, RFC 7143 §11.14.1."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


class LogoutResponseCode(IntEnum):
    """Logout Response codes, RFC 7143 §11.15.1."""

    SUCCESS = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class AsyncEvent(IntEnum):
    """Asynchronous Message events, RFC 7143 §11.9.1."""

    SCSI_ASYNC_EVENT = 0
    LOGOUT_REQUESTED = 1
    CONNECTION_DROP = 2
    SESSION_DROP = 3
    NEGOTIATION_REQUEST = 4
    TASK_TERMINATION = 5
    VENDOR_SPECIFIC = 255


class LoginStage(IntEnum):
    """CSG/NSG values, RFC 7143 §11.12.3."""

    SECURITY_NEGOTIATION = 0
    LOGIN_OPERATIONAL_NEGOTIATION = 1
    FULL_FEATURE_PHASE = 3


class AhsType(IntEnum):
    """AHS types, RFC 7143 §11.2.2.1."""

    EXTENDED_CDB = 1
    BIDI_READ_EDTL = 2


# Bit flags in byte 1 that several PDUs share.
F_BIT = 0x80
C_BIT = 0x40  # Login/Text "continue"
I_BIT = 0x40  # byte 0 "immediate delivery"


def _u(bits: int) -> Any:
    """Field metadata giving the width in bits, used by property tests."""
    return {"bits": bits}


@dataclass(slots=True)
class Pdu:
    """Fields every PDU has: the AHS and the data segment it carries."""

    OPCODE: ClassVar[Opcode]
    LAYOUT: ClassVar[struct.Struct]

    def bhs(self) -> bytes:  # pragma: no cover - overridden
        """The 48-byte Basic Header Segment of this PDU, packed with the class's LAYOUT (RFC 7143
        §11.2); AHS and data segment go after it (see :func:`encode`)."""
        raise NotImplementedError

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "Pdu":  # pragma: no cover
        """The PDU whose BHS is ``b`` (its opcode already chosen this class), with the AHS and data
        segment the framer cut after it."""
        raise NotImplementedError


def _lengths(ahs: bytes, data: Buffer) -> int:
    """Bytes 4-7 of the BHS: TotalAHSLength (4-byte words) and DataSegmentLength."""
    return ((len(ahs) // 4) << 24) | len(data)


# --- initiator PDUs ---------------------------------------------------------


@dataclass(slots=True)
class NopOut(Pdu):
    """NOP-Out, RFC 7143 §11.18."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIII16x")
    immediate: bool = False
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    cmdsn: int = field(default=0, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE | (I_BIT if self.immediate else 0), F_BIT, 0,
                                _lengths(self.ahs, self.data), self.lun, self.initiator_task_tag,
                                self.target_transfer_tag, self.cmdsn, self.expstatsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "NopOut":
        """Decode a NopOut BHS with the AHS and data segment that followed it."""
        b0, _, _, _, lun, itt, ttt, cmdsn, expstatsn = cls.LAYOUT.unpack_from(b)
        return cls(bool(b0 & I_BIT), lun, itt, ttt, cmdsn, expstatsn, ahs, data)


@dataclass(slots=True)
class ScsiCommand(Pdu):
    """SCSI Command, RFC 7143 §11.3."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_COMMAND
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIII16s")
    immediate: bool = False
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = field(default=1, metadata=_u(3))
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    expected_data_transfer_length: int = field(default=0, metadata=_u(32))
    cmdsn: int = field(default=0, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    cdb: bytes = bytes(16)
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = ((F_BIT if self.final else 0) | (0x40 if self.read else 0)
                 | (0x20 if self.write else 0) | (self.attr & 7))
        return self.LAYOUT.pack(self.OPCODE | (I_BIT if self.immediate else 0), flags, 0,
                                _lengths(self.ahs, self.data), self.lun, self.initiator_task_tag,
                                self.expected_data_transfer_length, self.cmdsn, self.expstatsn,
                                self.cdb[:16].ljust(16, b"\0"))

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "ScsiCommand":
        """Decode a ScsiCommand BHS with the AHS and data segment that followed it."""
        b0, b1, _, _, lun, itt, edtl, cmdsn, expstatsn, cdb = cls.LAYOUT.unpack_from(b)
        # Comparisons rather than bool() calls: one of these per SCSI command.
        return cls(b0 & I_BIT != 0, b1 & F_BIT != 0, b1 & 0x40 != 0, b1 & 0x20 != 0, b1 & 7,
                   lun, itt, edtl, cmdsn, expstatsn, cdb, ahs, data)

    def full_cdb(self) -> bytes:
        """The CDB including an Extended CDB AHS (RFC 7143 §11.3.5) when present."""
        for ahs_type, _, value in iter_ahs(self.ahs):
            if ahs_type == AhsType.EXTENDED_CDB:
                return self.cdb + value
        return self.cdb

    def bidi_read_edtl(self) -> int | None:
        """Bidirectional Read Expected Data Transfer Length AHS (§11.3.6), if present."""
        for ahs_type, _, value in iter_ahs(self.ahs):
            if ahs_type == AhsType.BIDI_READ_EDTL and len(value) >= 4:
                return int.from_bytes(value[:4], "big")
        return None


@dataclass(slots=True)
class TaskMgmtRequest(Pdu):
    """Task Management Function Request, RFC 7143 §11.5."""

    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_REQUEST
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIIIII8x")
    immediate: bool = True
    function: int = field(default=TmfFunction.ABORT_TASK, metadata=_u(7))
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    referenced_task_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    cmdsn: int = field(default=0, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    refcmdsn: int = field(default=0, metadata=_u(32))
    expdatasn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE | (I_BIT if self.immediate else 0), F_BIT | (self.function & 0x7F),
                                0, _lengths(self.ahs, self.data), self.lun, self.initiator_task_tag,
                                self.referenced_task_tag, self.cmdsn, self.expstatsn, self.refcmdsn,
                                self.expdatasn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "TaskMgmtRequest":
        """Decode a TaskMgmtRequest BHS with the AHS and data segment that followed it."""
        b0, b1, _, _, lun, itt, rtt, cmdsn, expstatsn, refcmdsn, expdatasn = cls.LAYOUT.unpack_from(b)
        return cls(bool(b0 & I_BIT), b1 & 0x7F, lun, itt, rtt, cmdsn, expstatsn, refcmdsn, expdatasn, ahs, data)


@dataclass(slots=True)
class LoginRequest(Pdu):
    """Login Request, RFC 7143 §11.12 (always immediate)."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBBI6sHIHHII16x")
    transit: bool = False
    cont: bool = False
    csg: int = field(default=0, metadata=_u(2))
    nsg: int = field(default=0, metadata=_u(2))
    version_max: int = field(default=0, metadata=_u(8))
    version_min: int = field(default=0, metadata=_u(8))
    isid: int = field(default=0, metadata=_u(48))
    tsih: int = field(default=0, metadata=_u(16))
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    cid: int = field(default=0, metadata=_u(16))
    cmdsn: int = field(default=0, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = (0x80 if self.transit else 0) | (0x40 if self.cont else 0) | ((self.csg & 3) << 2) | (self.nsg & 3)
        return self.LAYOUT.pack(self.OPCODE | I_BIT, flags, self.version_max, self.version_min,
                                _lengths(self.ahs, self.data), self.isid.to_bytes(6, "big"), self.tsih,
                                self.initiator_task_tag, self.cid, 0, self.cmdsn, self.expstatsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "LoginRequest":
        """Decode a LoginRequest BHS with the AHS and data segment that followed it."""
        _, b1, vmax, vmin, _, isid, tsih, itt, cid, _, cmdsn, expstatsn = cls.LAYOUT.unpack_from(b)
        return cls(bool(b1 & 0x80), bool(b1 & 0x40), (b1 >> 2) & 3, b1 & 3, vmax, vmin,
                   int.from_bytes(isid, "big"), tsih, itt, cid, cmdsn, expstatsn, ahs, data)


@dataclass(slots=True)
class TextRequest(Pdu):
    """Text Request, RFC 7143 §11.10."""

    OPCODE: ClassVar[Opcode] = Opcode.TEXT_REQUEST
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIII16x")
    immediate: bool = False
    final: bool = True
    cont: bool = False
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    cmdsn: int = field(default=0, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = (F_BIT if self.final else 0) | (C_BIT if self.cont else 0)
        return self.LAYOUT.pack(self.OPCODE | (I_BIT if self.immediate else 0), flags, 0,
                                _lengths(self.ahs, self.data), self.lun, self.initiator_task_tag,
                                self.target_transfer_tag, self.cmdsn, self.expstatsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "TextRequest":
        """Decode a TextRequest BHS with the AHS and data segment that followed it."""
        b0, b1, _, _, lun, itt, ttt, cmdsn, expstatsn = cls.LAYOUT.unpack_from(b)
        return cls(bool(b0 & I_BIT), bool(b1 & F_BIT), bool(b1 & C_BIT), lun, itt, ttt, cmdsn, expstatsn, ahs, data)


@dataclass(slots=True)
class DataOut(Pdu):
    """SCSI Data-Out, RFC 7143 §11.7."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_OUT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sII4xI4xII4x")
    final: bool = False
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    datasn: int = field(default=0, metadata=_u(32))
    buffer_offset: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT if self.final else 0, 0, _lengths(self.ahs, self.data),
                                self.lun, self.initiator_task_tag, self.target_transfer_tag, self.expstatsn,
                                self.datasn, self.buffer_offset)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "DataOut":
        """Decode a DataOut BHS with the AHS and data segment that followed it."""
        _, b1, _, _, lun, itt, ttt, expstatsn, datasn, off = cls.LAYOUT.unpack_from(b)
        return cls(bool(b1 & F_BIT), lun, itt, ttt, expstatsn, datasn, off, ahs, data)


@dataclass(slots=True)
class LogoutRequest(Pdu):
    """Logout Request, RFC 7143 §11.14."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8xIH2xII16x")
    immediate: bool = False
    reason: int = field(default=LogoutReason.CLOSE_SESSION, metadata=_u(7))
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    cid: int = field(default=0, metadata=_u(16))
    cmdsn: int = field(default=0, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE | (I_BIT if self.immediate else 0), F_BIT | (self.reason & 0x7F), 0,
                                _lengths(self.ahs, self.data), self.initiator_task_tag, self.cid, self.cmdsn,
                                self.expstatsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "LogoutRequest":
        """Decode a LogoutRequest BHS with the AHS and data segment that followed it."""
        b0, b1, _, _, itt, cid, cmdsn, expstatsn = cls.LAYOUT.unpack_from(b)
        return cls(bool(b0 & I_BIT), b1 & 0x7F, itt, cid, cmdsn, expstatsn, ahs, data)


@dataclass(slots=True)
class SnackRequest(Pdu):
    """SNACK Request, RFC 7143 §11.16 (we run ErrorRecoveryLevel 0 and reject it)."""

    OPCODE: ClassVar[Opcode] = Opcode.SNACK_REQUEST
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sII4xI8xII")
    type: int = field(default=0, metadata=_u(4))
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    expstatsn: int = field(default=0, metadata=_u(32))
    begrun: int = field(default=0, metadata=_u(32))
    runlength: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT | (self.type & 0x0F), 0, _lengths(self.ahs, self.data),
                                self.lun, self.initiator_task_tag, self.target_transfer_tag, self.expstatsn,
                                self.begrun, self.runlength)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "SnackRequest":
        """Decode a SnackRequest BHS with the AHS and data segment that followed it."""
        _, b1, _, _, lun, itt, ttt, expstatsn, begrun, runlength = cls.LAYOUT.unpack_from(b)
        return cls(b1 & 0x0F, lun, itt, ttt, expstatsn, begrun, runlength, ahs, data)


# --- target PDUs ------------------------------------------------------------


@dataclass(slots=True)
class NopIn(Pdu):
    """NOP-In, RFC 7143 §11.19."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP_IN
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIIII12x")
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT, 0, _lengths(self.ahs, self.data), self.lun,
                                self.initiator_task_tag, self.target_transfer_tag, self.statsn, self.expcmdsn,
                                self.maxcmdsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "NopIn":
        """Decode a NopIn BHS with the AHS and data segment that followed it."""
        _, _, _, _, lun, itt, ttt, statsn, expcmdsn, maxcmdsn = cls.LAYOUT.unpack_from(b)
        return cls(lun, itt, ttt, statsn, expcmdsn, maxcmdsn, ahs, data)


@dataclass(slots=True)
class ScsiResponse(Pdu):
    """SCSI Response, RFC 7143 §11.4.  ``data`` holds SenseLength + sense (§11.4.7)."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_RESPONSE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBBI8xIIIIIIII")
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    overflow: bool = False
    underflow: bool = False
    response: int = field(default=0, metadata=_u(8))
    status: int = field(default=0, metadata=_u(8))
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    snack_tag: int = field(default=0, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    expdatasn: int = field(default=0, metadata=_u(32))
    bidi_residual_count: int = field(default=0, metadata=_u(32))
    residual_count: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = (F_BIT | (0x10 if self.bidi_overflow else 0) | (0x08 if self.bidi_underflow else 0)
                 | (0x04 if self.overflow else 0) | (0x02 if self.underflow else 0))
        return self.LAYOUT.pack(self.OPCODE, flags, self.response, self.status, _lengths(self.ahs, self.data),
                                self.initiator_task_tag, self.snack_tag, self.statsn, self.expcmdsn,
                                self.maxcmdsn, self.expdatasn, self.bidi_residual_count, self.residual_count)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "ScsiResponse":
        """Decode a ScsiResponse BHS with the AHS and data segment that followed it."""
        (_, b1, resp, status, _, itt, snack, statsn, expcmdsn, maxcmdsn, expdatasn, brc,
         rc) = cls.LAYOUT.unpack_from(b)
        return cls(bool(b1 & 0x10), bool(b1 & 0x08), bool(b1 & 0x04), bool(b1 & 0x02), resp, status, itt, snack,
                   statsn, expcmdsn, maxcmdsn, expdatasn, brc, rc, ahs, data)

    def sense(self) -> bytes:
        """The sense data carried in the data segment (without SenseLength)."""
        if len(self.data) < 2:
            return b""
        n = int.from_bytes(self.data[:2], "big")
        return bytes(self.data[2:2 + n])


@dataclass(slots=True)
class TaskMgmtResponse(Pdu):
    """Task Management Function Response, RFC 7143 §11.6."""

    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_RESPONSE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBxI8xI4xIII12x")
    response: int = field(default=0, metadata=_u(8))
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT, self.response, _lengths(self.ahs, self.data),
                                self.initiator_task_tag, self.statsn, self.expcmdsn, self.maxcmdsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "TaskMgmtResponse":
        """Decode a TaskMgmtResponse BHS with the AHS and data segment that followed it."""
        _, _, resp, _, itt, statsn, expcmdsn, maxcmdsn = cls.LAYOUT.unpack_from(b)
        return cls(resp, itt, statsn, expcmdsn, maxcmdsn, ahs, data)


@dataclass(slots=True)
class LoginResponse(Pdu):
    """Login Response, RFC 7143 §11.13."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBBI6sHI4xIIIBB10x")
    transit: bool = False
    cont: bool = False
    csg: int = field(default=0, metadata=_u(2))
    nsg: int = field(default=0, metadata=_u(2))
    version_max: int = field(default=0, metadata=_u(8))
    version_active: int = field(default=0, metadata=_u(8))
    isid: int = field(default=0, metadata=_u(48))
    tsih: int = field(default=0, metadata=_u(16))
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    status_class: int = field(default=0, metadata=_u(8))
    status_detail: int = field(default=0, metadata=_u(8))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = (0x80 if self.transit else 0) | (0x40 if self.cont else 0) | ((self.csg & 3) << 2) | (self.nsg & 3)
        return self.LAYOUT.pack(self.OPCODE, flags, self.version_max, self.version_active,
                                _lengths(self.ahs, self.data), self.isid.to_bytes(6, "big"), self.tsih,
                                self.initiator_task_tag, self.statsn, self.expcmdsn, self.maxcmdsn,
                                self.status_class, self.status_detail)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "LoginResponse":
        """Decode a LoginResponse BHS with the AHS and data segment that followed it."""
        (_, b1, vmax, vact, _, isid, tsih, itt, statsn, expcmdsn, maxcmdsn, sclass,
         sdetail) = cls.LAYOUT.unpack_from(b)
        return cls(bool(b1 & 0x80), bool(b1 & 0x40), (b1 >> 2) & 3, b1 & 3, vmax, vact,
                   int.from_bytes(isid, "big"), tsih, itt, statsn, expcmdsn, maxcmdsn, sclass, sdetail, ahs, data)


@dataclass(slots=True)
class TextResponse(Pdu):
    """Text Response, RFC 7143 §11.11."""

    OPCODE: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIIII12x")
    final: bool = True
    cont: bool = False
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = (F_BIT if self.final else 0) | (C_BIT if self.cont else 0)
        return self.LAYOUT.pack(self.OPCODE, flags, 0, _lengths(self.ahs, self.data), self.lun,
                                self.initiator_task_tag, self.target_transfer_tag, self.statsn, self.expcmdsn,
                                self.maxcmdsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "TextResponse":
        """Decode a TextResponse BHS with the AHS and data segment that followed it."""
        _, b1, _, _, lun, itt, ttt, statsn, expcmdsn, maxcmdsn = cls.LAYOUT.unpack_from(b)
        return cls(bool(b1 & F_BIT), bool(b1 & C_BIT), lun, itt, ttt, statsn, expcmdsn, maxcmdsn, ahs, data)


@dataclass(slots=True)
class DataIn(Pdu):
    """SCSI Data-In, RFC 7143 §11.7; with ``status_present`` it also ends the command (phase collapse)."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_IN
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBBI8sIIIIIIII")
    final: bool = False
    acknowledge: bool = False
    overflow: bool = False
    underflow: bool = False
    status_present: bool = False
    status: int = field(default=0, metadata=_u(8))
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    target_transfer_tag: int = field(default=RESERVED_TAG, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    datasn: int = field(default=0, metadata=_u(32))
    buffer_offset: int = field(default=0, metadata=_u(32))
    residual_count: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        flags = ((F_BIT if self.final else 0) | (0x40 if self.acknowledge else 0) | (0x04 if self.overflow else 0)
                 | (0x02 if self.underflow else 0) | (0x01 if self.status_present else 0))
        return self.LAYOUT.pack(self.OPCODE, flags, 0, self.status, _lengths(self.ahs, self.data), self.lun,
                                self.initiator_task_tag, self.target_transfer_tag, self.statsn, self.expcmdsn,
                                self.maxcmdsn, self.datasn, self.buffer_offset, self.residual_count)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "DataIn":
        """Decode a DataIn BHS with the AHS and data segment that followed it."""
        (_, b1, _, status, _, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, datasn, off,
         rc) = cls.LAYOUT.unpack_from(b)
        return cls(bool(b1 & F_BIT), bool(b1 & 0x40), bool(b1 & 0x04), bool(b1 & 0x02), bool(b1 & 0x01), status,
                   lun, itt, ttt, statsn, expcmdsn, maxcmdsn, datasn, off, rc, ahs, data)


@dataclass(slots=True)
class LogoutResponse(Pdu):
    """Logout Response, RFC 7143 §11.15."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBxI8xI4xIII4xHH4x")
    response: int = field(default=0, metadata=_u(8))
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    time2wait: int = field(default=0, metadata=_u(16))
    time2retain: int = field(default=0, metadata=_u(16))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT, self.response, _lengths(self.ahs, self.data),
                                self.initiator_task_tag, self.statsn, self.expcmdsn, self.maxcmdsn,
                                self.time2wait, self.time2retain)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "LogoutResponse":
        """Decode a LogoutResponse BHS with the AHS and data segment that followed it."""
        _, _, resp, _, itt, statsn, expcmdsn, maxcmdsn, t2w, t2r = cls.LAYOUT.unpack_from(b)
        return cls(resp, itt, statsn, expcmdsn, maxcmdsn, t2w, t2r, ahs, data)


@dataclass(slots=True)
class R2T(Pdu):
    """Ready To Transfer, RFC 7143 §11.8."""

    OPCODE: ClassVar[Opcode] = Opcode.R2T
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sIIIIIIII")
    lun: bytes = bytes(8)
    initiator_task_tag: int = field(default=0, metadata=_u(32))
    target_transfer_tag: int = field(default=0, metadata=_u(32))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    r2tsn: int = field(default=0, metadata=_u(32))
    buffer_offset: int = field(default=0, metadata=_u(32))
    desired_data_transfer_length: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT, 0, _lengths(self.ahs, self.data), self.lun,
                                self.initiator_task_tag, self.target_transfer_tag, self.statsn, self.expcmdsn,
                                self.maxcmdsn, self.r2tsn, self.buffer_offset, self.desired_data_transfer_length)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "R2T":
        """Decode a R2T BHS with the AHS and data segment that followed it."""
        _, _, _, _, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn, off, ddtl = cls.LAYOUT.unpack_from(b)
        return cls(lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn, off, ddtl, ahs, data)


@dataclass(slots=True)
class AsyncMessage(Pdu):
    """Asynchronous Message, RFC 7143 §11.9 (ITT is always 0xffffffff)."""

    OPCODE: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHI8sI4xIIIBBHHH4x")
    lun: bytes = bytes(8)
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    async_event: int = field(default=0, metadata=_u(8))
    async_vcode: int = field(default=0, metadata=_u(8))
    parameter1: int = field(default=0, metadata=_u(16))
    parameter2: int = field(default=0, metadata=_u(16))
    parameter3: int = field(default=0, metadata=_u(16))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT, 0, _lengths(self.ahs, self.data), self.lun, RESERVED_TAG,
                                self.statsn, self.expcmdsn, self.maxcmdsn, self.async_event, self.async_vcode,
                                self.parameter1, self.parameter2, self.parameter3)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "AsyncMessage":
        """Decode a AsyncMessage BHS with the AHS and data segment that followed it."""
        _, _, _, _, lun, _, statsn, expcmdsn, maxcmdsn, ev, vcode, p1, p2, p3 = cls.LAYOUT.unpack_from(b)
        return cls(lun, statsn, expcmdsn, maxcmdsn, ev, vcode, p1, p2, p3, ahs, data)


@dataclass(slots=True)
class Reject(Pdu):
    """Reject, RFC 7143 §11.17; ``data`` is the rejected PDU's BHS."""

    OPCODE: ClassVar[Opcode] = Opcode.REJECT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBBxI8xI4xIIII8x")
    reason: int = field(default=RejectReason.PROTOCOL_ERROR, metadata=_u(8))
    statsn: int = field(default=0, metadata=_u(32))
    expcmdsn: int = field(default=0, metadata=_u(32))
    maxcmdsn: int = field(default=0, metadata=_u(32))
    datasn_r2tsn: int = field(default=0, metadata=_u(32))
    ahs: bytes = b""
    data: Buffer = b""

    def bhs(self) -> bytes:
        """This PDU's 48-byte BHS (layout: LAYOUT, fields as the class docstring's section shows)."""
        return self.LAYOUT.pack(self.OPCODE, F_BIT, self.reason, _lengths(self.ahs, self.data), RESERVED_TAG,
                                self.statsn, self.expcmdsn, self.maxcmdsn, self.datasn_r2tsn)

    @classmethod
    def from_bhs(cls, b: Buffer, ahs: bytes, data: Buffer) -> "Reject":
        """Decode a Reject BHS with the AHS and data segment that followed it."""
        _, _, reason, _, _, statsn, expcmdsn, maxcmdsn, dsn = cls.LAYOUT.unpack_from(b)
        return cls(reason, statsn, expcmdsn, maxcmdsn, dsn, ahs, data)


PDU_CLASSES: dict[int, type[Pdu]] = {
    cls.OPCODE: cls
    for cls in (NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut, LogoutRequest,
                SnackRequest, NopIn, ScsiResponse, TaskMgmtResponse, LoginResponse, TextResponse, DataIn,
                LogoutResponse, R2T, AsyncMessage, Reject)
}
"""Opcode → dataclass: the one dispatch table of the codec."""

for _cls in PDU_CLASSES.values():
    assert _cls.LAYOUT.size == BHS_LEN, _cls


def iter_ahs(ahs: Buffer) -> Iterator[tuple[int, int, bytes]]:
    """Yield (AHSType, AHS-specific byte, value) for each AHS, RFC 7143 §11.2.2."""
    pos = 0
    n = len(ahs)
    while pos + 4 <= n:
        length = int.from_bytes(ahs[pos:pos + 2], "big")
        ahs_type = ahs[pos + 2]
        specific = ahs[pos + 3]
        end = pos + 3 + length  # AHSLength counts the bytes after the type byte... incl. specific byte
        if end > n:
            raise ProtocolError("AHS length runs past TotalAHSLength", RejectReason.INVALID_PDU_FIELD)
        yield ahs_type, specific, bytes(ahs[pos + 4:end])
        pos = pos + 3 + length
        pos += pad_len(pos)


def make_ahs(ahs_type: int, value: bytes, specific: int = 0) -> bytes:
    """One AHS: AHSLength counts the AHS-specific byte and the value (§11.2.2.1)."""
    body = bytes([ahs_type, specific]) + value
    raw = (len(value) + 1).to_bytes(2, "big") + body
    return raw + bytes(pad_len(len(raw)))


@dataclass(slots=True)
class RawPdu:
    """One framed PDU: header, AHS and data segment, digests already checked."""

    bhs: bytes
    ahs: bytes
    data: Buffer
    data_digest_ok: bool = True

    @property
    def opcode(self) -> int:
        """The opcode (byte 0, I bit masked off)."""
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        """The I (immediate delivery) bit of byte 0."""
        return bool(self.bhs[0] & I_BIT)

    @property
    def initiator_task_tag(self) -> int:
        """Initiator Task Tag (bytes 16-19)."""
        return int.from_bytes(self.bhs[16:20], "big")

    @property
    def cmdsn(self) -> int:
        """CmdSN (bytes 24-27) of a request from an initiator: the field every request's layout
        holds there (§11.3-§11.18), read without decoding the rest (a PDU whose data segment
        failed its digest still consumes its CmdSN, §7.8.1)."""
        return int.from_bytes(self.bhs[24:28], "big")


def decode(raw: RawPdu) -> Pdu:
    """The dataclass for a framed PDU; unknown opcodes raise ProtocolError (Reject, §11.17.1)."""
    cls = PDU_CLASSES.get(raw.opcode)
    if cls is None:
        raise ProtocolError(f"unknown opcode 0x{raw.opcode:02x}", RejectReason.COMMAND_NOT_SUPPORTED)
    return cls.from_bhs(raw.bhs, raw.ahs, raw.data)


def encode(pdu: Pdu, header_digest: bool = False, data_digest: bool = False) -> list[Buffer]:
    """Buffers to write for ``pdu``: BHS+AHS(+HeaderDigest), data, pad(+DataDigest).

    Returned as a list for ``writelines``/``sendmsg`` so large data segments are
    never copied into a joined buffer.
    """
    ahs: bytes = getattr(pdu, "ahs")
    data: Buffer = getattr(pdu, "data")
    if len(ahs) & 3:
        raise ValueError("AHS must be padded to 4 bytes")
    if len(data) > 0xFFFFFF:
        raise ValueError("data segment longer than 2^24-1 bytes")
    header = pdu.bhs() + ahs if ahs else pdu.bhs()
    if header_digest:
        header += digest_bytes(header)
    if not data:
        return [header]
    tail = _PADDING[-len(data) & 3]
    if data_digest:
        tail += digest_bytes(data, tail)
    return [header, data, tail] if tail else [header, data]


_PADDING = (b"", bytes(1), bytes(2), bytes(3))
"""Pad bytes by pad length (:func:`pad_len`), shared: :func:`encode` runs for every PDU sent."""


def encode_bytes(pdu: Pdu, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """:func:`encode` joined into one bytes object (tests, small PDUs)."""
    return b"".join(encode(pdu, header_digest, data_digest))


class PduFramer:
    """Sans-IO framing of a byte stream into :class:`RawPdu` (RFC 7143 §11.2).

    Feed received bytes with :meth:`feed`; take complete PDUs with :meth:`next`.
    Digest settings may change between PDUs (they start after login, §13.1).
    A header digest error or an impossible length raises :class:`ProtocolError`
    with ``reject=None``: the stream cannot be resynchronised at
    ErrorRecoveryLevel 0 and the connection must be dropped (§7.8).  A data
    digest error is reported on the frame, since the PDU boundary is still known
    and the receiver answers with a Reject (§7.8.1 / §11.17.1).
    """

    def __init__(self, max_data_segment: int = 0xFFFFFF) -> None:
        self._buf: bytes | bytearray = b""
        """Received bytes: the ``bytes`` object as it came while nothing else is pending (sliced
        without a copy into a bytearray first), a bytearray once a partial PDU has to be kept."""
        self._pos = 0
        self.header_digest = False
        self.data_digest = False
        self.max_data_segment = max_data_segment

    def feed(self, data: Buffer) -> None:
        """Append received bytes."""
        if self._pos == len(self._buf):
            self._buf = data if isinstance(data, bytes) else bytes(data)
            self._pos = 0
            return
        if isinstance(self._buf, bytes):
            self._buf = bytearray(memoryview(self._buf)[self._pos:])
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buf) - self._pos

    def pending(self) -> bytes:
        """A copy of the bytes received but not yet framed (the start of a PDU still incomplete)."""
        return bytes(self._buf[self._pos:])

    @property
    def pending_opcode(self) -> int | None:
        """The opcode of the PDU being received once its first byte is in, before the rest.

        Lets a receiver refuse a PDU it can never accept (a non-login PDU during login,
        RFC 7143 §6.1) without first waiting for a data segment the header may only claim.
        """
        if self._pos >= len(self._buf):
            return None
        return self._buf[self._pos] & 0x3F

    def next(self) -> RawPdu | None:
        """The next complete PDU, or ``None`` until more bytes arrive."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < BHS_LEN:
            return None
        total_ahs = buf[pos + 4] * 4
        dsl = (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]
        if dsl > self.max_data_segment:
            raise ProtocolError(f"DataSegmentLength {dsl} exceeds {self.max_data_segment}", None)
        hdr_len = BHS_LEN + total_ahs
        hd = 4 if self.header_digest else 0
        dd = 4 if (self.data_digest and dsl) else 0
        data_len = dsl + (-dsl & 3)  # pad_len, inline: this runs for every PDU
        need = hdr_len + hd + data_len + dd
        if avail < need:
            return None
        if hd:
            got = bytes(buf[pos + hdr_len:pos + hdr_len + 4])
            if digest_bytes(memoryview(buf)[pos:pos + hdr_len]) != got:
                raise ProtocolError("header digest error", None)
        # Slices of a bytes buffer are bytes already (one copy); of a bytearray, converted.
        frozen = isinstance(buf, bytes)
        bhs = buf[pos:pos + BHS_LEN]
        ahs = buf[pos + BHS_LEN:pos + hdr_len] if total_ahs else b""
        dstart = pos + hdr_len + hd
        data = buf[dstart:dstart + dsl] if dsl else b""
        if not frozen:
            bhs, ahs, data = bytes(bhs), bytes(ahs), bytes(data)
        ok = True
        if dd:
            got = bytes(buf[dstart + data_len:dstart + data_len + 4])
            ok = digest_bytes(memoryview(buf)[dstart:dstart + data_len]) == got
        self._pos = pos + need
        if not frozen and self._pos > 1 << 20 and self._pos * 2 > len(buf):
            assert isinstance(buf, bytearray)
            del buf[:self._pos]  # compact so the buffer never grows without bound
            self._pos = 0
        return RawPdu(bhs, ahs, data, ok)  # type: ignore[arg-type]  # bytes on both branches above

    def __iter__(self) -> Iterator[RawPdu]:
        while (raw := self.next()) is not None:
            yield raw


def pdu_fields(cls: type[Pdu]) -> list[tuple[str, Any]]:
    """(name, metadata) of a PDU dataclass's protocol fields — for property tests."""
    return [(f.name, f.metadata) for f in fields(cls) if f.name not in ("ahs", "data")]

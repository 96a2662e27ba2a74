"""Pair control between two sanlab arrays: vendor-specific SCSI commands, sans-IO (issue 14).

The sender drives the receiver (its peer array) over an ordinary iSCSI session.  Operation codes
C0h-FFh are vendor specific (SPC-4 §4.2.5.1, table 8: group codes 6 and 7).  Every CDB is 16 bytes:
OPERATION CODE, the 64-bit PAIR ID in bytes 1-8, command fields in 9-14, CONTROL in 15 (SPC-4
§4.2.5.7); longer parameters go in Data-Out as a parameter list, results come back in Data-In.
Integers are big-endian, names UTF-8 padded with NULs.  docs/replication-protocol.md shows every byte.

* A request the receiver cannot decode raises :class:`~sanlab.scsi.sense.ScsiError`: ILLEGAL REQUEST,
  INVALID FIELD IN CDB / IN PARAMETER LIST with a field pointer (SPC-4 §4.5.2.4.2), PARAMETER LIST
  LENGTH ERROR or INVALID COMMAND OPERATION CODE.  Reserved bits are checked strictly: both ends are
  sanlab, and a non-zero reserved field means the layouts have drifted apart.
* A request it decodes but will not carry out is a :class:`~sanlab.replication.refusals.Refusal`.
* A reply the sender cannot decode raises :class:`MalformedReply` (the peer answered, but wrongly).
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar, TypeVar, Union

from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.refusals import Refusal, refuse
from sanlab.scsi.lun import MAX_LUN, NOT_SUPPORTED, decode_lun, encode_lun
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter

E = TypeVar("E", bound=IntEnum)

Buffer = Union[bytes, bytearray, memoryview]
"""Anything the decoders read (a task's CDB, Data-Out or Data-In buffer)."""

CDB_LENGTH = 16
"""Every pair-control CDB is 16 bytes: the iSCSI SCSI Command PDU's CDB field (RFC 7143 §11.3.5)."""

PROTOCOL_VERSION = 1
"""VERSION byte of the REGISTER PAIR parameter list: a peer speaking another layout refuses it."""


class PairOpcode(IntEnum):
    """Operation codes of the pair-control commands (vendor specific, SPC-4 §4.2.5.1)."""

    REGISTER_PAIR = 0xC0
    SET_PAIR_STATE = 0xC1
    GET_PAIR_STATUS = 0xC2
    READ_DIFFERENCE_BITMAP = 0xC3
    DELETE_PAIR = 0xC4


RESERVED_FORWARD_WRITE = 0xC5
"""Kept for the bidirectional pairs' FORWARD WRITE; not defined yet, so answered as an unknown opcode."""


class StateReason(IntEnum):
    """REASON of SET PAIR STATE: why the sender changes the pair's state (shown in logs and display)."""

    UNSPECIFIED = 0
    OPERATOR = 1  # A user command: split, resync, create.
    COPY_COMPLETE = 2  # The initial copy or a resync reached the end of the volume.
    LINK_FAILURE = 3  # The peer could not be reached (sent once the link is back, or over another path).
    WRITE_FAILURE = 4  # A mirrored write failed at the S-VOL side.
    FENCE = 5  # Suspension asked for by fence level ``status`` before a host write is acknowledged.
    TAKEOVER = 6  # S-VOL takeover (to SSWS).
    SWAP = 7  # The members exchange roles.
    GROUP = 8  # The pair's consistency group is acting as one.


class PairFlags(IntFlag):
    """FLAGS byte of the REGISTER PAIR parameter list."""

    BIDIRECTIONAL = 0x01  # Hosts write at both arrays (forwarded to the P-VOL side first).
    NO_COPY = 0x02  # The volumes are known to be identical: no initial copy, straight to PAIR.


class MalformedReply(Exception):
    """A Data-In result from the peer does not follow its layout (short, an unknown value, stray bits)."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(f"{what} (byte {offset})")
        self.offset = offset
        """Byte of the Data-In buffer that is wrong."""


# --- helpers -----------------------------------------------------------------------------------------

def _top_bit(value: int) -> int:
    return value.bit_length() - 1


def _reserved(data: Buffer, offsets: tuple[int, ...], in_cdb: bool = True) -> None:
    """ILLEGAL REQUEST pointing at the first non-zero reserved byte (its highest set bit)."""
    for off in offsets:
        if data[off]:
            raise (invalid_field if in_cdb else invalid_parameter)(off, _top_bit(data[off]))


def _enum(kind: type[E], value: int, off: int, in_cdb: bool = True) -> E:
    """``kind(value)``, or INVALID FIELD IN CDB/PARAMETER LIST at ``off`` for a value it lacks."""
    try:
        return kind(value)
    except ValueError:
        raise (invalid_field if in_cdb else invalid_parameter)(off) from None


def _encode_name(name: str, size: int, off: int, required: bool) -> bytes:
    """A name field: UTF-8, at most ``size`` bytes, NUL padded; ScsiError at ``off`` otherwise."""
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        raise invalid_parameter(off) from None
    if len(raw) > size or b"\0" in raw or (required and not raw):
        raise invalid_parameter(off)
    return raw.ljust(size, b"\0")


def _decode_name(field: bytes, off: int, required: bool) -> str:
    """The name before the first NUL; the padding after it must be NUL too."""
    raw, _, pad = field.partition(b"\0")
    if pad.strip(b"\0"):
        raise invalid_parameter(off + len(raw) + 1 + len(pad) - len(pad.lstrip(b"\0")))
    if required and not raw:
        raise invalid_parameter(off)
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise invalid_parameter(off + exc.start) from None


# --- CDBs (decoded by the receiver, encoded by the sender) ---------------------------------------------

_REGISTER_CDB = struct.Struct(">BQxIxB")
"""REGISTER PAIR: OPERATION CODE, PAIR ID, reserved, PARAMETER LIST LENGTH, reserved, CONTROL."""
_SET_STATE_CDB = struct.Struct(">BQBBH2xB")
"""SET PAIR STATE: OPERATION CODE, PAIR ID, NEW STATE, REASON, PARAMETER LIST LENGTH, reserved, CONTROL."""
_GET_STATUS_CDB = struct.Struct(">BQxIxB")
"""GET PAIR STATUS: OPERATION CODE, PAIR ID, reserved, ALLOCATION LENGTH, reserved, CONTROL."""
_READ_BITMAP_CDB = struct.Struct(">BQIHB")
"""READ DIFFERENCE BITMAP: OPERATION CODE, PAIR ID, STARTING UNIT, NUMBER OF UNITS, CONTROL."""
_DELETE_CDB = struct.Struct(">BQB5xB")
"""DELETE PAIR: OPERATION CODE, PAIR ID, FORCE, reserved, CONTROL."""

_REGISTRATION = struct.Struct(">BBBxI8sQQQQ32s32s64s8s224s")
"""REGISTER PAIR parameter list: VERSION, FENCE LEVEL, FLAGS, reserved, BLOCK SIZE, S-VOL LUN,
P-VOL BLOCKS, EXTENT LBA, EXTENT BLOCKS, GENERATION ID, PAIR NAME, CONSISTENCY GROUP, ARRAY NAME."""
_STATE_PARAMS = struct.Struct(">Q")
"""SET PAIR STATE parameter list: the sender's GENERATION ID."""

REGISTRATION_LENGTH = _REGISTRATION.size
"""Bytes of the REGISTER PAIR parameter list (408)."""
_STATUS = struct.Struct(">BB2xIQQQQQ")
"""GET PAIR STATUS data: STATE, ROLE, reserved, GRANULARITY, PAIR ID, GENERATION ID, SYNC GENERATION ID,
DIFFERENCE COUNT, BITMAP UNITS."""
STATUS_LENGTH = _STATUS.size
"""Bytes of GET PAIR STATUS data (48)."""


@dataclass(frozen=True, slots=True)
class RegisterPairCdb:
    """REGISTER PAIR (C0h, P-VOL side → S-VOL side); the pair's description is the Data-Out list."""

    data_out_length: ClassVar[int] = REGISTRATION_LENGTH
    pair_id: int
    """The 64-bit random id the P-VOL side chose; every later command names the pair by it."""

    @classmethod
    def decode(cls, cdb: Buffer) -> RegisterPairCdb:
        """Decode; PARAMETER LIST LENGTH must be :data:`REGISTRATION_LENGTH`."""
        _, pair_id, length, _ = _REGISTER_CDB.unpack_from(cdb)
        _reserved(cdb, (9, 14))
        if length != REGISTRATION_LENGTH:
            raise invalid_field(10)
        return cls(pair_id)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _REGISTER_CDB.pack(PairOpcode.REGISTER_PAIR, self.pair_id, REGISTRATION_LENGTH, 0)


@dataclass(frozen=True, slots=True)
class SetPairStateCdb:
    """SET PAIR STATE (C1h, either way); the sender's generation id is the Data-Out list."""

    data_out_length: ClassVar[int] = _STATE_PARAMS.size
    pair_id: int
    new_state: PairState
    reason: StateReason

    @classmethod
    def decode(cls, cdb: Buffer) -> SetPairStateCdb:
        """Decode; an unknown NEW STATE or REASON is INVALID FIELD IN CDB pointing at it."""
        _, pair_id, state, reason, length, _ = _SET_STATE_CDB.unpack_from(cdb)
        new_state = _enum(PairState, state, 9)
        why = _enum(StateReason, reason, 10)
        if length != _STATE_PARAMS.size:
            raise invalid_field(11)
        _reserved(cdb, (13, 14))
        return cls(pair_id, new_state, why)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _SET_STATE_CDB.pack(PairOpcode.SET_PAIR_STATE, self.pair_id, self.new_state, self.reason,
                                   _STATE_PARAMS.size, 0)


@dataclass(frozen=True, slots=True)
class GetPairStatusCdb:
    """GET PAIR STATUS (C2h, either way); the answer is a :class:`PairStatus` in the Data-In buffer."""

    data_out_length: ClassVar[int] = 0
    pair_id: int
    allocation_length: int = STATUS_LENGTH
    """Bytes of Data-In the sender takes (SPC-4 §4.2.5.6: the answer is cut to it)."""

    @classmethod
    def decode(cls, cdb: Buffer) -> GetPairStatusCdb:
        """Decode (any ALLOCATION LENGTH is valid)."""
        _, pair_id, alloc, _ = _GET_STATUS_CDB.unpack_from(cdb)
        _reserved(cdb, (9, 14))
        return cls(pair_id, alloc)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _GET_STATUS_CDB.pack(PairOpcode.GET_PAIR_STATUS, self.pair_id, self.allocation_length, 0)


@dataclass(frozen=True, slots=True)
class ReadDifferenceBitmapCdb:
    """READ DIFFERENCE BITMAP (C3h): units ``starting_unit`` .. ``+ number_of_units - 1`` in Data-In."""

    data_out_length: ClassVar[int] = 0
    pair_id: int
    starting_unit: int
    number_of_units: int
    """At most 65535 per command; the answer is ``(number_of_units + 7) // 8`` bytes."""

    @classmethod
    def decode(cls, cdb: Buffer) -> ReadDifferenceBitmapCdb:
        """Decode (the range is checked against the bitmap by :func:`encode_bitmap`)."""
        _, pair_id, start, count, _ = _READ_BITMAP_CDB.unpack_from(cdb)
        return cls(pair_id, start, count)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _READ_BITMAP_CDB.pack(PairOpcode.READ_DIFFERENCE_BITMAP, self.pair_id, self.starting_unit,
                                     self.number_of_units, 0)

    @property
    def data_in_length(self) -> int:
        """Bytes of the answer."""
        return (self.number_of_units + 7) // 8


@dataclass(frozen=True, slots=True)
class DeletePairCdb:
    """DELETE PAIR (C4h, either way): the receiver returns its member to SMPL."""

    data_out_length: ClassVar[int] = 0
    pair_id: int
    force: bool = False
    """FORCE: delete whatever the receiver's pair state (a copy in progress, a suspended pair)."""

    @classmethod
    def decode(cls, cdb: Buffer) -> DeletePairCdb:
        """Decode; byte 9 bits 7-1 are reserved."""
        _, pair_id, flags, _ = _DELETE_CDB.unpack_from(cdb)
        if flags & 0xFE:
            raise invalid_field(9, _top_bit(flags))
        _reserved(cdb, (10, 11, 12, 13, 14))
        return cls(pair_id, bool(flags & 0x01))

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _DELETE_CDB.pack(PairOpcode.DELETE_PAIR, self.pair_id, int(self.force), 0)


PairRequest = Union[RegisterPairCdb, SetPairStateCdb, GetPairStatusCdb, ReadDifferenceBitmapCdb, DeletePairCdb]
"""Any decoded pair-control CDB."""

_DECODERS: dict[int, Callable[[Buffer], PairRequest]] = {
    PairOpcode.REGISTER_PAIR: RegisterPairCdb.decode,
    PairOpcode.SET_PAIR_STATE: SetPairStateCdb.decode,
    PairOpcode.GET_PAIR_STATUS: GetPairStatusCdb.decode,
    PairOpcode.READ_DIFFERENCE_BITMAP: ReadDifferenceBitmapCdb.decode,
    PairOpcode.DELETE_PAIR: DeletePairCdb.decode,
}
"""OPERATION CODE → decoder."""


def decode_cdb(cdb: Buffer) -> PairRequest:
    """The request a pair-control CDB carries, or ScsiError with the answer SPC-4 asks for.

    An operation code that is not one of :class:`PairOpcode` is INVALID COMMAND OPERATION CODE
    (SPC-4 §4.5.6); a CDB that is not 16 bytes, a CONTROL byte other than 0 (no NACA, no LINK:
    SAM-5 §5.10) or a bad field is INVALID FIELD IN CDB with a field pointer.
    """
    if not cdb:
        raise invalid_field(0)
    decoder = _DECODERS.get(cdb[0])
    if decoder is None:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)
    if len(cdb) != CDB_LENGTH:
        raise invalid_field(min(len(cdb), CDB_LENGTH))
    _reserved(cdb, (CDB_LENGTH - 1,))
    return decoder(cdb)


# --- parameter lists (Data-Out) -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PairRegistration:
    """The REGISTER PAIR parameter list: what the S-VOL side needs to accept or refuse the pair.

    :meth:`encode` and :meth:`decode` apply the same checks, so a list one side sends the other decodes.
    """

    name: str
    """Pair name, 1-32 bytes of UTF-8 (byte offset 48)."""
    svol_lun: int
    """The S-VOL's LUN on the peer target, 0..16383, as the 8-byte SAM-5 §4.7 LUN field (offset 8)."""
    pvol_blocks: int
    """The P-VOL's size in logical blocks (offset 16)."""
    block_size: int
    """The P-VOL's logical block length in bytes: a power of two, at least 512 (offset 4)."""
    array_name: str
    """The P-VOL side's array name, 1-64 bytes of UTF-8 (offset 112)."""
    generation_id: int
    """The P-VOL side's current generation id (offset 40)."""
    extent_lba: int = 0
    """First LBA of the mirrored area (offset 24)."""
    extent_blocks: int = 0
    """Blocks of the mirrored area; 0: the whole volume (and ``extent_lba`` 0) (offset 32)."""
    fence: FenceLevel = FenceLevel.DATA
    flags: PairFlags = PairFlags(0)
    group: str = ""
    """Consistency group name, up to 32 bytes of UTF-8; empty: none (offset 80)."""
    pvol_lun: int = 0
    """The P-VOL's LUN at its array, as the 8-byte SAM-5 LUN field (offset 176): where a swap sends
    the data back."""
    pvol_target: str = ""
    """The P-VOL's target name at its array, up to 224 bytes of UTF-8 (an iSCSI name is at most 223,
    RFC 7143 §4.2.7.1); empty: not given (offset 184)."""

    def _check(self) -> None:
        if not 0 <= self.svol_lun <= MAX_LUN:
            raise invalid_parameter(8)
        if not 0 <= self.pvol_lun <= MAX_LUN:
            raise invalid_parameter(176)
        if self.block_size < 512 or self.block_size & (self.block_size - 1):
            raise invalid_parameter(4)
        if not self.pvol_blocks:
            raise invalid_parameter(16)
        if self.extent_blocks == 0 and self.extent_lba:
            raise invalid_parameter(24)
        if self.extent_lba + self.extent_blocks > self.pvol_blocks:
            raise invalid_parameter(24)

    def encode(self) -> bytes:
        """The 408-byte list; ScsiError INVALID FIELD IN PARAMETER LIST for a value it cannot carry."""
        self._check()
        return _REGISTRATION.pack(
            PROTOCOL_VERSION, self.fence, self.flags, self.block_size, encode_lun(self.svol_lun),
            self.pvol_blocks, self.extent_lba, self.extent_blocks, self.generation_id,
            _encode_name(self.name, 32, 48, True), _encode_name(self.group, 32, 80, False),
            _encode_name(self.array_name, 64, 112, True), encode_lun(self.pvol_lun),
            _encode_name(self.pvol_target, 224, 184, False))

    @classmethod
    def decode(cls, data: Buffer) -> PairRegistration:
        """Decode; PARAMETER LIST LENGTH ERROR if not 408 bytes, else INVALID FIELD IN PARAMETER LIST
        pointing at the field (SPC-4 §4.5.2.4.2, C/D 0)."""
        if len(data) != REGISTRATION_LENGTH:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
        (version, fence, flags, block_size, lun, blocks, lba, count, gen, name, group,
         array, plun, ptarget) = _REGISTRATION.unpack_from(data)
        if version != PROTOCOL_VERSION:
            raise invalid_parameter(0)
        fence_level = _enum(FenceLevel, fence, 1, in_cdb=False)
        if flags & ~0x03:
            raise invalid_parameter(2, _top_bit(flags))
        _reserved(data, (3,), in_cdb=False)
        svol_lun = decode_lun(lun)
        if svol_lun == NOT_SUPPORTED:
            raise invalid_parameter(8)
        pvol_lun = decode_lun(plun)
        if pvol_lun == NOT_SUPPORTED:
            raise invalid_parameter(176)
        reg = cls(_decode_name(name, 48, True), svol_lun, blocks, block_size, _decode_name(array, 112, True),
                  gen, lba, count, fence_level, PairFlags(flags), _decode_name(group, 80, False), pvol_lun,
                  _decode_name(ptarget, 184, False))
        reg._check()
        return reg


def encode_state_parameters(generation_id: int) -> bytes:
    """SET PAIR STATE's parameter list: the sender's generation id."""
    return _STATE_PARAMS.pack(generation_id)


def decode_state_parameters(data: Buffer) -> int:
    """The sender's generation id; PARAMETER LIST LENGTH ERROR unless exactly 8 bytes."""
    if len(data) != _STATE_PARAMS.size:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    return int(_STATE_PARAMS.unpack_from(data)[0])


# --- results (Data-In) ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PairStatus:
    """What GET PAIR STATUS answers about the receiver's member of the pair."""

    pair_id: int
    state: PairState
    role: PairRole
    """The receiver's role in the pair."""
    generation_id: int
    """The receiver's current generation id."""
    sync_generation_id: int
    """The receiver's generation id when the two members were last known identical."""
    difference_count: int
    """Set bits in the receiver's difference bitmap."""
    granularity: int
    """Logical blocks per bitmap unit."""
    bitmap_units: int
    """Units in the receiver's bitmap (bound for READ DIFFERENCE BITMAP)."""


def encode_status(status: PairStatus) -> bytes:
    """The 48 bytes of GET PAIR STATUS data (cut to the ALLOCATION LENGTH by the device server)."""
    return _STATUS.pack(status.state, status.role, status.granularity, status.pair_id, status.generation_id,
                        status.sync_generation_id, status.difference_count, status.bitmap_units)


def decode_status(data: Buffer) -> PairStatus:
    """Decode GET PAIR STATUS data; bytes after the 48th are ignored (a later version may add fields).

    :class:`MalformedReply` when shorter or when STATE or ROLE is unknown; reserved bytes are not checked.
    """
    if len(data) < STATUS_LENGTH:
        raise MalformedReply(f"pair status is {len(data)} bytes, not {STATUS_LENGTH}", len(data))
    state, role, gran, pair_id, gen, sync_gen, diff, units = _STATUS.unpack_from(data)
    try:
        pair_state = PairState(state)
    except ValueError:
        raise MalformedReply(f"unknown pair state {state}", 0) from None
    try:
        pair_role = PairRole(role)
    except ValueError:
        raise MalformedReply(f"unknown pair role {role}", 1) from None
    return PairStatus(pair_id, pair_state, pair_role, gen, sync_gen, diff, gran, units)


def encode_bitmap(bits: Buffer, units: int, start: int, count: int) -> bytes:
    """READ DIFFERENCE BITMAP data: units ``start .. start + count - 1`` of a bitmap.

    ``bits`` has storage/bitmap.py's layout (unit ``u`` in byte ``u // 8`` at mask ``1 << (u % 8)``) and
    ``units`` units; the answer has the same layout counted from ``start`` (unit ``start + k`` is bit
    ``k``), unused bits of the last byte zero.  A range past ``units`` is :data:`Refusal.BITMAP_RANGE`.
    """
    if start + count > units:
        raise refuse(Refusal.BITMAP_RANGE)
    if not count:
        return b""
    # The layout is a little-endian integer: bit u of int.from_bytes(bits, "little") is unit u.
    window = int.from_bytes(bits[start >> 3:(start + count + 7) >> 3], "little") >> (start & 7)
    return (window & ((1 << count) - 1)).to_bytes((count + 7) // 8, "little")


def decode_bitmap(data: Buffer, count: int) -> bytes:
    """The bits of READ DIFFERENCE BITMAP data asked for with NUMBER OF UNITS ``count``.

    :class:`MalformedReply` unless exactly ``(count + 7) // 8`` bytes with no bit set past ``count``.
    """
    size = (count + 7) // 8
    if len(data) != size:
        raise MalformedReply(f"bitmap data is {len(data)} bytes, not {size}", min(len(data), size))
    if count & 7 and data[-1] >> (count & 7):
        raise MalformedReply("bit set past NUMBER OF UNITS", size - 1)
    return bytes(data)

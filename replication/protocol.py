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

Why one module of this size: it is the one declaration of the array-to-array wire format, every
command's CDB, parameter list and reply side by side (as ``scsi/cdb.py`` is for SBC), so the two
ends cannot drift apart; what an array does with them is in ``control.py``.
"""
from __future__ import annotations

import struct
import zlib
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
    READ_JOURNAL = 0xC6
    ATTACH_JOURNAL = 0xC7
    MARK = 0xC8
    READ_JOURNAL_POSITION = 0xC9


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
    JOURNAL_FULL = 9  # An asynchronous pair's journal stayed full: suspended (PFUS).


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


_READ_JOURNAL_CDB = struct.Struct(">BQI2xB")
"""READ JOURNAL: OPERATION CODE, FROM SEQUENCE NUMBER, ALLOCATION LENGTH, reserved, CONTROL."""
_ATTACH_JOURNAL_CDB = struct.Struct(">BQxIxB")
"""ATTACH JOURNAL: OPERATION CODE, PAIR ID, reserved, PARAMETER LIST LENGTH, reserved, CONTROL."""
_ATTACH_JOURNAL = struct.Struct(">Q32s32s")
"""ATTACH JOURNAL parameter list: PRIMARY JOURNAL ID, PRIMARY JOURNAL NAME, SECONDARY JOURNAL NAME."""
_JOURNAL_REPLY = struct.Struct(">QQQdQIB3x")
"""READ JOURNAL data header: JOURNAL-IN, JOURNAL-OUT, COMMITTED, OLDEST TIME (of the first entry at or
after FROM SEQUENCE NUMBER held, 0.0: none), BACKLOG BYTES (data held from there), ENTRY COUNT,
FLAGS (:class:`JournalReplyFlags`), reserved."""
_JOURNAL_ENTRY = struct.Struct(">QdQQII")
"""One entry of READ JOURNAL data, followed by its data: SEQUENCE NUMBER, TIME, PAIR ID, LBA,
DATA LENGTH (bytes), DATA CRC32."""
JOURNAL_REPLY_HEADER = _JOURNAL_REPLY.size
"""Bytes of the READ JOURNAL data header (48)."""
JOURNAL_ENTRY_HEADER = _JOURNAL_ENTRY.size
"""Bytes before each entry's data (40)."""
ATTACH_JOURNAL_LENGTH = _ATTACH_JOURNAL.size
"""Bytes of the ATTACH JOURNAL parameter list (72)."""


_MARK_CDB = struct.Struct(">BQxIxB")
"""MARK and READ JOURNAL POSITION: OPERATION CODE, PAIR ID, reserved, PARAMETER LIST LENGTH (MARK) or
ALLOCATION LENGTH (READ JOURNAL POSITION), reserved, CONTROL."""
_MARK = struct.Struct(">Q")
"""MARK parameter list: MARKER (the consistency point's number)."""
_JOURNAL_POSITION = struct.Struct(">QQ")
"""READ JOURNAL POSITION data: MARKER (the last consistency point restored), RESTORED (sequence number)."""
MARK_LENGTH = _MARK.size
JOURNAL_POSITION_LENGTH = _JOURNAL_POSITION.size


@dataclass(frozen=True, slots=True)
class MarkCdb:
    """MARK (C8h, sync P side → S side, docs/journal.md "Cascade and three sites"): with the pair's
    writes held and drained, the S side puts consistency point MARKER into every journal fed by the
    S-VOL's volume (a relay's sending journals, a standby journal), at the same point of the write
    stream as the P side puts it into its own."""

    data_out_length: ClassVar[int] = MARK_LENGTH
    pair_id: int

    @classmethod
    def decode(cls, cdb: Buffer) -> MarkCdb:
        """Decode; PARAMETER LIST LENGTH must be :data:`MARK_LENGTH`."""
        _, pair_id, length, _ = _MARK_CDB.unpack_from(cdb)
        _reserved(cdb, (9, 14))
        if length != MARK_LENGTH:
            raise invalid_field(10)
        return cls(pair_id)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _MARK_CDB.pack(PairOpcode.MARK, self.pair_id, MARK_LENGTH, 0)


def encode_marker(marker: int) -> bytes:
    """The MARK parameter list."""
    return _MARK.pack(marker)


def decode_marker(data: Buffer) -> int:
    """The MARK parameter list's MARKER; PARAMETER LIST LENGTH ERROR unless 8 bytes."""
    if len(data) != MARK_LENGTH:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    return int(_MARK.unpack(bytes(data))[0])


@dataclass(frozen=True, slots=True)
class ReadJournalPositionCdb:
    """READ JOURNAL POSITION (C9h, primary → secondary, before a delta resync): the last consistency
    point the secondary journal of the pair restored, and its RESTORED sequence number."""

    data_out_length: ClassVar[int] = 0
    pair_id: int
    allocation_length: int = JOURNAL_POSITION_LENGTH

    @classmethod
    def decode(cls, cdb: Buffer) -> ReadJournalPositionCdb:
        """Decode."""
        _, pair_id, alloc, _ = _MARK_CDB.unpack_from(cdb)
        _reserved(cdb, (9, 14))
        return cls(pair_id, alloc)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _MARK_CDB.pack(PairOpcode.READ_JOURNAL_POSITION, self.pair_id, self.allocation_length, 0)


def encode_position(marker: int, restored: int) -> bytes:
    """READ JOURNAL POSITION data."""
    return _JOURNAL_POSITION.pack(marker, restored)


def decode_position(data: Buffer) -> tuple[int, int]:
    """(MARKER, RESTORED) of READ JOURNAL POSITION data; MalformedReply when short."""
    if len(data) < JOURNAL_POSITION_LENGTH:
        raise MalformedReply("READ JOURNAL POSITION data cut short", len(data))
    marker, restored = _JOURNAL_POSITION.unpack_from(bytes(data))
    return int(marker), int(restored)


class JournalReplyFlags(IntFlag):
    """FLAGS of READ JOURNAL data."""

    NOT_JOURNALING = 0x01  # No pair of the journal is in PAIR/PFUL at the primary: nothing will come.
    GAP = 0x02  # FROM SEQUENCE NUMBER is below journal-out: the entries between became the bitmap (PFUS).


@dataclass(frozen=True, slots=True)
class ReadJournalCdb:
    """READ JOURNAL (C6h, secondary → primary, seed 003 FIG. 13's journal acquisition as a pull), sent to
    the LUN of any P-VOL of the journal group.  FROM SEQUENCE NUMBER is the secondary's *to-be-read*:
    every entry below it is durable in the secondary's journal (*read-completed*), so the primary may
    purge them.  The answer (Data-In) is a :class:`JournalBatch`."""

    data_out_length: ClassVar[int] = 0
    from_sequence: int
    allocation_length: int

    @classmethod
    def decode(cls, cdb: Buffer) -> ReadJournalCdb:
        """Decode (ALLOCATION LENGTH must hold at least the header)."""
        _, first, alloc, _ = _READ_JOURNAL_CDB.unpack_from(cdb)
        _reserved(cdb, (13, 14))
        if alloc < JOURNAL_REPLY_HEADER:
            raise invalid_field(9)
        return cls(first, alloc)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _READ_JOURNAL_CDB.pack(PairOpcode.READ_JOURNAL, self.from_sequence, self.allocation_length, 0)


@dataclass(frozen=True, slots=True)
class AttachJournalCdb:
    """ATTACH JOURNAL (C7h, primary → secondary, after REGISTER PAIR): the pair is asynchronous; its
    entries come from the named primary journal and go to the named secondary journal."""

    data_out_length: ClassVar[int] = ATTACH_JOURNAL_LENGTH
    pair_id: int

    @classmethod
    def decode(cls, cdb: Buffer) -> AttachJournalCdb:
        """Decode; PARAMETER LIST LENGTH must be :data:`ATTACH_JOURNAL_LENGTH`."""
        _, pair_id, length, _ = _ATTACH_JOURNAL_CDB.unpack_from(cdb)
        _reserved(cdb, (9, 14))
        if length != ATTACH_JOURNAL_LENGTH:
            raise invalid_field(10)
        return cls(pair_id)

    def encode(self) -> bytes:
        """The 16-byte CDB."""
        return _ATTACH_JOURNAL_CDB.pack(PairOpcode.ATTACH_JOURNAL, self.pair_id, ATTACH_JOURNAL_LENGTH, 0)


@dataclass(frozen=True, slots=True)
class JournalAttachment:
    """The ATTACH JOURNAL parameter list."""

    primary_journal_id: int
    primary_journal: str
    """Name of the journal at the primary, 1-32 bytes of UTF-8 (offset 8)."""
    secondary_journal: str
    """Name of the journal at the secondary, 1-32 bytes of UTF-8 (offset 40)."""

    def encode(self) -> bytes:
        """The 72-byte list."""
        return _ATTACH_JOURNAL.pack(self.primary_journal_id, _encode_name(self.primary_journal, 32, 8, True),
                                    _encode_name(self.secondary_journal, 32, 40, True))

    @classmethod
    def decode(cls, data: Buffer) -> JournalAttachment:
        """Decode; PARAMETER LIST LENGTH ERROR unless exactly 72 bytes."""
        if len(data) != ATTACH_JOURNAL_LENGTH:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
        jid, pj, sj = _ATTACH_JOURNAL.unpack(bytes(data))
        return cls(jid, _decode_name(pj, 8, True), _decode_name(sj, 40, True))


@dataclass(frozen=True, slots=True)
class WireEntry:
    """One journal entry as READ JOURNAL carries it."""

    sequence: int
    time: float
    pair_id: int
    lba: int
    data: bytes
    data_crc: int


@dataclass(frozen=True, slots=True)
class JournalBatch:
    """READ JOURNAL data: the primary's pointers and the committed entries from FROM SEQUENCE NUMBER."""

    journal_in: int
    journal_out: int
    committed: int
    oldest_time: float
    backlog_bytes: int
    flags: JournalReplyFlags
    entries: tuple[WireEntry, ...] = ()

    def encode(self) -> bytes:
        """Header, then each entry's header and data."""
        parts = [_JOURNAL_REPLY.pack(self.journal_in, self.journal_out, self.committed, self.oldest_time,
                                     self.backlog_bytes, len(self.entries), self.flags)]
        for e in self.entries:
            parts.append(_JOURNAL_ENTRY.pack(e.sequence, e.time, e.pair_id, e.lba, len(e.data), e.data_crc))
            parts.append(e.data)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: Buffer) -> JournalBatch:
        """Parse; :class:`MalformedReply` when short, long, or an entry's CRC does not match its data."""
        view = memoryview(data)
        if len(view) < JOURNAL_REPLY_HEADER:
            raise MalformedReply("READ JOURNAL data shorter than its header", len(view))
        jin, jout, committed, oldest, backlog, count, flags = _JOURNAL_REPLY.unpack_from(view)
        off = JOURNAL_REPLY_HEADER
        entries = []
        for _ in range(count):
            if off + JOURNAL_ENTRY_HEADER > len(view):
                raise MalformedReply("READ JOURNAL entry header cut short", off)
            seq, t, pid, lba, length, crc = _JOURNAL_ENTRY.unpack_from(view, off)
            off += JOURNAL_ENTRY_HEADER
            if off + length > len(view):
                raise MalformedReply("READ JOURNAL entry data cut short", off)
            payload = bytes(view[off:off + length])
            if zlib.crc32(payload) != crc:
                raise MalformedReply(f"READ JOURNAL entry {seq}: data CRC mismatch", off)
            entries.append(WireEntry(seq, t, pid, lba, payload, crc))
            off += length
        if off != len(view):
            raise MalformedReply("READ JOURNAL data longer than its entries", off)
        return cls(jin, jout, committed, oldest, backlog, JournalReplyFlags(flags & 0x03), tuple(entries))


PairRequest = Union[RegisterPairCdb, SetPairStateCdb, GetPairStatusCdb, ReadDifferenceBitmapCdb, DeletePairCdb,
                    ReadJournalCdb, AttachJournalCdb]
"""Any decoded pair-control CDB."""

_DECODERS: dict[int, Callable[[Buffer], PairRequest]] = {
    PairOpcode.REGISTER_PAIR: RegisterPairCdb.decode,
    PairOpcode.SET_PAIR_STATE: SetPairStateCdb.decode,
    PairOpcode.GET_PAIR_STATUS: GetPairStatusCdb.decode,
    PairOpcode.READ_DIFFERENCE_BITMAP: ReadDifferenceBitmapCdb.decode,
    PairOpcode.DELETE_PAIR: DeletePairCdb.decode,
    PairOpcode.READ_JOURNAL: ReadJournalCdb.decode,
    PairOpcode.ATTACH_JOURNAL: AttachJournalCdb.decode,
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

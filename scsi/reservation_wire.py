"""Byte layouts of the reservation commands, each declared once (SPC-2 §7.17/§7.21, SPC-4 §6.15, §6.16).

CDBs have a ``parse`` (as in scsi/cdb.py) that checks what this device server does not support;
parameter lists and parameter data have ``decode`` and ``encode`` that round-trip.  Decoding a
PERSISTENT RESERVE OUT parameter list raises :class:`~sanlab.scsi.sense.ScsiError` with the sense
SPC-4 asks for: PARAMETER LIST LENGTH ERROR, or INVALID FIELD IN PARAMETER LIST with a field
pointer counted from the first byte of the parameter list.  The TransportIDs a parameter list
carries are kept as bytes and decoded one at a time (:meth:`ProutParameterList.each_transport_id`),
because the device server checks each against the registrations before it looks at the next.

Nothing here knows the reservation state: scsi/reservations.py maps it to and from these layouts.
The same classes decode what another array's device server answers (replication's peers).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from sanlab.scsi.cdb import Opcode, PersistentReserveOut
from sanlab.scsi.reservation_state import LU_SCOPE, PrType
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter

PROTOCOL_ISCSI = 0x5
"""PROTOCOL IDENTIFIER of iSCSI TransportIDs (SPC-4 §7.6.1, table 362)."""


def param_length_error() -> ScsiError:
    """PARAMETER LIST LENGTH ERROR (SPC-4 §6.16.3): the list is not as long as its fields say."""
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)


# --- CDBs --------------------------------------------------------------------------------------------

PRIN_CDB = struct.Struct(">BB5xHB")
"""PERSISTENT RESERVE IN CDB (SPC-4 §6.15.1, table 193): opcode, SERVICE ACTION, reserved,
ALLOCATION LENGTH, CONTROL."""


@dataclass(frozen=True, slots=True)
class PrinCdb:
    """PERSISTENT RESERVE IN (SPC-4 §6.15.1)."""

    service_action: int
    """READ KEYS, READ RESERVATION, REPORT CAPABILITIES or READ FULL STATUS (checked by dispatch)."""
    allocation_length: int
    """Bytes of parameter data the initiator takes."""

    @classmethod
    def parse(cls, cdb: bytes) -> PrinCdb:
        """The CDB's fields (dispatch has already refused unknown service actions)."""
        _, sa, alloc, _ = PRIN_CDB.unpack_from(cdb)
        return cls(sa & 0x1F, alloc)

    def encode(self) -> bytes:
        """The 10-byte CDB."""
        return PRIN_CDB.pack(Opcode.PERSISTENT_RESERVE_IN, self.service_action, self.allocation_length, 0)


PROUT_CDB = struct.Struct(">BBB2xIB")
"""PERSISTENT RESERVE OUT CDB (SPC-4 §6.16.1, table 207): opcode, SERVICE ACTION, SCOPE|TYPE,
reserved, PARAMETER LIST LENGTH, CONTROL."""


@dataclass(frozen=True, slots=True)
class ProutCdb:
    """PERSISTENT RESERVE OUT (SPC-4 §6.16.1)."""

    service_action: int
    """One of :class:`~sanlab.scsi.cdb.PersistentReserveOut` (checked by dispatch)."""
    scope: int
    """SCOPE: only :data:`~sanlab.scsi.reservation_state.LU_SCOPE` is valid where it is used."""
    type: int
    """TYPE of RESERVE, RELEASE and the PREEMPTs (SPC-4 table 209)."""
    parameter_list_length: int
    """Bytes of Data-Out the parameter list occupies."""

    @classmethod
    def parse(cls, cdb: bytes) -> ProutCdb:
        """The CDB's fields; SCOPE and TYPE are checked by the service actions that use them."""
        _, sa, scope_type, pll, _ = PROUT_CDB.unpack_from(cdb)
        return cls(sa & 0x1F, scope_type >> 4, scope_type & 0x0F, pll)

    def encode(self) -> bytes:
        """The 10-byte CDB."""
        return PROUT_CDB.pack(Opcode.PERSISTENT_RESERVE_OUT, self.service_action, (self.scope << 4) | self.type,
                              self.parameter_list_length, 0)

    def reservation_type(self) -> PrType:
        """SCOPE and TYPE of RESERVE, RELEASE and the PREEMPTs: LU_SCOPE and a supported type."""
        if self.scope != LU_SCOPE:
            raise invalid_field(2, 7)
        try:
            return PrType(self.type)
        except ValueError:
            raise invalid_field(2, 3) from None


RESERVE_10_CDB = struct.Struct(">BBBB3xHB")
"""RESERVE(10)/RELEASE(10) CDB (SPC-2 §7.21, §7.17): opcode, 3RDPTY|LONGID|obsolete, obsolete,
THIRD-PARTY DEVICE ID, reserved, PARAMETER LIST LENGTH, CONTROL."""
THIRD_PARTY = 0x10
"""3RDPTY (byte 1 bit 4): a third-party reservation, which this device server does not offer."""
LONGID = 0x02
"""LONGID (byte 1 bit 1): an 8-byte third-party device ID in the parameter list."""


def check_reserve_cdb(cdb: bytes) -> None:
    """RESERVE(10)/RELEASE(10): third-party reservations are not offered (SPC-2 §7.21.1).

    RESERVE(6)/RELEASE(6) bytes 1-4 are obsolete (extents, third party) and ignored, as are the
    10-byte forms' fields that only matter with 3RDPTY or LONGID set.
    """
    if cdb[0] not in (Opcode.RESERVE_10, Opcode.RELEASE_10):
        return
    _, flags, _, _, _, _ = RESERVE_10_CDB.unpack_from(cdb)
    if flags & THIRD_PARTY:
        raise invalid_field(1, 4)
    if flags & LONGID:
        raise invalid_field(1, 1)


# --- TransportID (SPC-4 §7.6.4.6) ----------------------------------------------------------------------

TRANSPORTID_HEADER = struct.Struct(">BxH")
"""iSCSI TransportID header (SPC-4 §7.6.4.6, tables 375-376): FORMAT CODE|PROTOCOL IDENTIFIER,
reserved, ADDITIONAL LENGTH; the null-terminated, padded iSCSI name follows."""
FORMAT_NAME = 0b00
"""FORMAT CODE 00b: the iSCSI name alone (every initiator port of that name)."""
FORMAT_PORT = 0b01
"""FORMAT CODE 01b: "name,i,0xISID", one initiator port."""
MIN_TRANSPORTID_NAME = 20
"""ADDITIONAL LENGTH is at least 20 and a multiple of four (SPC-4 §7.6.4.6)."""


@dataclass(frozen=True, slots=True)
class TransportId:
    """An iSCSI TransportID: an initiator port, or every port of an initiator name (SPC-4 §7.6.4.6)."""

    iscsi_name: str
    """The iSCSI name (no commas)."""
    isid: int | None
    """The 48-bit ISID (format 01b); None: every initiator port of the name (format 00b)."""

    def encode(self) -> bytes:
        """Header and the null-terminated name, padded to a multiple of four and at least 20 bytes."""
        if self.isid is None:
            fmt, text = FORMAT_NAME, self.iscsi_name
        else:
            fmt, text = FORMAT_PORT, f"{self.iscsi_name},i,0x{self.isid:012x}"
        body = text.encode() + b"\0"
        body += bytes(-len(body) % 4)
        body += bytes(max(0, MIN_TRANSPORTID_NAME - len(body)))
        return TRANSPORTID_HEADER.pack((fmt << 6) | PROTOCOL_ISCSI, len(body)) + body

    @classmethod
    def decode(cls, data: bytes, offset: int = 0, origin: int = 0) -> tuple[TransportId, int]:
        """The TransportID at ``data[offset:]`` and its length.

        Another protocol or format, or a malformed one, is INVALID FIELD IN PARAMETER LIST pointing
        into it; field pointers count from ``origin`` (where ``data`` sits in the parameter list).
        """
        at = origin + offset
        if len(data) - offset < TRANSPORTID_HEADER.size:
            raise param_length_error()
        b0, add_len = TRANSPORTID_HEADER.unpack_from(data, offset)
        fmt = b0 >> 6
        if b0 & 0x0F != PROTOCOL_ISCSI or fmt not in (FORMAT_NAME, FORMAT_PORT) or b0 & 0x30:
            raise invalid_parameter(at, 3 if b0 & 0x0F != PROTOCOL_ISCSI else 7)
        end = offset + TRANSPORTID_HEADER.size + add_len
        if add_len < MIN_TRANSPORTID_NAME or add_len % 4 or end > len(data):
            raise invalid_parameter(at + 2)
        raw = data[offset + TRANSPORTID_HEADER.size:end].split(b"\0", 1)[0]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise invalid_parameter(at + 4) from None
        isid: int | None = None
        if fmt == FORMAT_PORT:
            name, sep, isid_hex = text.rpartition(",")
            if not sep or not name.lower().endswith(",i") or not isid_hex.lower().startswith("0x"):
                raise invalid_parameter(at + 4)
            try:
                isid = int(isid_hex[2:], 16)
            except ValueError:
                raise invalid_parameter(at + 4) from None
            if isid >> 48:
                raise invalid_parameter(at + 4)
            text = name[:-2]
        if not text or "," in text:
            raise invalid_parameter(at + 4)
        return cls(text, isid), end - offset


# --- PERSISTENT RESERVE OUT parameter lists (SPC-4 §6.16.3, §6.16.4) ----------------------------------

PROUT_PARAMS = struct.Struct(">QQ4xBx2x")
"""Basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.16.3, table 210): RESERVATION KEY,
SERVICE ACTION RESERVATION KEY, obsolete, SPEC_I_PT|ALL_TG_PT|APTPL, reserved, obsolete."""
TRANSPORTID_LIST_LENGTH = struct.Struct(">I")
"""TRANSPORTID PARAMETER DATA LENGTH after the basic list when SPEC_I_PT is one (byte 24)."""
SPEC_I_PT = 0x08
"""Byte 20 of the basic parameter list: Specify Initiator Ports."""
ALL_TG_PT = 0x04
"""Byte 20: All Target Ports."""
APTPL = 0x01
"""Byte 20 (byte 17 of REGISTER AND MOVE): Activate Persist Through Power Loss."""
UNREG = 0x02
"""Byte 17 of REGISTER AND MOVE: unregister the issuer."""


@dataclass(frozen=True, slots=True)
class ProutParameterList:
    """The basic PERSISTENT RESERVE OUT parameter list, with its TransportIDs when SPEC_I_PT is one."""

    reservation_key: int
    """RESERVATION KEY: the issuer's registered key (0 when it has none)."""
    service_action_reservation_key: int
    """SERVICE ACTION RESERVATION KEY: the key to register, or whose holders to preempt."""
    spec_i_pt: bool = False
    """SPEC_I_PT: the TransportIDs name more I_T nexuses to register (REGISTER only)."""
    all_tg_pt: bool = False
    """ALL_TG_PT: register through every target port."""
    aptpl: bool = False
    """APTPL: the state persists through power loss (SPC-4 §5.9.4)."""
    transport_ids: bytes = b""
    """The TransportIDs (SPEC_I_PT=1), undecoded: see :meth:`each_transport_id`."""

    TRANSPORT_IDS_AT = PROUT_PARAMS.size + TRANSPORTID_LIST_LENGTH.size
    """Byte offset of the first TransportID in the parameter list (28)."""

    @classmethod
    def decode(cls, service_action: int, data: bytes, parameter_list_length: int) -> ProutParameterList:
        """Check PARAMETER LIST LENGTH and the flags valid for ``service_action`` (SPC-4 §6.16.3)."""
        pll = parameter_list_length
        if pll < PROUT_PARAMS.size or len(data) < PROUT_PARAMS.size:
            raise param_length_error()
        key, sa_key, flags = PROUT_PARAMS.unpack_from(data)
        spec_i_pt = bool(flags & SPEC_I_PT)
        tids = b""
        if spec_i_pt:
            if service_action != PersistentReserveOut.REGISTER:
                raise invalid_parameter(20, 3)
            if pll < cls.TRANSPORT_IDS_AT or len(data) < pll:
                raise param_length_error()
            (tid_len,) = TRANSPORTID_LIST_LENGTH.unpack_from(data, PROUT_PARAMS.size)
            if cls.TRANSPORT_IDS_AT + tid_len != pll:
                raise param_length_error()
            tids = bytes(data[cls.TRANSPORT_IDS_AT:pll])
        elif pll != PROUT_PARAMS.size:
            raise param_length_error()
        return cls(key, sa_key, spec_i_pt, bool(flags & ALL_TG_PT), bool(flags & APTPL), tids)

    def encode(self) -> bytes:
        """The parameter list as an initiator sends it."""
        flags = (SPEC_I_PT if self.spec_i_pt else 0) | (ALL_TG_PT if self.all_tg_pt else 0) | (
            APTPL if self.aptpl else 0)
        out = PROUT_PARAMS.pack(self.reservation_key, self.service_action_reservation_key, flags)
        if self.spec_i_pt:
            out += TRANSPORTID_LIST_LENGTH.pack(len(self.transport_ids)) + self.transport_ids
        return out

    def each_transport_id(self) -> Iterator[tuple[int, TransportId]]:
        """(offset in the parameter list, TransportID) for each TransportID, decoded as it is reached."""
        offset = 0
        while offset < len(self.transport_ids):
            tid, length = TransportId.decode(self.transport_ids, offset, self.TRANSPORT_IDS_AT)
            yield self.TRANSPORT_IDS_AT + offset, tid
            offset += length


REGISTER_AND_MOVE_PARAMS = struct.Struct(">QQxBHI")
"""REGISTER AND MOVE parameter list (SPC-4 §6.16.4, table 212): RESERVATION KEY, SERVICE ACTION
RESERVATION KEY, reserved, UNREG|APTPL, RELATIVE TARGET PORT IDENTIFIER, TRANSPORTID PARAMETER
DATA LENGTH; the TransportID follows."""


@dataclass(frozen=True, slots=True)
class RegisterAndMoveParameterList:
    """The REGISTER AND MOVE parameter list (SPC-4 §6.16.4)."""

    reservation_key: int
    """RESERVATION KEY: the issuer's (the holder's) key."""
    service_action_reservation_key: int
    """SERVICE ACTION RESERVATION KEY: the key registered for the destination I_T nexus."""
    unreg: bool
    """UNREG: unregister the issuer once the reservation has moved."""
    aptpl: bool
    """APTPL: the state persists through power loss (SPC-4 §5.9.4)."""
    relative_target_port_identifier: int
    """The target port of the destination I_T nexus."""
    transport_id: bytes
    """The destination's TransportID, undecoded (checked after the keys: SPC-4 §5.9.9)."""

    @classmethod
    def decode(cls, data: bytes, parameter_list_length: int) -> RegisterAndMoveParameterList:
        """Check the lengths (PARAMETER LIST LENGTH ERROR); the fields themselves are the handler's."""
        pll = parameter_list_length
        size = REGISTER_AND_MOVE_PARAMS.size
        if pll < size or len(data) < size:
            raise param_length_error()
        key, sa_key, flags, rel_port, tid_len = REGISTER_AND_MOVE_PARAMS.unpack_from(data)
        if size + tid_len > pll or len(data) < pll:
            raise param_length_error()
        return cls(key, sa_key, bool(flags & UNREG), bool(flags & APTPL), rel_port,
                   bytes(data[size:size + tid_len]))

    def encode(self) -> bytes:
        """The parameter list as an initiator sends it."""
        flags = (UNREG if self.unreg else 0) | (APTPL if self.aptpl else 0)
        return REGISTER_AND_MOVE_PARAMS.pack(self.reservation_key, self.service_action_reservation_key, flags,
                                             self.relative_target_port_identifier,
                                             len(self.transport_id)) + self.transport_id

    def destination(self) -> TransportId:
        """The destination I_T nexus's TransportID (INVALID FIELD IN PARAMETER LIST when malformed)."""
        return TransportId.decode(self.transport_id, 0, REGISTER_AND_MOVE_PARAMS.size)[0]


# --- PERSISTENT RESERVE IN parameter data (SPC-4 §6.15.2-§6.15.5) -------------------------------------

PRIN_HEADER = struct.Struct(">II")
"""PRGENERATION, ADDITIONAL LENGTH: the header of READ KEYS, READ RESERVATION and READ FULL STATUS
parameter data (SPC-4 §6.15.2-§6.15.5)."""
RESERVATION_KEY = struct.Struct(">Q")
"""One RESERVATION KEY of the READ KEYS list."""


def _body(data: bytes) -> tuple[int, bytes]:
    """PRGENERATION and the ADDITIONAL LENGTH bytes after the header (ValueError when cut short)."""
    generation, length = PRIN_HEADER.unpack_from(data)
    body = data[PRIN_HEADER.size:PRIN_HEADER.size + length]
    if len(body) != length:
        raise ValueError("parameter data shorter than its ADDITIONAL LENGTH")
    return generation, bytes(body)


@dataclass(frozen=True, slots=True)
class ReadKeysData:
    """READ KEYS parameter data (SPC-4 §6.15.2, table 195)."""

    prgeneration: int
    """PRGENERATION."""
    reservation_keys: tuple[int, ...]
    """One key per registered I_T nexus."""

    def encode(self) -> bytes:
        """Header and the keys."""
        keys = b"".join(RESERVATION_KEY.pack(k) for k in self.reservation_keys)
        return PRIN_HEADER.pack(self.prgeneration, len(keys)) + keys

    @classmethod
    def decode(cls, data: bytes) -> ReadKeysData:
        """The whole parameter data (ValueError when cut short)."""
        generation, body = _body(data)
        return cls(generation, tuple(k for (k,) in RESERVATION_KEY.iter_unpack(body)))


RESERVATION_DESCRIPTOR = struct.Struct(">Q4xxBxx")
"""READ RESERVATION descriptor (SPC-4 §6.15.3, table 198): RESERVATION KEY, obsolete, reserved,
SCOPE|TYPE, obsolete."""


@dataclass(frozen=True, slots=True)
class ReadReservationData:
    """READ RESERVATION parameter data (SPC-4 §6.15.3, tables 196-198)."""

    prgeneration: int
    """PRGENERATION."""
    reservation_key: int | None = None
    """The holder's RESERVATION KEY (0 for the all-registrants types); None: no reservation."""
    scope: int = LU_SCOPE
    """SCOPE of the reservation."""
    type: int = 0
    """TYPE of the reservation."""

    def encode(self) -> bytes:
        """Header, and the descriptor when a reservation is held."""
        if self.reservation_key is None:
            return PRIN_HEADER.pack(self.prgeneration, 0)
        return PRIN_HEADER.pack(self.prgeneration, RESERVATION_DESCRIPTOR.size) + RESERVATION_DESCRIPTOR.pack(
            self.reservation_key, (self.scope << 4) | self.type)

    @classmethod
    def decode(cls, data: bytes) -> ReadReservationData:
        """The whole parameter data (ValueError when cut short)."""
        generation, body = _body(data)
        if not body:
            return cls(generation)
        key, scope_type = RESERVATION_DESCRIPTOR.unpack_from(body)
        return cls(generation, key, scope_type >> 4, scope_type & 0x0F)


REPORT_CAPABILITIES = struct.Struct(">HBBH2x")
"""REPORT CAPABILITIES parameter data (SPC-4 §6.15.4, table 199): LENGTH, RLR_C|CRH|SIP_C|ATP_C|
PTPL_C, TMV|ALLOW COMMANDS|PTPL_A, PERSISTENT RESERVATION TYPE MASK, reserved."""
RLR_C, CRH, SIP_C, ATP_C, PTPL_C = 0x80, 0x10, 0x08, 0x04, 0x01
"""REPORT CAPABILITIES byte 2 flags (see :class:`ReportCapabilitiesData`)."""
TMV, PTPL_A = 0x80, 0x01
"""REPORT CAPABILITIES byte 3 flags; ALLOW COMMANDS sits in bits 6-4 between them."""
TYPE_MASK_BITS: dict[PrType, int] = {
    PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x8000, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x4000,
    PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x2000, PrType.EXCLUSIVE_ACCESS: 0x0800,
    PrType.WRITE_EXCLUSIVE: 0x0200, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x0001,
}
"""PERSISTENT RESERVATION TYPE MASK bit of each type (SPC-4 §6.15.4, table 201)."""


@dataclass(frozen=True, slots=True)
class ReportCapabilitiesData:
    """REPORT CAPABILITIES parameter data (SPC-4 §6.15.4)."""

    rlr_c: bool = False
    """Replace Lost Reservation Capable."""
    crh: bool = False
    """Compatible Reservation Handling: RESERVE/RELEASE follow SPC-4 §5.9.3."""
    sip_c: bool = False
    """Specify Initiator Ports Capable."""
    atp_c: bool = False
    """All Target Ports Capable."""
    ptpl_c: bool = False
    """Persist Through Power Loss Capable."""
    tmv: bool = False
    """Type Mask Valid."""
    allow_commands: int = 0
    """ALLOW COMMANDS (SPC-4 table 200): which commands pass write-exclusive reservations."""
    ptpl_a: bool = False
    """Persist Through Power Loss Activated."""
    types: frozenset[PrType] = frozenset()
    """The types of the PERSISTENT RESERVATION TYPE MASK."""

    def encode(self) -> bytes:
        """The 8 bytes."""
        b2 = ((RLR_C if self.rlr_c else 0) | (CRH if self.crh else 0) | (SIP_C if self.sip_c else 0)
              | (ATP_C if self.atp_c else 0) | (PTPL_C if self.ptpl_c else 0))
        b3 = (TMV if self.tmv else 0) | (self.allow_commands << 4) | (PTPL_A if self.ptpl_a else 0)
        mask = 0
        for t in self.types:
            mask |= TYPE_MASK_BITS[t]
        return REPORT_CAPABILITIES.pack(REPORT_CAPABILITIES.size, b2, b3, mask)

    @classmethod
    def decode(cls, data: bytes) -> ReportCapabilitiesData:
        """The 8 bytes (ValueError when LENGTH is not 8)."""
        length, b2, b3, mask = REPORT_CAPABILITIES.unpack_from(data)
        if length != REPORT_CAPABILITIES.size:
            raise ValueError(f"REPORT CAPABILITIES LENGTH {length}")
        return cls(bool(b2 & RLR_C), bool(b2 & CRH), bool(b2 & SIP_C), bool(b2 & ATP_C), bool(b2 & PTPL_C),
                   bool(b3 & TMV), (b3 >> 4) & 0x07, bool(b3 & PTPL_A),
                   frozenset(t for t, bit in TYPE_MASK_BITS.items() if mask & bit))


FULL_STATUS_DESCRIPTOR = struct.Struct(">Q4xBB4xHI")
"""READ FULL STATUS descriptor (SPC-4 §6.15.5, table 203): RESERVATION KEY, reserved,
ALL_TG_PT|R_HOLDER, SCOPE|TYPE, reserved, RELATIVE TARGET PORT IDENTIFIER, ADDITIONAL DESCRIPTOR
LENGTH; the TransportID follows."""
R_HOLDER = 0x01
"""READ FULL STATUS descriptor byte 12: this registration holds the reservation."""
ALL_TG_PT_DESC = 0x02
"""READ FULL STATUS descriptor byte 12: registered through every target port."""


@dataclass(frozen=True, slots=True)
class FullStatusDescriptor:
    """One registration in READ FULL STATUS (SPC-4 §6.15.5, table 203)."""

    reservation_key: int
    """The registered RESERVATION KEY."""
    all_tg_pt: bool
    """Registered through every target port (RELATIVE TARGET PORT IDENTIFIER is then 0)."""
    r_holder: bool
    """This registration holds the reservation."""
    scope: int
    """SCOPE of the reservation held (0 unless R_HOLDER)."""
    type: int
    """TYPE of the reservation held (0 unless R_HOLDER)."""
    relative_target_port_identifier: int
    """The target port the registration was made through."""
    transport_id: TransportId
    """The registered initiator port(s)."""

    def encode(self) -> bytes:
        """The descriptor and its TransportID."""
        tid = self.transport_id.encode()
        flags = (ALL_TG_PT_DESC if self.all_tg_pt else 0) | (R_HOLDER if self.r_holder else 0)
        return FULL_STATUS_DESCRIPTOR.pack(self.reservation_key, flags, (self.scope << 4) | self.type,
                                           self.relative_target_port_identifier, len(tid)) + tid


@dataclass(frozen=True, slots=True)
class ReadFullStatusData:
    """READ FULL STATUS parameter data (SPC-4 §6.15.5, table 202)."""

    prgeneration: int
    """PRGENERATION."""
    descriptors: tuple[FullStatusDescriptor, ...]
    """One per registration."""

    def encode(self) -> bytes:
        """Header and the descriptors."""
        body = b"".join(d.encode() for d in self.descriptors)
        return PRIN_HEADER.pack(self.prgeneration, len(body)) + body

    @classmethod
    def decode(cls, data: bytes) -> ReadFullStatusData:
        """The whole parameter data (ValueError when cut short; ScsiError for a malformed TransportID)."""
        generation, body = _body(data)
        out = []
        pos = 0
        while pos < len(body):
            key, flags, scope_type, rel, add_len = FULL_STATUS_DESCRIPTOR.unpack_from(body, pos)
            pos += FULL_STATUS_DESCRIPTOR.size
            tid, _ = TransportId.decode(body[:pos + add_len], pos)
            out.append(FullStatusDescriptor(key, bool(flags & ALL_TG_PT_DESC), bool(flags & R_HOLDER),
                                            scope_type >> 4, scope_type & 0x0F, rel, tid))
            pos += add_len
        return cls(generation, tuple(out))

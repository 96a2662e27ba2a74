"""The medium: START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, READ DEFECT DATA (SBC-3).

A removable LU (``removable = true``, RMB=1) can have its medium ejected and
loaded by START STOP UNIT with LOEJ; while it is out, the device server answers
media-access commands with NOT READY / MEDIUM NOT PRESENT
(:func:`~sanlab.scsi.device_server.check_lu_state`).  PREVENT ALLOW MEDIUM
REMOVAL holds the medium in place for as long as any I_T nexus prevents it;
prevention ends with that nexus, a logical unit reset or a hard reset
(SBC-3 §5.14).  READ DEFECT DATA reports empty defect lists: a virtual disk has
no grown or primary defects.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.reservation_state import ALLOWED, EXCLUSIVE, READ, Access
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field
from sanlab.scsi.task import ScsiResult

START_STOP_UNIT = struct.Struct(">BBxBBB")
"""START STOP UNIT CDB (SBC-3 §5.25, table 91): opcode, IMMED, reserved, POWER CONDITION MODIFIER,
POWER CONDITION|NO_FLUSH|LOEJ|START, CONTROL."""
PREVENT_ALLOW = struct.Struct(">B3xBB")
"""PREVENT ALLOW MEDIUM REMOVAL CDB (SBC-3 §5.14, table 72): opcode, reserved, PREVENT, CONTROL."""
READ_DEFECT_DATA_10 = struct.Struct(">BBB4xHB")
"""READ DEFECT DATA(10) CDB (SBC-3 §5.17.1, table 76): opcode, reserved, REQ_PLIST|REQ_GLIST|DEFECT
LIST FORMAT, reserved, ALLOCATION LENGTH, CONTROL."""
READ_DEFECT_DATA_12 = struct.Struct(">BBIIxB")
"""READ DEFECT DATA(12) CDB (SBC-3 §5.18.1, table 81): opcode, REQ_PLIST|REQ_GLIST|DEFECT LIST FORMAT,
ADDRESS DESCRIPTOR INDEX, ALLOCATION LENGTH, reserved, CONTROL."""
DEFECT_HEADER_10 = struct.Struct(">xBH")
"""READ DEFECT DATA(10) parameter data header (SBC-3 §5.17.2): reserved, PLISTV|GLISTV|DEFECT LIST
FORMAT, DEFECT LIST LENGTH."""
DEFECT_HEADER_12 = struct.Struct(">xBHI")
"""READ DEFECT DATA(12) parameter data header (SBC-3 §5.18.2): reserved, PLISTV|GLISTV|DEFECT LIST
FORMAT, GENERATION CODE, DEFECT LIST LENGTH."""

LOEJ = 0x02
"""START STOP UNIT byte 4: load or eject the medium."""
START = 0x01
"""START STOP UNIT byte 4: make the LU ready (with LOEJ: load the medium)."""
REQ_PLIST = 0x10
"""READ DEFECT DATA: the primary defect list is asked for."""
REQ_GLIST = 0x08
"""READ DEFECT DATA: the grown defect list is asked for."""

DEFECT_LIST_FORMATS = {0b000, 0b011, 0b100, 0b101, 0b110}
"""Short block, long block, bytes from index, physical sector, vendor specific (SBC-3 §6.2, table 186);
the others are reserved."""


@dataclass(frozen=True, slots=True)
class StartStopUnitCdb:
    """START STOP UNIT fields (SBC-3 §5.25)."""

    immed: bool
    """IMMED: GOOD may be sent before the operation ends."""
    power_condition: int
    """POWER CONDITION (byte 4 bits 7-4); 0h (START_VALID): START and LOEJ apply."""
    loej: bool
    start: bool

    @classmethod
    def parse(cls, cdb: bytes) -> StartStopUnitCdb:
        """Decode the CDB; ScsiError INVALID FIELD IN CDB for a reserved bit of byte 1.  POWER CONDITION
        MODIFIER and NO_FLUSH are not decoded."""
        _, immed, _modifier, b4, _ = START_STOP_UNIT.unpack_from(cdb)
        if immed & 0xFE:
            raise invalid_field(1, 7)
        return cls(bool(immed & 1), b4 >> 4, bool(b4 & LOEJ), bool(b4 & START))


async def start_stop_unit(ctx: Ctx) -> ScsiResult:
    """START STOP UNIT (SBC-3 §5.25).

    A POWER CONDITION other than 0h (START_VALID) asks for a power state; a virtual disk has none to
    enter, so it is accepted and START/LOEJ are ignored as SBC-3 says for that case.  START without
    LOEJ spins nothing up or down: the LU stays ready.  LOEJ ejects (START=0) or loads (START=1) the
    medium of a removable LU — unless a nexus prevents removal (ILLEGAL REQUEST / MEDIUM REMOVAL
    PREVENTED, SBC-3 §5.14); a fixed LU has no medium to move, so LOEJ is an invalid field.
    IMMED only changes when GOOD may be sent: the change is immediate either way.
    """
    lu = ctx.need_lu()
    cdb = StartStopUnitCdb.parse(ctx.cdb)
    if cdb.power_condition or not cdb.loej:
        return ScsiResult()
    if not lu.config.removable:
        raise invalid_field(4, 1)
    if lu.prevent:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.MEDIUM_REMOVAL_PREVENTED)
    if cdb.start and not lu.medium_present:
        lu.medium_present = True
        # The medium may have changed while it was out (SBC-3 §4.2.2): tell every other nexus.
        lu.add_ua(Asc.NOT_READY_TO_READY_CHANGE_MEDIUM_MAY_HAVE_CHANGED,
                  [nx for nx in lu.nexuses if nx != ctx.task.nexus])
    elif not cdb.start and lu.medium_present:
        await lu.volume.flush()  # the medium leaves with everything written to it
        lu.medium_present = False
    return ScsiResult()


async def prevent_allow_medium_removal(ctx: Ctx) -> ScsiResult:
    """PREVENT ALLOW MEDIUM REMOVAL (SBC-3 §5.14): PREVENT 00b allows, 01b prevents, per I_T nexus;
    10b and 11b are obsolete/reserved."""
    lu = ctx.need_lu()
    _, prevent, _ = PREVENT_ALLOW.unpack_from(ctx.cdb)
    if prevent & 0xFE:
        raise invalid_field(4, 1)
    if prevent:
        lu.prevent.add(ctx.task.nexus)
    else:
        lu.prevent.discard(ctx.task.nexus)
    return ScsiResult()


def _defect_flags(flags: int, byte: int) -> int:
    """PLISTV/GLISTV for the lists asked for (both empty), and the format echoed."""
    fmt = flags & 0x07
    if fmt not in DEFECT_LIST_FORMATS:
        raise invalid_field(byte, 2)
    return (flags & (REQ_PLIST | REQ_GLIST)) | fmt


async def read_defect_data_10(ctx: Ctx) -> ScsiResult:
    """READ DEFECT DATA(10) (SBC-3 §5.17): the requested lists, valid and empty, in the requested format."""
    _, b1, flags, alloc, _ = READ_DEFECT_DATA_10.unpack_from(ctx.cdb)
    if b1 or flags & 0xE0:
        raise invalid_field(1 if b1 else 2, 7)
    return data_in(DEFECT_HEADER_10.pack(_defect_flags(flags, 2), 0), alloc)


async def read_defect_data_12(ctx: Ctx) -> ScsiResult:
    """READ DEFECT DATA(12) (SBC-3 §5.18): as (10), with a GENERATION CODE of 0 (lists never change)."""
    _, flags, _index, alloc, _ = READ_DEFECT_DATA_12.unpack_from(ctx.cdb)
    if flags & 0xE0:
        raise invalid_field(1, 7)
    return data_in(DEFECT_HEADER_12.pack(_defect_flags(flags, 1), 0, 0), alloc)


def start_stop_access(cdb: bytes) -> Access:
    """START=1 with POWER CONDITION 0 only spins the unit up: allowed past any reservation; anything
    else (stop, eject, power conditions) is exclusive (SBC-3 §4.17 table 13, SPC-2 annex B)."""
    _, _, _, b4, _ = START_STOP_UNIT.unpack_from(cdb)
    return ALLOWED if b4 & START and not b4 & 0xF0 else EXCLUSIVE


def prevent_allow_access(cdb: bytes) -> Access:
    """PREVENT=0 (allow removal) may come from anyone; preventing it is exclusive (SBC-3 §4.17 table 13,
    SPC-2 annex B)."""
    _, prevent, _ = PREVENT_ALLOW.unpack_from(cdb)
    return EXCLUSIVE if prevent & 0x03 else ALLOWED


COMMANDS: dict[int, CommandSpec] = {
    Opcode.START_STOP_UNIT: CommandSpec("START STOP UNIT", start_stop_unit, allowed_without_medium=True,
                                        reservation=start_stop_access),
    Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL: CommandSpec("PREVENT ALLOW MEDIUM REMOVAL", prevent_allow_medium_removal,
                                                     allowed_without_medium=True, reservation=prevent_allow_access),
    Opcode.READ_DEFECT_DATA_10: CommandSpec("READ DEFECT DATA(10)", read_defect_data_10, reservation=READ),
    Opcode.READ_DEFECT_DATA_12: CommandSpec("READ DEFECT DATA(12)", read_defect_data_12, reservation=READ),
}
"""Medium commands of the command table."""

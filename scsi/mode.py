"""MODE SELECT(6)/(10) (SPC-4 §6.9, §6.10): changing the changeable mode page fields.

The pages, their current values and their changeable masks are the MODE SENSE
builders of :data:`sanlab.scsi.spc.MODE_PAGES`; this module parses the
parameter list, checks every byte of every page against the current value under
the changeable mask, and only when the whole list is valid applies it through
:data:`APPLY` (one function per page that has changeable fields).  A change
establishes MODE PARAMETERS CHANGED for the other I_T nexuses (SPC-4 §6.9,
mode parameters are shared by all of them here).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

from sanlab.scsi.cdb import Opcode, PageControl
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter
from sanlab.scsi.spc import D_SENSE, LONG_BLOCK_DESCRIPTOR, MODE_PAGES, SHORT_BLOCK_DESCRIPTOR, SWP, WCE
from sanlab.scsi.task import ScsiResult

MODE_SELECT_6 = struct.Struct(">BB2xBB")
"""MODE SELECT(6) CDB (SPC-4 §6.9.1, table 106): opcode, PF|SP, reserved, PARAMETER LIST LENGTH, CONTROL."""
MODE_SELECT_10 = struct.Struct(">BB5xHB")
"""MODE SELECT(10) CDB (SPC-4 §6.10, table 108): opcode, PF|SP, reserved, PARAMETER LIST LENGTH, CONTROL."""
PARAMETER_HEADER_6 = struct.Struct(">BBBB")
"""Mode parameter header(6) (SPC-4 §7.5.5): MODE DATA LENGTH (reserved for MODE SELECT), MEDIUM TYPE,
DEVICE-SPECIFIC PARAMETER, BLOCK DESCRIPTOR LENGTH."""
PARAMETER_HEADER_10 = struct.Struct(">HBBBxH")
"""Mode parameter header(10): MODE DATA LENGTH, MEDIUM TYPE, DEVICE-SPECIFIC PARAMETER, LONGLBA,
reserved, BLOCK DESCRIPTOR LENGTH."""

PF = 0x10
SP = 0x01


@dataclass(frozen=True, slots=True)
class ModeSelectCdb:
    """MODE SELECT(6)/(10) CDB fields."""

    ten: bool
    pf: bool
    """Page format: the parameter list holds pages as SPC-4 §7.5.7 lays them out."""
    parameter_list_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> ModeSelectCdb:
        """Decode; SP=1 asks to save pages, which this LU cannot (SPC-4 §6.9.1)."""
        ten = cdb[0] == Opcode.MODE_SELECT_10
        if ten:
            _, flags, length, _ = MODE_SELECT_10.unpack_from(cdb)
        else:
            _, flags, length, _ = MODE_SELECT_6.unpack_from(cdb)
        if flags & SP:
            raise invalid_field(1, 0)
        if flags & 0xEE:
            raise invalid_field(1, 7)
        return cls(ten, bool(flags & PF), length)


def _apply_caching(lu: LogicalUnit, page: bytes) -> None:
    lu.wce = bool(page[2] & WCE)


def _apply_control(lu: LogicalUnit, page: bytes) -> None:
    lu.d_sense = bool(page[2] & D_SENSE)
    lu.swp = bool(page[4] & SWP)


APPLY: dict[int, Callable[[LogicalUnit, bytes], None]] = {
    0x08: _apply_caching,
    0x0A: _apply_control,
}
"""Page code → how its changeable fields take effect.  Pages without an entry have no changeable
field, so a page accepted by the checks is identical to the current one."""


def _check_block_descriptors(lu: LogicalUnit, data: bytes, start: int, length: int, long_lba: bool) -> None:
    """Block descriptors may only restate the capacity (or say 0: no change) and the block length
    (SBC-3 §6.4.2): this LU cannot be reformatted."""
    layout = LONG_BLOCK_DESCRIPTOR if long_lba else SHORT_BLOCK_DESCRIPTOR
    if length % layout.size:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    for off in range(start, start + length, layout.size):
        if long_lba:
            blocks, block_length = LONG_BLOCK_DESCRIPTOR.unpack_from(data, off)
            length_at = off + 12
        else:
            blocks, hi, lo = SHORT_BLOCK_DESCRIPTOR.unpack_from(data, off)
            block_length = (hi << 16) | lo
            length_at = off + 5
        if blocks not in (0, lu.num_blocks, min(lu.num_blocks, 0xFFFFFFFF)):
            raise invalid_parameter(off)
        if block_length != lu.block_size:
            raise invalid_parameter(length_at)


def parse_pages(ctx: Ctx, data: bytes, start: int) -> list[tuple[int, bytes]]:
    """Check every page of the list against the current values and the changeable mask.

    Returns (page code, page) pairs to apply.  Field pointers point into the parameter list
    (SPC-4 §4.5.2.4.2, C/D=0).
    """
    pages: list[tuple[int, bytes]] = []
    off = start
    while off < len(data):
        if off + 2 > len(data):
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
        code, spf = data[off] & 0x3F, bool(data[off] & 0x40)
        build = MODE_PAGES.get(code)
        if build is None or spf:
            # No subpages here; PS (bit 7) is reserved in MODE SELECT and ignored.
            raise invalid_parameter(off, 5)
        current = build(ctx, PageControl.CURRENT)
        changeable = build(ctx, PageControl.CHANGEABLE)
        if data[off + 1] != current[1]:
            raise invalid_parameter(off + 1)
        end = off + 2 + current[1]
        if end > len(data):
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
        page = data[off:end]
        for i in range(2, len(page)):
            diff = (page[i] ^ current[i]) & ~changeable[i] & 0xFF
            if diff:
                raise invalid_parameter(off + i, diff.bit_length() - 1)
        pages.append((code, bytes(page)))
        off = end
    return pages


async def mode_select(ctx: Ctx) -> ScsiResult:
    """MODE SELECT(6)/(10): validate the whole parameter list, then apply it (SPC-4 §6.9)."""
    lu = ctx.need_lu()
    cdb = ModeSelectCdb.parse(ctx.cdb)
    data = bytes(ctx.task.data_out[:cdb.parameter_list_length])
    result = ScsiResult(transfer_length=cdb.parameter_list_length, data_out_direction=True)
    if cdb.parameter_list_length == 0:
        return result  # SPC-4 §6.9.1: zero length is not an error, nothing changes
    header = PARAMETER_HEADER_10 if cdb.ten else PARAMETER_HEADER_6
    if len(data) < header.size or len(data) < cdb.parameter_list_length:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    if cdb.ten:
        _, _, _, longlba, bd_length = PARAMETER_HEADER_10.unpack_from(data)
        long_lba = bool(longlba & 0x01)
    else:
        _, _, _, bd_length = PARAMETER_HEADER_6.unpack_from(data)
        long_lba = False
    # MODE DATA LENGTH is reserved in MODE SELECT; the device-specific parameter (WP, DPOFUA) is
    # ignored for direct-access devices (SBC-3 §6.4.1); MEDIUM TYPE must be 00h.
    if data[1]:
        raise invalid_parameter(1)
    if header.size + bd_length > len(data):
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    _check_block_descriptors(lu, data, header.size, bd_length, long_lba)
    start = header.size + bd_length
    if start < len(data) and not cdb.pf:
        raise invalid_field(1, 4)  # PF=0: vendor-specific page format, none defined here
    pages = parse_pages(ctx, data, start)
    before = [(code, MODE_PAGES[code](ctx, PageControl.CURRENT)) for code, _ in pages]
    for code, page in pages:
        apply = APPLY.get(code)
        if apply is not None:
            apply(lu, page)
    after = [(code, MODE_PAGES[code](ctx, PageControl.CURRENT)) for code, _ in pages]
    if before != after:
        others = [nx for nx in lu.nexuses if nx != ctx.task.nexus]
        lu.add_ua(Asc.MODE_PARAMETERS_CHANGED, others)
    return result


COMMANDS: dict[int, CommandSpec] = {
    Opcode.MODE_SELECT_6: CommandSpec("MODE SELECT(6)", mode_select, data_out=True, allowed_without_medium=True),
    Opcode.MODE_SELECT_10: CommandSpec("MODE SELECT(10)", mode_select, data_out=True,
                                       allowed_without_medium=True),
}
"""MODE SELECT rows of the command table."""

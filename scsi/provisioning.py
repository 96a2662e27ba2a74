"""Logical block provisioning (SBC-3 §4.7): UNMAP, WRITE SAME(10)/(16), GET LBA STATUS.

A thin LU (:func:`~sanlab.scsi.spc.thin_provisioned`: LBPME=1) deallocates
through UNMAP and through WRITE SAME with the UNMAP bit; a fully provisioned LU
has no UNMAP (INVALID COMMAND OPERATION CODE, as SBC-3 §4.7 leaves deallocation
to provisioned LUs) and refuses the UNMAP bit, but still runs WRITE SAME and GET
LBA STATUS (everything mapped).  The limits the handlers enforce are the ones the
Block Limits VPD page reports (``spc.MAX_*``).  Decoding and checks are plain
functions; handlers only await the volume.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from sanlab.scsi.cdb import Opcode, ServiceActionIn16
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.reservation_state import READ
from sanlab.scsi.compare import check_writable
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sbc import check_range
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter
from sanlab.scsi.spc import (MAX_UNMAP_BLOCK_DESCRIPTORS, MAX_UNMAP_LBA_COUNT, max_write_same_blocks,
                             thin_provisioned)
from sanlab.scsi.task import ScsiResult

# --- UNMAP (SBC-3 §5.28) ------------------------------------------------------------------------------

UNMAP_CDB = struct.Struct(">BB4xBHB")
"""OPERATION CODE, ANCHOR (bit 0), reserved (4), GROUP NUMBER, PARAMETER LIST LENGTH, CONTROL."""
UNMAP_HEADER = struct.Struct(">HH4x")
"""UNMAP DATA LENGTH, UNMAP BLOCK DESCRIPTOR DATA LENGTH, reserved (SBC-3 §5.28)."""
UNMAP_DESCRIPTOR = struct.Struct(">QI4x")
"""UNMAP LOGICAL BLOCK ADDRESS, NUMBER OF LOGICAL BLOCKS, reserved (SBC-3 §5.28)."""


@dataclass(frozen=True, slots=True)
class UnmapCdb:
    """UNMAP (SBC-3 §5.28)."""

    anchor: bool
    """ANCHOR: anchor the blocks instead of deallocating them (refused: ANC_SUP=0)."""
    group_number: int
    parameter_list_length: int
    """Bytes of Data-Out the parameter list occupies (0: nothing to unmap)."""

    @classmethod
    def parse(cls, cdb: bytes) -> UnmapCdb:
        """Decode the CDB; ScsiError INVALID FIELD IN CDB for a reserved bit of byte 1.  The reserved
        bytes 2-5 are not checked."""
        _, flags, group, length, _ = UNMAP_CDB.unpack_from(cdb)
        if flags & 0xFE:
            raise invalid_field(1, 7)
        return cls(bool(flags & 0x01), group & 0x1F, length)


@dataclass(frozen=True, slots=True)
class UnmapDescriptor:
    """One UNMAP block descriptor."""

    lba: int
    """UNMAP LOGICAL BLOCK ADDRESS."""
    number_of_blocks: int
    """NUMBER OF LOGICAL BLOCKS (0: none)."""


def parse_unmap_parameters(data: bytes | bytearray | memoryview) -> list[UnmapDescriptor]:
    """The block descriptors of an UNMAP parameter list (SBC-3 §5.28).

    Fewer than 8 bytes: PARAMETER LIST LENGTH ERROR.  The descriptors are the
    whole 16-byte ones inside both the UNMAP BLOCK DESCRIPTOR DATA LENGTH and the
    data that arrived; a truncated last descriptor is ignored, as SBC-3 says.
    """
    if len(data) < UNMAP_HEADER.size:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    _, bd_length = UNMAP_HEADER.unpack_from(data)
    count = min(bd_length, len(data) - UNMAP_HEADER.size) // UNMAP_DESCRIPTOR.size
    return [UnmapDescriptor(*UNMAP_DESCRIPTOR.unpack_from(data, UNMAP_HEADER.size + i * UNMAP_DESCRIPTOR.size))
            for i in range(count)]


def check_unmap(lu: LogicalUnit, descriptors: list[UnmapDescriptor]) -> None:
    """Every check before any block is unmapped, so a refused UNMAP changes nothing (SBC-3 §5.28)."""
    if len(descriptors) > MAX_UNMAP_BLOCK_DESCRIPTORS:
        raise invalid_parameter(2)  # UNMAP BLOCK DESCRIPTOR DATA LENGTH
    total = 0
    for i, d in enumerate(descriptors):
        if d.lba + d.number_of_blocks > lu.num_blocks:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
        total += d.number_of_blocks
        if total > MAX_UNMAP_LBA_COUNT:
            raise invalid_parameter(UNMAP_HEADER.size + i * UNMAP_DESCRIPTOR.size + 8)


async def unmap(ctx: Ctx) -> ScsiResult:
    """UNMAP: deallocate the blocks of every descriptor (hole punching on a file volume)."""
    lu = ctx.need_lu()
    cdb = UnmapCdb.parse(ctx.cdb)
    if not thin_provisioned(lu):
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)
    if cdb.anchor:
        raise invalid_field(1, 0)  # ANC_SUP=0: no anchored state (SBC-3 §5.28)
    check_writable(lu)
    result = ScsiResult(transfer_length=cdb.parameter_list_length, data_out_direction=True)
    if not cdb.parameter_list_length:
        return result  # SBC-3 §5.28: no parameter data, nothing to do, not an error
    descriptors = parse_unmap_parameters(memoryview(ctx.task.data_out)[:cdb.parameter_list_length])
    check_unmap(lu, descriptors)
    for d in descriptors:
        if d.number_of_blocks:
            await lu.volume.unmap(d.lba, d.number_of_blocks)
    return result


# --- WRITE SAME (SBC-3: WRITE SAME(10), WRITE SAME(16)) ------------------------------------------------

WRITE_SAME_10_CDB = struct.Struct(">BBIBHB")
"""OPERATION CODE, WRPROTECT|ANCHOR|UNMAP|obsolete, LBA, GROUP NUMBER, NUMBER OF LOGICAL BLOCKS, CONTROL."""
WRITE_SAME_16_CDB = struct.Struct(">BBQIBB")
"""OPERATION CODE, WRPROTECT|ANCHOR|UNMAP|obsolete|NDOB, LBA, NUMBER OF LOGICAL BLOCKS, GROUP NUMBER, CONTROL."""
WS_ANCHOR, WS_UNMAP, WS_NDOB = 0x10, 0x08, 0x01
WS_OBSOLETE = 0x06
"""PBDATA and LBDATA of SBC-2: obsolete in SBC-3, refused (we do not generate block data)."""


@dataclass(frozen=True, slots=True)
class WriteSameCdb:
    """WRITE SAME(10) and WRITE SAME(16)."""

    lba: int
    number_of_blocks: int
    """0: from LBA to the end of the medium (WSNZ=0)."""
    anchor: bool
    """ANCHOR (refused: ANC_SUP=0)."""
    unmap: bool
    """UNMAP: a thin LU deallocates the blocks instead of writing them."""
    ndob: bool
    """No Data-Out Buffer: the block is all zeros (WRITE SAME(16) only)."""
    group_number: int

    @classmethod
    def parse(cls, cdb: bytes) -> WriteSameCdb:
        """Decode WRITE SAME(10) or (16), told apart by the opcode; ScsiError INVALID FIELD IN CDB for
        WRPROTECT (no protection information), PBDATA/LBDATA (obsolete) and RELADR (10).  ANCHOR and
        UNMAP are judged by :func:`write_same_range`."""
        if cdb[0] == Opcode.WRITE_SAME_16:
            _, flags, lba, blocks, group, _ = WRITE_SAME_16_CDB.unpack_from(cdb)
            ndob = bool(flags & WS_NDOB)
        else:
            _, flags, lba, group, blocks, _ = WRITE_SAME_10_CDB.unpack_from(cdb)
            if flags & 0x01:
                raise invalid_field(1, 0)  # obsolete RELADR
            ndob = False
        if flags & 0xE0:
            raise invalid_field(1, 7)  # WRPROTECT: no protection information (SBC-3, WRITE SAME)
        if flags & WS_OBSOLETE:
            raise invalid_field(1, 2 if flags & 0x04 else 1)
        return cls(lba, blocks, bool(flags & WS_ANCHOR), bool(flags & WS_UNMAP), ndob, group & 0x1F)


WS_BLOCKS_OFFSET = {Opcode.WRITE_SAME_10: 7, Opcode.WRITE_SAME_16: 10}
"""Byte offset of NUMBER OF LOGICAL BLOCKS, for field pointers."""


def write_same_range(cdb: bytes, lu: LogicalUnit, ws: WriteSameCdb) -> int:
    """The number of blocks to write, after the range and MAXIMUM WRITE SAME LENGTH checks."""
    if ws.anchor and not ws.unmap:
        raise invalid_field(1, 4)  # ANCHOR without UNMAP (SBC-3, WRITE SAME)
    if ws.anchor:
        raise invalid_field(1, 4)  # ANC_SUP=0
    if ws.unmap and not thin_provisioned(lu):
        raise invalid_field(1, 3)  # LBPWS/LBPWS10=0 on a fully provisioned LU
    if ws.lba > lu.num_blocks:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    # WSNZ=0 (Block Limits VPD): zero blocks means every block from LBA to the end (SBC-3, WRITE SAME).
    blocks = ws.number_of_blocks or lu.num_blocks - ws.lba
    check_range(lu, ws.lba, blocks)
    if blocks > max_write_same_blocks(lu.block_size):
        raise invalid_field(WS_BLOCKS_OFFSET[Opcode(cdb[0])])
    return blocks


async def write_same(ctx: Ctx) -> ScsiResult:
    """WRITE SAME(10)/(16): one block of Data-Out (or zeros with NDOB) to every block of the range.

    The Data-Out Buffer is exactly one logical block (SBC-3, WRITE SAME); any other
    length is refused as INVALID FIELD IN CDB, since the command cannot complete
    with part of a block and extra data would be silently dropped.  With the UNMAP
    bit on a thin LU the volume deallocates the blocks whatever the block holds,
    so they then read as zeros (LBPRZ); a fully provisioned LU refuses the bit.
    """
    lu = ctx.need_lu()
    ws = WriteSameCdb.parse(ctx.cdb)
    check_writable(lu)
    blocks = write_same_range(ctx.cdb, lu, ws)
    bs = lu.block_size
    if ws.ndob:
        block: bytes | memoryview = bytes(bs)
    elif len(ctx.task.data_out) != bs:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB)
    else:
        block = memoryview(ctx.task.data_out)
    if blocks:
        await lu.volume.write_same(ws.lba, blocks, block, unmap=ws.unmap)
    return ScsiResult(transfer_length=0 if ws.ndob else bs, data_out_direction=True)


# --- GET LBA STATUS (SBC-3 §5.13) ---------------------------------------------------------------------

GET_LBA_STATUS_CDB = struct.Struct(">BBQIBB")
"""OPERATION CODE, SERVICE ACTION, STARTING LOGICAL BLOCK ADDRESS, ALLOCATION LENGTH, reserved, CONTROL."""
LBA_STATUS_HEADER = struct.Struct(">I4x")
"""PARAMETER DATA LENGTH, reserved (SBC-3 §5.13)."""
LBA_STATUS_DESCRIPTOR = struct.Struct(">QIB3x")
"""STARTING LBA, NUMBER OF LOGICAL BLOCKS, PROVISIONING STATUS, reserved (SBC-3 §5.13)."""
MAX_LBA_STATUS_DESCRIPTORS = 1024
"""Descriptors one GET LBA STATUS reports at most, however large its ALLOCATION LENGTH."""


@dataclass(frozen=True, slots=True)
class GetLbaStatusCdb:
    """GET LBA STATUS (SERVICE ACTION IN(16), service action 12h)."""

    lba: int
    """STARTING LOGICAL BLOCK ADDRESS."""
    allocation_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> GetLbaStatusCdb:
        """Decode the CDB (SBC-3 §5.13); nothing is refused here (the range is the handler's check)."""
        _, _, lba, alloc, _, _ = GET_LBA_STATUS_CDB.unpack_from(cdb)
        return cls(lba, alloc)


def lba_status_descriptors(extents: list[tuple[int, int, int]], limit: int) -> bytes:
    """LBA status descriptors for ``extents``; extents beyond the 32-bit count are split."""
    out = bytearray()
    for start, count, status in extents:
        while count and len(out) < limit * LBA_STATUS_DESCRIPTOR.size:
            n = min(count, 0xFFFFFFFF)
            out += LBA_STATUS_DESCRIPTOR.pack(start, n, status)
            start, count = start + n, count - n
    return bytes(out)


async def get_lba_status(ctx: Ctx) -> ScsiResult:
    """GET LBA STATUS: mapped/deallocated extents from the STARTING LBA on (SBC-3 §5.13).

    As many descriptors as the ALLOCATION LENGTH holds (at least one is looked up);
    the first starts at the requested LBA.
    """
    lu = ctx.need_lu()
    cdb = GetLbaStatusCdb.parse(ctx.cdb)
    if cdb.lba >= lu.num_blocks:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    room = (cdb.allocation_length - LBA_STATUS_HEADER.size) // LBA_STATUS_DESCRIPTOR.size
    limit = min(max(room, 1), MAX_LBA_STATUS_DESCRIPTORS)
    extents = await lu.volume.get_lba_status(cdb.lba, limit)
    body = lba_status_descriptors(extents, limit)
    return data_in(LBA_STATUS_HEADER.pack(len(body) + 4) + body, cdb.allocation_length)


COMMANDS: dict[int, CommandSpec] = {
    Opcode.UNMAP: CommandSpec("UNMAP", unmap, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_SAME_10: CommandSpec("WRITE SAME(10)", write_same, data_out=True, writes=True,
                                      medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_SAME_16: CommandSpec("WRITE SAME(16)", write_same, data_out=True, writes=True,
                                      medium_error=Asc.WRITE_ERROR),
    Opcode.SERVICE_ACTION_IN_16: CommandSpec("SERVICE ACTION IN(16)", service_actions={
        ServiceActionIn16.GET_LBA_STATUS: CommandSpec("GET LBA STATUS", get_lba_status, reservation=READ),
    }),
}
"""The provisioning rows of the device server's command table."""

"""Block commands (SBC-3): READ CAPACITY, READ, WRITE, SYNCHRONIZE CACHE."""
from __future__ import annotations

import struct

from sanlab.scsi.cdb import allocation_length, parse_rw
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field
from sanlab.scsi.spc import MAX_TRANSFER_BYTES
from sanlab.scsi.task import ScsiResult

# Byte offset of the TRANSFER LENGTH field by CDB group, for field pointers.
_TL_OFFSET = {0: 4, 1: 7, 5: 6, 4: 10}


def check_range(lu: LogicalUnit, lba: int, blocks: int) -> None:
    """LOGICAL BLOCK ADDRESS OUT OF RANGE (SBC-3 §4.5): nothing is transferred."""
    if lba > lu.num_blocks or lba + blocks > lu.num_blocks:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE, information=lba)


def _check_transfer(ctx: Ctx, lu: LogicalUnit, blocks: int) -> None:
    if blocks * lu.block_size > MAX_TRANSFER_BYTES:
        # Beyond the Block Limits VPD MAXIMUM TRANSFER LENGTH (SBC-3 §6.5.3).
        raise invalid_field(_TL_OFFSET.get(ctx.cdb[0] >> 5, 7))


async def read_capacity_10(ctx: Ctx) -> ScsiResult:
    lu = ctx.need_lu()
    cdb = ctx.cdb
    if not cdb[8] & 0x01 and any(cdb[2:6]):
        raise invalid_field(2)  # LBA must be zero when PMI is clear (SBC-3 §5.15)
    last = lu.num_blocks - 1
    return ScsiResult(data_in=struct.pack(">II", min(last, 0xFFFFFFFF), lu.block_size))


async def read_capacity_16(ctx: Ctx) -> ScsiResult:
    lu = ctx.need_lu()
    # No protection information, one logical block per physical block, LBPME=0 (no UNMAP yet).
    data = struct.pack(">QIBBH", lu.num_blocks - 1, lu.block_size, 0, 0, 0) + bytes(16)
    return data_in(data, allocation_length(ctx.cdb))


async def read(ctx: Ctx) -> ScsiResult:
    lu = ctx.need_lu()
    rw = parse_rw(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)  # RDPROTECT: this LU has no protection information
    check_range(lu, rw.lba, rw.blocks)
    _check_transfer(ctx, lu, rw.blocks)
    length = rw.blocks * lu.block_size
    if not rw.blocks:
        return ScsiResult(transfer_length=0)
    data = await lu.volume.read(rw.lba, rw.blocks)
    return ScsiResult(data_in=data, transfer_length=length)


async def write(ctx: Ctx) -> ScsiResult:
    lu = ctx.need_lu()
    rw = parse_rw(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)  # WRPROTECT
    if lu.config.readonly:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
    check_range(lu, rw.lba, rw.blocks)
    _check_transfer(ctx, lu, rw.blocks)
    bs = lu.block_size
    length = rw.blocks * bs
    # The initiator may send less than the CDB asks (iSCSI EDTL < transfer length): write the
    # whole blocks that arrived and report the rest as a residual (RFC 7143 §11.4.5.1).
    got = min(len(ctx.task.data_out), length) // bs
    if got:
        await lu.volume.write(rw.lba, memoryview(ctx.task.data_out)[:got * bs], fua=rw.fua)
    return ScsiResult(transfer_length=length, data_out_direction=True)


async def synchronize_cache(ctx: Ctx) -> ScsiResult:
    lu = ctx.need_lu()
    cdb = ctx.cdb
    if len(cdb) >= 16 and cdb[0] == 0x91:
        lba, blocks = int.from_bytes(cdb[2:10], "big"), int.from_bytes(cdb[10:14], "big")
    else:
        lba, blocks = int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big")
    check_range(lu, lba, blocks)
    # IMMED is honoured by finishing the flush anyway: never report GOOD before data is durable.
    await lu.volume.flush()
    return ScsiResult()

"""COMPARE AND WRITE (SBC-3 §5.2) and ORWRITE(16) (SBC-3, ORWRITE(16)).

Both are read-modify-write commands; their atomicity comes from the volume:
:meth:`~sanlab.storage.volume.Volume.compare_and_write` holds the blocks against
every other write of the same blocks while it reads, compares and writes.
ORWRITE is built on it as an optimistic loop (read, OR, compare-and-write what
was read; again if someone wrote in between), so it needs nothing more from the
volume protocol.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from sanlab.scsi.cdb import Opcode, ReadWriteCdb
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sbc import check_range, check_transfer_length, received_blocks
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field
from sanlab.scsi.spc import MAX_COMPARE_AND_WRITE_BLOCKS
from sanlab.scsi.task import ScsiResult

COMPARE_AND_WRITE_CDB = struct.Struct(">BBQ3xBBB")
"""OPERATION CODE, WRPROTECT|DPO|FUA|FUA_NV, LBA, reserved (3), NUMBER OF LOGICAL BLOCKS, GROUP NUMBER,
CONTROL (SBC-3 §5.2)."""
NUMBER_OF_BLOCKS_OFFSET = 13
"""Byte offset of NUMBER OF LOGICAL BLOCKS, for field pointers."""


@dataclass(frozen=True, slots=True)
class CompareAndWriteCdb:
    """COMPARE AND WRITE."""

    lba: int
    number_of_blocks: int
    """Blocks in each of the verify and write instances (the Data-Out holds both)."""
    dpo: bool
    fua: bool
    group_number: int

    @classmethod
    def parse(cls, cdb: bytes) -> CompareAndWriteCdb:
        """Decode the CDB (SBC-3 §5.2); ScsiError INVALID FIELD IN CDB for WRPROTECT (no protection
        information).  FUA_NV is ignored and the reserved fields are not checked."""
        _, flags, lba, blocks, group, _ = COMPARE_AND_WRITE_CDB.unpack_from(cdb)
        if flags & 0xE0:
            raise invalid_field(1, 7)  # WRPROTECT: no protection information
        # FUA_NV (bit 1) asks for non-volatile cache: we have none besides the medium; ignored.
        return cls(lba, blocks, bool(flags & 0x10), bool(flags & 0x08), group & 0x1F)


def check_writable(lu: LogicalUnit) -> None:
    """DATA PROTECT / WRITE PROTECTED on a read-only LU."""
    if lu.config.readonly:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)


def miscompare(offset: int) -> ScsiError:
    """MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION with the offset in INFORMATION (SBC-3 §5.2)."""
    return ScsiError(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY_OPERATION, information=offset)


def check_compare_and_write(lu: LogicalUnit, caw: CompareAndWriteCdb, data_out_length: int) -> None:
    """Limits, range and the Data-Out length, in that order, before anything is read."""
    if caw.number_of_blocks > MAX_COMPARE_AND_WRITE_BLOCKS:
        raise invalid_field(NUMBER_OF_BLOCKS_OFFSET)
    check_range(lu, caw.lba, caw.number_of_blocks)
    # The Data-Out Buffer is the verify instance and the write instance, NUMBER OF LOGICAL BLOCKS
    # each (SBC-3 §5.2).  Half of it cannot be compared and written; with zero blocks nothing may
    # be transferred.  Any other length contradicts the CDB.
    if data_out_length != 2 * caw.number_of_blocks * lu.block_size:
        raise invalid_field(NUMBER_OF_BLOCKS_OFFSET)


async def compare_and_write(ctx: Ctx) -> ScsiResult:
    """COMPARE AND WRITE: write the second half of Data-Out if the blocks equal the first half.

    On a miscompare nothing is written and the INFORMATION field holds the offset
    of the first differing byte within the verify data (SBC-3 §5.2).
    """
    lu = ctx.need_lu()
    caw = CompareAndWriteCdb.parse(ctx.cdb)
    check_writable(lu)
    data = memoryview(ctx.task.data_out)
    check_compare_and_write(lu, caw, len(data))
    half = len(data) // 2
    if caw.number_of_blocks:
        offset = await lu.volume.compare_and_write(caw.lba, data[:half], data[half:], fua=caw.fua)
        if offset is not None:
            raise miscompare(offset)
    return ScsiResult(transfer_length=len(data), data_out_direction=True)


def bitwise_or(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    """``a | b`` byte by byte, at C speed."""
    return (int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(len(a), "big")


async def orwrite(ctx: Ctx) -> ScsiResult:
    """ORWRITE(16): each block becomes its old contents OR the Data-Out (SBC-3, ORWRITE(16)).

    Residuals as WRITE: the whole blocks that arrived are processed.  The loop
    retries only when another write changed the blocks between the read and the
    compare-and-write.
    """
    lu = ctx.need_lu()
    rw = ReadWriteCdb.parse(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)  # ORPROTECT
    check_writable(lu)
    check_range(lu, rw.lba, rw.transfer_length)
    check_transfer_length(ctx.cdb, lu, rw.transfer_length)
    length, mask = received_blocks(ctx, lu, rw.transfer_length)
    got = len(mask) // lu.block_size
    if got:
        while True:
            old = await lu.volume.read(rw.lba, got)
            if await lu.volume.compare_and_write(rw.lba, old, bitwise_or(old, mask), fua=rw.fua) is None:
                break
    return ScsiResult(transfer_length=length, data_out_direction=True)


COMMANDS: dict[int, CommandSpec] = {
    Opcode.COMPARE_AND_WRITE: CommandSpec("COMPARE AND WRITE", compare_and_write, data_out=True, writes=True,
                                          medium_error=Asc.WRITE_ERROR),
    Opcode.ORWRITE_16: CommandSpec("ORWRITE(16)", orwrite, data_out=True, writes=True,
                                   medium_error=Asc.WRITE_ERROR),
}
"""The read-modify-write rows of the device server's command table."""

"""VERIFY, WRITE AND VERIFY and PRE-FETCH (SBC-3: VERIFY(10/12/16), WRITE AND VERIFY(10/12/16), §5.10).

VERIFY reads the blocks back (a read failure is the MEDIUM ERROR a verify
exists to find) and, with BYTCHK, compares them with the Data-Out; a
difference is MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION with the offset
of the first differing byte in INFORMATION.  WRITE AND VERIFY writes through to
the medium (as FUA) and then verifies what it wrote.  PRE-FETCH only checks the
range: the device server keeps no cache of its own.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from sanlab.scsi.cdb import Opcode, ReadWriteCdb
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.reservation_state import READ
from sanlab.scsi.compare import check_writable, miscompare
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sbc import check_range, check_transfer_length, received_blocks
from sanlab.scsi.sense import Asc, invalid_field
from sanlab.scsi.spc import max_transfer_blocks
from sanlab.scsi.task import ScsiResult
from sanlab.storage.volume import first_mismatch


class Bytchk:
    """BYTCHK values of VERIFY (SBC-3, VERIFY(10) BYTCHK field)."""

    MEDIUM = 0b00
    """Verify the medium only: no Data-Out."""
    COMPARE = 0b01
    """Compare every block with the Data-Out (TRANSFER LENGTH blocks of it)."""
    COMPARE_ONE = 0b11
    """Compare every block with the one block of Data-Out."""


async def verify_medium(lu: LogicalUnit, lba: int, blocks: int, expect: bytes | memoryview | None = None,
                        repeat: bool = False) -> None:
    """Read ``blocks`` blocks at ``lba`` a transfer at a time and compare them with ``expect``.

    ``repeat``: ``expect`` is one block standing for every block.  A difference
    raises :func:`~sanlab.scsi.compare.miscompare` with the offset from the start
    of the range (for ``repeat``, as if the block were repeated).
    """
    bs = lu.block_size
    step = max_transfer_blocks(bs)
    done = 0
    while done < blocks:
        n = min(step, blocks - done)
        medium = await lu.volume.read(lba + done, n)
        if expect is not None:
            want = bytes(expect) * n if repeat else expect[done * bs:(done + n) * bs]
            offset = first_mismatch(medium, want)
            if offset is not None:
                raise miscompare(done * bs + offset)
        done += n


def _bytchk(cdb: bytes) -> int:
    """BYTCHK, byte 1 bits 2-1; 10b is reserved (SBC-3, VERIFY(10))."""
    bytchk = (cdb[1] >> 1) & 0b11
    if bytchk == 0b10:
        raise invalid_field(1, 2)
    return bytchk


async def verify(ctx: Ctx) -> ScsiResult:
    """VERIFY(10)/(12)/(16).

    DPO is accepted (the DPOFUA bit says so) and, like on READ, has nothing to
    do.  With BYTCHK=01b a short Data-Out is compared as far as whole blocks go
    and the transport reports the residual, exactly as WRITE treats it.
    """
    lu = ctx.need_lu()
    rw = ReadWriteCdb.parse(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)  # VRPROTECT: no protection information
    bytchk = _bytchk(ctx.cdb)
    check_range(lu, rw.lba, rw.transfer_length)
    bs = lu.block_size
    data = memoryview(ctx.task.data_out)
    if bytchk == Bytchk.MEDIUM:
        await verify_medium(lu, rw.lba, rw.transfer_length)
        return ScsiResult()
    if bytchk == Bytchk.COMPARE_ONE:
        if rw.transfer_length and len(data) >= bs:
            await verify_medium(lu, rw.lba, rw.transfer_length, data[:bs], repeat=True)
        return ScsiResult(transfer_length=bs if rw.transfer_length else 0, data_out_direction=True)
    check_transfer_length(ctx.cdb, lu, rw.transfer_length)
    length = rw.transfer_length * bs
    got = min(len(data), length) // bs
    await verify_medium(lu, rw.lba, got, data[:got * bs])
    return ScsiResult(transfer_length=length, data_out_direction=True)


async def write_and_verify(ctx: Ctx) -> ScsiResult:
    """WRITE AND VERIFY(10)/(12)/(16): write to the medium, then read back (and compare if BYTCHK).

    The write is FUA: verifying a copy still in the volatile cache would verify
    nothing (SBC-3, WRITE AND VERIFY(10)).  Residuals as WRITE (RFC 7143 §11.4.5.1): the whole
    blocks that arrived are written and verified, GOOD, and ``transfer_length``
    is what the CDB asked for.
    """
    lu = ctx.need_lu()
    rw = ReadWriteCdb.parse(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)  # WRPROTECT
    if ctx.cdb[1] & 0x04:
        raise invalid_field(1, 2)  # BYTCHK is one bit (bit 1) for WRITE AND VERIFY in SBC-3
    check_writable(lu)
    check_range(lu, rw.lba, rw.transfer_length)
    check_transfer_length(ctx.cdb, lu, rw.transfer_length)
    length, data = received_blocks(ctx, lu, rw.transfer_length)
    got = len(data) // lu.block_size
    if got:
        await lu.volume.write(rw.lba, data, fua=True)
        await verify_medium(lu, rw.lba, got, data if ctx.cdb[1] & 0x02 else None)
    return ScsiResult(transfer_length=length, data_out_direction=True)


PRE_FETCH_10_CDB = struct.Struct(">BBIBHB")
"""OPERATION CODE, IMMED (bit 1), LBA, GROUP NUMBER, PREFETCH LENGTH, CONTROL (SBC-3 §5.10)."""
PRE_FETCH_16_CDB = struct.Struct(">BBQIBB")
"""OPERATION CODE, IMMED (bit 1), LBA, PREFETCH LENGTH, GROUP NUMBER, CONTROL (SBC-3, PRE-FETCH(16))."""


@dataclass(frozen=True, slots=True)
class PreFetchCdb:
    """PRE-FETCH(10)/(16)."""

    lba: int
    prefetch_length: int
    """0: from LBA to the end of the medium."""
    immed: bool
    """IMMED: GOOD may come before the blocks are fetched (nothing is fetched here either way)."""

    @classmethod
    def parse(cls, cdb: bytes) -> PreFetchCdb:
        """Decode PRE-FETCH(10) or (16), told apart by the opcode; ScsiError INVALID FIELD IN CDB for the
        obsolete RELADR bit (10)."""
        if cdb[0] == Opcode.PRE_FETCH_16:
            _, flags, lba, blocks, _, _ = PRE_FETCH_16_CDB.unpack_from(cdb)
        else:
            _, flags, lba, _, blocks, _ = PRE_FETCH_10_CDB.unpack_from(cdb)
            if flags & 0x01:
                raise invalid_field(1, 0)  # obsolete RELADR
        return cls(lba, blocks, bool(flags & 0x02))


async def pre_fetch(ctx: Ctx) -> ScsiResult:
    """PRE-FETCH(10)/(16): range check, then GOOD.

    SBC-3 §5.10: CONDITION MET means the blocks were all transferred to the
    cache; GOOD that the cache could not take them all.  This device server has
    no cache of its own (the host page cache is shared and evicts at will), so it
    cannot promise any block will be there: GOOD, with or without IMMED.
    """
    lu = ctx.need_lu()
    cdb = PreFetchCdb.parse(ctx.cdb)
    # PREFETCH LENGTH zero: every block from LBA to the end (an LBA past the end fails the check).
    check_range(lu, cdb.lba, cdb.prefetch_length or max(lu.num_blocks - cdb.lba, 0))
    return ScsiResult()


COMMANDS: dict[int, CommandSpec] = {
    Opcode.VERIFY_10: CommandSpec("VERIFY(10)", verify, data_out=True, reservation=READ),
    Opcode.VERIFY_12: CommandSpec("VERIFY(12)", verify, data_out=True, reservation=READ),
    Opcode.VERIFY_16: CommandSpec("VERIFY(16)", verify, data_out=True, reservation=READ),
    Opcode.WRITE_AND_VERIFY_10: CommandSpec("WRITE AND VERIFY(10)", write_and_verify, data_out=True, writes=True,
                                            medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_AND_VERIFY_12: CommandSpec("WRITE AND VERIFY(12)", write_and_verify, data_out=True, writes=True,
                                            medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_AND_VERIFY_16: CommandSpec("WRITE AND VERIFY(16)", write_and_verify, data_out=True, writes=True,
                                            medium_error=Asc.WRITE_ERROR),
    Opcode.PRE_FETCH_10: CommandSpec("PRE-FETCH(10)", pre_fetch, reservation=READ),
    Opcode.PRE_FETCH_16: CommandSpec("PRE-FETCH(16)", pre_fetch, reservation=READ),
}
"""The verify and pre-fetch rows of the device server's command table."""

"""WRITE ATOMIC(16) (SBC-4 §5.48; atomic writes §4.29).

The blocks are written all-or-nothing, also across a power loss, by volumes that
can do it (:class:`~sanlab.storage.atomic.AtomicWriter`: a file volume through its
journal, a virtual volume on one).  On an LU whose volume cannot, the command does
not exist: ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE, REPORT SUPPORTED
OPERATION CODES leaves it out, and the Block Limits VPD atomic fields are zero
(which is how initiators tell, SBC-4 §6.6.4).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.compare import check_writable
from sanlab.scsi.context import Ctx
from sanlab.scsi.sbc import check_range, received_blocks
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field
from sanlab.scsi.spc import atomic_max_blocks
from sanlab.scsi.task import ScsiResult
from sanlab.storage.atomic import AtomicWriter

WRITE_ATOMIC_16_CDB = struct.Struct(">BBQHHBB")
"""OPERATION CODE 9Ch, WRPROTECT|DPO|FUA|reserved, LOGICAL BLOCK ADDRESS, reserved, TRANSFER LENGTH,
reserved|GROUP NUMBER, CONTROL (SBC-4 §5.48, table 124)."""


@dataclass(frozen=True, slots=True)
class WriteAtomic16Cdb:
    """WRITE ATOMIC(16) CDB fields."""

    lba: int
    transfer_length: int
    """In logical blocks."""
    fua: bool
    """FUA (changes nothing: an atomic write is durable before GOOD anyway)."""

    @classmethod
    def parse(cls, cdb: bytes) -> WriteAtomic16Cdb:
        """Decode the CDB (SBC-4 §5.48); ScsiError INVALID FIELD IN CDB for WRPROTECT (no protection
        information), a reserved bit of byte 1, the reserved bytes 10-11 or GROUP NUMBER's reserved bits."""
        _, flags, lba, reserved, length, group, _ = WRITE_ATOMIC_16_CDB.unpack_from(cdb)
        if flags & 0xE0:
            raise invalid_field(1, 7)  # WRPROTECT: this LU has no protection information
        if flags & 0x07:
            raise invalid_field(1, (flags & 0x07).bit_length() - 1)  # the reserved bit, not FUA or DPO
        if reserved:
            raise invalid_field(10)
        if group & 0xE0:
            raise invalid_field(14, 7)
        # DPO is a cache hint; FUA changes nothing: an atomic write is durable before GOOD anyway.
        return cls(lba, length, bool(flags & 0x08))


async def write_atomic_16(ctx: Ctx) -> ScsiResult:
    """WRITE ATOMIC(16): all blocks or none, durable before GOOD; nothing written when the Data-Out
    falls short of the TRANSFER LENGTH (a part would not be the atomic write the host asked for)."""
    lu = ctx.need_lu()
    limit = atomic_max_blocks(lu)
    if not limit:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)
    cdb = WriteAtomic16Cdb.parse(ctx.cdb)
    check_writable(lu)
    check_range(lu, cdb.lba, cdb.transfer_length)
    if cdb.transfer_length > limit:
        raise invalid_field(12)  # above MAXIMUM ATOMIC TRANSFER LENGTH (SBC-4 §4.29.2)
    length, data = received_blocks(ctx, lu, cdb.transfer_length)
    if len(data) != length:
        raise invalid_field(12)  # the Data-Out does not carry the whole atomic write
    if data:
        vol = lu.volume
        assert isinstance(vol, AtomicWriter)
        await vol.write_atomic(cdb.lba, data)
    return ScsiResult(transfer_length=length, data_out_direction=True)


COMMANDS: dict[int, CommandSpec] = {
    Opcode.WRITE_ATOMIC_16: CommandSpec("WRITE ATOMIC(16)", write_atomic_16, data_out=True, writes=True,
                                        medium_error=Asc.WRITE_ERROR,
                                        available=lambda lu: atomic_max_blocks(lu) > 0),
}
"""The atomic-write row of the device server's command table."""

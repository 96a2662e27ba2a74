"""Block commands (SBC-3): READ CAPACITY, READ, WRITE, SYNCHRONIZE CACHE.

Checks are plain functions (:func:`check_range`, :func:`check_transfer_length`);
handlers are ``async`` because they await the volume.
"""
from __future__ import annotations

import asyncio
import struct
from typing import Any

from sanlab.scsi.cdb import (
    _RW10, _RW16, TRANSFER_LENGTH_OFFSET, Opcode, ReadCapacityCdb, ReadWriteCdb, ServiceActionIn16,
    SynchronizeCacheCdb,
)
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.outcome import DECLINE, Outcome, Pending, medium_error
from sanlab.scsi.reservation_state import ALLOWED, READ
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field
from sanlab.scsi.spc import MAX_TRANSFER_BYTES, lbprz, max_transfer_blocks, thin_provisioned
from sanlab.scsi.task import ScsiResult, ScsiStatus
from sanlab.storage.volume import NowaitIO, VolumeError

READ_CAPACITY_10_DATA = struct.Struct(">II")
"""RETURNED LOGICAL BLOCK ADDRESS, LOGICAL BLOCK LENGTH IN BYTES (SBC-3 §5.15.2)."""
READ_CAPACITY_16_DATA = struct.Struct(">QIBBH16x")
"""RETURNED LOGICAL BLOCK ADDRESS, LOGICAL BLOCK LENGTH, P_TYPE|PROT_EN,
P_I_EXPONENT|LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT, LBPME|LBPRZ|LOWEST ALIGNED LBA,
reserved (SBC-3 §5.16.2, 32 bytes)."""


def check_range(lu: LogicalUnit, lba: int, blocks: int) -> None:
    """LOGICAL BLOCK ADDRESS OUT OF RANGE (SBC-3 §4.5) before anything is transferred."""
    if lba > lu.num_blocks or lba + blocks > lu.num_blocks:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def check_transfer_length(cdb: bytes, lu: LogicalUnit, blocks: int) -> None:
    """Above the Block Limits VPD MAXIMUM TRANSFER LENGTH: INVALID FIELD IN CDB (SBC-3 §6.6.3)."""
    if blocks > max_transfer_blocks(lu.block_size):
        raise invalid_field(TRANSFER_LENGTH_OFFSET.get(cdb[0] >> 5, 7))


def _check_rw(ctx: Ctx, lu: LogicalUnit, rw: ReadWriteCdb) -> None:
    if rw.protect:
        # RDPROTECT/WRPROTECT: this LU has no protection information (SBC-3 §5.8, table 44).
        raise invalid_field(1, 7)
    check_range(lu, rw.lba, rw.transfer_length)
    check_transfer_length(ctx.cdb, lu, rw.transfer_length)


async def read_capacity_10(ctx: Ctx) -> ScsiResult:
    """READ CAPACITY(10): last LBA (FFFFFFFFh when it does not fit) and block length (SBC-3 §5.15)."""
    lu = ctx.need_lu()
    ReadCapacityCdb.parse(ctx.cdb)
    # With PMI set we have no point of "substantial delay": the answer is the last LBA either way.
    data = READ_CAPACITY_10_DATA.pack(min(lu.num_blocks - 1, 0xFFFFFFFF), lu.block_size)
    return ScsiResult(data_in=data, transfer_length=len(data))


LBPME = 0x8000
"""Byte 14 bit 7 of the READ CAPACITY(16) data, in the 16-bit word with LOWEST ALIGNED LBA."""
LBPRZ_BIT = 0x4000
"""Byte 14 bit 6 (LBPRZ), in the same 16-bit word."""


async def read_capacity_16(ctx: Ctx) -> ScsiResult:
    """READ CAPACITY(16) (SBC-3 §5.16): no protection information; LBPME and LBPRZ on a thin LU
    (SBC-3 §4.7); cut to the ALLOCATION LENGTH.

    LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT from the LU's configured physical block (0 unless
    it says otherwise: GET LBA STATUS reports extents to the logical block and the unmap
    granularity is in the Block Limits page); LOWEST ALIGNED LBA 0.
    """
    lu = ctx.need_lu()
    cdb = ReadCapacityCdb.parse(ctx.cdb)
    lbp = (LBPME if thin_provisioned(lu) else 0) | (LBPRZ_BIT if lbprz(lu) else 0)
    per_physical = max(1, lu.config.physical_block_size // lu.block_size)
    data = READ_CAPACITY_16_DATA.pack(lu.num_blocks - 1, lu.block_size, 0, per_physical.bit_length() - 1, lbp)
    return data_in(data, cdb.allocation_length)


async def read(ctx: Ctx) -> ScsiResult:
    """READ(6/10/12/16): the whole transfer as Data-In; the transport clips it to the EDTL."""
    lu = ctx.need_lu()
    rw = ReadWriteCdb.parse(ctx.cdb)
    _check_rw(ctx, lu, rw)
    if not rw.transfer_length:
        return ScsiResult(transfer_length=0)  # SBC-3 §5.9: zero blocks is not an error
    # DPO is a cache hint and FUA on a read asks for the medium, which the page cache already is.
    data = await lu.volume.read(rw.lba, rw.transfer_length)
    return ScsiResult(data_in=data, transfer_length=rw.transfer_length * lu.block_size)


async def write(ctx: Ctx) -> ScsiResult:
    """WRITE(6/10/12/16); FUA writes are durable before GOOD (SBC-3 §5.32).

    Data-Out shorter than the CDB's TRANSFER LENGTH (iSCSI EDTL too small): the
    whole blocks that arrived are written and the command ends GOOD; the transport
    reports the difference as a residual (RFC 7143 §11.4.5.1).  ``transfer_length``
    is what the CDB asked for, so the residual is exactly the missing part.
    """
    lu = ctx.need_lu()
    rw = ReadWriteCdb.parse(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)
    if lu.config.readonly:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
    _check_rw(ctx, lu, rw)
    length, data = received_blocks(ctx, lu, rw.transfer_length)
    if data:
        # WCE=0 in the Caching mode page: every write is written through (SBC-3 §6.4.5).
        await lu.volume.write(rw.lba, data, fua=rw.fua or not lu.wce)
    return ScsiResult(transfer_length=length, data_out_direction=True)


def received_blocks(ctx: Ctx, lu: LogicalUnit, blocks: int) -> tuple[int, memoryview]:
    """(bytes the CDB asks for, the whole blocks of Data-Out that arrived).

    The initiator may send less than the CDB asks (iSCSI EDTL < transfer length):
    only whole received blocks are used and the transport reports the rest as a
    residual (RFC 7143 §11.4.5.1).  The view may be empty.
    """
    bs = lu.block_size
    length = blocks * bs
    got = min(len(ctx.task.data_out), length) // bs
    return length, memoryview(ctx.task.data_out)[:got * bs]


async def synchronize_cache(ctx: Ctx) -> ScsiResult:
    """SYNCHRONIZE CACHE(10/16) (SBC-3 §5.22): range-checked, then the whole volume is flushed.

    IMMED is accepted but GOOD still waits for the flush: reporting success before
    the data is durable would break the promise ARCHITECTURE.md makes to hosts.
    """
    lu = ctx.need_lu()
    cdb = SynchronizeCacheCdb.parse(ctx.cdb)
    check_range(lu, cdb.lba, cdb.number_of_blocks)
    await lu.volume.flush()
    return ScsiResult()


COMMANDS: dict[int, CommandSpec] = {
    # SBC-3 §4.17 table 13: capacity is reported to anyone, reads are shared under write-exclusive
    # reservations, writes and cache flushes are exclusive (the default).
    Opcode.READ_CAPACITY_10: CommandSpec("READ CAPACITY(10)", read_capacity_10, reservation=ALLOWED),
    Opcode.SERVICE_ACTION_IN_16: CommandSpec("SERVICE ACTION IN(16)", service_actions={
        ServiceActionIn16.READ_CAPACITY_16: CommandSpec("READ CAPACITY(16)", read_capacity_16, reservation=ALLOWED),
    }),
    Opcode.READ_6: CommandSpec("READ(6)", read, reservation=READ),
    Opcode.READ_10: CommandSpec("READ(10)", read, reservation=READ),
    Opcode.READ_12: CommandSpec("READ(12)", read, reservation=READ),
    Opcode.READ_16: CommandSpec("READ(16)", read, reservation=READ),
    Opcode.WRITE_6: CommandSpec("WRITE(6)", write, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_10: CommandSpec("WRITE(10)", write, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_12: CommandSpec("WRITE(12)", write, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_16: CommandSpec("WRITE(16)", write, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR),
    Opcode.SYNCHRONIZE_CACHE_10: CommandSpec("SYNCHRONIZE CACHE(10)", synchronize_cache,
                                             medium_error=Asc.WRITE_ERROR),
    Opcode.SYNCHRONIZE_CACHE_16: CommandSpec("SYNCHRONIZE CACHE(16)", synchronize_cache,
                                             medium_error=Asc.WRITE_ERROR),
}
"""The block commands of the disk kind's command table (scsi/kinds.py)."""


# --- fast path ---------------------------------------------------------------------------------------

_FAST_RW: dict[int, tuple[struct.Struct, bool, bool]] = {
    Opcode.READ_10: (_RW10, False, False), Opcode.WRITE_10: (_RW10, False, True),
    Opcode.READ_16: (_RW16, True, False), Opcode.WRITE_16: (_RW16, True, True),
}
"""Opcode → (CDB layout, 16-byte form, writes) of the commands :func:`plain_io` takes."""


def plain_write(cdb: bytes) -> bool:
    """True for the writes :func:`plain_io` may take (whose LU's write gate must be asked first)."""
    row = _FAST_RW.get(cdb[0]) if cdb else None
    return row is not None and row[2]

_FAST_FLAGS_READ = 0x18
"""DPO and FUA: the only byte-1 bits a fast READ may carry (FUA: the page cache is the medium here)."""
_FAST_FLAGS_WRITE = 0x10
"""DPO: a FUA write must reach the disk before GOOD, which is a wait."""


def plain_io(lu: LogicalUnit, cdb: bytes, data_out: bytes | bytearray | memoryview, volume: NowaitIO) -> Outcome:
    """READ/WRITE(10)/(16) started on the spot (scsi/outcome.py): the result when the page cache
    answers (the data read; a write copied in), :class:`~sanlab.scsi.outcome.Pending` when only
    the transfer must wait (page cache miss, dirty-page throttling: it runs in the volume's
    thread pool), or DECLINE: then the full handler (:func:`read`, :func:`write`) runs and gives
    the answer, sense data included.

    Only the plain case is taken: no protection, RELADR, group number or CONTROL bits, a
    transfer within range and limits, Data-Out exactly as long as the CDB says, a write-back
    cache (WCE) and a volume that can finish without waiting.  The device server has already
    established that no unit attention, reservation, task attribute or LU state stands in the
    way (:func:`~sanlab.scsi.outcome.starts_at_once`).  Anything else is left to the handlers,
    so the answers stay theirs to the bit; residuals against the iSCSI EDTL are the
    transport's, as for every result.  A volume error is the MEDIUM ERROR :func:`read` and
    :func:`write` would give.
    """
    row = _FAST_RW.get(cdb[0])
    if row is None:
        return DECLINE
    layout, long_form, writes = row
    if len(cdb) < layout.size:
        return DECLINE
    if long_form:
        _, flags, lba, blocks, group, control = layout.unpack_from(cdb)
    else:
        _, flags, lba, group, blocks, control = layout.unpack_from(cdb)
    bs = lu.block_size
    length = blocks * bs
    if (flags & ~(_FAST_FLAGS_WRITE if writes else _FAST_FLAGS_READ) or group or control or not blocks
            or lba + blocks > lu.num_blocks or length > MAX_TRANSFER_BYTES):  # max_transfer_blocks
        return DECLINE
    io: asyncio.Future[Any] | None
    try:
        if writes:
            if not lu.wce or lu.config.readonly or len(data_out) != length:
                return DECLINE
            if volume.write_nowait(lba, data_out):
                return ScsiResult(transfer_length=length, data_out_direction=True)
            io = volume.write_pooled(lba, data_out)
        else:
            if data_out:
                return DECLINE
            data = volume.read_nowait(lba, blocks)
            if data is not None:
                return ScsiResult(data_in=data, transfer_length=length)
            io = volume.read_pooled(lba, blocks)
    except VolumeError as exc:
        return medium_error(lu.config.lun, cdb, exc, Asc.WRITE_ERROR if writes else Asc.UNRECOVERED_READ_ERROR,
                            lu.d_sense, writes)
    if io is None:
        return DECLINE
    answer: asyncio.Future[ScsiResult] = io.get_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            answer.cancel()
        elif isinstance(exc := f.exception(), VolumeError):
            answer.set_result(medium_error(lu.config.lun, cdb, exc,
                                           Asc.WRITE_ERROR if writes else Asc.UNRECOVERED_READ_ERROR,
                                           lu.d_sense, writes))
        elif isinstance(exc, ScsiError):
            # A volume with rules of its own (a pair volume's fence or write protection) answers
            # with sense, as it would on the general path.
            answer.set_result(ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=exc.sense(lu.d_sense),
                                         data_out_direction=writes))
        elif exc is not None:
            answer.set_exception(exc)
        elif writes:
            answer.set_result(ScsiResult(transfer_length=length, data_out_direction=True))
        else:
            answer.set_result(ScsiResult(data_in=f.result(), transfer_length=length))

    io.add_done_callback(done)
    return Pending(answer)

"""SANITIZE (SBC-3 §5.19; sanitize operations §4.11): OVERWRITE, BLOCK ERASE, EXIT FAILURE MODE.

A sanitize operation runs as its own task on the logical unit, not as part of
the command: it goes on when the initiator's connection goes away, and task
management cannot abort it (SBC-3 §4.11.3).  While it runs the device server
answers everything but INQUIRY, REPORT LUNS and REQUEST SENSE with NOT READY /
LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS
(:func:`~sanlab.scsi.device_server.check_lu_state`).  The medium is rewritten
through the Volume interface only — ``write_same`` for OVERWRITE, ``unmap``
for BLOCK ERASE — so it works on every kind of volume.

CRYPTOGRAPHIC ERASE is offered on an LU whose volume encrypts its blocks
(:class:`~sanlab.storage.volume.CryptoErasable`, storage/encrypted.py): the data key is replaced
by a new random one, so every block written before reads back as noise.  Elsewhere the service
action is unsupported (INVALID FIELD IN CDB) and REPORT SUPPORTED OPERATION CODES leaves it out.
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import structlog

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter
from sanlab.scsi.spc import lbprz, thin_provisioned
from sanlab.scsi.task import ScsiResult
from sanlab.storage.volume import CryptoErasable, VolumeError

log = structlog.get_logger("sanlab.scsi")

SANITIZE_CDB = struct.Struct(">BB5sHB")
"""SANITIZE CDB (SBC-3 §5.19.1, table 93): opcode 48h, IMMED|AUSE|SERVICE ACTION, reserved (5 bytes),
PARAMETER LIST LENGTH, CONTROL."""
OVERWRITE_PARAMETERS = struct.Struct(">BxH")
"""OVERWRITE parameter list header (SBC-3 §5.19.3, table 96): INVERT|TEST|OVERWRITE COUNT, reserved,
INITIALIZATION PATTERN LENGTH; the pattern follows."""


class SanitizeServiceAction:
    """SANITIZE service actions (SBC-3 table 94)."""

    OVERWRITE = 0x01
    BLOCK_ERASE = 0x02
    CRYPTOGRAPHIC_ERASE = 0x03
    EXIT_FAILURE_MODE = 0x1F


IMMED = 0x80
INVERT = 0x80
CHUNK_BYTES = 64 << 20
"""A sanitize pass rewrites at most this much per volume call, so other LUs' I/O interleaves."""

_running: set[asyncio.Task[None]] = set()
"""Sanitize operations in progress, kept referenced until they end (then reaped)."""


@dataclass(frozen=True, slots=True)
class SanitizeCdb:
    """SANITIZE CDB fields."""

    immed: bool
    """IMMED: GOOD once the operation has started; it goes on in the background."""
    service_action: int
    parameter_list_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> SanitizeCdb:
        """Decode the CDB (SBC-3 §5.19.1); ScsiError INVALID FIELD IN CDB for the reserved bit 6 of byte 1
        or a nonzero reserved byte 2-6.  AUSE is accepted and not kept; the service action was checked
        by dispatch."""
        _, b1, reserved, length, _ = SANITIZE_CDB.unpack_from(cdb)
        if b1 & 0x40:
            raise invalid_field(1, 6)
        for i, b in enumerate(reserved):
            if b:
                raise invalid_field(2 + i)
        return cls(bool(b1 & IMMED), b1 & 0x1F, length)


def _check_writable(lu: LogicalUnit) -> None:
    if lu.config.readonly:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)


def overwrite_block(data: bytes, block_size: int) -> tuple[bytes, int, bool]:
    """(one block of the repeated pattern, OVERWRITE COUNT, INVERT) from the parameter list (SBC-3 §5.19.3)."""
    flags, pattern_length = OVERWRITE_PARAMETERS.unpack_from(data)
    count = flags & 0x1F
    if flags & 0x60:
        raise invalid_parameter(0, 6)  # TEST is for vendor diagnostics only
    if count == 0:
        raise invalid_parameter(0, 4)
    if pattern_length == 0 or pattern_length > block_size:
        raise invalid_parameter(2)
    if len(data) != OVERWRITE_PARAMETERS.size + pattern_length:
        raise invalid_field(7)  # PARAMETER LIST LENGTH disagrees with the pattern length
    pattern = data[OVERWRITE_PARAMETERS.size:]
    block = (pattern * (block_size // len(pattern) + 1))[:block_size]
    return block, count, bool(flags & INVERT)


async def _overwrite(lu: LogicalUnit, block: bytes, count: int, invert: bool) -> None:
    """OVERWRITE COUNT passes over the whole medium; with INVERT every other pass writes the pattern
    inverted, the last pass writing it as given (SBC-3 §5.19.3)."""
    inverted = bytes(b ^ 0xFF for b in block)
    step = max(1, CHUNK_BYTES // lu.block_size)
    loop = asyncio.get_running_loop()
    rate = lu.config.sanitize_rate
    written = 0
    started = loop.time()
    for n in range(count):
        flip = invert and (count - 1 - n) % 2 == 1
        data = inverted if flip else block
        for lba in range(0, lu.num_blocks, step):
            blocks = min(step, lu.num_blocks - lba)
            # FUA: a pass is on the medium before the next starts; page-cache copies of the old
            # data being overwritten is not sanitizing anything.
            await lu.volume.write_same(lba, blocks, data, fua=True)
            written += blocks * lu.block_size
            if rate:
                ahead = started + written / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)


async def _block_erase(lu: LogicalUnit) -> None:
    """Deallocate every block: they read back as zeros (LBPRZ), nothing of the old data is reachable."""
    step = max(1, CHUNK_BYTES // lu.block_size)
    for lba in range(0, lu.num_blocks, step):
        await lu.volume.unmap(lba, min(step, lu.num_blocks - lba))


async def _run(lu: LogicalUnit, operation: str, work: asyncio.Future[None] | None) -> None:
    try:
        if work is not None:
            await work
        await lu.volume.flush()
        log.info("sanitize_done", lun=lu.config.lun, operation=operation)
    except VolumeError as exc:
        log.error("sanitize_failed", lun=lu.config.lun, operation=operation, error=str(exc))
        raise
    finally:
        lu.sanitizing = False


async def _start(ctx: Ctx, lu: LogicalUnit, immed: bool, operation: str,
                 work: asyncio.Future[None]) -> ScsiResult:
    """Run ``work`` as the LU's sanitize operation; GOOD at once with IMMED, else when it ends."""
    lu.sanitizing = True
    log.info("sanitize_started", lun=lu.config.lun, operation=operation, initiator=ctx.task.nexus.initiator_port)
    task = asyncio.get_running_loop().create_task(_run(lu, operation, work))
    _running.add(task)
    task.add_done_callback(_reap)
    if not immed:
        # shield: the operation outlives this command (connection loss, ABORT TASK; SBC-3 §4.11.3).
        await asyncio.shield(task)
    return ScsiResult(transfer_length=ctx.task.write_edtl, data_out_direction=True)


def _reap(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("sanitize_task_failed", error=str(task.exception()))


def _parameters(ctx: Ctx, length: int) -> bytes:
    data = bytes(ctx.task.data_out[:length])
    if len(data) < length:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    return data


async def overwrite(ctx: Ctx) -> ScsiResult:
    """SANITIZE OVERWRITE: the pattern, repeated to fill each block, over the whole medium."""
    lu = ctx.need_lu()
    cdb = SanitizeCdb.parse(ctx.cdb)
    _check_writable(lu)
    if cdb.parameter_list_length < OVERWRITE_PARAMETERS.size + 1:
        raise invalid_field(7)  # at least the header and one pattern byte (SBC-3 §5.19.3)
    block, count, invert = overwrite_block(_parameters(ctx, cdb.parameter_list_length), lu.block_size)
    work = asyncio.ensure_future(_overwrite(lu, block, count, invert))
    return await _start(ctx, lu, cdb.immed, "overwrite", work)


async def block_erase(ctx: Ctx) -> ScsiResult:
    """SANITIZE BLOCK ERASE: every block deallocated (a thin LU that reads deallocated blocks as zero)."""
    lu = ctx.need_lu()
    cdb = SanitizeCdb.parse(ctx.cdb)
    _check_writable(lu)
    if cdb.parameter_list_length:
        raise invalid_field(7)  # BLOCK ERASE takes no parameter list
    if not can_block_erase(lu):
        raise invalid_field(1, 4)
    work = asyncio.ensure_future(_block_erase(lu))
    return await _start(ctx, lu, cdb.immed, "block_erase", work)


async def exit_failure_mode(ctx: Ctx) -> ScsiResult:
    """SANITIZE EXIT FAILURE MODE: a failed sanitize leaves no failure mode here, so there is nothing
    to leave; GOOD without a parameter list (SBC-3 §5.19.5)."""
    lu = ctx.need_lu()
    cdb = SanitizeCdb.parse(ctx.cdb)
    _check_writable(lu)
    if cdb.parameter_list_length:
        raise invalid_field(7)
    return ScsiResult()


async def crypto_erase(ctx: Ctx) -> ScsiResult:
    """SANITIZE CRYPTOGRAPHIC ERASE: the volume's data key destroyed (SBC-3 §4.11.4, §5.19.4)."""
    lu = ctx.need_lu()
    cdb = SanitizeCdb.parse(ctx.cdb)
    _check_writable(lu)
    if cdb.parameter_list_length:
        raise invalid_field(7)  # CRYPTOGRAPHIC ERASE takes no parameter list (SBC-3 §5.19.4)
    volume = lu.volume
    if not isinstance(volume, CryptoErasable):
        raise invalid_field(1, 4)
    work = asyncio.ensure_future(volume.crypto_erase())
    return await _start(ctx, lu, cdb.immed, "crypto_erase", work)


def can_crypto_erase(lu: LogicalUnit) -> bool:
    """CRYPTOGRAPHIC ERASE needs a volume that encrypts its blocks."""
    return isinstance(lu.volume, CryptoErasable)


def can_block_erase(lu: LogicalUnit) -> bool:
    """BLOCK ERASE needs a volume that deallocates and reads deallocated blocks as zeros."""
    return thin_provisioned(lu) and lbprz(lu)


_SANITIZE_USAGE = bytes([0x48, 0x9F, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00])

COMMANDS: dict[int, CommandSpec] = {
    Opcode.SANITIZE: CommandSpec("SANITIZE", service_actions={
        SanitizeServiceAction.OVERWRITE: CommandSpec(
            "SANITIZE OVERWRITE", overwrite, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR,
            timeout=3600, detach_on_abort=True, cdb_usage=_SANITIZE_USAGE[:1] + bytes([0x81]) + _SANITIZE_USAGE[2:]),
        SanitizeServiceAction.BLOCK_ERASE: CommandSpec(
            "SANITIZE BLOCK ERASE", block_erase, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR,
            timeout=600, available=can_block_erase, detach_on_abort=True,
            cdb_usage=_SANITIZE_USAGE[:1] + bytes([0x82]) + _SANITIZE_USAGE[2:]),
        SanitizeServiceAction.CRYPTOGRAPHIC_ERASE: CommandSpec(
            "SANITIZE CRYPTOGRAPHIC ERASE", crypto_erase, data_out=True, writes=True, medium_error=Asc.WRITE_ERROR,
            timeout=60, available=can_crypto_erase, detach_on_abort=True,
            cdb_usage=_SANITIZE_USAGE[:1] + bytes([0x83]) + _SANITIZE_USAGE[2:]),
        SanitizeServiceAction.EXIT_FAILURE_MODE: CommandSpec(
            "SANITIZE EXIT FAILURE MODE", exit_failure_mode, data_out=True, writes=True,
            cdb_usage=_SANITIZE_USAGE[:1] + bytes([0x9F]) + _SANITIZE_USAGE[2:]),
    }),
}
"""SANITIZE rows of the command table (dispatch on the service action)."""

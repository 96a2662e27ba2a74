"""The command device: an LU kind whose WRITE carries a command block and whose READ returns its result.

Seed 003 FIG. 5-9: a host with nothing but a SCSI path manages the array by writing a command into
a logical unit and reading the *edited data* back.  This module is the SCSI side (the block's layout
is replication/command_block.py, what is done with it replication/command_router.py):

* **The kind** (:func:`command_device_kind`): the SPC rows every LU answers, READ CAPACITY and
  SYNCHRONIZE CACHE from SBC, and READ/WRITE of its own.  INQUIRY and READ CAPACITY answer as for a
  disk (peripheral device type 00h, :data:`CAPACITY_BLOCKS` blocks of :data:`BLOCK_SIZE` bytes); the
  PRODUCT IDENTIFICATION is :data:`PRODUCT`, which is how another array finds the command device
  among a target's LUNs (as CCI finds a command device by its product id).  It stores nothing: no
  backing file, nothing survives a restart but the fact that the LUN is a command device.
* **WRITE** (any of 6/10/12/16, at LBA 0): the Data-Out is a command block; it is decoded, its
  commands for this array checked against the process numbers the array knows, and then carried out
  (and sent on) before the WRITE is answered, so the status of the WRITE says whether the block was
  taken.  A malformed block is CHECK CONDITION, ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST
  (05h/26h/00h) with SKSV=1, C/D=0 and the byte of the offending field as FIELD POINTER (SPC-4
  §4.5.2.4.2).  A pair instruction refused by its checks (seed 000 claim 12) is CHECK CONDITION,
  ILLEGAL REQUEST / :data:`PAIR_INSTRUCTION_REFUSED` (80h/01h, vendor specific: SPC-4 §4.5.6 leaves
  ASC 80h-FFh to the vendor) pointing at that command's PROCESS NUMBER; its reason is in the edited
  data like any other failure.
* **READ** returns the edited data of this I_T nexus's last block as if it were stored from LBA 0
  (zeros after its end), so a host reads the first block, learns DATA LENGTH, and reads the rest.
  Reading does not consume it: it stays until the nexus writes another block or goes away.
* **One outstanding command per I_T nexus** (SAM-5 §4.6: the initiator port and the LU).  A new
  WRITE replaces the nexus's previous block: the newest block wins, and the result of an older one
  still running is dropped when it ends.  A READ while the nexus's last block runs waits for it.  A
  READ with no block gives :data:`~sanlab.replication.command_block.EMPTY` (no results, id 0).  The
  results of one nexus are never visible to another: each initiator port, each LU, has its own.

Access is the target's: its ACL and CHAP decide who logs in, and an initiator that cannot log in
cannot submit anything.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from sanlab.replication.command_block import EMPTY, BlockError, CommandBlock, EditedData, ResultStatus
from sanlab.replication.command_router import CommandRouter
from sanlab.scsi import kinds, sbc
from sanlab.scsi.cdb import Opcode, ReadWriteCdb, ServiceActionIn16
from sanlab.scsi.commands import CommandSpec, LuKind
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.reservation_state import READ
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter
from sanlab.scsi.task import Nexus, ScsiResult
from sanlab.storage.volume import LbaExtent, ProvisioningStatus, VolumeError

log = structlog.get_logger("sanlab.replication.cmddev")

COMMAND_DEVICE_KIND = "command-device"
"""``LuConfig.kind`` of a command device (scsi/commands.py: an LU kind selects its command table)."""
PRODUCT = "COMMAND-DEVICE"
"""PRODUCT IDENTIFICATION in standard INQUIRY data: how a peer array recognises a command device."""
BLOCK_SIZE = 512
"""Logical block length a command device reports (READ CAPACITY)."""
CAPACITY_BLOCKS = 8192
"""Blocks a command device reports (4 MiB): the largest command block a WRITE may carry, and the
largest edited data a READ can return."""
PAIR_INSTRUCTION_REFUSED = 0x8001
"""ASC/ASCQ 80h/01h (vendor specific, SPC-4 §4.5.6): a pair instruction refused by its checks
(seed 000 claim 12), with ILLEGAL REQUEST."""

RouterRef = Callable[[], CommandRouter | None]
"""Where the handlers find the array's router when a block arrives (it is built after the LUs)."""


class CommandDeviceVolume:
    """The geometry a command device reports; it holds no data (the LU's READ and WRITE are its own)."""

    block_size = BLOCK_SIZE
    num_blocks = CAPACITY_BLOCKS
    thin = False
    lbprz = False

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Never called by the command device's table; zeros for anyone else."""
        return bytes(nblocks * BLOCK_SIZE)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """A command device keeps no data: a write that does not come through its table is refused."""
        raise VolumeError("a command device stores no data")

    async def unmap(self, lba: int, nblocks: int) -> None:
        """Refused: nothing is stored."""
        raise VolumeError("a command device stores no data")

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """Refused: nothing is stored."""
        raise VolumeError("a command device stores no data")

    async def get_lba_status(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """Everything mapped (nothing is ever deallocated)."""
        return [(lba, CAPACITY_BLOCKS - lba, int(ProvisioningStatus.MAPPED))]

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """Refused: nothing is stored."""
        raise VolumeError("a command device stores no data")

    async def flush(self) -> None:
        """Nothing to flush."""

    async def close(self) -> None:
        """Nothing to close."""


class CommandDeviceUnit(LogicalUnit):
    """A command device LU: a disk's identity and, per I_T nexus, the last block and its edited data."""

    def __init__(self, target_name: str, lun: int) -> None:
        config = LuConfig.for_lun(target_name, lun, thin=False, kind=COMMAND_DEVICE_KIND)
        config.product = PRODUCT
        super().__init__(CommandDeviceVolume(), config)
        self._slots: dict[Nexus, asyncio.Future[EditedData]] = {}

    def begin(self, nexus: Nexus) -> asyncio.Future[EditedData]:
        """A new block from ``nexus``: it replaces the previous one (whose result is then dropped)."""
        fut: asyncio.Future[EditedData] = asyncio.get_running_loop().create_future()
        self._slots[nexus] = fut
        return fut

    def finish(self, nexus: Nexus, fut: asyncio.Future[EditedData], edited: EditedData) -> None:
        """The block of ``fut`` is done; its result stays only while it is still the nexus's last."""
        if not fut.done():
            fut.set_result(edited)
        if self._slots.get(nexus) is not fut:
            log.info("cmddev_result_replaced", initiator=nexus.initiator_port, id=edited.identification)

    async def edited(self, nexus: Nexus) -> EditedData:
        """The edited data of ``nexus``'s last block (waiting while it runs), or the empty result."""
        fut = self._slots.get(nexus)
        if fut is None:
            return EMPTY
        return await asyncio.shield(fut)

    def nexus_removed(self, nexus: Nexus) -> None:
        """The nexus is gone: so is its result (a new login starts with the empty result)."""
        super().nexus_removed(nexus)
        self._slots.pop(nexus, None)


def _unit(ctx: Ctx) -> CommandDeviceUnit:
    lu = ctx.need_lu()
    if not isinstance(lu, CommandDeviceUnit):  # the kind is only given to command device LUs
        raise ScsiError(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
    return lu


def _checked(ctx: Ctx, lu: LogicalUnit) -> ReadWriteCdb:
    rw = ReadWriteCdb.parse(ctx.cdb)
    if rw.protect:
        raise invalid_field(1, 7)  # no protection information (SBC-3 §5.8)
    sbc.check_range(lu, rw.lba, rw.transfer_length)
    sbc.check_transfer_length(ctx.cdb, lu, rw.transfer_length)
    return rw


def command_device_kind(router: RouterRef) -> LuKind:
    """The command device's LU kind, its handlers finding the array's router through ``router``."""

    async def write(ctx: Ctx) -> ScsiResult:
        lu = _unit(ctx)
        rw = _checked(ctx, lu)
        if rw.lba != 0:
            # A block is one WRITE from LBA 0: a block split over several WRITEs cannot be told apart
            # from two blocks.  The LOGICAL BLOCK ADDRESS field is byte 1 of WRITE(6), 2 otherwise.
            raise invalid_field(1 if ctx.cdb[0] >> 5 == 0 else 2)
        length, data = sbc.received_blocks(ctx, lu, rw.transfer_length)
        try:
            block = CommandBlock.decode(data)
        except BlockError as exc:
            log.info("cmddev_block_refused", initiator=ctx.task.nexus.initiator_port, reason=str(exc))
            raise invalid_parameter(exc.offset, exc.bit) from None
        r = router()
        if r is None:
            raise ScsiError(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE)
        for i, command in r.local_commands(block):
            if not r.dispatch.knows(command.process_number):
                raise invalid_parameter(block.pointer(i), None)  # PROCESS NUMBER: the body's first field
        nexus = ctx.task.nexus
        fut = lu.begin(nexus)
        try:
            edited = await r.process(block)
        except BaseException:
            lu.finish(nexus, fut, EditedData(block.identification))
            raise
        lu.finish(nexus, fut, edited)
        log.info("cmddev_block_done", initiator=nexus.initiator_port, id=block.identification,
                 results=[(res.process_number, res.status.name, res.array) for res in edited.results])
        commands = block.commands()
        for (i, _), res in zip(commands, edited.results):
            if res.status == ResultStatus.PAIR_INSTRUCTION_REFUSED:
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, PAIR_INSTRUCTION_REFUSED, field_pointer=block.pointer(i),
                                in_cdb=False)
        return ScsiResult(transfer_length=length, data_out_direction=True)

    async def read(ctx: Ctx) -> ScsiResult:
        lu = _unit(ctx)
        rw = _checked(ctx, lu)
        if not rw.transfer_length:
            return ScsiResult(transfer_length=0)
        image = (await lu.edited(ctx.task.nexus)).encode()
        start, end = rw.lba * BLOCK_SIZE, (rw.lba + rw.transfer_length) * BLOCK_SIZE
        data = image[start:end]
        return ScsiResult(data_in=data + bytes(end - start - len(data)), transfer_length=end - start)

    rows: dict[int, CommandSpec] = {
        Opcode.READ_CAPACITY_10: sbc.COMMANDS[Opcode.READ_CAPACITY_10],
        Opcode.SERVICE_ACTION_IN_16: CommandSpec("SERVICE ACTION IN(16)", service_actions={
            ServiceActionIn16.READ_CAPACITY_16:
                sbc.COMMANDS[Opcode.SERVICE_ACTION_IN_16].service_actions[ServiceActionIn16.READ_CAPACITY_16]}),
        Opcode.SYNCHRONIZE_CACHE_10: sbc.COMMANDS[Opcode.SYNCHRONIZE_CACHE_10],
        Opcode.SYNCHRONIZE_CACHE_16: sbc.COMMANDS[Opcode.SYNCHRONIZE_CACHE_16],
    }
    for op, name in ((Opcode.READ_6, "READ(6)"), (Opcode.READ_10, "READ(10)"), (Opcode.READ_12, "READ(12)"),
                     (Opcode.READ_16, "READ(16)")):
        rows[op] = CommandSpec(name, read, reservation=READ)
    for op, name in ((Opcode.WRITE_6, "WRITE(6)"), (Opcode.WRITE_10, "WRITE(10)"), (Opcode.WRITE_12, "WRITE(12)"),
                     (Opcode.WRITE_16, "WRITE(16)")):
        # A command may run long (wait-rebuild): the timeout REPORT SUPPORTED OPERATION CODES advises.
        rows[op] = CommandSpec(name, write, data_out=True, writes=True, timeout=600)
    return LuKind(COMMAND_DEVICE_KIND, kinds.SPC.extend(rows), plain_io=False)

"""The host's side of a command device: write a command block, read the edited data (seed 003 FIG. 8).

Used by ``sanlab --cmddev`` (tools/transport.py) and by an array sending a block on to the next one
over its link (replication/routing.py): both are an iSCSI initiator (:mod:`sanlab.target.initiator`)
logged in to the target that serves the command device.

:func:`submit` WRITEs the block from LBA 0 (zero padded to whole blocks), then READs the edited data
from LBA 0: first :data:`FIRST_READ` bytes, and the rest when DATA LENGTH says there is more.  Both
commands go on the same session, so the same I_T nexus (replication/cmddev.py keeps results per
nexus).  A WRITE that ends in CHECK CONDITION because a pair instruction was refused (80h/01h) still
has its results, which are read; any other CHECK CONDITION (a malformed block: 05h/26h/00h with the
field pointer) is raised as :class:`CommandDeviceRefused` with the sense.
"""
from __future__ import annotations

from sanlab.replication.cmddev import BLOCK_SIZE, PAIR_INSTRUCTION_REFUSED, PRODUCT
from sanlab.replication.command_block import CommandBlock, EditedData, MalformedEditedData
from sanlab.scsi.sense import Sense, SenseKey
from sanlab.target.initiator import IscsiSession, ScsiCommandError

FIRST_READ = 64 << 10
"""Bytes of edited data read at first (most results fit; DATA LENGTH says whether to read on)."""


class CommandDeviceRefused(Exception):
    """The command device refused the block (CHECK CONDITION other than a refused pair instruction)."""

    def __init__(self, sense: Sense | None, message: str) -> None:
        super().__init__(message)
        self.sense = sense
        """The sense data of the WRITE (None: no sense came with the status)."""


class NoCommandDevice(Exception):
    """The target serves no command device LUN."""


def _blocks(n: int) -> int:
    return (n + BLOCK_SIZE - 1) // BLOCK_SIZE


def _rw16(opcode: int, lba: int, blocks: int) -> bytes:
    return bytes([opcode, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"


async def find_command_device(session: IscsiSession) -> int:
    """The LUN of the target's command device: the first LUN whose INQUIRY PRODUCT IDENTIFICATION is
    :data:`~sanlab.replication.cmddev.PRODUCT` (REPORT LUNS, then standard INQUIRY of each)."""
    for lun in await session.report_luns():
        data = await session.inquiry(lun, alloc=36)
        if data[16:32].decode("ascii", "replace").strip() == PRODUCT:
            return lun
    raise NoCommandDevice(f"{session.target_name} serves no command device (no LUN with product {PRODUCT})")


async def submit(session: IscsiSession, lun: int, block: CommandBlock, timeout: float | None = None) -> EditedData:
    """Write ``block`` to the command device at ``lun`` and read its edited data back (same nexus)."""
    raw = block.encode()
    padded = raw + bytes(_blocks(len(raw)) * BLOCK_SIZE - len(raw))
    try:
        await session.run(lun, _rw16(0x8A, 0, len(padded) // BLOCK_SIZE), data_out=padded, timeout=timeout)
    except ScsiCommandError as exc:
        sense = exc.sense
        refused_pair = (sense is not None and sense.key == SenseKey.ILLEGAL_REQUEST
                        and sense.asc_ascq == PAIR_INSTRUCTION_REFUSED)
        if not refused_pair:
            raise CommandDeviceRefused(sense, f"the command device refused the block: {exc}") from None
    blocks = FIRST_READ // BLOCK_SIZE
    data = (await session.run(lun, _rw16(0x88, 0, blocks), read_length=blocks * BLOCK_SIZE, timeout=timeout)).data
    length = EditedData.length(data)
    if length > len(data):
        more = _blocks(length) - blocks
        rest = await session.run(lun, _rw16(0x88, blocks, more), read_length=more * BLOCK_SIZE, timeout=timeout)
        data += rest.data
    edited = EditedData.decode(data)
    if edited.identification != block.identification:
        raise MalformedEditedData(f"edited data of block {edited.identification}, not of {block.identification}")
    return edited

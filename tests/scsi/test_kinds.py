"""Seam 5: a kind of logical unit with its own command table, next to a disk (scsi/kinds.py).

The kind defined here is a small mailbox — the shape of the command device to come: its WRITE(10)
hands over a message and its READ(10) returns the answer, never touching the medium, while it
shares INQUIRY, READ CAPACITY, TEST UNIT READY, REPORT LUNS and the rest with the disk kind.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.commands import CommandSpec, LuKind
from sanlab.scsi.context import Ctx
from sanlab.scsi.outcome import DECLINE
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.kinds import DISK, KINDS
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.reservation_state import EXCLUSIVE
from sanlab.scsi.sbc import received_blocks
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask
from sanlab.storage.file_volume import FileVolume
from tests.scsi.helpers import BLOCKS, NX, NX2, TARGET, cdb10, inquiry, make_lu
from tests.scsi.test_rsoc import descriptors, rsoc

MAILBOX_STATUS = 0xC1
"""A vendor-specific opcode (group 6) only the mailbox kind answers."""

answers: dict[LogicalUnit, bytes] = {}


async def mailbox_write(ctx: Ctx) -> ScsiResult:
    """WRITE(10): the blocks carry a message; the answer is kept for the next READ(10)."""
    lu = ctx.need_lu()
    length, data = received_blocks(ctx, lu, struct.unpack_from(">H", ctx.cdb, 7)[0])
    answers[lu] = bytes(data).rstrip(b"\0")[::-1].ljust(lu.block_size, b"\0")
    return ScsiResult(transfer_length=length, data_out_direction=True)


async def mailbox_read(ctx: Ctx) -> ScsiResult:
    """READ(10): the answer to the last message, one block."""
    data = answers.pop(ctx.need_lu(), bytes(ctx.need_lu().block_size))
    return ScsiResult(data_in=data, transfer_length=len(data))


async def mailbox_status(ctx: Ctx) -> ScsiResult:
    """MAILBOX STATUS: one byte, whether an answer waits."""
    return ScsiResult(data_in=bytes([ctx.need_lu() in answers]), transfer_length=1)


MAILBOX = LuKind("mailbox", DISK.table.override({
    Opcode.WRITE_10: CommandSpec("WRITE(10)", mailbox_write, data_out=True, writes=True),
    Opcode.READ_10: CommandSpec("READ(10)", mailbox_read, reservation=EXCLUSIVE, timeout=5),
    MAILBOX_STATUS: CommandSpec("MAILBOX STATUS", mailbox_status),
}))
"""The disk's table with READ(10)/WRITE(10) answered otherwise and one command more; no fast path."""

KINDS_WITH_MAILBOX = {**KINDS, MAILBOX.name: MAILBOX}


def mailbox_lu(tmp_path: Path, lun: int) -> LogicalUnit:
    vol = FileVolume(str(tmp_path / f"mailbox{lun}.img"), BLOCKS * 512, 512)
    return LogicalUnit(vol, LuConfig.for_lun(TARGET, lun, kind=MAILBOX.name))


async def run(ds: DeviceServer, lun: int, cdb: bytes, data: bytes = b"", nexus: Nexus = NX) -> ScsiResult:
    return await ds.execute(ScsiTask(nexus, lun, cdb, data_out=data, write_edtl=len(data)))


async def ready(ds: DeviceServer) -> DeviceServer:
    for nx in (NX, NX2):
        ds.nexus_added(nx)
        for lun in ds.luns:
            while (await run(ds, lun, bytes(6), nexus=nx)).status != ScsiStatus.GOOD:
                pass
    return ds


async def rsoc_all(ds: DeviceServer, lun: int) -> list[tuple[int, int, int, int]]:
    res = await run(ds, lun, rsoc(0))
    assert res.status == ScsiStatus.GOOD
    return descriptors(bytes(res.data_in), False)


async def test_a_kind_answers_with_its_own_table_next_to_a_disk(tmp_path: Path) -> None:
    alone = await ready(DeviceServer(TARGET, {0: make_lu(tmp_path, "alone")}))
    disk_commands = await rsoc_all(alone, 0)
    await alone.close()

    disk = make_lu(tmp_path)
    ds = await ready(DeviceServer(TARGET, {0: disk, 1: mailbox_lu(tmp_path, 1)}, kinds=KINDS_WITH_MAILBOX))
    try:
        message = b"status please".ljust(512, b"\0")
        assert (await run(ds, 1, cdb10(Opcode.WRITE_10, 0, 1), message)).status == ScsiStatus.GOOD
        assert bytes((await run(ds, 1, bytes([MAILBOX_STATUS]) + bytes(15))).data_in) == b"\x01"
        assert bytes((await run(ds, 1, cdb10(Opcode.READ_10, 0, 1))).data_in) == b"esaelp sutats".ljust(512, b"\0")
        assert await ds.luns[1].volume.read(0, 1) == bytes(512)  # the medium never saw the message

        # Shared with the disk kind: INQUIRY, READ CAPACITY, TEST UNIT READY, REPORT LUNS, READ(16).
        assert (await run(ds, 1, inquiry())).status == ScsiStatus.GOOD
        cap = await run(ds, 1, cdb10(Opcode.READ_CAPACITY_10))
        assert struct.unpack(">II", bytes(cap.data_in)) == (BLOCKS - 1, 512)
        assert (await run(ds, 1, bytes(6))).status == ScsiStatus.GOOD
        luns = await run(ds, 1, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))
        assert bytes(luns.data_in)[:4] == struct.pack(">I", 16)
        assert (await run(ds, 1, struct.pack(">BBQIBB", Opcode.READ_16, 0, 0, 1, 0, 0))).status == ScsiStatus.GOOD

        # REPORT SUPPORTED OPERATION CODES reports the kind's table, and the disk's stays as it was.
        mailbox_commands = await rsoc_all(ds, 1)
        assert (MAILBOX_STATUS, 0, 0, 16) in mailbox_commands
        assert sorted(set(mailbox_commands) - {(MAILBOX_STATUS, 0, 0, 16)}) == sorted(disk_commands)
        assert await rsoc_all(ds, 0) == disk_commands
        one = bytes((await run(ds, 1, rsoc(1, Opcode.READ_10, rctd=True))).data_in)
        assert struct.unpack_from(">I", one, len(one) - 4)[0] == 5  # the kind's READ(10) timeout
        one = bytes((await run(ds, 0, rsoc(1, Opcode.READ_10, rctd=True))).data_in)
        assert struct.unpack_from(">I", one, len(one) - 4)[0] == 30
        assert bytes((await run(ds, 0, rsoc(1, MAILBOX_STATUS))).data_in) == bytes([0, 0x01, 0, 0])

        # The disk next to it: READ/WRITE reach its medium, the vendor opcode is unknown.
        block = bytes(range(256)) * 2
        assert (await run(ds, 0, cdb10(Opcode.WRITE_10, 3, 1), block)).status == ScsiStatus.GOOD
        assert bytes((await run(ds, 0, cdb10(Opcode.READ_10, 3, 1))).data_in) == block
        assert await disk.volume.read(3, 1) == block
        unknown = await run(ds, 0, bytes([MAILBOX_STATUS]) + bytes(15))
        assert unknown.status == ScsiStatus.CHECK_CONDITION
    finally:
        await ds.close()


async def test_the_fast_path_leaves_a_kind_with_its_own_read_and_write_alone(tmp_path: Path) -> None:
    ds = await ready(DeviceServer(TARGET, {0: make_lu(tmp_path), 1: mailbox_lu(tmp_path, 1)},
                                  kinds=KINDS_WITH_MAILBOX))
    try:
        read = cdb10(Opcode.READ_10, 0, 1)
        assert ds.start(ScsiTask(NX, 1, read)) is DECLINE
        assert ds.start(ScsiTask(NX, 0, read)) is not DECLINE  # the disk's still is taken
    finally:
        await ds.close()


async def test_the_conflict_rule_is_the_kinds_row(tmp_path: Path) -> None:
    """Under a Write Exclusive reservation a disk's READ(10) is shared; the mailbox's row says
    EXCLUSIVE, so another I_T nexus's READ(10) there conflicts."""
    ds = await ready(DeviceServer(TARGET, {0: make_lu(tmp_path), 1: mailbox_lu(tmp_path, 1)},
                                  kinds=KINDS_WITH_MAILBOX))
    try:
        params = struct.pack(">QQ4xBx2x", 0, 0xA, 0)
        for lun in (0, 1):
            assert (await run(ds, lun, struct.pack(">BBB2xIB", 0x5F, 0, 0, len(params), 0),
                              params)).status == ScsiStatus.GOOD
            params_r = struct.pack(">QQ4xBx2x", 0xA, 0, 0)
            assert (await run(ds, lun, struct.pack(">BBB2xIB", 0x5F, 1, 0x01, len(params_r), 0),
                              params_r)).status == ScsiStatus.GOOD
        assert (await run(ds, 0, cdb10(Opcode.READ_10, 0, 1), nexus=NX2)).status == ScsiStatus.GOOD
        assert (await run(ds, 1, cdb10(Opcode.READ_10, 0, 1), nexus=NX2)).status == ScsiStatus.RESERVATION_CONFLICT
    finally:
        await ds.close()


async def test_a_kind_the_device_server_does_not_know_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mailbox"):
        DeviceServer(TARGET, {1: mailbox_lu(tmp_path, 1)})
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path)})
    with pytest.raises(ValueError, match="mailbox"):
        ds.add_lun(1, mailbox_lu(tmp_path, 1))
    assert not ds.has_lun(1)
    ok = DeviceServer(TARGET, {0: make_lu(tmp_path)}, kinds=KINDS_WITH_MAILBOX)
    ok.add_lun(1, mailbox_lu(tmp_path, 1))  # added at run time: its kind's table from then on
    assert ok.table(1) is MAILBOX.table and ok.table(0) is DISK.table
    await ds.close()
    await ok.close()

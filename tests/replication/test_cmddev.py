"""The command device LU kind in one process (replication/cmddev.py): per-nexus results, replace
semantics, the empty result, and the exact sense of each refusal.  tests/integration/test_cmddev.py
does the same over iSCSI against real arrays."""
from __future__ import annotations

import asyncio
import struct
from typing import Any

from sanlab.replication.cmddev import PRODUCT, CommandDeviceUnit, command_device_kind
from sanlab.replication.command_block import Command, CommandBlock, EditedData, ResultStatus, TransferDestination
from sanlab.replication.command_router import CommandRouter
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.sense import parse_sense
from sanlab.scsi.task import ScsiResult, ScsiStatus, ScsiTask
from tests.scsi.helpers import NX, NX2, TARGET, cdb10, cdb16, inquiry

LUN = 9


class Dispatch:
    """Process 1 echoes its arguments, 2 waits for ``gate``, 3 is a refused pair instruction, 4 fails."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[Command] = []

    def knows(self, process_number: int) -> bool:
        return process_number in (1, 2, 3, 4)

    async def __call__(self, command: Command) -> tuple[ResultStatus, Any]:
        self.calls.append(command)
        if command.process_number == 2:
            await self.gate.wait()
        if command.process_number == 3:
            return ResultStatus.PAIR_INSTRUCTION_REFUSED, "pair create p0: no remote called r"
        if command.process_number == 4:
            raise RuntimeError("boom")
        return ResultStatus.DONE, {"echo": command.args}


def server(dispatch: Dispatch) -> DeviceServer:
    router = CommandRouter("array-a", dispatch)
    kind = command_device_kind(lambda: router)
    return DeviceServer(TARGET, {LUN: CommandDeviceUnit(TARGET, LUN)}, kinds={kind.name: kind})


async def run(ds: DeviceServer, cdb: bytes, data_out: bytes = b"", nexus: Any = NX) -> ScsiResult:
    for _ in range(3):  # the first command of a nexus reports the power-on unit attention
        r = await ds.execute(ScsiTask(nexus, LUN, cdb, data_out=data_out, write_edtl=len(data_out)))
        if r.status != ScsiStatus.CHECK_CONDITION or parse_sense(r.sense).key != 6:
            return r
    raise AssertionError("unit attentions do not end")


async def write(ds: DeviceServer, raw: bytes, nexus: Any = NX) -> ScsiResult:
    padded = raw + bytes(-len(raw) % 512)
    return await run(ds, cdb10(0x2A, 0, len(padded) // 512), padded, nexus)


async def read(ds: DeviceServer, nexus: Any = NX) -> EditedData:
    r = await run(ds, cdb16(0x88, 0, 8), nexus=nexus)
    assert r.status == ScsiStatus.GOOD
    return EditedData.decode(bytes(r.data_in))


def block(ident: int, number: int, **args: Any) -> bytes:
    return CommandBlock(ident, (Command(number, args),)).encode()


async def test_answers_inquiry_and_read_capacity_as_a_disk() -> None:
    ds = server(Dispatch())
    data = bytes((await run(ds, inquiry())).data_in)
    assert data[0] == 0x00 and data[16:32].decode().strip() == PRODUCT
    cap = bytes((await run(ds, cdb10(0x25))).data_in)
    assert struct.unpack(">II", cap) == (8191, 512)


async def test_results_are_per_nexus_and_a_read_does_not_consume_them() -> None:
    ds = server(Dispatch())
    assert await read(ds) == EditedData(0, ())  # no command yet: the empty result
    assert (await write(ds, block(11, 1, who="a"))).status == ScsiStatus.GOOD
    assert (await write(ds, block(22, 1, who="b"), NX2)).status == ScsiStatus.GOOD
    a, b = await read(ds), await read(ds, NX2)
    assert (a.identification, a.results[0].output, a.results[0].array) == (11, {"echo": {"who": "a"}}, "array-a")
    assert (b.identification, b.results[0].output) == (22, {"echo": {"who": "b"}})
    assert await read(ds) == a  # still there
    ds.nexus_removed(NX)
    assert await read(ds) == EditedData(0, ())  # gone with the nexus; NX2's stays
    assert await read(ds, NX2) == b


async def test_a_new_write_replaces_the_running_one_and_the_newest_wins() -> None:
    d = Dispatch()
    ds = server(d)
    await run(ds, bytes(6))  # take the unit attention first
    slow = asyncio.ensure_future(write(ds, block(1, 2)))
    while not d.calls:
        await asyncio.sleep(0)
    assert (await write(ds, block(2, 1, n=2))).status == ScsiStatus.GOOD
    assert (await read(ds)).identification == 2
    d.gate.set()
    assert (await slow).status == ScsiStatus.GOOD
    assert (await read(ds)).identification == 2  # the older block's result was dropped


async def test_edited_data_flag_clear_keeps_status_only_and_failures_say_why() -> None:
    ds = server(Dispatch())
    await write(ds, CommandBlock(5, (Command(1, {"x": 1}, edited_data=False), Command(4))).encode())
    res = (await read(ds)).results
    assert (res[0].status, res[0].output) == (ResultStatus.DONE, None)
    assert (res[1].status, res[1].output) == (ResultStatus.FAILED, "RuntimeError: boom")


def _sense(r: ScsiResult) -> tuple[int, int, int, bytes]:
    assert r.status == ScsiStatus.CHECK_CONDITION
    s = parse_sense(r.sense)
    assert s.sks is not None
    return s.key, s.asc, s.ascq, bytes(s.sks)


async def test_malformed_blocks_and_unknown_process_numbers_point_at_the_field() -> None:
    d = Dispatch()
    ds = server(d)
    bad = bytearray(block(1, 1))
    bad[4] = 9  # VERSION
    assert _sense(await write(ds, bytes(bad))) == (5, 0x26, 0x00, bytes([0x80, 0x00, 0x04]))  # SKSV, C/D=0, byte 4
    # PROCESS NUMBER 0x99 at byte 20 (header 16 + parameter header 4)
    assert _sense(await write(ds, block(1, 0x99))) == (5, 0x26, 0x00, bytes([0x80, 0x00, 20]))
    assert not d.calls
    # A WRITE of a block not at LBA 0: INVALID FIELD IN CDB at the LBA (C/D=1).
    r = await run(ds, cdb10(0x2A, 1, 1), bytes(512))
    assert _sense(r) == (5, 0x24, 0x00, bytes([0xC0, 0x00, 0x02]))


async def test_a_refused_pair_instruction_is_check_condition_with_its_reason_readable() -> None:
    ds = server(Dispatch())
    raw = CommandBlock(3, (Command(1), Command(3, {"name": "p0"}))).encode()
    # The second command's PROCESS NUMBER: header 16, first parameter 4 + 10, its header 4.
    assert _sense(await write(ds, raw)) == (5, 0x80, 0x01, bytes([0x80, 0x00, 34]))
    res = (await read(ds)).results
    assert [r.status for r in res] == [ResultStatus.DONE, ResultStatus.PAIR_INSTRUCTION_REFUSED]
    assert res[1].output == "pair create p0: no remote called r"


async def test_commands_for_another_array_are_unreachable_without_a_forward() -> None:
    ds = server(Dispatch())
    raw = CommandBlock(4, (TransferDestination(("array-a",)), Command(1), TransferDestination(("array-c",)),
                           Command(0x99))).encode()
    assert (await write(ds, raw)).status == ScsiStatus.GOOD  # 0x99 is for array-c: not checked here
    res = (await read(ds)).results
    assert [r.status for r in res] == [ResultStatus.DONE, ResultStatus.UNREACHABLE]
    assert "array-c" in res[1].output

"""Task attributes (SAM-5 §8.6): when SIMPLE, ORDERED and HEAD OF QUEUE tasks start, alone and through
the device server on a real file volume."""
from __future__ import annotations

import asyncio
from pathlib import Path

from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.task import ScsiStatus, ScsiTask, TaskAttribute
from sanlab.scsi.task_set import TaskSet
from sanlab.storage.file_volume import FileVolume
from tests.scsi.helpers import NX, TARGET, cdb10, ready_server

S, O, H = TaskAttribute.SIMPLE, TaskAttribute.ORDERED, TaskAttribute.HEAD_OF_QUEUE


async def scenario(attrs: list[TaskAttribute]) -> tuple[list[str], dict[int, asyncio.Event]]:
    """Admit tasks in order; each records 'start i' and runs until its gate opens, then 'end i'."""
    ts = TaskSet()
    log: list[str] = []
    gates = {i: asyncio.Event() for i in range(len(attrs))}

    async def task(i: int, attr: TaskAttribute) -> None:
        async with ts.enabled(attr):
            log.append(f"start {i}")
            await gates[i].wait()
            log.append(f"end {i}")

    for i, a in enumerate(attrs):
        asyncio.get_running_loop().create_task(task(i, a))
    await asyncio.sleep(0.01)
    return log, gates


async def step(gates: dict[int, asyncio.Event], i: int) -> None:
    gates[i].set()
    await asyncio.sleep(0.01)


async def test_ordered_waits_for_older_and_holds_back_newer() -> None:
    log, gates = await scenario([S, S, O, S, H])
    # The SIMPLE tasks before the ORDERED one and the HEAD OF QUEUE one run; the rest wait.
    assert log == ["start 0", "start 1", "start 4"]
    await step(gates, 0)
    await step(gates, 4)
    assert "start 2" not in log  # task 1 still runs
    await step(gates, 1)
    assert log[-1] == "start 2" and "start 3" not in log
    await step(gates, 2)
    assert log[-2:] == ["end 2", "start 3"]
    await step(gates, 3)


async def test_ordered_chain_and_simple_only() -> None:
    log, gates = await scenario([O, O, S])
    assert log == ["start 0"]
    await step(gates, 0)
    assert log[-1] == "start 1"
    await step(gates, 1)
    assert log[-1] == "start 2"
    await step(gates, 2)
    log, gates = await scenario([S, S, S])
    assert log == ["start 0", "start 1", "start 2"]
    for i in range(3):
        await step(gates, i)


async def test_cancelled_ordered_task_releases_the_newer_ones() -> None:
    ts = TaskSet()
    gate = asyncio.Event()
    started: list[str] = []

    async def run(name: str, attr: TaskAttribute, wait: bool) -> None:
        async with ts.enabled(attr):
            started.append(name)
            if wait:
                await gate.wait()

    first = asyncio.create_task(run("simple", S, True))
    ordered = asyncio.create_task(run("ordered", O, False))
    newer = asyncio.create_task(run("newer", S, False))
    await asyncio.sleep(0.01)
    assert started == ["simple"]
    ordered.cancel()  # ABORT TASK of the waiting ORDERED task
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, newer)
    assert started == ["simple", "newer"] and ts.running == 0


class GatedVolume(FileVolume):
    """A file volume whose writes wait for a gate: a slow medium, to see what runs meanwhile."""

    def __init__(self, path: str) -> None:
        super().__init__(path, 1 << 20, 512)
        self.gate = asyncio.Event()

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        await self.gate.wait()
        await super().write(lba, data, fua)


async def test_device_server_orders_commands(tmp_path: Path) -> None:
    vol = GatedVolume(str(tmp_path / "g.img"))
    server = await ready_server({0: LogicalUnit(vol, LuConfig.for_lun(TARGET, 0))})

    def cmd(cdb: bytes, attr: TaskAttribute, data: bytes = b"") -> asyncio.Task[object]:
        return asyncio.get_running_loop().create_task(server.execute(
            ScsiTask(NX, 0, cdb, attr=attr, data_out=data, write_edtl=len(data))))

    write = cmd(cdb10(0x2A, 0, 1), S, b"W" * 512)           # stuck on the slow medium
    read_ordered = cmd(cdb10(0x28, 0, 1), O)                  # must see the write's data
    tur_hoq = cmd(bytes(6), H)                                # jumps the queue
    read_simple = cmd(cdb10(0x28, 0, 1), S)                   # behind the ORDERED read
    done, _ = await asyncio.wait([write, read_ordered, tur_hoq, read_simple], timeout=0.2)
    assert done == {tur_hoq}
    vol.gate.set()
    results = await asyncio.gather(write, read_ordered, read_simple)
    assert all(r.status == ScsiStatus.GOOD for r in results)  # type: ignore[attr-defined]
    assert bytes(results[1].data_in) == b"W" * 512  # type: ignore[attr-defined]

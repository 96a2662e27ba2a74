"""Replacing a live LU's volume (issue 13, seam 1): quiesce, swap, resume, with hosts writing.

A real iSCSI target on a loopback port and four initiator sessions write sequence-numbered blocks
at queue depth while the LU's file volume is swapped for a mirroring wrapper (what a synchronous
pair will put in front of a P-VOL) and back.  The checker: no acknowledged write is lost from the
volume, every write issued after the wrapper went in and acknowledged before it came out reached
the mirror, and the mirror saw each block's writes in the order they were acknowledged.
"""
from __future__ import annotations

import asyncio
import random
import struct
from pathlib import Path

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.task import TaskAttribute
from sanlab.storage.vvol import MappingTables, VRRow, LuVRow
from sanlab.storage.volume import Volume, VolumeError
from sanlab.storage.emulated import EmulatedBlockOps
from sanlab.storage.file_volume import FileVolume
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from sanlab.target.login import TargetAuth
from sanlab.target.server import IscsiServer, Target

import pytest

TARGET = "iqn.2026-12.org.sanlab:swap"
BS = 512
BLOCKS = 2048
WRITERS = 4
QD = 8


class MirrorVolume(EmulatedBlockOps):
    """Writes go to ``base`` and are logged (block → sequence numbers, in the order applied)."""

    def __init__(self, base: Volume) -> None:
        self.base = base
        self.log: dict[int, list[int]] = {}
        self.inflight = 0

    @property
    def block_size(self) -> int:
        return self.base.block_size

    @property
    def num_blocks(self) -> int:
        return self.base.num_blocks

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.base.read(lba, nblocks)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        await self.base.write(lba, data, fua)
        for i in range(len(data) // BS):
            self.log.setdefault(lba + i, []).append(struct.unpack_from(">Q", data, i * BS + 8)[0])

    async def read(self, lba: int, nblocks: int) -> bytes:
        return await self._raw_read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        self.inflight += 1
        try:
            async with self.range_lock.hold(lba, len(data) // BS):
                await self._raw_write(lba, data, fua)
        finally:
            self.inflight -= 1

    async def flush(self) -> None:
        await self.base.flush()

    async def close(self) -> None:
        await self.base.flush()


class CountingFileVolume(FileVolume):
    """A file volume that knows how many writes are being carried out on it right now."""

    inflight = 0

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        self.inflight += 1
        try:
            await super().write(lba, data, fua)
        finally:
            self.inflight -= 1

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        fut = super().write_pooled(lba, data)
        if fut is not None:
            self.inflight += 1
            fut.add_done_callback(lambda _: setattr(self, "inflight", self.inflight - 1))
        return fut


def _block(lba: int, seq: int) -> bytes:
    return struct.pack(">QQ", lba, seq) + bytes(BS - 16)


async def test_a_live_lu_volume_is_swapped_in_and_out_without_losing_or_reordering_writes(tmp_path: Path) -> None:
    vol = CountingFileVolume(str(tmp_path / "lu.img"), BLOCKS * BS, BS)
    lu = LogicalUnit(vol, LuConfig.for_lun(TARGET, 0))
    assert lu.nowait_volume is vol  # the file volume offers the fast path
    server = IscsiServer([Target(TargetAuth(TARGET), DeviceServer(TARGET, {0: lu}))], [("127.0.0.1", 0)])
    await server.start()
    host, port = server.bound[0]
    sessions = []
    for i in range(WRITERS):
        s = IscsiSession(host, port, TARGET, InitiatorConfig(initiator_name=f"iqn.2026-12.org.sanlab:w{i}",
                                                                nop_interval=0))
        await s.connect()
        await s.clear_unit_attentions(0)
        sessions.append(s)

    acked: dict[int, list[tuple[int, float, float]]] = {}
    """block → (seq, issued, acknowledged) in acknowledgement order."""
    seq = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def writer(w: int, s: IscsiSession) -> None:
        nonlocal seq
        rng = random.Random(w)
        mine = list(range(w, BLOCKS, WRITERS))  # one writer per block: the order per block is defined
        busy: set[int] = set()

        async def one() -> None:
            nonlocal seq
            while not stop.is_set():
                lba = rng.choice(mine)
                if lba in busy:
                    await asyncio.sleep(0)
                    continue
                busy.add(lba)
                seq += 1
                n, issued = seq, loop.time()
                await s.write16(0, lba, _block(lba, n), BS)
                acked.setdefault(lba, []).append((n, issued, loop.time()))
                busy.discard(lba)

        await asyncio.gather(*(one() for _ in range(QD)))

    writers = [asyncio.create_task(writer(w, s)) for w, s in enumerate(sessions)]
    await asyncio.sleep(0.3)
    mirror: MirrorVolume | None = None

    def wrap(base: Volume) -> Volume:
        nonlocal mirror
        # Quiesced: no write is being carried out on the old volume, so none can complete on it
        # (and be acknowledged) after the wrapper is in.
        assert vol.inflight == 0
        mirror = MirrorVolume(base)
        return mirror

    def unwrap(current: Volume) -> Volume:
        assert mirror is not None and mirror.inflight == 0 and vol.inflight == 0
        return vol

    t_in_start = loop.time()
    old = await lu.swap_volume(wrap)
    t_in = loop.time()
    assert old is vol and lu.volume is mirror and lu.nowait_volume is None  # a wrapper: no fast path
    await asyncio.sleep(0.5)
    t_out_start = loop.time()
    back = await lu.swap_volume(unwrap)
    assert back is mirror and lu.nowait_volume is vol  # decided again at the swap
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*writers)

    assert mirror is not None
    written = sum(len(v) for v in acked.values())
    during = [(lba, n) for lba, lst in acked.items() for n, issued, done in lst if issued > t_in and done < t_out_start]
    assert written > 500 and len(during) > 100, (written, len(during))
    # Nothing lost: every block holds its last acknowledged write.
    data = vol.read_sync(0, BLOCKS)
    for lba, lst in acked.items():
        assert struct.unpack_from(">QQ", data, lba * BS) == (lba, lst[-1][0]), lba
    # Every write issued after the wrapper went in and done before it came out went through it.
    for lba, n in during:
        assert n in mirror.log.get(lba, []), (lba, n)
    # Nothing went through it before it went in (the quiesce drained older writes first).
    early = {n for lst in acked.values() for n, issued, done in lst if done < t_in_start}
    assert not early & {n for lst in mirror.log.values() for n in lst}
    # Each block's writes reached the mirror in acknowledgement order.
    for lba, got in mirror.log.items():
        order = [n for n, _, _ in acked[lba]]
        assert got == [n for n in order if n in set(got)], lba
        assert got == sorted(got)

    for s in sessions:
        await s.logout()
    await server.stop()


async def test_a_swap_waits_for_an_ordered_task_and_refuses_another_geometry(tmp_path: Path) -> None:
    vol = FileVolume(str(tmp_path / "lu.img"), 64 * BS, BS)
    lu = LogicalUnit(vol, LuConfig.for_lun(TARGET, 0))
    order: list[str] = []
    release = asyncio.Event()

    async def ordered_task() -> None:
        async with lu.task_set.enabled(TaskAttribute.ORDERED):
            order.append("task")
            await release.wait()

    t = asyncio.create_task(ordered_task())
    await asyncio.sleep(0)
    swap = asyncio.create_task(lu.swap_volume(lambda v: (order.append("swap"), v)[1]))
    await asyncio.sleep(0.05)
    assert order == ["task"]  # the swap waits for the older task
    release.set()
    await asyncio.gather(t, swap)
    assert order == ["task", "swap"]
    small = FileVolume(str(tmp_path / "small.img"), 32 * BS, BS)
    with pytest.raises(VolumeError, match="geometry"):
        await lu.swap_volume(lambda v: small)
    assert lu.volume is vol  # a refused swap changes nothing


async def test_windows_follow_a_real_volume_replaced_in_the_tables(tmp_path: Path) -> None:
    vol = FileVolume(str(tmp_path / "real.img"), 256 * BS, BS)
    tables = MappingTables()
    tables.add_real("r", vol)
    tables.map_virtual(VRRow(1, "r", 16, 128))
    tables.map_lu(LuVRow("lu", 1, 8, 64))
    window = tables.lu_volume("lu")  # made before the replacement, as an exported LU's is
    mirror = MirrorVolume(vol)
    assert tables.replace_real("r", mirror) is vol
    await window.write(2, _block(7, 99))
    assert mirror.log == {16 + 8 + 2: [99]}  # the window used the wrapper, not the object it saw at creation
    with pytest.raises(VolumeError, match="geometry"):
        tables.replace_real("r", FileVolume(str(tmp_path / "other.img"), 128 * BS, BS))

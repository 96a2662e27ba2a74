"""DeviceServer.start (the READ/WRITE fast path, scsi/outcome.py) against DeviceServer.execute.

The fast path must never change an answer: wherever it answers, the full path on an identical
LU answers the same (status, data, sense, residual basis) and leaves the same bytes on the
medium; wherever a check of the full path could matter it declines (DECLINE); and a declined
command is not tried on the fast path again.
"""
from __future__ import annotations

import asyncio
import random
import struct
import threading
from pathlib import Path

import pytest

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.outcome import DECLINE, Pending
from sanlab.scsi.task import ScsiResult, ScsiStatus, ScsiTask, TaskAttribute
from sanlab.storage.volume import VolumeError
from sanlab.storage.file_volume import FileVolume
from tests.scsi.helpers import BLOCKS, NX, NX2, cdb10, cdb16, make_lu, ready_server

FAST_OPS = (Opcode.READ_10, Opcode.WRITE_10, Opcode.READ_16, Opcode.WRITE_16)


def volume(lu: LogicalUnit) -> FileVolume:
    assert isinstance(lu.volume, FileVolume)
    return lu.volume


def fill(lu: LogicalUnit, seed: int) -> None:
    volume(lu).write_sync(0, random.Random(seed).randbytes(BLOCKS * 512))


def random_task(rng: random.Random) -> ScsiTask:
    op = rng.choice(FAST_OPS)
    if rng.random() < 0.5:  # a plain command, as hosts send most of the time
        blocks = rng.randrange(1, 17)
        lba = rng.randrange(BLOCKS - blocks + 1)
        flags = rng.choice([0, 0x10, 0x08])
        if op in (Opcode.WRITE_10, Opcode.WRITE_16):
            data = rng.randbytes(blocks * 512)
            cdb = cdb10(op, lba, blocks, flags) if op == Opcode.WRITE_10 else cdb16(op, lba, blocks, flags)
            return ScsiTask(NX, 0, cdb, data_out=data, write_edtl=len(data))
        cdb = cdb10(op, lba, blocks, flags) if op == Opcode.READ_10 else cdb16(op, lba, blocks, flags)
        return ScsiTask(NX, 0, cdb, expected_in_length=blocks * 512)
    flags = rng.choice([0, 0, 0, 0x08, 0x10, 0x18, 0x20, 0x40, 0x01, 0x02, 0x04])
    lba = rng.choice([0, 1, rng.randrange(BLOCKS), BLOCKS - 1, BLOCKS - 8, BLOCKS, BLOCKS + 3, 1 << 31])
    blocks = rng.choice([0, 1, 2, 8, rng.randrange(1, 64), 1 << 15])
    if op in (Opcode.READ_10, Opcode.WRITE_10):
        cdb = struct.pack(">BBIBHB", op, flags, lba & 0xFFFFFFFF, rng.choice([0, 0, 0, 1, 0x20]), blocks & 0xFFFF,
                          rng.choice([0, 0, 0, 0x04, 0x01, 0x80]))
    else:
        cdb = struct.pack(">BBQIBB", op, flags, lba, blocks, rng.choice([0, 0, 0, 3]), rng.choice([0, 0, 0x04]))
    data = b""
    if op in (Opcode.WRITE_10, Opcode.WRITE_16) and blocks < 256:
        n = blocks + rng.choice([0, 0, 0, -1, 1])
        data = rng.randbytes(max(n, 0) * 512 + rng.choice([0, 0, 0, 100]))
    return ScsiTask(NX, 0, cdb, data_out=data, expected_in_length=blocks * 512, write_edtl=len(data))


@pytest.mark.parametrize("cache", ["hit", "miss"])
async def test_fast_answers_equal_the_full_path(tmp_path: Path, cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """hit: the page cache has everything (answered at once); miss: every transfer would wait, so
    the fast path starts it in the thread pool and answers through a future."""
    a, b = make_lu(tmp_path, "a", thin=False), make_lu(tmp_path, "b", thin=False)
    fill(a, 7)
    fill(b, 7)
    if cache == "miss":
        monkeypatch.setattr(volume(a), "read_nowait", lambda lba, n: None)
        monkeypatch.setattr(volume(a), "write_nowait", lambda lba, data: False)
    fast, full = await ready_server({0: a}), await ready_server({0: b})
    rng = random.Random(2026)
    answered = declined = 0
    for _ in range(3000):
        task = random_task(rng)
        outcome = fast.start(task)
        want = await full.execute(task)
        if outcome is DECLINE:
            declined += 1
            got = await fast.execute(task)
        else:
            answered += 1
            if cache == "miss":
                assert isinstance(outcome, Pending)
            # Also with a warm cache a write may wait: the page cache throttles dirty pages.
            got = await outcome.answer if isinstance(outcome, Pending) else outcome
        assert got == want, (task.cdb.hex(), len(task.data_out), got, want)
    assert volume(a).read_sync(0, BLOCKS) == volume(b).read_sync(0, BLOCKS)
    # Both paths were exercised: plain commands answered fast, odd ones declined.
    assert answered > 500 and declined > 500, (answered, declined)
    await fast.close()
    await full.close()


@pytest.fixture
async def ds(tmp_path: Path) -> DeviceServer:
    lu = make_lu(tmp_path, thin=False)
    fill(lu, 1)
    return await ready_server({0: lu}, NX, NX2)


def read10(lba: int = 8, blocks: int = 2, nexus: object = NX, attr: TaskAttribute = TaskAttribute.SIMPLE) -> ScsiTask:
    return ScsiTask(NX if nexus is NX else NX2, 0, cdb10(Opcode.READ_10, lba, blocks), attr=attr,
                    expected_in_length=blocks * 512)


def write10(lba: int = 8, blocks: int = 2, flags: int = 0) -> ScsiTask:
    data = bytes([0x5A]) * (blocks * 512)
    return ScsiTask(NX, 0, cdb10(Opcode.WRITE_10, lba, blocks, flags), data_out=data, write_edtl=len(data))


async def test_plain_read_and_write_are_answered(ds: DeviceServer) -> None:
    w = ds.start(write10())
    assert isinstance(w, ScsiResult)
    assert w.status == ScsiStatus.GOOD and w.transfer_length == 1024 and w.data_out_direction
    r = ds.start(read10())
    assert isinstance(r, ScsiResult)
    assert r.status == ScsiStatus.GOOD and bytes(r.data_in) == bytes([0x5A]) * 1024
    r16 = ds.start(ScsiTask(NX, 0, cdb16(Opcode.READ_16, 8, 2)))
    assert isinstance(r16, ScsiResult) and r16.data_in == r.data_in


async def test_declines_a_pending_unit_attention(ds: DeviceServer) -> None:
    ds.luns[0].add_ua(0x2A09)  # CAPACITY DATA HAS CHANGED for every nexus
    assert ds.start(read10()) is DECLINE
    res = await ds.execute(read10())
    assert res.status == ScsiStatus.CHECK_CONDITION and res.sense[2] == 0x06 and res.sense[12:14] == b"\x2a\x09"
    assert ds.start(read10()) is not DECLINE  # reported, cleared: fast again


async def test_declines_while_a_reservation_is_held(ds: DeviceServer) -> None:
    reserve6 = bytes([Opcode.RESERVE_6, 0, 0, 0, 0, 0])
    assert (await ds.execute(ScsiTask(NX2, 0, reserve6))).status == ScsiStatus.GOOD
    assert ds.start(read10()) is DECLINE
    assert (await ds.execute(read10())).status == ScsiStatus.RESERVATION_CONFLICT
    assert ds.start(read10(nexus=NX2)) is DECLINE  # even the holder goes the full way
    release6 = bytes([Opcode.RELEASE_6, 0, 0, 0, 0, 0])
    assert (await ds.execute(ScsiTask(NX2, 0, release6))).status == ScsiStatus.GOOD
    assert ds.start(read10()) is not DECLINE


async def test_declines_task_attributes_other_than_simple_and_a_pending_ordered_task(ds: DeviceServer) -> None:
    assert ds.start(read10(attr=TaskAttribute.ORDERED)) is DECLINE
    assert ds.start(read10(attr=TaskAttribute.HEAD_OF_QUEUE)) is DECLINE
    ts = ds.luns[0].task_set
    entered, leave = asyncio.Event(), asyncio.Event()

    async def ordered() -> None:
        async with ts.enabled(TaskAttribute.ORDERED):
            entered.set()
            await leave.wait()

    holder = asyncio.create_task(ordered())
    await entered.wait()
    assert not ts.open
    assert ds.start(read10()) is DECLINE  # must start after the ORDERED task
    leave.set()
    await holder
    assert ts.open and ds.start(read10()) is not DECLINE


async def test_declines_what_the_lu_state_refuses(ds: DeviceServer) -> None:
    lu = ds.luns[0]
    for attr, value in (("sanitizing", True), ("medium_present", False), ("swp", True)):
        setattr(lu, attr, value)
        assert ds.start(write10()) is DECLINE, attr
        assert (await ds.execute(write10())).status == ScsiStatus.CHECK_CONDITION, attr
        setattr(lu, attr, not value)
    lu.wce = False  # write-through: every write is forced to the medium, a wait
    assert ds.start(write10()) is DECLINE
    lu.wce = True
    assert ds.start(write10(flags=0x08)) is DECLINE  # FUA


async def test_declines_a_readonly_lu(tmp_path: Path) -> None:
    make_lu(tmp_path, "ro").volume  # create the file
    ro = make_lu(tmp_path, "ro", readonly=True)
    server = await ready_server({0: ro})
    assert server.start(write10()) is DECLINE
    res = await server.execute(write10())
    assert res.status == ScsiStatus.CHECK_CONDITION and res.sense[2] == 0x07  # DATA PROTECT
    assert server.start(read10()) is not DECLINE


async def test_declines_a_range_with_an_operation_in_flight(ds: DeviceServer) -> None:
    vol = volume(ds.luns[0])
    async with vol.range_lock.hold(8, 4):  # e.g. a COMPARE AND WRITE waiting for the thread pool
        assert ds.start(write10(lba=10, blocks=1)) is DECLINE
        assert ds.start(read10(lba=9, blocks=1)) is DECLINE
        assert ds.start(write10(lba=12, blocks=1)) is not DECLINE  # next to it, not over it
    async with vol.range_lock.hold(8, 4, exclusive=False):  # a read in flight: reads share it
        assert ds.start(read10(lba=9, blocks=1)) is not DECLINE
        assert ds.start(write10(lba=9, blocks=1)) is DECLINE


async def test_a_read_waiting_for_the_disk_holds_its_place(ds: DeviceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast-path read started in the thread pool counts as running (an ORDERED task waits for it)
    and holds its range shared (a write over it waits; COMPARE AND WRITE stays atomic)."""
    lu = ds.luns[0]
    vol = volume(lu)
    monkeypatch.setattr(vol, "read_nowait", lambda lba, n: None)
    gate = threading.Event()
    real = vol.read_sync

    def slow_read(lba: int, n: int) -> bytes:
        gate.wait(5)
        return real(lba, n)

    monkeypatch.setattr(vol, "read_sync", slow_read)
    pending = ds.start(read10(lba=8, blocks=2))
    assert isinstance(pending, Pending)
    assert lu.task_set.running == 1
    assert vol.range_lock.would_wait(9, 1, exclusive=True)
    assert ds.start(write10(lba=9, blocks=1)) is DECLINE  # queues behind the read instead
    ordered = asyncio.create_task(ds.execute(ScsiTask(NX, 0, bytes(6), attr=TaskAttribute.ORDERED)))
    await asyncio.sleep(0.05)
    assert not ordered.done()
    gate.set()
    res = await pending.answer
    assert res.status == ScsiStatus.GOOD and bytes(res.data_in) == real(8, 2)
    assert (await ordered).status == ScsiStatus.GOOD
    assert lu.task_set.running == 0 and not vol.range_lock.busy


async def test_a_disk_error_in_the_thread_pool_is_a_medium_error(ds: DeviceServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    vol = volume(ds.luns[0])
    # Nothing in the page cache and writes throttled: both paths go to the thread pool.
    monkeypatch.setattr(vol, "_read_nowait", lambda lba, n: None)
    monkeypatch.setattr(vol, "_write_nowait", lambda lba, data: 0)

    def fail(*_a: object) -> None:
        raise VolumeError("injected EIO")

    monkeypatch.setattr(vol, "read_sync", fail)
    monkeypatch.setattr(vol, "write_sync", fail)
    for task, asc in ((read10(), b"\x11\x00"), (write10(), b"\x0c\x00")):
        pending = ds.start(task)
        assert isinstance(pending, Pending)
        res = await pending.answer
        want = await ds.execute(task)  # the full path meets the same failure
        assert res == want
        assert res.status == ScsiStatus.CHECK_CONDITION and res.sense[2] == 0x03 and res.sense[12:14] == asc


async def test_raid_lu_reads_fast_writes_the_full_way(tmp_path: Path) -> None:
    """A RAID 5 LU: cached reads answered by the fast path, equal to the full path's answers on an
    identical LU; writes always declined (parity is updated only under the stripe locks)."""
    from sanlab.scsi.lu import LuConfig
    from sanlab.storage.raid import Drive, RaidGroup, RaidLevel
    from sanlab.storage.raid_volume import RaidVolume
    from tests.scsi.helpers import TARGET

    def raid_lu(name: str) -> LogicalUnit:
        size = BLOCKS * 512 // 3 + 64 * 1024
        drives = [Drive(str(tmp_path / f"{name}{i}.img"), size) for i in range(4)]
        return LogicalUnit(RaidVolume(RaidGroup(RaidLevel.RAID5, drives, 64 * 1024), 512),
                           LuConfig.for_lun(TARGET, 0, thin=False))

    a, b = raid_lu("a"), raid_lu("b")
    assert a.nowait_volume is not None
    image = random.Random(5).randbytes(a.num_blocks * 512)
    await a.volume.write(0, image)
    await b.volume.write(0, image)
    fast, full = await ready_server({0: a}), await ready_server({0: b})
    rng = random.Random(11)
    reads = 0
    for _ in range(600):
        task = random_task(rng)
        if task.cdb[0] in (Opcode.WRITE_10, Opcode.WRITE_16):
            assert fast.start(task) is DECLINE
            got = await fast.execute(task)
        else:
            outcome = fast.start(task)
            if outcome is DECLINE:
                got = await fast.execute(task)
            else:
                assert isinstance(outcome, ScsiResult)  # never the pool: uncached RAID reads go the full way
                got = outcome
                reads += 1
        assert got == await full.execute(task), task.cdb.hex()
    assert reads > 50  # 170 of the 600 with this seed; all cached, just written
    assert await a.volume.read(0, a.num_blocks) == await b.volume.read(0, b.num_blocks)
    await fast.close()
    await full.close()


async def test_a_read_longer_than_the_edtl_is_answered_with_its_residual_basis(ds: DeviceServer) -> None:
    """The CDB asks for two blocks, the initiator's EDTL for one: the fast path answers what the
    CDB transfers (the transport reports the overflow residual), as the full path does."""
    task = ScsiTask(NX, 0, cdb10(Opcode.READ_10, 8, 2), expected_in_length=512)
    got = ds.start(task)
    assert isinstance(got, ScsiResult)
    assert got == await ds.execute(task) and got.transfer_length == 1024


async def test_a_declined_raid_read_is_not_tried_on_the_fast_path_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An uncached RAID read is declined after one RWF_NOWAIT try per chunk; the full path then reads
    the drives (in the pool) without trying the page cache again (issue 13: no double try)."""
    from sanlab.scsi.lu import LuConfig
    from sanlab.storage.drive import Drive
    from sanlab.storage.raid import RaidGroup, RaidLevel
    from sanlab.storage.raid_volume import RaidVolume
    from tests.scsi.helpers import TARGET

    drives = [Drive(str(tmp_path / f"d{i}.img"), 1 << 20) for i in range(3)]
    lu = LogicalUnit(RaidVolume(RaidGroup(RaidLevel.RAID5, drives, 64 * 1024), 512),
                     LuConfig.for_lun(TARGET, 0, thin=False))
    image = random.Random(3).randbytes(128 * 1024)
    await lu.volume.write(0, image)
    server = await ready_server({0: lu})
    tries: list[int] = []
    monkeypatch.setattr(Drive, "pread_nowait", lambda self, buf, offset: tries.append(offset) or False)
    task = ScsiTask(NX, 0, cdb10(Opcode.READ_10, 0, 8), expected_in_length=4096)
    assert server.start(task) is DECLINE
    assert len(tries) == 1  # one chunk, one try
    res = await server.execute(task)
    assert res.status == ScsiStatus.GOOD and bytes(res.data_in) == image[:4096]
    assert len(tries) == 1  # the full path did not try the page cache again
    await server.close()


async def test_a_write_gate_decides_per_nexus_on_the_fast_path_too(ds: DeviceServer) -> None:
    # An S-VOL takes the primary array's writes (NX) and refuses a host's (NX2): the fast path asks
    # the gate, takes what it lets through and leaves a refused write to the general path's answer.
    from sanlab.scsi.sense import Asc, ScsiError, SenseKey
    from sanlab.scsi.task import Nexus

    lu = ds.luns[0]
    asked: list[Nexus] = []

    def gate(nexus: Nexus) -> None:
        asked.append(nexus)
        if nexus != NX:
            raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)

    lu.write_gate = gate
    assert isinstance(ds.start(write10()), ScsiResult) and asked == [NX]  # the primary's: fast
    assert isinstance(ds.start(read10()), ScsiResult) and asked == [NX]  # reads ask no gate
    before = volume(lu).read_sync(40, 1)
    host = ScsiTask(NX2, 0, cdb10(Opcode.WRITE_10, 40, 1), data_out=bytes([0xEE]) * 512, write_edtl=512)
    assert ds.start(host) is DECLINE
    refused = await ds.execute(host)
    assert refused.status == ScsiStatus.CHECK_CONDITION
    assert refused.sense is not None and refused.sense[2] & 0x0F == SenseKey.DATA_PROTECT
    assert refused.sense[12:14] == bytes([0x27, 0x00])
    assert (await ds.execute(read10(nexus=NX2))).status == ScsiStatus.GOOD  # reads are everyone's
    assert volume(lu).read_sync(40, 1) == before  # nothing written
    lu.write_gate = None
    assert isinstance(ds.start(write10()), ScsiResult)

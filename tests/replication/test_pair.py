"""PairVolume's write rules, fences, activity log and copy mover (replication/pair.py).

Both halves are real file volumes; the S-VOL is reached through :class:`Link`, a volume wrapper
that can be cut (every call raises PeerUnreachable, as the initiator does on a lost session) or
made to refuse (PeerRefused, as for a CHECK CONDITION from the peer).  The two-array tests over
iSCSI come with the pair commands; these pin the rules themselves, checking bytes on both files.
"""
from __future__ import annotations

import asyncio
import os
import random
import threading
from pathlib import Path

import pytest

from sanlab.replication.pair import ACTIVE_TRACKS, TRACK_BYTES, PairHalf, PairVolume
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.states import Event, Transition
from sanlab.scsi.sense import Asc, ScsiError, Sense, SenseKey
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.file_volume import FileVolume
from sanlab.storage.peer import PeerRefused, PeerUnreachable
from sanlab.storage.volume import SpaceExhausted

BS = 512
SIZE = 8 << 20  # 128 tracks
TRACK = TRACK_BYTES // BS


class Link:
    """The S-VOL as the P side reaches it: a volume behind a link we can cut or make refuse."""

    def __init__(self, vol: FileVolume) -> None:
        self.vol = vol
        self.mode = "up"
        self.writes = 0
        self.gate: asyncio.Event | None = None

    @property
    def block_size(self) -> int:
        return self.vol.block_size

    @property
    def num_blocks(self) -> int:
        return self.vol.num_blocks

    def _check(self) -> None:
        if self.mode == "down":
            raise PeerUnreachable("connection lost")
        if self.mode == "refuse":
            raise PeerRefused("peer answered MEDIUM ERROR", status=2)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self._check()
        self.writes += 1
        await self.vol.write(lba, data, fua)

    async def read(self, lba: int, nblocks: int) -> bytes:
        self._check()
        return await self.vol.read(lba, nblocks)

    async def flush(self) -> None:
        self._check()
        await self.vol.flush()


def make(tmp_path: Path, role: PairRole = PairRole.P_VOL, state: PairState = PairState.PAIR, fence: FenceLevel = FenceLevel.NEVER,
         *, extent: tuple[int, int] = (0, 0), s_size: int = SIZE, mark_peer: bool | None = None,
         ) -> tuple[PairVolume, FileVolume, Link, list[Transition]]:
    local = FileVolume(str(tmp_path / "p.img"), SIZE, BS)
    remote = FileVolume(str(tmp_path / "s.img"), s_size, BS)
    link = Link(remote)
    seen: list[Transition] = []

    async def hook(_h: PairHalf, t: Transition) -> None:
        seen.append(t)

    async def marker() -> bool:
        assert mark_peer is not None
        return mark_peer

    half = PairHalf("p1", role, state, fence, extent_start=extent[0], extent_blocks=extent[1])
    area = extent[1] or SIZE // BS
    bitmap = PersistentBitmap(str(tmp_path / "p1.bitmap"), (area + TRACK - 1) // TRACK)
    vol = PairVolume(half, local, bitmap, mirror=link, on_transition=hook,  # type: ignore[arg-type]
                     mark_peer=marker if mark_peer is not None else None)
    return vol, local, link, seen


def data(n_blocks: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n_blocks * BS)


async def test_pair_mirrors_every_write_before_good(tmp_path: Path) -> None:
    vol, local, link, _ = make(tmp_path)
    for i in range(20):
        buf = data(8, i)
        await vol.write(i * 997 % (SIZE // BS - 8), buf)
        assert await link.vol.read(i * 997 % (SIZE // BS - 8), 8) == buf  # on the S-VOL when GOOD
    assert local.read_sync(0, SIZE // BS) == link.vol.read_sync(0, SIZE // BS)
    assert vol.pending_bytes == 0 and vol.half.state is PairState.PAIR


async def test_s_vol_takes_its_primary_s_writes_only_until_taken_over(tmp_path: Path) -> None:
    vol, local, _, _ = make(tmp_path, role=PairRole.S_VOL, state=PairState.PAIR)
    vol.half.peer_initiator = "iqn.2026-11.org.sanlab:array-a"
    vol.may_write("iqn.2026-11.org.sanlab:array-a")  # the P array: through
    with pytest.raises(ScsiError) as exc:
        vol.may_write("iqn.1994-05.com.redhat:host")
    assert (exc.value.key, exc.value.asc_ascq) == (SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
    vol.may_write("iqn.2026-11.org.sanlab:array-a")  # the device server asks the gate before each write
    await vol.write(0, data(1, 1))  # what the gate let through lands, unrecorded
    assert local.read_sync(0, 1) == data(1, 1) and vol.pending_bytes == 0
    assert await vol.read(0, 1) == data(1, 1)  # reads are served
    await vol.apply(Event.TAKEOVER_SVOL)
    vol.may_write("iqn.1994-05.com.redhat:host")  # SSWS: the hosts may write
    with pytest.raises(ScsiError):
        vol.may_write("iqn.2026-11.org.sanlab:array-a")  # and the old primary may not
    await vol.write(0, data(1, 2))  # taken, and recorded
    assert vol.half.state is PairState.SSWS and vol.bitmap.has(0) and vol.pending_bytes == TRACK_BYTES


async def test_a_host_write_held_while_the_p_vol_turns_s_vol_is_refused(tmp_path: Path) -> None:
    """A swap holds the old P-VOL's new host writes until it is the S-VOL: a held write then meets
    the S-VOL's rule (DATA PROTECT), never lands unmirrored (the new P side would copy over it).
    Holds nest, so a hold inside the swap's (an async journal's) does not let writes go early."""
    vol, local, link, _ = make(tmp_path, fence=FenceLevel.DATA)
    vol.hold()
    vol.hold()
    held = asyncio.ensure_future(vol.write(0, data(1, 1)))
    await asyncio.sleep(0.01)
    vol.release()  # the inner hold's end
    await asyncio.sleep(0.01)
    assert not held.done()
    vol.mirror = None  # the swap closed the session to the old S side
    await vol.apply(Event.SWAP)
    vol.half.peer_initiator = "iqn.2026-11.org.sanlab:array-b"
    vol.release()
    with pytest.raises(ScsiError) as exc:
        await held
    assert (exc.value.key, exc.value.asc_ascq) == (SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
    assert local.read_sync(0, 1) == bytes(BS) and link.writes == 0 and vol.pending_bytes == 0
    vol.may_write("iqn.2026-11.org.sanlab:array-b")  # the new P array's copy goes through
    await vol.write(0, data(1, 2))
    assert local.read_sync(0, 1) == data(1, 2)


async def test_a_split_s_vol_is_read_only_unless_split_rw(tmp_path: Path) -> None:
    vol, _, _, _ = make(tmp_path, role=PairRole.S_VOL, state=PairState.PAIR)
    vol.half.peer_initiator = "iqn.a"
    await vol.apply(Event.SPLIT)
    for who in ("iqn.a", "iqn.host"):
        with pytest.raises(ScsiError):
            vol.may_write(who)
    vol.half.s_writable = True
    vol.may_write("iqn.host")


async def test_fence_data_fails_the_write_and_every_later_one(tmp_path: Path) -> None:
    vol, local, link, seen = make(tmp_path, fence=FenceLevel.DATA)
    link.mode = "down"
    for _ in range(2):
        with pytest.raises(ScsiError) as exc:
            await vol.write(TRACK * 3, data(8, 2))
        assert exc.value.key is SenseKey.NOT_READY
    assert vol.half.state is PairState.PSUE and "unreachable" in vol.half.reason
    assert [t.state for t in seen] == [PairState.PSUE]
    assert vol.bitmap.has(3)  # the local copy may hold the failed write: the track goes in a resync


async def test_fence_never_acknowledges_and_resync_sends_only_the_difference(tmp_path: Path) -> None:
    vol, local, link, _ = make(tmp_path, fence=FenceLevel.NEVER)
    await vol.write(0, data(SIZE // BS, 0))  # in step
    link.mode = "down"
    dirty = [5, 6, 40, 127]
    for t in dirty:
        await vol.write(t * TRACK + 3, data(2, t))  # acknowledged
    assert vol.half.state is PairState.PSUE
    assert vol.pending_bytes == len(dirty) * TRACK_BYTES
    assert local.read_sync(0, SIZE // BS) != link.vol.read_sync(0, SIZE // BS)
    link.mode = "up"
    await vol.apply(Event.RESYNC)
    before = link.writes
    assert await vol.copy()
    await vol.apply(Event.COPY_DONE)
    assert vol.copied_bytes == len(dirty) * TRACK_BYTES and link.writes - before == len(dirty)
    assert local.read_sync(0, SIZE // BS) == link.vol.read_sync(0, SIZE // BS)
    assert vol.half.state is PairState.PAIR and vol.pending_bytes == 0


@pytest.mark.parametrize("marked", [True, False])
async def test_fence_status_depends_on_marking_the_s_side(tmp_path: Path, marked: bool) -> None:
    vol, _, link, _ = make(tmp_path, fence=FenceLevel.STATUS, mark_peer=marked)
    link.mode = "down"
    if marked:
        await vol.write(0, data(1, 3))
        await vol.write(TRACK, data(1, 4))  # and later writes too
    else:
        with pytest.raises(ScsiError):
            await vol.write(0, data(1, 3))
    assert vol.half.state is PairState.PSUE and vol.half.peer_marked is marked


async def test_a_refused_mirror_fails_the_write_whatever_the_fence(tmp_path: Path) -> None:
    vol, _, link, _ = make(tmp_path, fence=FenceLevel.NEVER)
    link.mode = "refuse"
    with pytest.raises(PeerRefused):
        await vol.write(TRACK * 9, data(4, 5))
    assert vol.half.state is PairState.PSUE and vol.bitmap.has(9) and "refused" in vol.half.reason


async def test_an_s_vol_without_room_is_what_the_host_hears(tmp_path: Path) -> None:
    """The S array answered DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (its thin S-VOL's
    filesystem full): the host gets that sense too, not a MEDIUM ERROR of the P array."""
    vol, _, link, _ = make(tmp_path, fence=FenceLevel.DATA)

    async def full(lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        raise PeerRefused("peer answered DATA PROTECT", status=2, sense=Sense(0x7, 0x27, 0x07))
    link.write = full  # type: ignore[method-assign]
    with pytest.raises(SpaceExhausted):
        await vol.write(TRACK * 3, data(4, 6))
    assert vol.half.state is PairState.PSUE and vol.bitmap.has(3)


async def test_activity_log_bounds_what_a_crash_leaves_to_resend(tmp_path: Path) -> None:
    vol, local, link, _ = make(tmp_path)
    rng = random.Random(7)
    for i in range(400):
        lba = rng.randrange(SIZE // BS - 8)
        await vol.write(lba, data(8, i))
    # kill -9 now: what the file says is what a restart sees.
    on_disk = PersistentBitmap(str(tmp_path / "p1.bitmap"), vol.bitmap.size)
    assert 0 < on_disk.count() <= min(ACTIVE_TRACKS, vol.bitmap.size)
    # Every track written since the oldest still-active one is marked (no unmarked difference).
    for t in list(vol._active):
        assert on_disk.has(t)
    # The restart resends those tracks only, never the whole volume.
    half = PairHalf("p1", PairRole.P_VOL, PairState.PAIR, FenceLevel.NEVER)
    again = PairVolume(half, local, on_disk, mirror=link)  # type: ignore[arg-type]
    await again.apply(Event.RESTARTED)
    assert again.half.state is PairState.COPY
    marked = on_disk.count()
    assert await again.copy()
    assert again.copied_bytes == marked * TRACK_BYTES < SIZE
    assert local.read_sync(0, SIZE // BS) == link.vol.read_sync(0, SIZE // BS)


async def test_a_second_write_to_a_track_entering_the_activity_log_is_mirrored_too(tmp_path: Path) -> None:
    # The first write to a track sets its bit on the disk before it is mirrored; a second write
    # to the same track meanwhile must wait for that bit and be mirrored as well, not take the
    # bit (already set in memory) for a difference still to copy and land on the P-VOL only.
    vol, local, link, _ = make(tmp_path)
    slow = threading.Event()
    bitmap = vol.bitmap
    real_flush, real_set = bitmap.flush, bitmap.set

    def slow_flush() -> None:
        slow.wait(5)
        real_flush()

    def slow_set(unit: int) -> bool:
        bitmap.mark(unit)  # in memory first, as PersistentBitmap.set does
        slow.wait(5)
        return real_set(unit)

    bitmap.flush, bitmap.set = slow_flush, slow_set  # type: ignore[method-assign]
    first, second = data(8, 1), data(8, 2)
    w1 = asyncio.create_task(vol.write(0, first))
    await asyncio.sleep(0.05)
    w2 = asyncio.create_task(vol.write(16, second))  # the same track, another range
    await asyncio.sleep(0.05)
    assert not w1.done() and not w2.done()  # neither acknowledged before the bit is durable
    slow.set()
    await asyncio.gather(w1, w2)
    assert link.vol.read_sync(0, 8) == first and link.vol.read_sync(16, 8) == second
    assert vol.pending_bytes == 0  # nothing left that differs: both copies have both writes
    assert local.read_sync(0, SIZE // BS) == link.vol.read_sync(0, SIZE // BS)


async def test_initial_copy_under_host_writes_ends_identical(tmp_path: Path) -> None:
    vol, local, link, _ = make(tmp_path, state=PairState.SMPL)
    await local.write(0, os.urandom(SIZE))  # the P-VOL has data before the pair exists
    t = await vol.apply(Event.CREATE)
    assert t.state is PairState.COPY
    vol.mark_all()
    rng = random.Random(11)
    stop = False

    async def host() -> None:
        i = 0
        while not stop:
            await vol.write(rng.randrange(SIZE // BS - 16), data(rng.randrange(1, 16), i))
            i += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(host())
    assert await vol.copy()
    stop = True
    await writer
    await vol.apply(Event.COPY_DONE)
    assert local.read_sync(0, SIZE // BS) == link.vol.read_sync(0, SIZE // BS)
    assert vol.copied_bytes <= SIZE


async def test_extent_pair_mirrors_only_its_area(tmp_path: Path) -> None:
    start, count = 1000, 4 * TRACK
    vol, local, link, _ = make(tmp_path, extent=(start, count), s_size=count * BS)
    await vol.write(0, data(16, 1))  # outside: local only
    await vol.write(start - 4, data(8, 2))  # straddles the start: the inside half is sent
    await vol.write(start + count - 2, data(4, 3))  # straddles the end
    assert link.vol.num_blocks == count
    assert link.vol.read_sync(0, 4) == local.read_sync(start, 4)
    assert link.vol.read_sync(count - 2, 2) == local.read_sync(start + count - 2, 2)
    assert link.writes == 2


async def test_split_drains_writes_in_flight(tmp_path: Path) -> None:
    vol, _, link, _ = make(tmp_path)
    link.gate = asyncio.Event()
    w = asyncio.create_task(vol.write(0, data(1, 1)))
    await asyncio.sleep(0.01)
    drained = asyncio.create_task(vol.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()  # the mirrored write is still out
    link.gate.set()
    await w
    await asyncio.wait_for(drained, 5)
    await vol.apply(Event.SPLIT)
    await vol.write(TRACK * 2, data(1, 2))  # PSUS: local and recorded
    assert vol.half.state is PairState.PSUS and vol.pending_bytes == TRACK_BYTES

"""The local copy volume rules (replication/local_copy.py) and the state table, on in-memory volumes."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sanlab.replication.local_copy import CopyPair, CopyVolume, run_mover
from sanlab.replication.local_copy_states import CopyEvent, CopyTransitionError, PairState, detail, local_step
from sanlab.scsi.sense import ScsiError
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.volume import SpaceExhausted, VolumeError
from tests.storage.test_volume import MemoryVolume

BS = 512
TRACK = 128  # blocks of 512 B in a 64 KiB track
TRACKS = 8


def volumes(fill: int) -> tuple[CopyVolume, CopyVolume, MemoryVolume, MemoryVolume]:
    p, s = MemoryVolume(TRACKS * TRACK * BS, BS), MemoryVolume(TRACKS * TRACK * BS, BS)
    p.buf[:] = bytes([fill]) * len(p.buf)
    return CopyVolume(p, "p"), CopyVolume(s, "s"), p, s


def pair(tmp: Path, pv: CopyVolume, sv: CopyVolume, name: str = "c") -> CopyPair:
    bms = [PersistentBitmap(str(tmp / f"{name}.{k}"), TRACKS) for k in ("gen", "pdiff", "sdiff", "active")]
    bms[0].mark_all()
    p = CopyPair(name, pv, sv, 0, TRACKS * TRACK, *bms, PairState.COPY)
    pv.sources.append(p)
    sv.target = p
    return p


def test_state_table() -> None:
    assert local_step(PairState.COPY, CopyEvent.COPY_DONE) is PairState.PAIR
    assert local_step(PairState.PAIR, CopyEvent.SPLIT) is PairState.PSUS
    assert local_step(PairState.PSUS, CopyEvent.RESTORE) is PairState.RCPY
    assert local_step(PairState.RCPY, CopyEvent.COPY_DONE) is PairState.PAIR
    with pytest.raises(CopyTransitionError):
        local_step(PairState.PAIR, CopyEvent.RESYNC)
    with pytest.raises(CopyTransitionError):
        local_step(PairState.RCPY, CopyEvent.SPLIT)
    assert detail(PairState.PSUS, None, True, False) == "UNDER DIVISION"
    assert detail(PairState.PAIR, PairState.PSUS, False, False) == "EXTENT DIVISION COMPLETED"
    assert detail(PairState.PAIR, PairState.COPY, False, False) == "UNDER EXTENT COUPLE"


async def test_generation_mirrors_behind_the_pointer_and_ends_identical(tmp_path: Path) -> None:
    pv, sv, p, s = volumes(0x11)
    cp = pair(tmp_path, pv, sv)
    # Copy the first two tracks by hand: a write there is mirrored, one further on is not.
    await pv.copy_track(cp, 0)
    await pv.copy_track(cp, 1)
    await pv.write(10, b"\x22" * BS)
    await pv.write(5 * TRACK, b"\x33" * BS)
    assert s.buf[10 * BS:11 * BS] == b"\x22" * BS
    assert s.buf[5 * TRACK * BS:5 * TRACK * BS + BS] == bytes(BS)
    assert await run_mover(cp, asyncio.Event())
    assert p.buf == s.buf and cp.copied_bytes == TRACKS * TRACK * BS
    with pytest.raises(ScsiError):
        await sv.write(0, b"\x44" * BS)  # the copy belongs to the pair in COPY/PAIR


async def test_division_is_at_once_copy_on_write_and_reads_of_the_copy(tmp_path: Path) -> None:
    pv, sv, p, s = volumes(0x11)
    cp = pair(tmp_path, pv, sv)
    cp.state = PairState.PSUS  # divided before any track was copied
    image = bytes(p.buf)
    assert await sv.read(0, TRACKS * TRACK) == image  # every track still on the original
    await pv.write(3 * TRACK + 1, b"\x55" * BS)  # copy-on-write of track 3 first
    assert s.buf[3 * TRACK * BS:4 * TRACK * BS] == image[3 * TRACK * BS:4 * TRACK * BS]
    assert cp.pdiff.has(3) and not cp.gen.has(3)
    await sv.write(6 * TRACK, b"\x66" * BS)  # the copy's own write: the rest of track 6 fetched first
    assert cp.sdiff.has(6)
    view = bytearray(image)
    view[6 * TRACK * BS:6 * TRACK * BS + BS] = b"\x66" * BS
    assert await sv.read(0, TRACKS * TRACK) == bytes(view)
    assert await run_mover(cp, asyncio.Event())  # the division copy
    assert s.buf == view and cp.pending_units() == 2


async def test_resync_and_restore_copy_only_the_difference(tmp_path: Path) -> None:
    pv, sv, p, s = volumes(0x11)
    cp = pair(tmp_path, pv, sv)
    assert await run_mover(cp, asyncio.Event())
    cp.state = PairState.PSUS
    await pv.write(0, b"\x77" * BS)
    await sv.write(4 * TRACK, b"\x88" * BS)
    # restore: the copy's tracks 0 and 4 back over the original; reads see them before the mover runs
    cp.state, cp.copied_bytes = PairState.RCPY, 0
    assert await pv.read(0, 1) == b"\x11" * BS
    assert await pv.read(4 * TRACK, 1) == b"\x88" * BS
    assert await run_mover(cp, asyncio.Event())
    assert p.buf == s.buf and cp.copied_bytes == 2 * TRACK * BS  # tracks 0 and 4 only
    assert p.buf[:BS] == b"\x11" * BS and p.buf[4 * TRACK * BS:4 * TRACK * BS + BS] == b"\x88" * BS



async def test_a_write_to_a_settled_track_does_not_wait_for_other_tracks_bits(tmp_path: Path) -> None:
    """Divided, track 2 copied-on-write (its bits durable): a write there takes the fast path even
    while other tracks' ``gen`` clear and ``pdiff`` mark wait for a flush; a write to the track
    whose clear waits does not (its ``gen`` clear must be durable first: flush order)."""
    tracks = 24  # bits are durable per byte: tracks 2 and 21 are in different bytes
    pv, sv = CopyVolume(MemoryVolume(tracks * TRACK * BS, BS), "p"), CopyVolume(MemoryVolume(tracks * TRACK * BS, BS), "s")
    bms = [PersistentBitmap(str(tmp_path / f"c.{k}"), tracks) for k in ("gen", "pdiff", "sdiff", "active")]
    bms[0].mark_all()
    bms[0].flush()
    cp = CopyPair("c", pv, sv, 0, tracks * TRACK, *bms, PairState.PSUS)
    pv.sources.append(cp)
    sv.target = cp
    await pv.write(2 * TRACK, b"\x21" * BS)
    assert cp.gen.durable(2) and cp.pdiff.durable(2) and not cp.gen.has(2)
    s_vol = sv.local
    assert isinstance(s_vol, MemoryVolume)
    s_vol.buf[21 * TRACK * BS:22 * TRACK * BS] = pv.local.buf[21 * TRACK * BS:22 * TRACK * BS]  # type: ignore[attr-defined]
    cp.gen.clear(21)  # as the division copy's clear, applied after its copy flush, before its gen flush
    cp.pdiff.mark(20)  # and a neighbour's mark (same byte as 21) waiting for its flush
    assert cp.gen.pending and cp.pdiff.pending
    assert pv._rules_met(2 * TRACK + 8, 8)
    assert not pv._rules_met(21 * TRACK, 8)
    assert not pv._rules_met(3 * TRACK, 8)  # not copied-on-write yet
    await pv.write(21 * TRACK, b"\x22" * BS)  # its own bits are made durable first
    assert cp.gen.durable(21) and cp.pdiff.durable(21) and not cp.gen.pending
    assert pv._rules_met(21 * TRACK, 8)


async def test_the_division_copy_clears_gen_only_after_flushing_the_copy(tmp_path: Path) -> None:
    """A track the division copy wrote keeps its ``gen`` bit (reads still from the original, which
    keeps the point-in-time data) until the copy's flush; then it is cleared and durable."""
    pv, sv, p, s = volumes(0x11)
    cp = pair(tmp_path, pv, sv)
    cp.state = PairState.PSUS
    flushes: list[bool] = []
    real_flush = s.flush

    async def flush() -> None:
        flushes.append(cp.gen.has(1))
        await real_flush()
    s.flush = flush  # type: ignore[method-assign]
    await pv.copy_track(cp, 1)
    assert s.buf[TRACK * BS:2 * TRACK * BS] == p.buf[TRACK * BS:2 * TRACK * BS]
    assert cp.gen.has(1) and cp.deferred_clears == [1]
    assert await run_mover(cp, asyncio.Event())
    assert flushes and flushes[0] is True  # still set while the copy flushed
    assert not cp.gen.has(1) and cp.gen.durable(1) and cp.deferred_clears == []
    assert s.buf == p.buf


async def test_a_mirrored_write_to_a_hot_track_is_done_on_the_spot_in_both_volumes(tmp_path: Path) -> None:
    """In PAIR, a host write to a track behind the copy pointer whose ``active`` bit is durable (the
    track is in the activity log) goes to the copy and the original in their page caches at once;
    one to a track not in the log, across two tracks, or while the copy's range is held takes the
    general path (False), which marks the log first."""
    from sanlab.storage.file_volume import FileVolume
    size = TRACKS * TRACK * BS
    fp, fs = FileVolume(str(tmp_path / "p.img"), size, BS), FileVolume(str(tmp_path / "s.img"), size, BS)
    pv, sv = CopyVolume(fp, "p"), CopyVolume(fs, "s")
    cp = pair(tmp_path, pv, sv)
    assert await run_mover(cp, asyncio.Event())
    cp.state = PairState.PAIR
    block = b"\x5a" * 4096
    assert not pv.write_nowait(2 * TRACK, block)  # not in the activity log yet
    await pv.write(2 * TRACK, block)  # the general path: logged, mirrored
    assert 2 in cp._hot and cp.active.has(2) and cp.active.durable(2)
    other = b"\x6b" * 4096
    assert pv.write_nowait(2 * TRACK + 8, other)
    assert await fp.read(2 * TRACK + 8, 8) == other == await fs.read(2 * TRACK + 8, 8)
    assert not pv.write_nowait(2 * TRACK + TRACK - 4, other)  # into track 3 too
    async with sv.range_lock.hold(2 * TRACK, 1):
        assert not pv.write_nowait(2 * TRACK + 16, other)  # the copy's range is taken
    cp.state = PairState.PSUS
    assert not pv.write_nowait(2 * TRACK + 16, other)  # divided: pdiff not marked yet
    await fp.close()
    await fs.close()


async def test_a_failed_division_copy_leaves_no_clear_for_the_resync_to_apply(tmp_path: Path) -> None:
    """The division copy fails (the copy's store full) after copying tracks whose ``gen`` clears wait
    for its next flush: those clears go with it.  Applied later, by the mover of the resync from PSUE
    (every bit set again) at its first flush, they skipped tracks the original took writes on while
    suspended: PAIR with a copy that differs (found by tests/faults/test_local_matrix.py,
    copy-division x full-fs-copy, as 40 tracks missing from the resync's copied bytes)."""
    tracks = 80  # more than FLUSH_EVERY (64): the resync's mover flushes before it reaches track 66
    p, s = MemoryVolume(tracks * TRACK * BS, BS), MemoryVolume(tracks * TRACK * BS, BS)
    p.buf[:] = b"\x11" * len(p.buf)
    pv, sv = CopyVolume(p, "p"), CopyVolume(s, "s")
    bms = [PersistentBitmap(str(tmp_path / f"c.{k}"), tracks) for k in ("gen", "pdiff", "sdiff", "active")]
    bms[0].mark_all()
    cp = CopyPair("c", pv, sv, 0, tracks * TRACK, *bms, PairState.PSUS)  # divided before any copy
    pv.sources.append(cp)
    sv.target = cp
    room = s._raw_write

    async def full(lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if lba >= 70 * TRACK:
            raise SpaceExhausted("no room for track 70")
        await room(lba, data, fua)
    s._raw_write = full  # type: ignore[method-assign]
    with pytest.raises(VolumeError):
        await run_mover(cp, asyncio.Event())  # tracks 64-69 copied, their clears waiting for a flush
    cp.state = PairState.PSUE  # as LocalCopyManager._move does
    s._raw_write = room  # type: ignore[method-assign]
    await pv.write(66 * TRACK, b"\x99" * BS)  # suspended: the original changes, nothing recorded
    cp.gen.mark_all()  # resync from PSUE (LocalCopyManager._operate): every track again
    cp.state = PairState.COPY
    assert await run_mover(cp, asyncio.Event())
    assert s.buf == p.buf and cp.copied_bytes == tracks * TRACK * BS


async def test_a_copy_on_write_without_room_refuses_the_write_and_keeps_both_images(tmp_path: Path) -> None:
    """Divided, the copy's store full (README, "Faults and what to do"): a host write to the original that
    needs a copy-on-write fails with the store's SpaceExhausted (DATA PROTECT / SPACE ALLOCATION FAILED
    WRITE PROTECT at the device server), the original as it was, the copy's image whole; with room
    again the same write goes through."""
    pv, sv, p, s = volumes(0x11)
    cp = pair(tmp_path, pv, sv)
    cp.state = PairState.PSUS  # divided before any track was copied
    image = bytes(p.buf)
    room = s._raw_write

    async def full(lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        raise SpaceExhausted("no room")
    s._raw_write = full  # type: ignore[method-assign]
    with pytest.raises(SpaceExhausted):
        await pv.write(2 * TRACK, b"\x99" * BS)
    assert bytes(p.buf) == image and await sv.read(0, TRACKS * TRACK) == image and cp.gen.has(2)
    s._raw_write = room  # type: ignore[method-assign]
    await pv.write(2 * TRACK, b"\x99" * BS)
    assert p.buf[2 * TRACK * BS:2 * TRACK * BS + BS] == b"\x99" * BS
    assert await sv.read(0, TRACKS * TRACK) == image

"""The journal volume's layout, pointers, wrap-around and torn-tail recovery (replication/journal.py)."""
from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest

from sanlab.replication.journal import (ENTRY_BYTES, Journal, JournalEntry, JournalError, JournalFull,
                                        JournalHeader)
from sanlab.storage.file_volume import FileVolume


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def blk(seq: int, n: int = 1) -> bytes:
    return seq.to_bytes(8, "big") * (64 * n)


def test_entry_and_header_round_trip() -> None:
    e = JournalEntry(7, 1234.5, 99, 4096, 12, 8, 0xDEADBEEF)
    raw = e.encode(512)
    assert len(raw) == 512 and ENTRY_BYTES == 60
    assert JournalEntry.decode(raw) == e
    torn = bytearray(raw)
    torn[20] ^= 1
    assert JournalEntry.decode(torn) is None
    assert JournalEntry.decode(bytes(512)) is None
    h = JournalHeader.layout(512, 1000, 42, "j1")
    assert h.meta_start == 1 and h.data_start == 1 + h.meta_slots and h.data_start + h.data_blocks == 1000
    assert JournalHeader.decode(h.encode()) == h
    with pytest.raises(JournalError):
        JournalHeader.decode(bytes(512))


async def _fill(j: Journal, n: int, nblocks: int = 1) -> list[JournalEntry]:
    out = []
    for _ in range(n):
        e = j.reserve(1, 10 * j.journal_in, nblocks, 1.0)
        await j.store(e, blk(e.sequence, nblocks))
        out.append(e)
    return out


def test_sequence_commit_purge_and_reopen(tmp_path: Path) -> None:
    async def go() -> None:
        vol = FileVolume(str(tmp_path / "j"), 512 * 200)
        j = await Journal.format(vol, 5, "j")
        es = await _fill(j, 5)
        assert [e.sequence for e in es] == [1, 2, 3, 4, 5]
        assert j.journal_out == 1 and j.journal_in == 6 and j.committed == 5
        assert [e.sequence for e in j.committed_entries(3, 1 << 20)] == [3, 4, 5]
        assert [e.sequence for e in j.committed_entries(1, 1024)] == [1, 2]
        assert await j.read_data(es[2]) == blk(3)
        assert [e.sequence for e in j.purge(3)] == [1, 2]
        assert j.journal_out == 3
        again = await Journal.open(vol, 3)
        assert [e.sequence for e in again.entries] == [3, 4, 5] and again.journal_in == 6
        assert again.data_in == j.data_in
    run(go())


def test_commit_waits_for_every_earlier_entry() -> None:
    async def go() -> None:
        from tests.storage.test_volume import MemoryVolume
        j = await Journal.format(MemoryVolume(200 * 512, 512), 1, "j")
        a = j.reserve(1, 0, 1, 0.0)
        b = j.reserve(1, 1, 1, 0.0)
        await j.store(b, blk(2))
        assert j.committed == 0
        waiter = asyncio.ensure_future(j.wait_committed(b.sequence))
        await asyncio.sleep(0)
        assert not waiter.done()
        assert j.committed_entries(1, 1 << 20) == []  # nothing uncommitted is given out
        await j.store(a, blk(1))
        await asyncio.wait_for(waiter, 1)
        assert j.committed == 2
    run(go())


def test_wrap_around_and_full(tmp_path: Path) -> None:
    async def go() -> None:
        vol = FileVolume(str(tmp_path / "j"), 512 * 100)
        j = await Journal.format(vol, 5, "j")
        d = j.header.data_blocks  # 89 blocks, 11 slots
        assert j.header.meta_slots == 11 and d == 88
        await _fill(j, 10, 8)  # 80 blocks, 10 slots
        with pytest.raises(JournalFull):
            j.reserve(1, 0, 16, 0.0)  # 8 left at the tail
        j.purge(4)  # frees 24 blocks at the head
        e = j.reserve(1, 0, 16, 0.0)  # does not fit the 8-block tail: wraps to 0
        assert e.data_address == 0 and j.data_in == 16
        await j.store(e, blk(e.sequence, 16))
        assert j.use == pytest.approx(max(8 / 11, j.used_blocks / d))
        with pytest.raises(JournalFull):
            j.reserve(1, 0, 16, 0.0)  # 24-16 = 8 blocks before data-out
        e2 = j.reserve(1, 0, 8, 0.0)
        await j.store(e2, blk(e2.sequence, 8))
        with pytest.raises(JournalFull):
            j.reserve(1, 0, 1, 0.0)  # data-in met data-out: full
        again = await Journal.open(vol, 4)
        assert [x.sequence for x in again.entries] == list(range(4, 13))
        assert again.data_in == j.data_in and again.used_blocks == again.header.data_blocks
        for x in again.entries:
            assert await again.read_data(x) == blk(x.sequence, x.length)
    run(go())


def test_torn_tail_is_dropped_at_open(tmp_path: Path) -> None:
    async def go() -> None:
        vol = FileVolume(str(tmp_path / "j"), 512 * 200)
        j = await Journal.format(vol, 5, "j")
        es = await _fill(j, 6)
        h = j.header
        # Entry 5's data torn (its metadata says another CRC); entry 6 intact: 6 must go too.
        await vol.write(h.data_start + es[4].data_address, b"\xff" * 512)
        again = await Journal.open(vol, 1)
        assert [e.sequence for e in again.entries] == [1, 2, 3, 4] and again.journal_in == 5
        # A torn metadata slot ends the journal as well.
        slot = bytearray(await vol.read(h.meta_start + 3 % h.meta_slots, 1))
        slot[9] ^= 0x40
        await vol.write(h.meta_start + 3 % h.meta_slots, bytes(slot))
        again = await Journal.open(vol, 1)
        assert [e.sequence for e in again.entries] == [1, 2] and again.journal_in == 3
        # The next entry goes on from there, over the dropped ones.
        e = again.reserve(1, 0, 1, 0.0)
        assert e.sequence == 3
        await again.store(e, blk(33))
        assert zlib.crc32(await again.read_data(e)) == e.data_crc
    run(go())


def test_secondary_takes_the_primarys_numbers_in_order_only(tmp_path: Path) -> None:
    async def go() -> None:
        vol = FileVolume(str(tmp_path / "j"), 512 * 200)
        j = await Journal.format(vol, 5, "j")
        e = j.reserve(1, 0, 1, 0.0, sequence=40)  # empty: starts where the primary is
        await j.store(e, blk(40))
        assert j.journal_in == 41
        with pytest.raises(JournalError):
            j.reserve(1, 0, 1, 0.0, sequence=43)  # a gap with entries held: refused
        e = j.reserve(1, 0, 1, 0.0, sequence=41)
        await j.store(e, blk(41))
        again = await Journal.open(vol, 40)
        assert [x.sequence for x in again.entries] == [40, 41]
    run(go())

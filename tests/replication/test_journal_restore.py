"""A secondary journal's restore when an S-VOL cannot be written for a while (replication/asynccopy.py,
issue 19's fault matrix: the S-VOL's filesystem full), and the secondary's pointers after its primary
turned entries into its bitmap (PFUS) with nothing after them."""
from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from sanlab.replication import protocol as proto
from sanlab.replication.asynccopy import JournalGroup, JournalRecord, Member
from sanlab.replication.journal import Journal
from sanlab.replication.pair import PairHalf, PairVolume
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.catalog import Catalog
from sanlab.storage.file_volume import FileVolume
from sanlab.storage.volume import SpaceExhausted

BS = 512


class FullFor(FileVolume):
    """A file volume whose writes fail with ENOSPC's error while ``full`` is set."""

    full = False

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        if self.full:
            raise SpaceExhausted("write failed: No space left on device")
        await super().write(lba, data, fua)


async def secondary(tmp: Path, local: FileVolume) -> tuple[JournalGroup, Journal]:
    journal = await Journal.format(FileVolume(str(tmp / "j"), BS * 400), 7, "jb")
    g = JournalGroup(JournalRecord("jb", 7, BS * 400, role="secondary"), journal, Catalog(tmp / "c.db"))
    half = PairHalf("p1", PairRole.S_VOL, PairState.PAIR, FenceLevel.NEVER)
    vol = PairVolume(half, local, PersistentBitmap(str(tmp / "p1.bitmap"), 16))
    g.members[1] = Member(1, "p1", vol)
    return g, journal


def test_a_restore_that_cannot_write_is_tried_again_and_applies_every_entry_in_order(tmp_path: Path) -> None:
    async def go() -> None:
        local = FullFor(str(tmp_path / "s.img"), 1 << 20)
        g, journal = await secondary(tmp_path, local)
        for i in range(1, 5):  # entries 1-4: blocks 0, 8, 0, 16 (entry 3 overwrites entry 1)
            e = journal.reserve(1, [0, 8, 0, 16][i - 1], 8, 1.0, sequence=i)
            await journal.store(e, bytes([i]) * 8 * BS)
        local.full = True
        stop = asyncio.Event()
        with capture_logs() as logs:
            loop = asyncio.ensure_future(g._restore_loop(stop))
            await asyncio.sleep(0.3)
            assert g.record.restored == 0 and len(journal.entries) == 4, "nothing restored while the S-VOL is full"
            assert g.to_be_restored == 1, "the failed batch is applied again from its first entry"
            local.full = False  # room again: the restorer goes on by itself
            for _ in range(100):
                if g.record.restored == 4:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await loop
        assert g.record.restored == 4 and not journal.entries
        image = await local.read(0, 24)
        assert image[:8 * BS] == bytes([3]) * 8 * BS  # entry 3 after entry 1, as the primary wrote them
        assert image[8 * BS:16 * BS] == bytes([2]) * 8 * BS and image[16 * BS:] == bytes([4]) * 8 * BS
        events = [e["event"] for e in logs]
        assert events.count("journal_restore_failed") == 1 and "journal_restore_resumed" in events
    asyncio.run(go())


def test_the_secondary_moves_past_entries_its_primary_turned_into_its_bitmap(tmp_path: Path) -> None:
    """PFUS at the primary (journal-out 41, nothing after it) and a resync: the secondary's next pull
    brings no entry, yet it must not go on reporting 40 entries of lag until the next write."""
    async def go() -> None:
        g, journal = await secondary(tmp_path, FileVolume(str(tmp_path / "s.img"), 1 << 20))

        async def reader(cdb: bytes, length: int) -> bytes:
            return proto.JournalBatch(41, 41, 40, 0.0, 0, proto.JournalReplyFlags(0)).encode()
        g.reader = reader
        g.to_be_read = 1
        assert await g.acquire() == 0
        assert g.lag()["lag_entries"] == 0
        assert (g.record.restored, g.to_be_restored, g.to_be_read) == (40, 41, 41)
    asyncio.run(go())

"""Fuzzing what a secondary does with READ JOURNAL answers (replication/asynccopy.py ``acquire``).

The bytes are only half of it (test_protocol_fuzz.py decodes them): an answer that decodes can
still be wrong — an entry whose data is not whole blocks, a sequence number going backwards or
past what a journal can count, an LBA beyond the S-VOL.  Invariant: ``acquire`` stores the entries
or raises a typed error (:class:`MalformedReply`, :class:`JournalError`), the journal is never left
failed by a bad answer, and a good answer after it is still acquired and restored byte for byte.
"""
from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sanlab.replication.asynccopy import JournalGroup, JournalRecord, Member
from sanlab.replication.journal import Journal, JournalError
from sanlab.replication.pair import PairHalf, PairVolume
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.protocol import JournalBatch, JournalReplyFlags, MalformedReply, WireEntry
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.catalog import Catalog
from sanlab.storage.file_volume import FileVolume

SVOL_BYTES = 1 << 20
SVOL_BLOCKS = SVOL_BYTES // 512


def entry(seq: int, pair_id: int, lba: int, data: bytes, t: float = 1.0) -> WireEntry:
    return WireEntry(seq, t, pair_id, lba, data, zlib.crc32(data))


entries = st.builds(entry, st.one_of(st.integers(1, 6), st.sampled_from([0, (1 << 64) - 1, 1 << 63])),
                    st.sampled_from([1, 2]),
                    st.one_of(st.integers(0, SVOL_BLOCKS + 4), st.sampled_from([(1 << 64) - 1, SVOL_BLOCKS - 1])),
                    st.one_of(st.binary(max_size=700), st.integers(1, 3).map(lambda n: bytes([n]) * 512 * n)),
                    st.one_of(st.just(1.0), st.floats()))
batches = st.builds(lambda es, t: JournalBatch(10, 1, 9, t, 0, JournalReplyFlags(0), tuple(es)),
                    st.lists(entries, max_size=4), st.floats())


async def secondary(tmp: Path) -> tuple[JournalGroup, FileVolume]:
    journal = await Journal.format(FileVolume(str(tmp / "j"), 512 * 400), 7, "j")
    g = JournalGroup(JournalRecord("j", 7, 512 * 400, role="secondary"), journal, Catalog(tmp / "c.db"))
    half = PairHalf("p1", PairRole.S_VOL, PairState.PAIR, FenceLevel.NEVER)
    local = FileVolume(str(tmp / "s.img"), SVOL_BYTES)
    g.members[1] = Member(1, "p1", PairVolume(half, local, PersistentBitmap(str(tmp / "p1.bitmap"), 16)))
    return g, local


def run(tmp: Path, bad: JournalBatch) -> None:
    async def go() -> None:
        g, local = await secondary(tmp)
        answers = [bad.encode()]

        async def reader(cdb: bytes, length: int) -> bytes:
            return answers.pop(0)
        g.reader = reader
        try:
            await g.acquire()
            await g.drain_restore()
        except (MalformedReply, JournalError):
            pass
        assert g.journal.failed is None, g.journal.failed
        # A good answer after it: the next entry the secondary expects, restored byte for byte.
        nxt = max(g.to_be_read, g.journal.journal_in, 1)
        good = bytes(range(256)) * 2
        answers.append(JournalBatch(nxt + 1, 1, nxt, 1.0, 0, JournalReplyFlags(0),
                                    (entry(nxt, 1, 3, good),)).encode())
        assert await g.acquire() == 1
        await g.drain_restore()
        assert await local.read(3, 1) == good
    asyncio.run(go())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=batches)
@example(bad=JournalBatch(10, 1, 9, 1.0, 0, JournalReplyFlags(0), (entry(1, 1, 0, b"x" * 100),)))
@example(bad=JournalBatch(10, 1, 9, 1.0, 0, JournalReplyFlags(0), (entry(1, 1, SVOL_BLOCKS, bytes(512)),)))
@example(bad=JournalBatch(10, 1, 9, 1.0, 0, JournalReplyFlags(0), (entry((1 << 64) - 1, 1, 0, bytes(512)),)))
def test_bad_journal_answers_never_poison_the_journal(bad: JournalBatch,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    run(tmp_path_factory.mktemp("j"), bad)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=batches)
def test_bad_journal_answers_explore(bad: JournalBatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    run(tmp_path_factory.mktemp("j"), bad)

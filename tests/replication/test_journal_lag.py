"""The lag a journal group writes to the log (replication/asynccopy.py, issue 15): at once when a
pair of the group journals, then every ``lag_log_seconds`` while one does, never while none does."""
from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from sanlab.replication.asynccopy import LAG_LOG_SECONDS, JournalGroup, JournalRecord, Member
from sanlab.replication.journal import Journal
from sanlab.replication.pair import PairHalf, PairVolume
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.catalog import Catalog
from sanlab.storage.file_volume import FileVolume


def test_lag_is_logged_every_period_while_a_pair_journals(tmp_path: Path) -> None:
    async def go() -> None:
        journal = await Journal.format(FileVolume(str(tmp_path / "j"), 512 * 400), 7, "j")
        g = JournalGroup(JournalRecord("j", 7, 512 * 400, role="primary"), journal, Catalog(tmp_path / "c.db"))
        half = PairHalf("p1", PairRole.P_VOL, PairState.PAIR, FenceLevel.NEVER)
        local = FileVolume(str(tmp_path / "p.img"), 1 << 20)
        vol = PairVolume(half, local, PersistentBitmap(str(tmp_path / "p1.bitmap"), 16))
        g.members[1] = Member(1, "p1", vol)
        for i in range(3):  # three entries the secondary has not taken: 12 blocks of backlog
            e = journal.reserve(1, 8 * i, 4, 1.0)
            await journal.store(e, bytes([i]) * 2048)
        assert g.lag_log_seconds == LAG_LOG_SECONDS == 10.0
        with capture_logs() as logs:
            assert g.log_lag(100.0)  # the first look: at once
            assert not g.log_lag(109.9)
            assert g.log_lag(110.0)
            half.state = PairState.PFUL
            assert not g.log_lag(115.0) and g.log_lag(120.5)
            half.state = PairState.PFUS  # suspended: no lag to speak of, nothing logged
            assert not g.log_lag(140.0)
            half.state = PairState.PAIR  # back in PAIR (a resync): at once again
            assert g.log_lag(141.0)
        lags = [e for e in logs if e["event"] == "journal_lag"]
        assert len(lags) == 4
        first = lags[0]
        assert first["journal"] == "j" and first["role"] == "primary" and first["pairs"] == {"p1": "PAIR"}
        assert first["lag_entries"] == 3 and first["lag_bytes"] == 3 * 2048 and first["journal_use"] >= 1
        assert first["rpo_seconds"] > 0  # the oldest entry is from 1970
        assert lags[2]["pairs"] == {"p1": "PFUL"}
    asyncio.run(go())

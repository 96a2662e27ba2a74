"""The primary of an asynchronous pair killed mid-stream and started again (issue 15): no acknowledged
write is lost at the primary, the secondary applies a prefix of the stream at every moment (nothing
twice, nothing out of order), and the pair resumes from the journal without a new copy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_async_pairs import async_pairs, lun_file, prefix_length
from tests.integration.test_async_swap import drained, stream_until_killed
from tests.integration.test_sync_pairs import A, Arrays

pytestmark = pytest.mark.integration


@pytest.fixture
def arrays(tmp_path: Path) -> Any:
    ar = Arrays(tmp_path)
    yield ar
    ar.stop()


def test_primary_killed_mid_stream_restarts_and_resumes_without_a_full_copy(arrays: Arrays) -> None:
    ar = arrays
    async_pairs(ar, (0,), "16MiB")
    copied = ar.pair(ar.a, "g0")["copied_bytes"]  # the initial copy: the whole volume
    count = 3000
    acked = stream_until_killed(ar, ar.a, A, count, 800)
    k_b = prefix_length(lun_file(ar.b, 0), count)
    assert k_b <= acked + 1, (k_b, acked)
    ar.a = ar.start("a")
    # Every acknowledged write is on the P-VOL after the restart (the journal replayed onto it).
    k_a = prefix_length(lun_file(ar.a, 0), count)
    assert k_a >= acked, (k_a, acked)
    loaded = [json.loads(line) for line in ar.a.log().splitlines() if '"journal_replayed"' in line]
    assert loaded, ar.a.log()[-2000:]
    # B resumes pulling where it was: everything A's journal holds arrives, in order, no copy.
    st = drained(ar, ar.b, "jb", k_a)
    assert st["restored"] >= k_a, st
    assert prefix_length(lun_file(ar.b, 0), count) == k_a
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    row = ar.pair(ar.a, "g0")
    assert row["state"] == "PAIR" and row["copied_bytes"] == copied, row  # no new copy

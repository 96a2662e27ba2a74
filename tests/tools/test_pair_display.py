"""``sanlab pair display``'s table (tools/pair_cli.py): the lag columns of async pairs (issue 15)."""
from __future__ import annotations

import pytest

from sanlab.tools.pair_cli import _print

SYNC = {"name": "p0", "role": "P-VOL", "state": "PAIR", "fence": "data", "remote": "array-b", "progress": 100,
        "pending_bytes": 0, "copied_bytes": 8388608, "reason": None, "mode": "sync"}
ASYNC = {**SYNC, "name": "g0", "fence": "never", "mode": "async", "lag_entries": 42, "lag_bytes": 172032,
         "rpo_seconds": 1.25, "journal_use": 17, "reason": "journal ok"}


def test_sync_pairs_alone_keep_the_table_they_had(capsys: pytest.CaptureFixture[str]) -> None:
    _print([SYNC])
    head = capsys.readouterr().out.splitlines()[0].split()
    assert head == ["NAME", "ROLE", "STATE", "FENCE", "REMOTE", "%", "PENDING", "COPIED", "REASON"]


def test_async_pairs_get_lag_columns_before_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    _print([SYNC, ASYNC])
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    assert head == ["NAME", "ROLE", "STATE", "FENCE", "REMOTE", "%", "PENDING", "COPIED", "LAG", "LAG-BYTES",
                    "RPO-S", "JNL%", "REASON"]
    g0 = lines[2]
    assert g0.split() == ["g0", "P-VOL", "PAIR", "never", "array-b", "100", "0", "8388608", "42", "172032",
                          "1.25", "17", "journal", "ok"]
    # The columns line up: each value starts under its heading; the sync row leaves them empty.
    for word, value in (("LAG", "42"), ("RPO-S", "1.25"), ("JNL%", "17")):
        assert g0.index(value, lines[0].index(word)) == lines[0].index(word)
        assert lines[1][lines[0].index(word):lines[0].index(word) + len(value)].strip() == ""

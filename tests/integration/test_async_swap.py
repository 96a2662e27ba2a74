"""Swap and failback of an asynchronous pair between two real arrays (issue 15, seed 003 FIG. 17-21):
after a takeover at the secondary (SSWS), ``pair swap`` there makes it the primary, the journals flow
back (the old primary pulls from the new one), and neither the swap nor the failback copies more
than the difference the two sides' bitmaps record."""
from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.integration.test_async_pairs import async_pairs, lun_file, prefix_length, wait_drained
from tests.integration.test_sync_pairs import A, B, SIZE, TRACK, WAIT, Arrays, host_write

pytestmark = pytest.mark.integration

TRACK_BLOCKS = TRACK // 512


@pytest.fixture
def arrays(tmp_path: Path) -> Any:
    ar = Arrays(tmp_path)
    yield ar
    ar.stop()


def writes(sp: Any, target: str, blocks: list[tuple[int, bytes]]) -> None:
    """A host writes ``(lba, data)`` in order, each acknowledged before the next."""
    async def go() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(sp.host, sp.port, target, cfg) as s:
            await s.clear_unit_attentions(0)
            for lba, data in blocks:
                await s.write16(0, lba, data, 512)
    asyncio.run(go())


def stream_until_killed(ar: Arrays, sp: Any, target: str, count: int, kill_at: int) -> int:
    """A numbered stream (write i in block i, QD1, paced) at ``sp``; ``sp`` is killed (kill -9) once
    ``kill_at`` writes are acknowledged.  The number acknowledged."""
    acked = [0]

    async def writer() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=5.0)
        try:
            async with IscsiSession(sp.host, sp.port, target, cfg) as s:
                await s.clear_unit_attentions(0)
                for i in range(1, count + 1):
                    await s.write16(0, i, i.to_bytes(8, "big") * 64, 512)
                    acked[0] = i
                    await asyncio.sleep(0.002)
        except Exception:  # noqa: BLE001 - the array was killed under the host
            pass
    t = threading.Thread(target=lambda: asyncio.run(writer()), daemon=True)
    t.start()
    deadline = time.monotonic() + WAIT
    while acked[0] < kill_at:
        assert time.monotonic() < deadline and t.is_alive(), acked[0]
        time.sleep(0.01)
    sp.stop(signal.SIGKILL)
    t.join(30)
    return acked[0]


def drained(ar: Arrays, sp: Any, journal: str, at_least: int) -> dict[str, Any]:
    """Until the secondary journal at ``sp`` restored ``at_least`` entries and holds nothing more."""
    deadline = time.monotonic() + WAIT
    while True:
        st = ar.ok(sp, "journal", "status", journal, "--json")
        if st["restored"] >= at_least and st["lag_entries"] == 0 and st["entries"] == 0:
            return dict(st)
        assert time.monotonic() < deadline, st
        time.sleep(0.2)


def track_writes(first: int, count: int, fill: int) -> list[tuple[int, bytes]]:
    """One 4 KiB write at the start of each track ``first .. first+count-1``."""
    return [(t * TRACK_BLOCKS, bytes([fill + t & 0xFF]) * 4096) for t in range(first, first + count)]


def numbered(first: int, last: int) -> list[tuple[int, bytes]]:
    """Writes ``first .. last`` of the numbered stream: write i puts its number in block i."""
    return [(i, i.to_bytes(8, "big") * 64) for i in range(first, last + 1)]


def test_swap_copies_exactly_the_old_primarys_unsent_tail_and_the_new_primarys_writes(arrays: Arrays) -> None:
    """B's journal driven by hand, so what A's journal holds at the kill is known: writes 1-300 are
    acquired by B, 301-600 are not (and A has purged nothing).  A is killed, B takes over and writes
    10 tracks, A starts again and B swaps: exactly those 10 tracks and A's 5 tracks of journal are
    copied, A gives up writes 301-600 (it ends equal to B), then A pulls B's journal."""
    ar = arrays
    ar.ok(ar.a, "journal", "create", "ja", "--size", "16MiB")
    ar.ok(ar.b, "journal", "create", "jb", "--size", "16MiB", "--manual")
    ar.ok(ar.a, "pair", "create", "g0", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
          "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0")
    ar.wait(ar.a, "PAIR", "g0")
    ar.wait(ar.b, "PAIR", "g0")
    writes(ar.a, A, numbered(1, 300))
    assert ar.ok(ar.b, "journal", "acquire", "jb", "--json")["acquired"] == 300
    writes(ar.a, A, numbered(301, 600))  # blocks 1-600: tracks 0-4
    ar.a.stop(signal.SIGKILL)
    cp = ar.cli(ar.b, "pair", "takeover", "g0")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert prefix_length(lun_file(ar.b, 0), 600) == 300
    writes(ar.b, B, track_writes(100, 10, 0x40))
    ar.a = ar.start("a")
    assert ar.ok(ar.a, "journal", "status", "ja", "--json")["entries"] == 600  # nothing purged yet
    assert prefix_length(lun_file(ar.a, 0), 600) == 600
    assert ar.ok(ar.b, "pair", "swap", "g0")["role"] == "P-VOL"
    ar.wait(ar.b, "PAIR", "g0")
    ar.wait(ar.a, "PAIR", "g0")
    assert ar.pair(ar.b, "g0")["copied_bytes"] == 15 * TRACK, ar.pair(ar.b, "g0")
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    assert prefix_length(lun_file(ar.a, 0), 600) == 300
    ja = ar.ok(ar.a, "journal", "status", "ja", "--json")
    assert ja["role"] == "secondary" and ja["entries"] == 0 and ja["restored"] == 0, ja
    writes(ar.b, B, numbered(301, 350))  # B's journal is the primary one now: A pulls it
    drained(ar, ar.a, "ja", 50)
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    assert prefix_length(lun_file(ar.a, 0), 600) == 350
    assert ar.pair(ar.b, "g0")["copied_bytes"] == 15 * TRACK


def journal_role_back(sp: Any, journal: str, role: str) -> None:
    """Put ``journal``'s catalog record (``sp`` stopped) back in ``role``: as a crash leaves it
    after a swap committed its pair's new role and before the journal turned round."""
    db = sqlite3.connect(sp.data_dir / "catalog.db")
    try:
        (body,) = db.execute("SELECT body FROM journals WHERE name=?", (journal,)).fetchone()
        rec = json.loads(body)
        rec["role"] = role
        db.execute("UPDATE journals SET body=? WHERE name=?", (json.dumps(rec), journal))
        db.commit()
    finally:
        db.close()


def test_a_swap_cut_before_the_journals_turned_round_finishes_the_turn_at_restart(arrays: Arrays) -> None:
    """Both arrays killed after a planned swap committed the pairs' new roles but before either
    journal turned round (each journal's record put back to its old role, as such a crash leaves it):
    at restart each journal takes its pair's role, and the host's writes at B, the new P-VOL, reach
    A by the journal.  Before the fix A's journal stayed primary and A never pulled (fault matrix:
    async-swap x kill-p, seed 276888494)."""
    ar = arrays
    async_pairs(ar, (0,), "16MiB")
    writes(ar.a, A, numbered(1, 100))
    wait_drained(ar)
    assert ar.ok(ar.b, "pair", "swap", "g0")["role"] == "P-VOL"
    ar.wait(ar.b, "PAIR", "g0")
    ar.wait(ar.a, "PAIR", "g0")
    for sp in (ar.a, ar.b):
        sp.stop(signal.SIGKILL)
    journal_role_back(ar.a, "ja", "primary")
    journal_role_back(ar.b, "jb", "secondary")
    ar.a, ar.b = ar.start("a"), ar.start("b")
    ja, jb = ar.ok(ar.a, "journal", "status", "ja", "--json"), ar.ok(ar.b, "journal", "status", "jb", "--json")
    assert ja["role"] == "secondary" and jb["role"] == "primary", (ja, jb)
    assert '"journal_turn_finished_at_start"' in ar.a.log() and '"journal_turn_finished_at_start"' in ar.b.log()
    ar.wait(ar.b, "PAIR", "g0")
    ar.wait(ar.a, "PAIR", "g0")
    writes(ar.b, B, numbered(101, 200))
    drained(ar, ar.a, "ja", 100)
    assert prefix_length(lun_file(ar.a, 0), 600) == 200
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)


@pytest.mark.slow
def test_swap_after_takeover_reverses_the_journal_and_failback_copies_only_the_difference(arrays: Arrays) -> None:
    """A (primary) killed mid-stream, S-VOL takeover at B, hosts write at B, A started again, swap at
    B: B is the P-VOL, A's unsent journal tail and B's writes are the only tracks copied, then A pulls
    B's journal.  Failback (swap at A) copies only what B's journal had not handed over."""
    ar = arrays
    async_pairs(ar, (0,), "16MiB")
    count = 600  # blocks 1..600: tracks 0-4 of the 128
    acked = stream_until_killed(ar, ar.a, A, count, 300)
    # Takeover at B (SSWS): its S-VOL is a prefix of A's stream.
    cp = ar.cli(ar.b, "pair", "takeover", "g0")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    k = prefix_length(lun_file(ar.b, 0), count)
    assert 0 < k <= acked + 1, (k, acked)
    b_tracks = range(100, 110)
    writes(ar.b, B, track_writes(b_tracks.start, len(b_tracks), 0x40))
    assert ar.pair(ar.b, "g0")["pending_bytes"] == len(b_tracks) * TRACK  # recorded for the way back
    # A comes back unaware, still the P-VOL, its journal holding what B never read.
    ar.a = ar.start("a")
    a_row = ar.pair(ar.a, "g0")
    assert a_row["role"] == "P-VOL", a_row
    tail = ar.ok(ar.a, "journal", "status", "ja", "--json")["entries"]
    print(f"acked {acked}, B's prefix {k}, A's unsent tail {tail} entries")
    # Swap at B: the roles exchange; A's tail becomes A's bitmap and B sends the union.
    swapped = ar.ok(ar.b, "pair", "swap", "g0")
    assert swapped["role"] == "P-VOL", swapped
    ar.wait(ar.b, "PAIR", "g0")
    ar.wait(ar.a, "PAIR", "g0")
    b_row, a_row = ar.pair(ar.b, "g0"), ar.pair(ar.a, "g0")
    assert a_row["role"] == "S-VOL" and b_row["mode"] == a_row["mode"] == "async", (a_row, b_row)
    # Only the difference: B's 10 tracks, plus A's tail (tracks 0-4, none if B had read everything).
    copied = b_row["copied_bytes"]
    assert len(b_tracks) * TRACK <= copied <= (len(b_tracks) + 5) * TRACK, b_row
    assert copied < SIZE // 8
    if tail == 0:
        assert copied == len(b_tracks) * TRACK, b_row
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)  # A gave up its unsent tail: B's data everywhere
    assert prefix_length(lun_file(ar.a, 0), count) == k
    jb, ja = ar.ok(ar.b, "journal", "status", "jb", "--json"), ar.ok(ar.a, "journal", "status", "ja", "--json")
    assert jb["role"] == "primary" and ja["role"] == "secondary", (jb, ja)
    assert jb["peer_journal"] == "ja" and ja["peer_journal"] == "jb", (jb, ja)
    # The journal flows B -> A: host writes at B reach A without any copy.
    assert host_write(ar.a, A, 0, bytes(512))[1] == bytes([0x07, 0x27, 0x00])  # A is the S-VOL now
    flow = [(20 * TRACK_BLOCKS + (i * 37) % (10 * TRACK_BLOCKS), i.to_bytes(8, "big") * 64) for i in range(1, 301)]
    writes(ar.b, B, flow)
    st = drained(ar, ar.a, "ja", 300)
    assert st["acquired_entries"] >= 300, st
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    assert ar.pair(ar.b, "g0")["copied_bytes"] == copied  # the journal carried them
    assert ar.ok(ar.b, "journal", "status", "jb", "--json")["journal_in"] == 301  # numbered afresh
    # Failback: swap at A (B answering, its hosts quiet).  A pulls what B's journal still holds, and
    # only the tracks of entries B had not purged are copied back (never the volume).
    back = ar.ok(ar.a, "pair", "swap", "g0")
    assert back["role"] == "P-VOL", back
    ar.wait(ar.a, "PAIR", "g0")
    ar.wait(ar.b, "PAIR", "g0")
    a_row, b_row = ar.pair(ar.a, "g0"), ar.pair(ar.b, "g0")
    assert b_row["role"] == "S-VOL", b_row
    assert a_row["copied_bytes"] <= 10 * TRACK, a_row  # at most the 10 tracks B wrote last
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    writes(ar.a, A, track_writes(50, 8, 0x70))
    drained(ar, ar.b, "jb", 8)
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    assert lun_file(ar.b, 0)[50 * TRACK:50 * TRACK + 4096] == bytes([0x70 + 50]) * 4096
    # Each array logged the journal turning round, once per swap.
    for sp, roles in ((ar.a, ["secondary", "primary"]), (ar.b, ["primary", "secondary"])):
        turns = [json.loads(line)["role"] for line in sp.log().splitlines() if '"journal_direction"' in line]
        assert turns == roles, turns

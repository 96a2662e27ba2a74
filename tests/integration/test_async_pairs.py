"""Asynchronous journal copy between two real arrays (issue 15): A holds the P-VOLs and the primary
journal, B the S-VOLs and the secondary journal, which pulls A's with READ JOURNAL."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, start_sanlab
from tests.integration.test_sync_pairs import A, B, WAIT, Arrays, config

pytestmark = pytest.mark.integration


@pytest.fixture
def arrays(tmp_path: Path) -> Any:
    ar = Arrays(tmp_path)
    yield ar
    ar.stop()


def async_pairs(ar: Arrays, luns: tuple[int, ...] = (0,), jsize: str = "4MiB", *extra: str) -> None:
    ar.ok(ar.a, "journal", "create", "ja", "--size", jsize, *extra)
    ar.ok(ar.b, "journal", "create", "jb", "--size", jsize)
    for lun in luns:
        ar.ok(ar.a, "pair", "create", f"g{lun}", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
              "--pvol", f"{A}/{lun}", "--remote", "array-b", "--svol", f"{B}/{lun}", "--group", "db")
        ar.wait(ar.a, "PAIR", f"g{lun}")


def lun_file(sp: Any, lun: int) -> bytes:
    return (sp.data_dir / f"lun{lun}.img").read_bytes()


def wait_drained(ar: Arrays, seconds: float = WAIT, after: float = 0.0) -> dict[str, Any]:
    """Until B restored everything A's journal handed out, as an answer of A later than ``after``
    (epoch seconds: A's restart, a link's heal) said (docs/journal.md, Lag)."""
    deadline = time.monotonic() + seconds
    while True:
        st = ar.ok(ar.b, "journal", "status", "jb", "--json")
        if (st["lag_entries"] == 0 and st["entries"] == 0 and st["to_be_read"] > 0
                and (st["primary_seen"] or 0) > after):
            return dict(st)
        assert time.monotonic() < deadline, st
        time.sleep(0.2)


def test_async_pair_copies_then_journals_in_order_and_shows_lag(arrays: Arrays) -> None:
    ar = arrays
    async_pairs(ar)
    row = ar.pair(ar.a, "g0")
    assert row["mode"] == "async" and {"lag_entries", "lag_bytes", "rpo_seconds", "journal_use"} <= set(row)
    table = ar.ok(ar.a, "pair", "display", "g0").splitlines()  # the human table has the lag columns
    assert table[0].split()[-5:] == ["LAG", "LAG-BYTES", "RPO-S", "JNL%", "REASON"], table

    async def writes() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            for i in range(300):
                await s.write16(0, (i * 7) % 4000, i.to_bytes(8, "big") * 64, 512)
    asyncio.run(writes())
    st = wait_drained(ar)
    assert st["restored"] >= 300
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    assert ar.pair(ar.b, "g0")["state"] == "PAIR"
    # The S-VOL refuses host writes (07h/27h/00h).
    from tests.integration.test_sync_pairs import host_write
    status, sense = host_write(ar.b, B, 0, b"\1" * 512)
    assert status == 2 and sense == bytes([0x07, 0x27, 0x00])
    a_st = ar.ok(ar.a, "journal", "status", "ja", "--json")
    assert a_st["role"] == "primary" and a_st["journal_out"] == a_st["journal_in"]  # all purged


def test_write_order_fidelity_when_the_primary_is_killed(arrays: Arrays) -> None:
    """A numbered stream (QD1, each acknowledged before the next) alternates between two volumes of one
    journal group; A is killed at a random moment.  After B drains what it acquired, each volume holds
    exactly a prefix of the stream and both prefixes end at the same point of the sequence."""
    ar = arrays
    async_pairs(ar, (0, 1))
    seed = int(os.environ.get("SANLAB_SEED", random.randrange(1 << 30)))
    print(f"write-order seed {seed}")
    rnd = random.Random(seed)
    kill_after = rnd.uniform(0.5, 2.0)
    acked: list[int] = []

    def killer() -> None:
        time.sleep(kill_after)
        ar.a.stop(signal.SIGKILL)
    threading.Thread(target=killer, daemon=True).start()

    async def writer() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:dbhost", command_timeout=5.0)
        try:
            async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
                for lun in (0, 1):
                    await s.clear_unit_attentions(lun)
                for i in range(1, 4000):
                    await s.write16(i % 2, i // 2, i.to_bytes(8, "big") * 64, 512)
                    acked.append(i)
        except Exception:  # noqa: BLE001 - the array was killed under the host
            pass
    asyncio.run(writer())
    assert acked, "no write was acknowledged before the kill"
    time.sleep(1.0)
    st = ar.ok(ar.b, "journal", "status", "jb", "--json")
    deadline = time.monotonic() + WAIT
    while st["entries"]:  # B restores what it acquired (A is gone: nothing more comes)
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
        st = ar.ok(ar.b, "journal", "status", "jb", "--json")
    files = [lun_file(ar.b, 0), lun_file(ar.b, 1)]
    present = [files[i % 2][(i // 2) * 512:(i // 2) * 512 + 8] == i.to_bytes(8, "big") for i in range(1, 4000)]
    k = present.index(False) if False in present else len(present)
    assert not any(present[k:]), f"seed {seed}: write {k + 1 + present[k:].index(True)} at B but {k + 1} is not"
    assert 0 < k, f"seed {seed}: nothing reached B"
    assert k <= len(acked) + 1, (k, len(acked))
    # Both volumes' prefixes end at the same point: write k+1 (missing) cuts both.
    assert st["restored"] >= k, st


def test_journal_full_goes_pful_then_pfus_and_resync_copies_only_the_difference(arrays: Arrays) -> None:
    ar = arrays
    async_pairs(ar, (0,), "256KiB", "--threshold", "50", "--full-timeout", "1")
    ar.b.stop(signal.SIGKILL)  # nothing pulls: the primary journal fills
    TRACK = 64 << 10

    async def writes(first: int, count: int) -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            for t in range(first, first + count):  # one 4 KiB write in each of these tracks
                await s.write16(0, t * TRACK // 512, bytes([t & 0xFF]) * 4096, 512)
    asyncio.run(writes(0, 40))  # 160 KiB of entries: past 50%
    ar.wait(ar.a, "PFUS", "g0")  # PFUL, then PFUS after the full timeout
    row = ar.pair(ar.a, "g0")
    assert row["journal_use"] == 0, row  # the unsent entries became the bitmap
    asyncio.run(writes(40, 20))  # never failed: recorded in the bitmap
    assert ar.pair(ar.a, "g0")["pending_bytes"] == 60 * TRACK
    ar.b = ar.start("b")
    cp = ar.cli(ar.a, "pair", "resync", "g0")
    assert cp.returncode == 0, cp.stderr
    ar.wait(ar.a, "PAIR", "g0")
    row = ar.pair(ar.a, "g0")
    assert row["copied_bytes"] == 60 * TRACK, row  # the difference, not the 8 MiB volume
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)


def prefix_length(data: bytes, count: int) -> int:
    """Write i (1..count) put its number in block i: the length of the prefix of the stream ``data``
    holds, asserting it holds nothing past it.  Blocks are checked from the last to the first, so a
    file being restored into (in sequence order) while it is read still shows a prefix."""
    present = [False] * (count + 1)
    for i in range(count, 0, -1):
        present[i] = data[i * 512:i * 512 + 8] == i.to_bytes(8, "big")
    k = next((i - 1 for i in range(1, count + 1) if not present[i]), count)
    later = [i for i in range(k + 1, count + 1) if present[i]]
    assert not later, f"write {later[0]} applied at B but write {k + 1} is not: out of order"
    return k


def test_secondary_killed_mid_stream_resumes_from_its_pointers_without_a_full_copy(arrays: Arrays) -> None:
    """Issue 15: a numbered stream (QD1, write i in block i) goes on at A while B, the secondary, is
    killed (kill -9) and started again.  B's S-VOL holds a prefix of the stream at every moment;
    after the restart B's journal resumes from its persisted pointers (restored, to-be-read) instead
    of a new copy, and once drained the S-VOL equals the P-VOL byte for byte."""
    ar = arrays
    async_pairs(ar, (0,), "16MiB")  # ~3600 metadata slots: the backlog while B is down fits
    copied = ar.pair(ar.a, "g0")["copied_bytes"]
    count = 6000
    acked = [0]
    errors: list[BaseException] = []

    async def writer() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=20.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            for i in range(1, count + 1):
                await s.write16(0, i, i.to_bytes(8, "big") * 64, 512)
                acked[0] = i
                await asyncio.sleep(0.002)  # paced: the kill and the restart land mid-stream

    def run_writer() -> None:
        try:
            asyncio.run(writer())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
    t = threading.Thread(target=run_writer, daemon=True)
    t.start()

    def until(n: int) -> None:
        deadline = time.monotonic() + WAIT
        while acked[0] < n:
            assert t.is_alive() or acked[0] >= n, errors
            assert time.monotonic() < deadline, acked[0]
            time.sleep(0.02)
    until(1500)
    ar.b.stop(signal.SIGKILL)
    at_kill = acked[0]
    k_dead = prefix_length(lun_file(ar.b, 0), count)
    assert 0 < k_dead <= at_kill, (k_dead, at_kill)  # B was restoring when it was killed
    until(at_kill + 1000)  # A goes on alone: its journal holds what B has not read
    a_st = ar.ok(ar.a, "journal", "status", "ja", "--json")
    assert a_st["entries"] >= 900, a_st
    assert ar.pair(ar.a, "g0")["state"] == "PAIR"  # the host never noticed B was gone
    ar.b = ar.start("b")
    # Resumed from the persisted pointers: restored no lower than before the kill, nothing read twice.
    loaded = [json.loads(line) for line in ar.b.log().splitlines() if '"journal_loaded"' in line]
    assert len(loaded) == 1 and loaded[0]["restored"] > 0, ar.b.log()[-3000:]
    st = ar.ok(ar.b, "journal", "status", "jb", "--json")
    assert st["restored"] >= loaded[0]["restored"] and st["to_be_read"] > loaded[0]["restored"], st
    samples = 0
    while t.is_alive():  # restoring while the stream goes on: always a prefix
        k = prefix_length(lun_file(ar.b, 0), count)
        assert k >= k_dead
        samples += 1
        time.sleep(0.1)
    t.join()
    assert samples > 0 and not errors, (samples, errors)
    assert acked[0] == count
    st = wait_drained(ar)
    assert st["restored"] >= count, st
    assert prefix_length(lun_file(ar.b, 0), count) == count
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)
    a_row, b_row = ar.pair(ar.a, "g0"), ar.pair(ar.b, "g0")
    assert a_row["state"] == b_row["state"] == "PAIR", (a_row, b_row)
    assert a_row["copied_bytes"] == copied, a_row  # no new copy: the journal carried everything
    # Both sides wrote their lag to the log while the pair was in PAIR (every 10 s, and at once).
    for sp, role in ((ar.a, "primary"), (ar.b, "secondary")):
        lags = [json.loads(line) for line in sp.log().splitlines() if '"journal_lag"' in line]
        assert lags and all(e["role"] == role and e["pairs"] == {"g0": "PAIR"} for e in lags), lags
        assert {"lag_entries", "lag_bytes", "rpo_seconds", "journal_use"} <= set(lags[0]), lags[0]
    a_lags = [json.loads(line) for line in ar.a.log().splitlines() if '"journal_lag"' in line]
    assert len(a_lags) >= 2 and max(e["lag_entries"] for e in a_lags) > 0, a_lags  # B was down a while


CMDDEV_LUN = 9


class CmddevArrays(Arrays):
    """A and B as test_sync_pairs has them, with two 4 MiB LUNs each and a command device at LUN 9."""

    SIZES = ("4MiB", "4MiB")
    EXTRA = f"[[targets.luns]]\nlun = {CMDDEV_LUN}\ncommand_device = true\n"

    def inband(self, sp: SanlabProcess, target: str, *words: str) -> Any:
        """``sanlab --cmddev iscsi://HOST:PORT/TARGET/9 WORDS --json``: through the command device only."""
        url = f"iscsi://{sp.host}:{sp.port}/{target}/{CMDDEV_LUN}"
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "--cmddev", url, *words, "--json"],
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, f"{words}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n{sp.log()[-3000:]}"
        return json.loads(cp.stdout)


def test_host_driven_journal_flow_through_the_command_devices_matches_the_array_driven_mode(
        tmp_path: Path) -> None:
    """Seed 003 FIG. 16, issue 16: with journals created ``--manual`` nothing moves by itself; a host
    with only iSCSI paths drives acquire -> status -> restore -> purge through the arrays' command
    devices (LUN 9).  The same writes go to a second pair whose journals run by themselves: both
    S-VOLs end equal to their P-VOLs (and to each other), and the pointers move as docs/journal.md says."""
    ar = CmddevArrays(tmp_path)
    try:
        ar.ok(ar.a, "journal", "create", "jm", "--size", "4MiB", "--manual")
        ar.ok(ar.b, "journal", "create", "km", "--size", "4MiB", "--manual")
        ar.ok(ar.a, "journal", "create", "ja", "--size", "4MiB")
        ar.ok(ar.b, "journal", "create", "jb", "--size", "4MiB")
        for name, lun, j, k in (("manual", 0, "jm", "km"), ("auto", 1, "ja", "jb")):
            ar.ok(ar.a, "pair", "create", name, "--mode", "async", "--journal", j, "--remote-journal", k,
                  "--pvol", f"{A}/{lun}", "--remote", "array-b", "--svol", f"{B}/{lun}")
            ar.wait(ar.a, "PAIR", name)
            ar.wait(ar.b, "PAIR", name)
        writes = 200

        async def stream() -> None:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
            async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
                for lun in (0, 1):
                    await s.clear_unit_attentions(lun)
                for i in range(1, writes + 1):  # overwrites: an entry applied out of order would show
                    for lun in (0, 1):
                        await s.write16(lun, (i * 13) % 97, i.to_bytes(8, "big") * 64, 512)
        asyncio.run(stream())
        time.sleep(1.0)
        # Nothing moved by itself: every entry is still in the primary journal, none at B.
        a0 = ar.inband(ar.a, A, "journal", "status", "jm")
        assert a0["auto"] is False and a0["journal_in"] - a0["journal_out"] == writes, a0
        b0 = ar.inband(ar.b, B, "journal", "status", "km")
        assert b0["entries"] == 0 and b0["restored"] == 0, b0
        assert lun_file(ar.b, 0) != lun_file(ar.a, 0)
        # Acquire (FIG. 16 journal acquisition): B pulls every entry; read-completed / to-be-read move.
        got = ar.inband(ar.b, B, "journal", "acquire", "km")
        assert got["acquired"] == writes and got["entries"] == writes, got
        assert got["read_completed"] == a0["journal_in"] - 1 and got["to_be_read"] == a0["journal_in"], got
        st = ar.inband(ar.b, B, "journal", "status", "km")
        assert st["restored"] == 0 and st["to_be_restored"] == 1 and st["lag_entries"] == writes, st
        assert lun_file(ar.b, 0) != lun_file(ar.a, 0)  # acquired, not yet applied
        # Restore: applied in sequence order, restored = read-completed, the entries freed.
        rs = ar.inband(ar.b, B, "journal", "restore", "km")
        assert rs["restored_now"] == writes and rs["restored"] == got["read_completed"], rs
        assert rs["entries"] == 0 and rs["lag_entries"] == 0, rs
        assert lun_file(ar.b, 0) == lun_file(ar.a, 0)
        # Purge at the primary frees only what B's last READ JOURNAL said it holds: the first pull
        # asked from the start, so nothing yet; the next pull's FROM SEQUENCE NUMBER tells A.
        pu = ar.inband(ar.a, A, "journal", "purge", "jm")
        assert pu["purged_now"] == 0 and pu["journal_out"] == a0["journal_out"], pu
        again = ar.inband(ar.b, B, "journal", "acquire", "km")
        assert again["acquired"] == 0, again
        pu = ar.inband(ar.a, A, "journal", "purge", "jm")
        assert pu["purged_now"] == writes and pu["journal_out"] == pu["journal_in"], pu
        assert pu["entries"] == 0 and pu["journal_use"] == 0, pu
        # The array-driven pair reached the same result by itself.
        wait_auto = time.monotonic() + WAIT
        while ar.ok(ar.b, "journal", "status", "jb", "--json")["restored"] < writes:
            assert time.monotonic() < wait_auto
            time.sleep(0.2)
        assert lun_file(ar.b, 1) == lun_file(ar.a, 1) == lun_file(ar.a, 0) == lun_file(ar.b, 0)
        assert ar.pair(ar.a, "manual")["state"] == ar.pair(ar.b, "manual")["state"] == "PAIR"
    finally:
        ar.stop()


def _takeover_at_b(ar: Arrays, acked: int, count: int) -> int:
    """A is dead: S-VOL takeover at B.  B applies everything it acquired first: its S-VOL holds a
    prefix of the stream, ending at *restored* = *read-completed*.  Then B takes host writes, and
    nothing from the old journal lands on them.  The prefix's length."""
    cp = ar.cli(ar.b, "pair", "takeover", "g0")
    assert cp.returncode == 2, cp.stdout + cp.stderr  # horctakeover's S-VOL takeover
    assert json.loads(cp.stdout)["takeover"] == "svol"
    row = ar.pair(ar.b, "g0")
    assert row["state"] == "SSWS", row
    st = ar.ok(ar.b, "journal", "status", "jb", "--json")
    assert st["entries"] == 0 and st["restored"] == st["read_completed"], st
    k = prefix_length(lun_file(ar.b, 0), count)
    assert k == st["restored"] and 0 < k <= acked + 1, (k, acked, st)  # +1: a write journaled, never answered
    from tests.integration.test_sync_pairs import host_write
    assert host_write(ar.b, B, 1, b"\xEE" * 512) == (0, None)  # over write 1's block
    assert host_write(ar.b, B, count + 100, b"\xEF" * 4096) == (0, None)
    time.sleep(1.0)
    data = lun_file(ar.b, 0)
    assert data[512:1024] == b"\xEE" * 512 and data[(count + 100) * 512:(count + 108) * 512] == b"\xEF" * 4096
    assert ar.pair(ar.b, "g0")["pending_bytes"] > 0  # recorded for the way back
    assert ar.ok(ar.b, "journal", "status", "jb", "--json")["restored"] == k
    return k


def test_takeover_at_the_secondary_serves_a_consistent_prefix_and_takes_host_writes(arrays: Arrays) -> None:
    """Issue 15 (SSWS): the primary is killed mid-stream; the takeover at B serves exactly a prefix of
    the acknowledged stream, and B's hosts write to the S-VOL from then on."""
    ar = arrays
    async_pairs(ar, (0,), "16MiB")
    count = 6000
    acked = [0]

    async def writer() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=5.0)
        try:
            async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
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
    while acked[0] < 1500:
        assert time.monotonic() < deadline and t.is_alive(), acked[0]
        time.sleep(0.02)
    ar.a.stop(signal.SIGKILL)
    t.join(30)
    _takeover_at_b(ar, acked[0], count)


def test_takeover_applies_what_the_secondary_acquired_but_had_not_restored(arrays: Arrays) -> None:
    """B's journal driven by hand (seed 003 FIG. 16): entries acquired, none restored, then A dies.
    The takeover restores them before B serves hosts: its S-VOL is the whole acquired prefix."""
    ar = arrays
    ar.ok(ar.a, "journal", "create", "ja", "--size", "4MiB")
    ar.ok(ar.b, "journal", "create", "jb", "--size", "4MiB", "--manual")
    ar.ok(ar.a, "pair", "create", "g0", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
          "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0")
    ar.wait(ar.a, "PAIR", "g0")
    ar.wait(ar.b, "PAIR", "g0")
    count = 400

    async def writes() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            for i in range(1, count + 1):
                await s.write16(0, i, i.to_bytes(8, "big") * 64, 512)
    asyncio.run(writes())
    got = ar.ok(ar.b, "journal", "acquire", "jb", "--json")
    assert got["acquired"] == count and got["restored"] == 0, got
    assert prefix_length(lun_file(ar.b, 0), count) == 0
    ar.a.stop(signal.SIGKILL)
    assert _takeover_at_b(ar, count, count) == count


def test_a_journal_its_filesystem_cannot_hold_is_refused(tmp_path: Path) -> None:
    """A journal file is allocated in full when it is made, so its writes never meet ENOSPC (a host
    write never fails for want of journal space, README).  On a filesystem without room for it the
    array used to keep it sparse with a warning; now `journal create` is refused, nothing left."""
    fs = tmp_path / "jfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(fs)], check=True)
    try:
        (tmp_path / "a" / "data").mkdir(parents=True)
        (tmp_path / "a" / "data" / "journals").symlink_to(fs)
        sp = start_sanlab(tmp_path / "a", config(A, B, "127.0.0.2:1"), "127.0.0.1")
        try:
            def journal(*words: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "journal", *words, "--data-dir",
                                       str(sp.data_dir)], capture_output=True, text=True, timeout=60)
            big = journal("create", "ja", "--size", "16MiB")
            assert big.returncode == 1 and "cannot be allocated in full" in big.stderr, big
            assert list(fs.iterdir()) == []
            small = journal("create", "jb", "--size", "4MiB")
            assert small.returncode == 0, small
            assert (fs / "jb.jnl").stat().st_blocks * 512 >= 4 << 20
            assert "ja" not in journal("display").stdout
        finally:
            sp.stop(signal.SIGKILL)
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_a_resync_under_a_busy_host_ends_and_sends_a_busy_track_at_most_three_times(arrays: Arrays) -> None:
    """A host rewriting the same few tracks all through an async resync: every write is recorded
    in the bitmap while the pair copies, so a copy that chased them would send those tracks again
    and again and might never end (found by the fault matrix's async takeover: 100 MB sent for a
    1 MiB difference).  Two passes chase; the last runs with writes held: the pair reaches PAIR
    and each track goes at most three times."""
    ar = arrays
    async_pairs(ar, (0,), "16MiB")
    ar.ok(ar.a, "pair", "split", "g0")
    ar.wait(ar.a, "PSUS", "g0")
    track, hot = 64 << 10, 16
    done = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    async def host() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        rng = random.Random(5)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            for t in range(hot):
                await s.write16(0, t * track // 512, bytes([t + 1]) * track, 512)
            written.append(hot)
            n = 0
            while not done.is_set() and n < 200_000:  # bounded: stops at PAIR, at the latest here
                n += 1
                lba = rng.randrange(hot * track // 4096) * 8
                await s.write16(0, lba, n.to_bytes(4, "big") * 1024, 512)
                written.append(n)

    def run() -> None:
        try:
            asyncio.run(host())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
    writer = threading.Thread(target=run)
    writer.start()
    try:
        deadline = time.monotonic() + WAIT
        while len(written) < 200 and writer.is_alive():
            assert time.monotonic() < deadline, "the host's writes did not get going"
            time.sleep(0.05)
        cp = ar.cli(ar.a, "pair", "resync", "g0")
        assert cp.returncode == 0, cp.stderr
        ar.wait(ar.a, "PAIR", "g0")
        during = len(written)
        time.sleep(0.5)  # the host goes on in journal mode
    finally:
        done.set()
        writer.join(60)
    assert not errors, errors
    row = ar.pair(ar.a, "g0")
    assert row["copied_bytes"] <= 3 * hot * track, (row, during)
    wait_drained(ar)
    assert lun_file(ar.a, 0) == lun_file(ar.b, 0)

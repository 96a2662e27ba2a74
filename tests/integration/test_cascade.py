"""Relay cascade and fan-out between three real arrays (issue 15; seed 002 FIG. 1-5, 5th embodiment):
A → B synchronous, B → C asynchronous, B's LUN 0 one real volume under two virtual volumes the pair
manager built itself (replication/cascade.py)."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, free_port, start_sanlab

pytestmark = pytest.mark.integration

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"
C = "iqn.2026-11.org.sanlab:array-c"
E = "iqn.2026-11.org.sanlab:array-e"
HOSTS = {A: "127.0.0.1", B: "127.0.0.2", C: "127.0.0.3", E: "127.0.0.4"}
NAMES = {A: "array-a", B: "array-b", C: "array-c", E: "array-e"}
SIZE = 8 << 20
WAIT = 60.0
PEERS = {A: (B, C), B: (A, C), C: (A, B), E: ()}


def config(me: str, ports: dict[str, int]) -> str:
    """An array with a remote to each other one, LUN 0 of SIZE and LUN 1 of SIZE (a second remote volume);
    with array E running, B's LUN 2 is E's LUN 0 (an external volume)."""
    remotes = "".join(f'[[remotes]]\nname = "{NAMES[p]}"\nportal = "{HOSTS[p]}:{ports[p]}"\ntarget = "{p}"\n'
                      for p in PEERS[me])
    luns = "".join(f'[[targets.luns]]\nlun = {n}\nfile = "lun{n}.img"\nsize = "{SIZE >> 20}MiB"\n' for n in (0, 1))
    external = ""
    if me == B and E in ports:
        remotes += (f'[[external_volumes]]\nname = "e-lun0"\nportal = "{HOSTS[E]}:{ports[E]}"\ntarget = "{E}"\n'
                    'lun = 0\nlock = "off"\n')
        external = '[[targets.luns]]\nlun = 2\nexternal = "e-lun0"\n'
    return f'initiator_name = "{me}"\n{remotes}[[targets]]\nname = "{me}"\n{luns}{external}'


class Sites:
    """Arrays A, B and C on 127.0.0.1/2/3 and the CLI against each."""

    def __init__(self, tmp: Path, external: bool = False) -> None:
        self.tmp = tmp
        self.ports = {t: free_port(h) for t, h in HOSTS.items() if external or t != E}
        self.procs: dict[str, SanlabProcess] = {}
        for t in ((E, A, B, C) if external else (A, B, C)):
            (tmp / NAMES[t]).mkdir()
            self.start(t)

    def start(self, t: str) -> SanlabProcess:
        sp = start_sanlab(self.tmp / NAMES[t], config(t, self.ports), HOSTS[t], self.ports[t])
        self.procs[t] = sp
        return sp

    def cli(self, t: str, *words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir",
                               str(self.procs[t].data_dir)], capture_output=True, text=True, timeout=120)

    def ok(self, t: str, *words: str) -> Any:
        cp = self.cli(t, *words)
        assert cp.returncode == 0, f"{words}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n{self.procs[t].log()[-3000:]}"
        return json.loads(cp.stdout) if cp.stdout.strip().startswith(("{", "[")) else cp.stdout

    def wait(self, t: str, name: str, state: str = "PAIR") -> None:
        cp = self.cli(t, "pair", "wait", name, "--state", state, "--timeout", str(WAIT))
        assert cp.returncode == 0, f"{cp.stderr}\n{self.procs[t].log()[-3000:]}"

    def show(self, t: str) -> dict[str, Any]:
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "show", "--json", "--data-dir",
                             str(self.procs[t].data_dir)], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        return dict(json.loads(cp.stdout))

    def file(self, t: str, lun: int = 0) -> bytes:
        return (self.procs[t].data_dir / f"lun{lun}.img").read_bytes()

    def async_pair(self, name: str, jb: str, jc: str, c_lun: int = 0, b_lun: int = 0) -> None:
        """B/``b_lun`` → C/``c_lun`` asynchronous, journals ``jb`` at B and ``jc`` at C."""
        self.ok(B, "journal", "create", jb, "--size", "4MiB")
        self.ok(C, "journal", "create", jc, "--size", "4MiB")
        self.ok(B, "pair", "create", name, "--mode", "async", "--journal", jb, "--remote-journal", jc,
                "--pvol", f"{B}/{b_lun}", "--remote", "array-c", "--svol", f"{C}/{c_lun}")
        self.wait(B, name)

    def sync_pair(self, *extra: str, b_lun: int = 0) -> None:
        self.ok(A, "pair", "create", "ab", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/{b_lun}", *extra)
        self.wait(A, "ab")

    def drained(self, t: str, journal: str, after: float = 0.0) -> dict[str, Any]:
        """:func:`restored` of ``journal`` at array ``t``."""
        return restored(lambda *words: self.ok(t, *words), journal, after)

    def stop(self) -> None:
        for sp in self.procs.values():
            if sp.proc.poll() is None:
                sp.stop(signal.SIGKILL)


def restored(ok: Callable[..., Any], journal: str, after: float = 0.0, seconds: float = WAIT) -> dict[str, Any]:
    """Until ``journal`` (a secondary, asked through ``ok``: CLI words -> parsed output) restored
    everything its primary handed out, as an answer of the primary later than ``after`` (epoch
    seconds: a primary's restart) said."""
    deadline = time.monotonic() + seconds
    while True:
        st = ok("journal", "status", journal, "--json")
        if (st["lag_entries"] == 0 and st["entries"] == 0 and st["to_be_read"] > 0
                and (st["primary_seen"] or 0) > after):
            return dict(st)
        assert time.monotonic() < deadline, st
        time.sleep(0.2)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    s = Sites(tmp_path)
    yield s
    s.stop()


def numbered(s: Sites, first: int, count: int, stop_on_error: bool = False, acked: list[int] | None = None,
             at: str = A) -> None:
    """A host at ``at`` (A) writes block i with i (8-byte big-endian, repeated), QD1, each acknowledged before
    the next: i = first .. first+count-1."""
    async def go() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=30.0)
        async with IscsiSession(HOSTS[at], s.ports[at], at, cfg) as host:
            await host.clear_unit_attentions(0)
            for i in range(first, first + count):
                await host.write16(0, i, i.to_bytes(8, "big") * 64, 512)
                if acked is not None:
                    acked.append(i)
    try:
        asyncio.run(go())
    except Exception:  # noqa: BLE001 - the relay was killed under the host
        if not stop_on_error:
            raise


def prefix(image: bytes, last: int) -> int:
    """How many of writes 1..last the image holds, checking it holds exactly a prefix of them."""
    present = [image[i * 512:i * 512 + 8] == i.to_bytes(8, "big") for i in range(1, last + 1)]
    k = present.index(False) if False in present else len(present)
    assert not any(present[k:]), f"write {k + 2 + present[k + 1:].index(True)} is there but {k + 1} is not"
    return k


def relay_rows(s: Sites) -> list[dict[str, Any]]:
    relays = s.show(B)["relays"]
    assert len(relays) == 1, relays
    assert relays[0]["lu"] == f"{B}/0"
    return list(relays[0]["vr_table"])


def test_cascade_a_b_c_relay_builds_its_two_virtual_volumes_and_c_equals_a(sites: Sites) -> None:
    s = sites
    # The async pair first, the sync pair into its P-VOL after (the other order is the fan-out test's).
    s.async_pair("bc", "jb", "jc")
    assert s.show(B)["relays"] == []  # one pair on the volume: no relay
    s.sync_pair()
    rows = relay_rows(s)
    assert [(r["vvol"], r["role"], r["pair"], r["pair_role"]) for r in rows] == [
        (1, "receiving", "ab", "S-VOL"), (2, "sending", "bc", "P-VOL")], rows
    assert all(r["real"] == f"{B}/0" and r["real_start"] == 0 and r["size"] == SIZE // 512
               and r["multiple_virtualization"] for r in rows), rows
    numbered(s, 1, 400)
    big = bytes(range(256)) * 4096  # 1 MiB in one write: several journal entries, each fits a pull

    async def one_big_write() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(HOSTS[A], s.ports[A], A, cfg) as host:
            await host.clear_unit_attentions(0)
            await host.write16(0, 8192, big, 512)
    asyncio.run(one_big_write())
    st = s.drained(C, "jc")
    assert st["restored"] >= 404
    assert s.file(C)[8192 * 512:8192 * 512 + len(big)] == big
    assert s.file(A) == s.file(B) == s.file(C)  # byte for byte at C
    assert prefix(s.file(C), 400) == 400
    # The relay survives a restart of B (rebuilt from the pairs' records) and keeps passing writes on.
    s.procs[B].stop(signal.SIGTERM)
    s.start(B)
    s.wait(A, "ab")
    s.wait(B, "bc")
    assert [(r["vvol"], r["pair"]) for r in relay_rows(s)] == [(1, "ab"), (2, "bc")]
    numbered(s, 401, 100)
    s.drained(C, "jc")
    assert s.file(A) == s.file(B) == s.file(C)
    # Deleting the sync pair leaves B → C alone on the volume: no relay, B's hosts write it again.
    s.ok(A, "pair", "delete", "ab")
    assert s.show(B)["relays"] == []


@pytest.mark.slow  # ~15 s; the default run keeps the cascade and the relay kill
def test_fan_out_relay_feeds_two_remotes(sites: Sites) -> None:
    """Seed 002's 5th embodiment: one receiving and two sending virtual volumes on one real volume;
    the sync pair first this time, then B → C/0 and B → C/1 (a second remote volume, own journals)."""
    s = sites
    s.sync_pair()
    numbered(s, 1, 100)  # before the relay exists: the async pairs' initial copies carry these
    s.async_pair("bc", "jb", "jc", 0)
    s.async_pair("bd", "jb2", "jd", 1)
    rows = relay_rows(s)
    assert [(r["vvol"], r["role"], r["pair"]) for r in rows] == [
        (1, "receiving", "ab"), (2, "sending", "bc"), (3, "sending", "bd")], rows
    # A second sender on an existing journal is refused with the reason.
    cp = s.cli(B, "pair", "create", "bx", "--mode", "async", "--journal", "jb", "--remote-journal", "jc",
               "--pvol", f"{B}/0", "--remote", "array-c", "--svol", f"{C}/1")
    assert cp.returncode != 0 and "journal of its own" in cp.stderr, cp.stderr
    numbered(s, 101, 300)
    s.drained(C, "jc")
    s.drained(C, "jd")
    assert s.file(A) == s.file(B) == s.file(C, 0) == s.file(C, 1)
    assert prefix(s.file(C, 1), 400) == 400


def test_relay_killed_mid_stream_loses_nothing_and_applies_nothing_out_of_order(sites: Sites) -> None:
    """kill -9 of B while A's host writes a numbered stream through it (fence data: A's host stops at
    the first write B did not take).  C then holds exactly a prefix of the stream at every look, and
    once B is back and C drained, every write A's host had GOOD for is at C; a resync of A → B goes on
    through the relay and C ends equal to A."""
    s = sites
    s.sync_pair("--fence", "data")
    s.async_pair("bc", "jb", "jc")
    acked: list[int] = []

    def kill_b_mid_stream() -> None:  # after some writes went through, whatever the machine's load
        deadline = time.monotonic() + 60
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        s.procs[B].stop(signal.SIGKILL)
    killer = threading.Thread(target=kill_b_mid_stream)
    killer.start()
    numbered(s, 1, 6000, stop_on_error=True, acked=acked)
    killer.join()
    assert 0 < len(acked) < 6000, len(acked)
    prefix(s.file(C), 6000)  # while B is down
    restarted = time.time()
    s.start(B)
    st = s.drained(C, "jc", after=restarted)  # C's lag counts what B said before it died until C reads B again
    k = prefix(s.file(C), 6000)
    assert len(acked) <= k <= len(acked) + 1, (k, len(acked), st)  # nothing acknowledged lost, nothing extra
    s.ok(A, "pair", "resync", "ab")
    s.wait(A, "ab")
    numbered(s, 7000, 50)
    s.drained(C, "jc")
    assert s.file(A) == s.file(B) == s.file(C)


def wait_marker_past(s: Sites, t: str, journal: str, seconds: float = WAIT) -> int:
    """Until ``journal`` (a secondary) restored a consistency point newer than the one it has now."""
    first = s.ok(t, "journal", "status", journal, "--json")["marker"]
    deadline = time.monotonic() + seconds
    while True:
        st = s.ok(t, "journal", "status", journal, "--json")
        if st["marker"] > first and st["entries"] == 0:
            return int(st["marker"])
        assert time.monotonic() < deadline, st
        time.sleep(0.2)


@pytest.mark.slow  # ~25-60 s: markers need seconds to reach C
def test_delta_resync_a_to_c_after_the_relay_is_lost(sites: Sites) -> None:
    """Cascade A → B → C with a standby journal of A's volume; B killed (kill -9) while A keeps
    writing; the pair A → C formed with --delta sends only what C lacks since its last consistency
    point: no copy, as many journal entries as writes after that point, and C ends equal to A."""
    s = sites
    s.sync_pair("--fence", "never")
    made = s.ok(A, "journal", "create", "js", "--size", "16MiB", "--standby-for", f"{A}/0")
    assert made["role"] == "standby" and made["standby"] == f"{A}/0"
    s.async_pair("bc", "jb", "jc")
    numbered(s, 1, 300)
    s.drained(C, "jc")
    marker = wait_marker_past(s, C, "jc")  # a consistency point after the last write is at C
    assert marker in s.ok(A, "journal", "status", "js", "--json")["markers"]
    s.procs[B].stop(signal.SIGKILL)
    numbered(s, 301, 100)  # A alone (fence never): C lacks exactly these
    # C: serve the S-VOL (applies all it acquired), then let go of the dead relay's pair.
    assert s.cli(C, "pair", "takeover", "bc").returncode in (0, 2)
    s.ok(C, "pair", "delete", "bc", "--force")
    before = s.ok(C, "journal", "status", "jc", "--json")
    row = s.ok(A, "pair", "create", "ac", "--mode", "async", "--journal", "js", "--remote-journal", "jc",
               "--pvol", f"{A}/0", "--remote", "array-c", "--svol", f"{C}/0", "--delta")
    assert row["state"] == "PAIR" and row["copied_bytes"] == 0, row  # no copy at all
    numbered(s, 401, 20)  # and the pair goes on journaling
    after = s.drained(C, "jc")
    got = after["acquired_entries"] - before["acquired_entries"]
    # The 100 writes B never passed on and the 20 after, plus markers: never the volume (8 MiB).
    assert 120 <= got <= 120 + 15, (got, before, after)
    assert s.ok(A, "pair", "display", "ac", "--json")[0]["copied_bytes"] == 0
    assert prefix(s.file(C), 420) == 420
    assert s.file(A) == s.file(C)


@pytest.mark.slow  # ~30-60 s, as the cascade one
def test_delta_resync_b_to_c_after_the_primary_is_lost(sites: Sites) -> None:
    """Multi-target (seed 003 FIG. 23): A → B synchronous and A → C asynchronous from one volume, a
    standby journal of B's S-VOL.  A killed (kill -9): B takes over, and B → C formed with --delta
    sends only the writes after C's last consistency point; C ends equal to B."""
    s = sites
    s.ok(A, "journal", "create", "ja", "--size", "16MiB")
    s.ok(C, "journal", "create", "jc", "--size", "16MiB")
    s.ok(A, "pair", "create", "ac", "--mode", "async", "--journal", "ja", "--remote-journal", "jc",
         "--pvol", f"{A}/0", "--remote", "array-c", "--svol", f"{C}/0")
    s.wait(A, "ac")
    s.sync_pair("--fence", "never")
    rows = s.show(A)["relays"][0]["vr_table"]
    assert [(r["role"], r["pair"]) for r in rows] == [("host writes", "ab"), ("sending", "ac")], rows
    s.ok(B, "journal", "create", "jbs", "--size", "16MiB", "--standby-for", f"{B}/0")
    numbered(s, 1, 300)
    s.drained(C, "jc")
    wait_marker_past(s, C, "jc")
    numbered(s, 301, 100)  # C may or may not have these when A dies
    s.procs[A].stop(signal.SIGKILL)
    assert s.cli(B, "pair", "takeover", "ab").returncode == 2
    assert s.cli(C, "pair", "takeover", "ac").returncode in (0, 2)
    s.ok(C, "pair", "delete", "ac", "--force")
    before = s.ok(C, "journal", "status", "jc", "--json")
    row = s.ok(B, "pair", "create", "bc", "--mode", "async", "--journal", "jbs", "--remote-journal", "jc",
               "--pvol", f"{B}/0", "--remote", "array-c", "--svol", f"{C}/0", "--delta")
    assert row["state"] == "PAIR" and row["copied_bytes"] == 0, row
    numbered(s, 401, 20, at=B)  # B's hosts now; their writes go on to C
    after = s.drained(C, "jc")
    got = after["acquired_entries"] - before["acquired_entries"]
    assert got <= 120 + 15, (got, before, after)
    assert prefix(s.file(C), 420) == 420
    assert s.file(B) == s.file(C)


@pytest.mark.slow  # ~11 s, four arrays
def test_relay_on_an_external_volume(tmp_path: Path) -> None:
    """The relay's real volume is an external volume (B's LUN 2 is array E's LUN 0): both virtual
    volumes map it, A's writes land on E through B and reach C."""
    s = Sites(tmp_path, external=True)
    try:
        s.sync_pair(b_lun=2)
        s.async_pair("bc", "jb", "jc", 0, b_lun=2)
        relays = s.show(B)["relays"]
        assert [(r["lu"], r["real_volume"]) for r in relays] == [(f"{B}/2", "ExternalVolume")], relays
        assert [(r["vvol"], r["role"]) for r in relays[0]["vr_table"]] == [(1, "receiving"), (2, "sending")]
        numbered(s, 1, 200)
        s.drained(C, "jc")
        assert s.file(A) == s.file(E) == s.file(C)  # R is E's LUN
        assert prefix(s.file(C), 200) == 200
    finally:
        s.stop()

"""Synchronous remote copy between two real arrays (issue 14): A on 127.0.0.1 holds the P-VOL, B on
127.0.0.2 the S-VOL; hosts are qemu-io (libiscsi) and the project's initiator; the volumes are
compared byte for byte in the arrays' LUN files.
"""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, free_port, full_file_system, need, start_sanlab

pytestmark = pytest.mark.integration

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"
SIZE = 8 << 20
TRACK = 64 << 10
WAIT = 60.0


def config(me: str, peer: str, peer_portal: str, sizes: tuple[str, ...] = (f"{SIZE >> 20}MiB", "1MiB"),
           extra: str = "") -> str:
    """An array with a remote to its peer and LUNs 0, 1, ... of ``sizes`` (by default LUN 0 of SIZE and a
    1 MiB LUN 1, for extent pairs), then ``extra`` TOML (more LUNs)."""
    luns = "".join(f'[[targets.luns]]\nlun = {n}\nfile = "lun{n}.img"\nsize = "{size}"\n' for n, size in enumerate(sizes))
    return f"""
initiator_name = "{me}"
[[remotes]]
name = "{'array-b' if peer == B else 'array-a'}"
portal = "{peer_portal}"
target = "{peer}"
[[targets]]
name = "{me}"
{luns}{extra}"""


class Arrays:
    """A and B, their LUN files, and the CLI against each."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pa, self.pb = free_port("127.0.0.1"), free_port("127.0.0.2")
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        self.a = self.start("a")
        self.b = self.start("b")

    SIZES: tuple[str, ...] = (f"{SIZE >> 20}MiB", "1MiB")
    """The LUNs of each array (config's ``sizes``)."""
    EXTRA = ""
    """More TOML for each array (config's ``extra``)."""

    def start(self, which: str) -> SanlabProcess:
        if which == "a":
            return start_sanlab(self.tmp / "a", config(A, B, f"127.0.0.2:{self.pb}", self.SIZES, self.EXTRA),
                                "127.0.0.1", self.pa)
        return start_sanlab(self.tmp / "b", config(B, A, f"127.0.0.1:{self.pa}", self.SIZES, self.EXTRA),
                            "127.0.0.2", self.pb)

    def file(self, sp: SanlabProcess) -> bytes:
        return (sp.data_dir / "lun0.img").read_bytes()

    def cli(self, sp: SanlabProcess, *words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(sp.data_dir)],
                              capture_output=True, text=True, timeout=120)

    def ok(self, sp: SanlabProcess, *words: str) -> Any:
        cp = self.cli(sp, *words)
        assert cp.returncode == 0, f"{words}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n{sp.log()[-3000:]}"
        return json.loads(cp.stdout) if cp.stdout.strip().startswith(("{", "[")) else cp.stdout

    def pair(self, sp: SanlabProcess, name: str = "p0") -> dict[str, Any]:
        rows = self.ok(sp, "pair", "display", name, "--json")
        assert len(rows) == 1
        return dict(rows[0])

    def create(self, *extra: str) -> dict[str, Any]:
        return dict(self.ok(self.a, "pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b",
                            "--svol", f"{B}/0", *extra))

    def wait(self, sp: SanlabProcess, state: str, name: str = "p0") -> None:
        cp = self.cli(sp, "pair", "wait", name, "--state", state, "--timeout", str(WAIT))
        assert cp.returncode == 0, f"{cp.stderr}\n{self.pair(sp, name)}\n{sp.log()[-3000:]}"

    def stop(self) -> None:
        for sp in (self.a, self.b):
            if sp.proc.poll() is None:
                sp.stop(signal.SIGKILL)


@pytest.fixture
def arrays(tmp_path: Path) -> Any:
    need("qemu-io")
    ar = Arrays(tmp_path)
    yield ar
    ar.stop()


def qemu_write(sp: SanlabProcess, target: str, offset: int, length: int, pattern: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} {offset} {length}",
                           f"iscsi://{sp.portal}/{target}/0"], capture_output=True, text=True, timeout=120)


def host_write(sp: SanlabProcess, target: str, lba: int, data: bytes) -> tuple[int, bytes | None]:
    """Our initiator as a host (not the P array): (status, sense bytes 2/12/13 or None)."""
    async def go() -> tuple[int, bytes | None]:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(sp.host, sp.port, target, cfg) as s:
            await s.clear_unit_attentions(0)
            cdb = bytes([0x8A, 0]) + lba.to_bytes(8, "big") + (len(data) // 512).to_bytes(4, "big") + b"\0\0"
            r = await s.execute(0, cdb, data)
            return int(r.status), (bytes([r.sense.key, r.sense.asc, r.sense.ascq]) if r.sense else None)
    return asyncio.run(go())


def test_create_copies_then_mirrors_and_the_s_vol_refuses_hosts(arrays: Arrays) -> None:
    ar = arrays
    assert qemu_write(ar.a, A, 0, SIZE, 0x5A).returncode == 0  # data on the P-VOL before the pair
    row = ar.create("--fence", "data")
    assert row["role"] == "P-VOL" and row["state"] in ("COPY", "PAIR") and row["fence"] == "data"
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    a_row, b_row = ar.pair(ar.a), ar.pair(ar.b)
    assert a_row["copied_bytes"] == SIZE and a_row["progress"] == 100 and a_row["pending_bytes"] == 0
    assert b_row["role"] == "S-VOL" and b_row["remote"] == A
    assert ar.file(ar.a) == ar.file(ar.b)
    # Host writes to the P-VOL reach the S-VOL before GOOD.
    for i, off in enumerate((4096, 3 << 20, SIZE - 8192)):
        assert qemu_write(ar.a, A, off, 8192, 0x10 + i).returncode == 0
    assert ar.file(ar.a) == ar.file(ar.b)
    assert ar.file(ar.b)[3 << 20:(3 << 20) + 8192] == bytes([0x11]) * 8192
    # A host writing the S-VOL directly: DATA PROTECT / WRITE PROTECTED, nothing written.
    status, sense = host_write(ar.b, B, 100, bytes([0xEE]) * 512)
    assert status == 2 and sense == bytes([0x07, 0x27, 0x00])
    assert ar.file(ar.b)[100 * 512:101 * 512] != bytes([0xEE]) * 512
    # The instruction checks: a pair name taken, an LU already paired, an unknown remote.
    again = ar.cli(ar.a, "pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0")
    assert again.returncode == 1 and "exists" in again.stderr
    other = ar.cli(ar.a, "pair", "create", "p1", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0")
    assert other.returncode == 1 and "already in pair p0" in other.stderr
    nowhere = ar.cli(ar.a, "pair", "create", "p2", "--pvol", f"{A}/0", "--remote", "array-z", "--svol", f"{B}/0")
    assert nowhere.returncode == 1 and "no remote called array-z" in nowhere.stderr


def test_split_then_resync_sends_only_the_difference(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy")  # both LUN files are all zeros: known identical
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    assert ar.pair(ar.a)["copied_bytes"] == 0
    ar.ok(ar.a, "pair", "split", "p0")
    ar.wait(ar.a, "PSUS")
    ar.wait(ar.b, "SSUS")
    dirty = [3, 40, 100]
    for t in dirty:
        assert qemu_write(ar.a, A, t * TRACK + 512, 4096, 0x77).returncode == 0
    assert ar.file(ar.a) != ar.file(ar.b)
    assert ar.pair(ar.a)["pending_bytes"] == len(dirty) * TRACK
    # Split (not --rw): the S-VOL stays read-only for hosts.
    assert host_write(ar.b, B, 0, bytes(512))[1] == bytes([0x07, 0x27, 0x00])
    ar.ok(ar.a, "pair", "resync", "p0")
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    assert ar.pair(ar.a)["copied_bytes"] == len(dirty) * TRACK
    assert ar.file(ar.a) == ar.file(ar.b)


def test_fence_data_fails_host_writes_when_the_s_array_dies(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--fence", "data")
    ar.wait(ar.a, "PAIR")
    ar.b.stop(signal.SIGKILL)
    for off in (1 << 20, 2 << 20):  # the write that found B gone, and every one after it
        bad = qemu_write(ar.a, A, off, 4096, 0x33)
        assert "write failed" in (bad.stdout + bad.stderr), bad
    row = ar.pair(ar.a)
    assert row["state"] == "PSUE" and "unreachable" in (row["reason"] or "")
    # The sense a host gets while the fence holds: NOT READY, MANUAL INTERVENTION REQUIRED.
    assert host_write(ar.a, A, 8, bytes(512)) == (2, bytes([0x02, 0x04, 0x03]))
    # B back: a resync sends the tracks the failed writes may have touched, nothing more.
    ar.b = ar.start("b")
    ar.ok(ar.a, "pair", "resync", "p0")
    ar.wait(ar.a, "PAIR")
    assert ar.pair(ar.a)["copied_bytes"] <= 2 * TRACK
    assert ar.file(ar.a) == ar.file(ar.b)


def test_fence_never_keeps_writing_and_delete_frees_both_sides(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--fence", "never")
    ar.wait(ar.a, "PAIR")
    ar.b.stop(signal.SIGKILL)
    # Once A's pair session (the one that reconnects) has seen its connection end, the next write
    # has a login tried, refused (B's port is closed), and is decided then: not after the 5 s wait
    # for the session to return.
    deadline = time.monotonic() + 10
    while not any("initiator_reconnect_failed" in line and B in line for line in ar.a.log().splitlines()):
        assert time.monotonic() < deadline, ar.a.log()[-3000:]
        time.sleep(0.05)
    assert qemu_write(ar.a, A, 5 * TRACK, 4096, 0x44).returncode == 0  # acknowledged
    row = ar.pair(ar.a)
    assert row["state"] == "PSUE" and row["pending_bytes"] == TRACK
    assert "reconnect refused" in (row["reason"] or ""), row
    ar.b = ar.start("b")
    assert ar.pair(ar.b)["state"] in ("PAIR", "PSUE")  # B's half came back with it
    ar.ok(ar.a, "pair", "delete", "p0")
    assert ar.ok(ar.a, "pair", "display", "--json") == []
    assert ar.ok(ar.b, "pair", "display", "--json") == []
    # B's LU is a plain LU again: hosts write it.
    deadline = time.monotonic() + 10
    while host_write(ar.b, B, 0, bytes([1]) * 512)[0] != 0:
        assert time.monotonic() < deadline, "B's LU still refuses writes after delete"
        time.sleep(0.2)


def test_p_array_killed_during_writes_loses_nothing_and_resends_only_its_active_tracks(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--fence", "data")
    ar.wait(ar.a, "PAIR")
    acked: list[tuple[int, int]] = []
    for i in range(12):  # acknowledged writes over tracks 0..5
        off = (i % 6) * TRACK + (i // 6) * 8192
        assert qemu_write(ar.a, A, off, 4096, 0x20 + i).returncode == 0
        acked.append((off, 0x20 + i))
    # One more write in flight when A dies (its outcome is unknown to the host: either copy may hold it).
    inflight = subprocess.Popen(["qemu-io", "-f", "raw", "-c", f"write -P 0x99 {7 * TRACK} 65536",
                                 f"iscsi://{ar.a.portal}/{A}/0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.05)
    ar.a.stop(signal.SIGKILL)
    inflight.wait(60)
    b = ar.file(ar.b)
    for off, pattern in acked:  # every acknowledged write is at the S-VOL
        assert b[off:off + 4096] == bytes([pattern]) * 4096, (off, pattern)
    ar.a = ar.start("a")
    ar.wait(ar.a, "PAIR")
    row = ar.pair(ar.a)
    # Only the activity log's tracks (the ones written: 0-5 and maybe 7) went again, never the volume.
    assert 0 < row["copied_bytes"] <= 7 * TRACK, row
    assert ar.file(ar.a) == ar.file(ar.b)


def test_takeover_serves_from_the_surviving_array(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--fence", "data")
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    assert qemu_write(ar.a, A, 0, 65536, 0x61).returncode == 0
    # The P array dies: S-VOL takeover at B (horctakeover exit code 2), B serves writes.
    ar.a.stop(signal.SIGKILL)
    cp = ar.cli(ar.b, "pair", "takeover", "p0")
    assert cp.returncode == 2, cp.stderr
    assert json.loads(cp.stdout)["takeover"] == "svol"
    assert ar.pair(ar.b)["state"] == "SSWS"
    assert ar.file(ar.b)[:65536] == bytes([0x61]) * 65536  # what A acknowledged is here
    assert host_write(ar.b, B, 4 * TRACK // 512, bytes([0x62]) * 4096) == (0, None)
    assert ar.pair(ar.b)["pending_bytes"] == TRACK  # recorded for the way back
    assert ar.cli(ar.b, "pair", "takeover", "p0").returncode == 0  # already serving: nop
    # A comes back still a P-VOL: it tries to resend its active tracks, B refuses the old primary.
    ar.a = ar.start("a")
    ar.wait(ar.a, "PSUE")
    assert ar.file(ar.b)[4 * TRACK:4 * TRACK + 4096] == bytes([0x62]) * 4096  # B's write kept
    # A plain resync from A would overwrite what B's hosts wrote: refused, saying what to do.
    resync = ar.cli(ar.a, "pair", "resync", "p0")
    assert resync.returncode == 1 and "taken over (SSWS)" in resync.stderr and "--reverse" in resync.stderr
    # Failback without a full copy: swap at B; B is the P-VOL, A catches up by bitmap.
    swapped = ar.ok(ar.b, "pair", "swap", "p0")
    assert swapped["role"] == "P-VOL"
    ar.wait(ar.b, "PAIR")
    ar.wait(ar.a, "PAIR")
    assert ar.pair(ar.a)["role"] == "S-VOL"
    assert 0 < ar.pair(ar.b)["copied_bytes"] <= 3 * TRACK, ar.pair(ar.b)
    assert ar.file(ar.a) == ar.file(ar.b)
    assert host_write(ar.a, A, 0, bytes(512))[1] == bytes([0x07, 0x27, 0x00])  # A is the S-VOL now
    assert host_write(ar.b, B, 9 * TRACK // 512, bytes([0x63]) * 512) == (0, None)  # mirrored to A
    assert ar.file(ar.a)[9 * TRACK:9 * TRACK + 512] == bytes([0x63]) * 512
    # And back: swap at A, the pair runs A -> B again, nothing to send but the activity log.
    ar.ok(ar.a, "pair", "swap", "p0")
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    assert ar.pair(ar.a)["role"] == "P-VOL" and ar.pair(ar.b)["role"] == "S-VOL"
    assert ar.pair(ar.a)["copied_bytes"] <= 2 * TRACK
    assert qemu_write(ar.a, A, 20 * TRACK, 4096, 0x64).returncode == 0
    assert ar.file(ar.a) == ar.file(ar.b)


def test_p_vol_takeover_lifts_the_fence(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--fence", "data")
    ar.wait(ar.a, "PAIR")
    ar.b.stop(signal.SIGKILL)
    assert "write failed" in qemu_write(ar.a, A, 0, 4096, 0x71).stderr + qemu_write(ar.a, A, 0, 4096, 0x71).stdout
    cp = ar.cli(ar.a, "pair", "takeover", "p0")
    assert cp.returncode == 3, cp.stderr + cp.stdout  # P-VOL takeover
    assert qemu_write(ar.a, A, 0, 4096, 0x72).returncode == 0
    assert ar.file(ar.a)[:4096] == bytes([0x72]) * 4096
    row = ar.pair(ar.a)
    assert row["state"] == "PSUE" and row["pending_bytes"] == TRACK


class Proxy:
    """A TCP relay on 127.0.0.3 between A and B that the test can cut and heal (a link loss
    without a kill: both arrays stay up, the connections between them die)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.3", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.delay = 0.0
        """Seconds each chunk is held before it is passed on (a slow peer; 0: none)."""
        self.conns: list[Any] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def heal(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


@contextmanager
def relayed(tmp_path: Path) -> Iterator[tuple[Arrays, Proxy, Proxy]]:
    """A and B reaching each other only through relays the test can cut and slow: (the arrays,
    A's way to B, B's way to A); the arrays killed and the relays closed at the end."""
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.2")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    to_b, to_a = Proxy(("127.0.0.2", pb)), Proxy(("127.0.0.1", pa))
    ar = Arrays.__new__(Arrays)
    ar.tmp = tmp_path
    ar.b = start_sanlab(tmp_path / "b", config(B, A, f"127.0.0.3:{to_a.port}"), "127.0.0.2", pb)
    ar.a = start_sanlab(tmp_path / "a", config(A, B, f"127.0.0.3:{to_b.port}"), "127.0.0.1", pa)
    try:
        yield ar, to_b, to_a
    finally:
        to_b.close()
        to_a.close()
        ar.stop()


def test_link_loss_without_a_kill_suspends_and_resync_heals(tmp_path: Path) -> None:
    need("qemu-io")
    pb = free_port("127.0.0.2")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proxy = Proxy(("127.0.0.2", pb))
    b = start_sanlab(tmp_path / "b", config(B, A, "127.0.0.1:1"), "127.0.0.2", pb)
    a = start_sanlab(tmp_path / "a", config(A, B, f"127.0.0.3:{proxy.port}"), "127.0.0.1", free_port("127.0.0.1"))
    ar = Arrays.__new__(Arrays)
    ar.tmp, ar.a, ar.b = tmp_path, a, b
    try:
        ar.create("--no-copy", "--fence", "never")
        ar.wait(a, "PAIR")
        assert qemu_write(a, A, 0, 4096, 0x51).returncode == 0
        assert ar.file(b)[:4096] == bytes([0x51]) * 4096
        proxy.cut()
        assert qemu_write(a, A, 10 * TRACK, 4096, 0x52).returncode == 0  # fence never: acknowledged
        row = ar.pair(a)
        assert row["state"] == "PSUE" and row["pending_bytes"] == TRACK
        assert ar.file(b)[10 * TRACK:10 * TRACK + 4096] != bytes([0x52]) * 4096  # B never got it
        proxy.heal()
        ar.ok(a, "pair", "resync", "p0")
        ar.wait(a, "PAIR")
        assert ar.pair(a)["copied_bytes"] == TRACK
        assert ar.file(a) == ar.file(b)
    finally:
        proxy.close()
        for sp in (a, b):
            if sp.proc.poll() is None:
                sp.stop(signal.SIGKILL)


def test_split_brain_is_found_and_reported_before_anything_is_overwritten(tmp_path: Path) -> None:
    need("qemu-io")
    with relayed(tmp_path) as (ar, to_b, to_a):
        a, b = ar.a, ar.b
        ar.create("--no-copy", "--fence", "never")
        ar.wait(a, "PAIR")
        ar.wait(b, "PAIR")
        to_b.cut()
        to_a.cut()
        # Both sides write on their own: A (fence never) goes on in PSUE, B is taken over.
        assert qemu_write(a, A, 3 * TRACK, 4096, 0xA1).returncode == 0
        assert qemu_write(a, A, 4 * TRACK, 4096, 0xA2).returncode == 0
        cp = ar.cli(b, "pair", "takeover", "p0")
        assert cp.returncode == 2, cp.stderr
        assert host_write(b, B, 10 * TRACK // 512, bytes([0xB1]) * 4096) == (0, None)
        to_b.heal()
        to_a.heal()
        before_a, before_b = ar.file(a), ar.file(b)
        refused = ar.cli(b, "pair", "swap", "p0")
        assert refused.returncode == 1
        assert "split brain" in refused.stderr and "2 track(s)" in refused.stderr and "3-4" in refused.stderr
        assert ar.file(a) == before_a and ar.file(b) == before_b  # nothing overwritten
        assert ar.pair(b)["state"] == "SSWS"
        # Told which side wins: B's data (A's two tracks are given up, B's write is sent).
        ar.ok(b, "pair", "swap", "p0", "--force")
        ar.wait(b, "PAIR")
        ar.wait(a, "PAIR")
        assert ar.file(a) == ar.file(b) == before_b


def test_a_swap_cut_short_after_the_p_array_turned_is_finished_by_asking_again(tmp_path: Path) -> None:
    """A fault between the P array's turn to S-VOL and the S array's own turn (found by the fault
    matrix's sync-swap case) leaves both halves S-VOL: no host can write either, and `pair swap`
    asked again at B must finish the exchange (by bitmap), not be refused as a wrong state."""
    need("qemu-io")
    with relayed(tmp_path) as (ar, to_b, to_a):
        a, b = ar.a, ar.b
        ar.create("--no-copy", "--fence", "data")
        ar.wait(a, "PAIR")
        ar.wait(b, "PAIR")
        assert qemu_write(a, A, 3 * TRACK, 4096, 0x3A).returncode == 0
        # B's swap reaches A through a slow relay; the link dies once A has turned, before A's
        # answer is back at B: B never turns.
        to_a.delay = 0.3
        swap = subprocess.Popen([sys.executable, "-m", "sanlab.tools.cli", "pair", "swap", "p0", "--data-dir",
                                 str(b.data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while "swapped by the peer" not in a.log():
            assert time.monotonic() < deadline, "A never turned"
            time.sleep(0.005)
        to_a.cut()
        to_b.cut()
        _, err = swap.communicate(timeout=60)
        assert swap.returncode == 1, err
        assert (ar.pair(a)["role"], ar.pair(b)["role"]) == ("S-VOL", "S-VOL")
        assert host_write(a, A, 0, bytes(512))[1] == host_write(b, B, 0, bytes(512))[1] == bytes([0x07, 0x27, 0x00])
        to_a.delay = 0.0
        to_a.heal()
        to_b.heal()
        ar.ok(b, "pair", "swap", "p0")  # asked again: finished
        ar.wait(b, "PAIR")
        ar.wait(a, "PAIR")
        assert (ar.pair(a)["role"], ar.pair(b)["role"]) == ("S-VOL", "P-VOL")
        assert ar.pair(b)["copied_bytes"] <= 2 * TRACK
        assert host_write(b, B, 9 * TRACK // 512, bytes([0x3B]) * 512) == (0, None)
        assert ar.file(a) == ar.file(b) and ar.file(a)[3 * TRACK:3 * TRACK + 4096] == bytes([0x3A]) * 4096


def test_extent_pair_mirrors_only_its_area_to_an_s_vol_sized_to_it(arrays: Arrays) -> None:
    ar = arrays
    start, count = 2048, 2048  # 1 MiB at 1 MiB of A's LUN 0, onto B's 1 MiB LUN 1
    assert qemu_write(ar.a, A, 0, SIZE, 0x3C).returncode == 0
    too_small = ar.cli(ar.a, "pair", "create", "px", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/1")
    assert too_small.returncode == 1 and "at least as large" in too_small.stderr  # whole P-VOL: B/1 too small
    ar.ok(ar.a, "pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/1",
          "--extent", f"{start}:{count}")
    ar.wait(ar.a, "PAIR")
    assert ar.pair(ar.a)["copied_bytes"] == count * 512
    b1 = (ar.b.data_dir / "lun1.img").read_bytes()
    assert b1 == ar.file(ar.a)[start * 512:(start + count) * 512]
    assert qemu_write(ar.a, A, 0, 4096, 0x3D).returncode == 0  # outside: not sent
    assert qemu_write(ar.a, A, start * 512 + 8192, 4096, 0x3E).returncode == 0  # inside: mirrored
    b1 = (ar.b.data_dir / "lun1.img").read_bytes()
    assert b1 == ar.file(ar.a)[start * 512:(start + count) * 512]
    assert b1[8192:12288] == bytes([0x3E]) * 4096
    assert ar.file(ar.b)[:4096] != bytes([0x3D]) * 4096  # B's LUN 0 untouched


def test_group_split_under_writes_keeps_the_write_order_across_volumes(arrays: Arrays) -> None:
    """A host writes LUN 0 and LUN 1 of A in turn, each write after the previous one was acknowledged
    (sequence number i in block i // 2 of LUN i % 2), while the group is split.  At B the writes
    present must be a prefix 0..k of the sequence: none missing before one that is there."""
    ar = arrays
    for lun in (0, 1):
        ar.ok(ar.a, "pair", "create", f"g{lun}", "--pvol", f"{A}/{lun}", "--remote", "array-b",
              "--svol", f"{B}/{lun}", "--no-copy", "--group", "db")
        ar.wait(ar.a, "PAIR", f"g{lun}")
    total = 4000  # LUN 1 holds 2048 blocks

    async def writer() -> int:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:dbhost", command_timeout=10.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            for lun in (0, 1):
                await s.clear_unit_attentions(lun)
            for i in range(total):
                await s.write16(i % 2, i // 2, i.to_bytes(8, "big") * 64, 512)
                if i == 100:
                    splitter = subprocess.Popen([sys.executable, "-m", "sanlab.tools.cli", "pair", "split",
                                                 "--group", "db", "--data-dir", str(ar.a.data_dir)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return splitter.wait(60)

    assert asyncio.run(writer()) == 0
    for lun in (0, 1):
        assert ar.pair(ar.a, f"g{lun}")["state"] == "PSUS"
    files = [ar.file(ar.b), (ar.b.data_dir / "lun1.img").read_bytes()]
    present = [files[i % 2][(i // 2) * 512:(i // 2) * 512 + 8] == i.to_bytes(8, "big") for i in range(total)]
    k = present.index(False) if False in present else total
    assert 0 < k < total, k  # the split fell inside the stream
    assert not any(present[k:]), f"write {present.index(True, k)} is at B but write {k} is not"
    # Resync of the group: both back to PAIR, A and B identical.
    ar.ok(ar.a, "pair", "resync", "--group", "db")
    for lun in (0, 1):
        ar.wait(ar.a, "PAIR", f"g{lun}")
    assert ar.file(ar.a) == ar.file(ar.b)
    assert (ar.a.data_dir / "lun1.img").read_bytes() == (ar.b.data_dir / "lun1.img").read_bytes()


def test_one_pair_suspended_by_an_error_suspends_its_group(arrays: Arrays) -> None:
    ar = arrays
    for lun in (0, 1):
        ar.ok(ar.a, "pair", "create", f"g{lun}", "--pvol", f"{A}/{lun}", "--remote", "array-b",
              "--svol", f"{B}/{lun}", "--no-copy", "--group", "db", "--fence", "never")
        ar.wait(ar.a, "PAIR", f"g{lun}")
    ar.b.stop(signal.SIGKILL)
    assert qemu_write(ar.a, A, 0, 4096, 0x5C).returncode == 0  # only LUN 0 is written
    rows = {r["name"]: r for r in ar.ok(ar.a, "pair", "display", "--json")}
    assert rows["g0"]["state"] == "PSUE" and rows["g1"]["state"] == "PSUE"
    assert "group db" in (rows["g1"]["reason"] or "")


def test_bidirectional_pair_takes_overlapping_writes_at_both_arrays_in_one_order(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--bidirectional")
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    assert ar.pair(ar.a)["bidirectional"] and ar.pair(ar.b)["bidirectional"]

    async def naa(sp: SanlabProcess, target: str) -> bytes:
        async with IscsiSession(sp.host, sp.port, target, InitiatorConfig(initiator_name="iqn.1994-05.com.example:mp")) as s:
            await s.clear_unit_attentions(0)
            page = await s.inquiry(0, 0x83)
            return page[8:8 + page[7]]  # the first designator: the LU's NAA name

    # Both arrays name the LU alike (VPD 83h), so a multipath host sees one LU.
    assert asyncio.run(naa(ar.a, A)) == asyncio.run(naa(ar.b, B))

    async def host(sp: SanlabProcess, target: str, name: str, seed: int) -> None:
        cfg = InitiatorConfig(initiator_name=f"iqn.1994-05.com.example:{name}", command_timeout=10.0)
        async with IscsiSession(sp.host, sp.port, target, cfg) as s:
            await s.clear_unit_attentions(0)
            for i in range(150):  # the same 16 blocks from both sides, overlapping at random
                lba = (i * 7 + seed) % 12
                await s.write16(0, lba, bytes([seed, i & 0xFF]) * 256 * 4, 512)

    async def both() -> None:
        await asyncio.gather(host(ar.a, A, "host-a", 1), host(ar.b, B, "host-b", 2))

    asyncio.run(both())
    assert ar.file(ar.a) == ar.file(ar.b)  # one order on both copies
    firsts = {ar.file(ar.a)[b * 512] for b in range(16)}
    assert 2 in firsts  # B's host writes reached A (forwarded, then mirrored back)
    # WRITE SAME from B's host goes the same way.
    async def write_same() -> int:
        async with IscsiSession(ar.b.host, ar.b.port, B, InitiatorConfig(initiator_name="iqn.1994-05.com.example:ws")) as s:
            await s.clear_unit_attentions(0)
            cdb = bytes([0x93, 0]) + (1000).to_bytes(8, "big") + (64).to_bytes(4, "big") + b"\0\0"
            return int((await s.execute(0, cdb, bytes([0xCD]) * 512)).status)
    assert asyncio.run(write_same()) == 0
    assert ar.file(ar.a)[1000 * 512:1064 * 512] == bytes([0xCD]) * 64 * 512 == ar.file(ar.b)[1000 * 512:1064 * 512]
    # Delete: B's LU answers with its own name again.
    ar.ok(ar.a, "pair", "delete", "p0")
    assert asyncio.run(naa(ar.a, A)) != asyncio.run(naa(ar.b, B))


def test_peer_lost_during_the_initial_copy_leaves_psue_with_the_reason(arrays: Arrays) -> None:
    ar = arrays
    assert qemu_write(ar.a, A, 0, SIZE, 0x6B).returncode == 0
    ar.create("--fence", "never", "--pace", "4")  # 8 MiB at 4 MiB/s: two seconds of copying
    time.sleep(0.7)
    ar.b.stop(signal.SIGKILL)  # while the copy runs
    deadline = time.monotonic() + WAIT
    while (row := ar.pair(ar.a))["state"] == "COPY":
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    assert row["state"] == "PSUE" and row["reason"], row
    assert 0 < row["pending_bytes"] <= SIZE
    # B back: a resync finishes the copy from where the bitmap says, not from the start.
    ar.b = ar.start("b")
    sent_before = row["copied_bytes"]
    ar.ok(ar.a, "pair", "resync", "p0")
    ar.wait(ar.a, "PAIR")
    assert ar.pair(ar.a)["copied_bytes"] <= SIZE - sent_before + 4 * TRACK
    assert ar.file(ar.a) == ar.file(ar.b)


def test_fence_status_fails_the_write_when_the_s_side_cannot_be_marked(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy", "--fence", "status")
    ar.wait(ar.a, "PAIR")
    ar.b.stop(signal.SIGKILL)
    bad = qemu_write(ar.a, A, 0, 4096, 0x7A)
    assert "write failed" in bad.stdout + bad.stderr, bad
    assert ar.pair(ar.a)["state"] == "PSUE"
    assert host_write(ar.a, A, 16, bytes(512)) == (2, bytes([0x02, 0x04, 0x03]))


def test_resync_reverse_copies_the_s_vol_back_by_bitmap(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy")
    ar.wait(ar.a, "PAIR")
    ar.ok(ar.a, "pair", "split", "p0", "--rw")
    ar.wait(ar.b, "SSUS")
    assert host_write(ar.b, B, 30 * TRACK // 512, bytes([0x81]) * 4096) == (0, None)  # split --rw: B takes it
    assert qemu_write(ar.a, A, 31 * TRACK, 4096, 0x82).returncode == 0  # A too (its write gives way)
    row = ar.ok(ar.a, "pair", "resync", "p0", "--reverse")
    assert row["role"] == "S-VOL"  # A is the S-VOL now: B's data wins
    ar.wait(ar.b, "PAIR")
    ar.wait(ar.a, "PAIR")
    assert ar.pair(ar.b)["role"] == "P-VOL"
    assert ar.file(ar.a) == ar.file(ar.b)
    assert ar.file(ar.a)[30 * TRACK:30 * TRACK + 4096] == bytes([0x81]) * 4096
    assert ar.file(ar.a)[31 * TRACK:31 * TRACK + 4096] != bytes([0x82]) * 4096
    assert ar.pair(ar.b)["copied_bytes"] <= 3 * TRACK


def test_libiscsi_multipath_suite_with_one_path_through_each_array(arrays: Arrays) -> None:
    """libiscsi's MultipathIO tests with one URL per array of a bidirectional pair: the host sees
    one LU (same name), resets on one path show on the other, COMPARE AND WRITE is atomic across."""
    tool = need("iscsi-test-cu")
    ar = arrays
    ar.create("--no-copy", "--bidirectional")
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    cp = subprocess.run([tool, "-d", "-t", "SCSI.MultipathIO", f"iscsi://{ar.a.portal}/{A}/0",
                         f"iscsi://{ar.b.portal}/{B}/0"], capture_output=True, text=True, timeout=600)
    out = cp.stdout + cp.stderr
    ran = [line for line in out.splitlines() if line.strip().startswith("Test:")]
    assert len(ran) == 4 and all(line.rstrip().endswith("passed") for line in ran), out[-4000:]
    assert ar.file(ar.a) == ar.file(ar.b)


def test_delete_with_the_peer_gone_needs_force(arrays: Arrays) -> None:
    ar = arrays
    ar.create("--no-copy")
    ar.wait(ar.a, "PAIR")
    ar.b.stop(signal.SIGKILL)
    refused = ar.cli(ar.a, "pair", "delete", "p0")
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert ar.pair(ar.a)["state"] in ("PAIR", "PSUE")
    ar.ok(ar.a, "pair", "delete", "p0", "--force")
    assert ar.ok(ar.a, "pair", "display", "--json") == []
    assert qemu_write(ar.a, A, 0, 4096, 0x11).returncode == 0  # a plain LU again
    # B comes back still holding its half; it is deleted there alone too.
    ar.b = ar.start("b")
    assert ar.pair(ar.b)["role"] == "S-VOL"
    ar.ok(ar.b, "pair", "delete", "p0", "--force")
    assert host_write(ar.b, B, 0, bytes(512)) == (0, None)


def test_a_thin_p_vol_stays_thin_and_unmap_reaches_the_s_vol(arrays: Arrays) -> None:
    """Pairing a thin LU does not take back LBPME (SBC-3 §4.7.3) from hosts that read it before:
    UNMAP on the P-VOL is still taken, mirrored, and both copies read zeros there."""
    ar = arrays
    assert qemu_write(ar.a, A, 0, SIZE, 0x6B).returncode == 0

    async def lbpme_and_unmap(unmap: tuple[int, int] | None) -> tuple[bool, int | None]:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            cap = (await s.run(0, bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + b"\0\0",
                               read_length=32)).data
            status = None if unmap is None else int((await s.unmap(0, [unmap])).status)
            return bool(cap[14] & 0x80), status
    assert asyncio.run(lbpme_and_unmap(None)) == (True, None)
    ar.create("--fence", "data")
    ar.wait(ar.a, "PAIR")
    lba, n = 300, 64  # 32 KiB across a track boundary
    assert asyncio.run(lbpme_and_unmap((lba, n))) == (True, 0)
    a, b = ar.file(ar.a), ar.file(ar.b)
    zero = bytes(n * 512)
    assert a[lba * 512:(lba + n) * 512] == zero == b[lba * 512:(lba + n) * 512]
    assert a == b and a[:lba * 512] == bytes([0x6B]) * (lba * 512)
    assert ar.pair(ar.a)["state"] == "PAIR"


def test_create_on_a_full_file_system_is_refused_before_the_s_side_hears_of_it(arrays: Arrays, tmp_path: Path) -> None:
    """A's pair bitmap directory on a full file system: `pair create` fails naming the reason and the
    file, neither array keeps any part of the pair (B was never asked to register it), and the same
    create works once there is room."""
    ar = arrays
    with full_file_system(tmp_path / "small") as small:
        (ar.a.data_dir / "pairs").symlink_to(small)
        cp = ar.cli(ar.a, "pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0")
        assert cp.returncode != 0
        assert "No space left on device" in cp.stderr and "/pairs/p0." in cp.stderr and "OSError" not in cp.stderr, \
            cp.stderr
        assert ar.ok(ar.a, "pair", "display", "--json") == []
        assert ar.ok(ar.b, "pair", "display", "--json") == []
        assert sorted(p.name for p in small.iterdir()) == ["filler"]
        (small / "filler").unlink()
        ar.create("--no-copy")
        ar.wait(ar.a, "PAIR")
        ar.wait(ar.b, "PAIR")

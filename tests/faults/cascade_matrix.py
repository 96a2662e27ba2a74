"""The fault matrix's cascade cases (issue 19): a relay cascade of three real `sanlab serve` arrays,
A → B synchronous (fence data) and B → C asynchronous (journals ``jb`` at B, ``jc`` at C), B's LUN 0
the relay volume under its two virtual volumes (replication/cascade.py).  Every link between the
arrays (both directions of A-B and of B-C) passes through a relay on 127.0.0.3 the harness can cut,
heal or slow down.

The host is tests/faults/matrix.py's numbered stream at A's LUN 0 (write i holds (i, lba) repeated,
QD1); the seed picks after how many acknowledged writes the fault hits.  Right after the fault the
case checks what the rules promise at once: with fence data every write A acknowledged is at B's
relay volume (unless B itself is what failed), and C always holds a prefix of the stream (it applies
B's journal in order; an array that is down is read from its file).  Then recovery by the
documented procedure (lab/examples/three-site.md, README "Relay cascade" and "Takeover"): the killed
array restarted or the link healed; `pair resync ab` at A when A → B stayed suspended; `pair resync
bc` at B when B → C did; then C drains.  Invariants after it: every pair in PAIR on both of its
arrays, A holds every acknowledged write, B's and C's volumes equal A's byte for byte, and each
resync went by bitmap (the bytes it copied bounded by the stream's tracks, never the volume).

Faults left out, and why: a drive lost and a full filesystem are the two-array matrix's (the relay
changes nothing in how an array meets them); `kill-a` while A → B is mid-copy is its ``sync-create``.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tests.conftest import SanlabProcess, free_port, start_sanlab
from tests.faults.matrix import MOMENTS, OUTAGE, SETTLE
from tests.faults.stream import AREA_TRACKS, Stream
from tests.integration.test_sync_pairs import TRACK
from tests.integration.test_cascade import restored
from tests.integration.test_sync_pairs import Proxy

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"
C = "iqn.2026-11.org.sanlab:array-c"
HOSTS = {"a": "127.0.0.1", "b": "127.0.0.2", "c": "127.0.0.4"}
IQNS = {"a": A, "b": B, "c": C}
SIZE = 8 << 20
WAIT = 60.0
SUSPENDED = ("PSUE", "PSUS", "PFUS")


def config(me: str, remotes: dict[str, str]) -> str:
    """Array ``me`` ("a", "b", "c") with a remote per peer (name ``array-X`` → portal) and LUN 0 of SIZE."""
    rem = "".join(f'[[remotes]]\nname = "array-{p}"\nportal = "{portal}"\ntarget = "{IQNS[p]}"\n'
                  for p, portal in remotes.items())
    return (f'initiator_name = "{IQNS[me]}"\n{rem}[[targets]]\nname = "{IQNS[me]}"\n'
            f'[[targets.luns]]\nlun = 0\nfile = "lun0.img"\nsize = "{SIZE >> 20}MiB"\n')


class Cascade:
    """A, B and C; ``links[(x, y)]`` is the relay x's remote for y goes through."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {w: free_port(h) for w, h in HOSTS.items()}
        self.links: dict[tuple[str, str], Proxy] = {
            (x, y): Proxy((HOSTS[y], self.ports[y])) for x, y in (("a", "b"), ("b", "a"), ("b", "c"), ("c", "b"))}
        self.procs: dict[str, SanlabProcess] = {}
        for w in ("a", "b", "c"):
            (tmp / w).mkdir()
            self.start(w)

    def start(self, w: str) -> SanlabProcess:
        remotes = {y: f"127.0.0.3:{p.port}" for (x, y), p in self.links.items() if x == w}
        self.procs[w] = start_sanlab(self.tmp / w, config(w, remotes), HOSTS[w], self.ports[w])
        return self.procs[w]

    def up(self, w: str) -> bool:
        return self.procs[w].proc.poll() is None

    def cli(self, w: str, *words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir",
                               str(self.procs[w].data_dir)], capture_output=True, text=True, timeout=120)

    def ok(self, w: str, *words: str) -> Any:
        cp = self.cli(w, *words)
        assert cp.returncode == 0, f"{w}: {words}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n{self.procs[w].log()[-3000:]}"
        return json.loads(cp.stdout) if cp.stdout.strip().startswith(("{", "[")) else cp.stdout

    def pair(self, w: str, name: str) -> dict[str, Any]:
        rows = self.ok(w, "pair", "display", name, "--json")
        assert len(rows) == 1, rows
        return dict(rows[0])

    def state(self, w: str, name: str) -> str:
        return str(self.pair(w, name)["state"]) if self.up(w) else "down"

    def wait(self, w: str, name: str, state: str = "PAIR") -> None:
        cp = self.cli(w, "pair", "wait", name, "--state", state, "--timeout", str(WAIT))
        assert cp.returncode == 0, f"{w} {name}: {cp.stderr}\n{self.pair(w, name)}\n{self.procs[w].log()[-3000:]}"

    def file(self, w: str) -> bytes:
        return (self.procs[w].data_dir / "lun0.img").read_bytes()

    def setup(self) -> None:
        """B → C asynchronous first, then A → B synchronous (fence data) into its P-VOL (the relay);
        the files start as zeros everywhere, so neither pair copies."""
        self.ok("b", "journal", "create", "jb", "--size", "16MiB")
        self.ok("c", "journal", "create", "jc", "--size", "16MiB")
        self.ok("b", "pair", "create", "bc", "--mode", "async", "--journal", "jb", "--remote-journal", "jc",
                "--pvol", f"{B}/0", "--remote", "array-c", "--svol", f"{C}/0", "--no-copy")
        self.wait("b", "bc")
        self.ok("a", "pair", "create", "ab", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0",
                "--fence", "data", "--no-copy")
        self.wait("a", "ab")
        self.wait("b", "ab")

    def drained(self, after: float) -> dict[str, Any]:
        """Until C restored everything B's journal handed out, as an answer of B later than ``after``."""
        return restored(lambda *words: self.ok("c", *words), "jc", after)

    def stop(self) -> None:
        for sp in self.procs.values():
            if sp.proc.poll() is None:
                sp.stop(signal.SIGKILL)
        for p in self.links.values():
            p.close()


# ---- faults ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """What hits the cascade, how it heals, and what the host and the rules then promise."""

    name: str
    inject: Callable[[Cascade], None]
    heal: Callable[[Cascade], None]
    host_survives: bool
    """The host's writes at A go on unharmed (the fault is on the asynchronous leg, or only slow)."""
    b_complete: bool
    """With fence data B's relay volume holds every write A acknowledged (B itself did not fail)."""


def _kill(w: str) -> Callable[[Cascade], None]:
    return lambda cs: cs.procs[w].stop(signal.SIGKILL)


def _restart(w: str) -> Callable[[Cascade], None]:
    def act(cs: Cascade) -> None:
        cs.start(w)
    return act


def _links(x: str, y: str, how: str, delay: float = 0.0) -> Callable[[Cascade], None]:
    def act(cs: Cascade) -> None:
        for key in ((x, y), (y, x)):
            p = cs.links[key]
            if how == "cut":
                p.cut()
            elif how == "heal":
                p.heal()
            else:
                p.delay = delay
    return act


SLOW = 0.05
"""Seconds each chunk is held on a slow link (a congested WAN)."""

FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("kill-a", _kill("a"), _restart("a"), host_survives=False, b_complete=True),
    Fault("kill-b", _kill("b"), _restart("b"), host_survives=False, b_complete=False),
    Fault("kill-c", _kill("c"), _restart("c"), host_survives=True, b_complete=True),
    Fault("cut-ab", _links("a", "b", "cut"), _links("a", "b", "heal"), host_survives=False, b_complete=True),
    Fault("cut-bc", _links("b", "c", "cut"), _links("b", "c", "heal"), host_survives=True, b_complete=True),
    Fault("slow-ab", _links("a", "b", "slow", SLOW), _links("a", "b", "slow", 0.0), host_survives=True,
          b_complete=True),
    Fault("slow-bc", _links("b", "c", "slow", SLOW), _links("b", "c", "slow", 0.0), host_survives=True,
          b_complete=True),
)}

RECOVERABLE: dict[str, set[tuple[str, str, str, str]]] = {
    # (A's ab, B's ab, B's bc, C's bc) right after the fault, per fault: what the documented
    # recovery resolves.  A killed: B's relay pairs go on (A → B waits for A's restart).
    "kill-a": {("down", "PAIR", "PAIR", "PAIR")},
    # B killed: A suspends by the fence at its next write for B; C keeps what it restored (its pair
    # waits for B).  When B had answered the last write before it died, A has not noticed yet (PAIR).
    "kill-b": {("PSUE", "down", "down", "PAIR"), ("PAIR", "down", "down", "PAIR")},
    "kill-c": {("PAIR", "PAIR", "PAIR", "down")},
    # A-B cut: A suspends by the fence at its next write for B (PAIR when B had answered the last one
    # before the cut); B may not have heard (PAIR) or may have noticed (PSUE).
    "cut-ab": {(a, b, "PAIR", "PAIR") for a in ("PSUE", "PAIR") for b in ("PSUE", "PAIR")},
    # B-C cut: the journal holds what C cannot read yet; an async pair may suspend.
    "cut-bc": {("PAIR", "PAIR", s, t) for s in ("PAIR", "PSUE") for t in ("PAIR", "PSUE")},
    "slow-ab": {("PAIR", "PAIR", "PAIR", "PAIR")},
    "slow-bc": {("PAIR", "PAIR", "PAIR", "PAIR")},
}


@dataclass
class Outcome:
    """What a case saw, for its report line."""

    moment: int
    acked: int
    states: tuple[str, str, str, str]
    c_prefix: int
    copied_ab: int
    copied_bc: int


def run_case(tmp: Path, fault_name: str, seed: int, log: Callable[[str], None] = print) -> Outcome:
    """One case: the cascade in PAIR under the stream, ``fault_name`` after the seed's moment."""
    fault = FAULTS[fault_name]
    rng = random.Random(seed)
    moment = rng.randrange(*MOMENTS)
    log(f"fault case cascade x {fault_name}: seed {seed}, fault after {moment} acknowledged writes")
    cs = Cascade(tmp)
    try:
        return _run(cs, fault, rng, moment, log)
    except BaseException:
        for w, sp in cs.procs.items():
            log(f"--- {w} ({sp.portal}) log tail ---\n{sp.log()[-3000:]}")
        raise
    finally:
        cs.stop()


def _run(cs: Cascade, fault: Fault, rng: random.Random, moment: int, log: Callable[[str], None]) -> Outcome:
    cs.setup()
    stream = Stream(cs.procs["a"], rng, moment, lambda: fault.inject(cs))
    stream.start()
    stream.hit.wait(60)
    assert stream.hit.is_set(), f"the fault never hit: {stream.acked} writes acked, {stream.error!r}"
    if fault.host_survives:
        stream.until(stream.acked + OUTAGE)
    stream.finish()
    if fault.host_survives:
        assert stream.error is None, f"a host write failed during {fault.name}: {stream.error!r}"
    log(f"  fault after {moment} acked writes + {stream.delay * 1000:.2f} ms: {stream.acked} acked, "
        f"{stream.issued} issued, stream ended by {type(stream.error).__name__ if stream.error else 'the test'}")
    states = (cs.state("a", "ab"), cs.state("b", "ab"), cs.state("b", "bc"), cs.state("c", "bc"))
    assert states in RECOVERABLE[fault.name], \
        f"A/ab {states[0]}, B/ab {states[1]}, B/bc {states[2]}, C/bc {states[3]}: no documented recovery covers it"
    # What the rules promise before any recovery.
    if fault.b_complete:
        stream.check_durable(cs.file("b"), "B's relay volume after the fault (fence data)")
    k = stream.check_prefix(cs.file("c"), "C after the fault")
    log(f"  before recovery: {states}; C holds writes 1..{k} of {stream.acked} acked")
    fault.heal(cs)
    recovered = _recover(cs)
    st = cs.drained(after=recovered)
    ab, bc = cs.pair("a", "ab"), cs.pair("b", "bc")
    rows = {"a/ab": ab, "b/ab": cs.pair("b", "ab"), "b/bc": bc, "c/bc": cs.pair("c", "bc")}
    assert all(r["state"] == "PAIR" for r in rows.values()), rows
    bound = AREA_TRACKS * TRACK
    for name, r in (("ab", ab), ("bc", bc)):  # by bitmap: the stream's tracks at most, never the volume
        assert r["copied_bytes"] <= bound, f"{name}'s recovery copied {r['copied_bytes']} bytes (bound {bound}): {r}"
    a_image = cs.file("a")
    stream.check_durable(a_image, "A after recovery")
    for w in ("b", "c"):
        image = cs.file(w)
        if image != a_image:
            diff = [off // 512 for off in range(0, SIZE, 4096) if image[off:off + 4096] != a_image[off:off + 4096]]
            raise AssertionError(f"after recovery {w.upper()}'s volume differs from A's in {len(diff)} blocks "
                                 f"(first lbas {diff[:8]}); {stream.acked} acked, {stream.issued} issued; {st}")
    log(f"  recovered: every pair PAIR, ab copied {ab['copied_bytes']} bytes, bc {bc['copied_bytes']}, "
        "A = B = C")
    return Outcome(moment, stream.acked, states, k, int(ab["copied_bytes"]), int(bc["copied_bytes"]))


def _recover(cs: Cascade) -> float:
    """The documented procedure once the fault is healed; the epoch time after which B's answers to
    C count for the drain (B's last restart or A → B's return to PAIR, whichever is later)."""
    _settle_or_resync(cs, "a", "ab")
    cs.wait("b", "ab")
    mark = time.time()
    _settle_or_resync(cs, "b", "bc")
    cs.wait("c", "bc")
    return mark


def _settle_or_resync(cs: Cascade, w: str, name: str, seconds: float = 30.0) -> None:
    """Pair ``name`` at its P-VOL's array ``w`` back in PAIR: by itself within SETTLE, else `pair
    resync` (asked again while the link to a restarted peer is not up yet)."""
    deadline = time.monotonic() + SETTLE
    state = cs.state(w, name)
    while state not in SUSPENDED and time.monotonic() < deadline:
        if state == "PAIR":
            return
        time.sleep(0.3)
        state = cs.state(w, name)
    if state in SUSPENDED:
        deadline = time.monotonic() + seconds
        while (cp := cs.cli(w, "pair", "resync", name)).returncode != 0:
            assert time.monotonic() < deadline, f"pair resync {name} at {w} kept failing: {cp.stderr}"
            time.sleep(0.5)
    cs.wait(w, name)

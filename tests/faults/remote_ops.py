"""The fault matrix's operations that move where hosts write (issue 19): the disaster drill
(``sync-takeover``, ``async-takeover``), the planned swap (``sync-swap``, ``async-swap``) and the
reverse resync (``sync-reverse``, ``async-reverse``) of a sync pair (fence data) and of an async
pair, on the rig of harness.py.  Each runs its own case: the host stream follows the array that serves (numbering on,
stream.py's :meth:`Stream.moved`), the recovery is README's failback procedure, and the invariants
are the matrix's: PAIR on both sides with the roles the procedure promises, every acknowledged
write (at either array) on both volumes, the volumes equal, every copy by bitmap (bounded bytes).
"""
from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from tests.conftest import SanlabProcess
from tests.faults.harness import LinkedArrays, Outcome
from tests.faults.stream import AREA_TRACKS, Stream
from tests.integration.test_sync_pairs import A, B, SIZE, TRACK

if TYPE_CHECKING:
    from tests.faults.matrix import Fault

AT_EACH = 50
"""Writes the host makes at each array it moves to."""
COPY_BOUND = AREA_TRACKS * TRACK
"""The most one swap's copy may send: every write of a case is in the stream's area."""
ASYNC_PASSES = 3
"""An async pair's copy under host writes sends a busy track at most three times: two passes
chase the writes it records meanwhile, the last runs with writes held (replication/pairs_core.py)."""
STEPS = 90.0
"""How long the recovery may take to bring the pair to PAIR with the roles it wants."""


def row(ar: LinkedArrays, sp: SanlabProcess) -> dict[str, Any] | None:
    """The array's half of p0 (None: the array is down)."""
    return ar.pair(sp) if ar.up(sp) else None


def seen(ar: LinkedArrays) -> tuple[str, str]:
    """Each half as "role state" (or "down"), for the report and the messages."""
    out = []
    for sp in (ar.a, ar.b):
        r = row(ar, sp)
        out.append("down" if r is None else f"{r['role']} {r['state']}")
    return out[0], out[1]


def ended(stream: Stream, seconds: float = 60.0) -> None:
    """The stream ended on a failed write within ``seconds`` (the host sees it must move)."""
    stream.join(seconds)
    assert not stream.is_alive(), f"the host's writes at {stream.target} went on after the fault and the {seconds:g} s"
    assert stream.error is not None


def pair_with_primary(ar: LinkedArrays, which: str, seconds: float = STEPS) -> None:
    """Bring p0 to PAIR with the P-VOL at array ``which`` by README's steps only: the array to serve
    still the S-VOL (a swap that did not happen, an S-VOL in SSWS) is swapped there (`pair swap`,
    asked again while the other array cannot take it yet, and so finishing a swap a fault cut
    short after the other array turned: both S-VOL, that one in COPY); a P-VOL suspended there is
    resynced (`pair resync`); a copy is waited for.  Two P-VOLs, or two S-VOLs neither in COPY, is
    a disagreement no documented step resolves."""
    here, there = ar.side(which), ar.side("b" if which == "a" else "a")
    deadline = time.monotonic() + seconds
    last = ""
    while True:
        mine, other = ar.pair(here), ar.pair(there)
        if mine["role"] == "P-VOL" and other["role"] == "S-VOL" and mine["state"] == other["state"] == "PAIR":
            return
        assert mine["role"] != other["role"] or mine["state"] == "COPY" or other["state"] == "COPY", \
            f"both halves {mine['role']} ({mine['state']}, {other['state']}): a disagreement no documented step resolves"
        if mine["role"] == "S-VOL":
            cp = ar.cli(here, "pair", "swap", "p0")
            last = f"swap at {which}: {cp.returncode} {cp.stderr.strip()}"
        elif mine["state"] in ("PSUE", "PSUS"):
            cp = ar.cli(here, "pair", "resync", "p0")
            last = f"resync at {which}: {cp.returncode} {cp.stderr.strip()}"
        assert time.monotonic() < deadline, \
            f"no PAIR with the P-VOL at {which} in {seconds:g} s: {mine}, {other}; last step: {last}"
        time.sleep(0.5)


def check_copy(ar: LinkedArrays, sp: SanlabProcess, where: str, since: int = 0, passes: int = 1) -> int:
    """The copies since the P side's ``copied_bytes`` (counted from the last swap) was ``since`` went
    by bitmap: at most the stream's area, never the volume.  ``passes``: how often a track the host
    writes during the copy may be sent (an async pair's: two passes chase, the last is held, README
    "Async pairs").  Returns ``copied_bytes`` now."""
    copied = int(ar.pair(sp)["copied_bytes"])
    bound = passes * COPY_BOUND
    assert copied - since <= bound, \
        f"{where}: copied {copied - since} bytes, more than the {bound} the case wrote ({passes} pass(es))"
    assert copied - since < SIZE // 2, f"{where}: copied {copied - since} bytes, half the volume or more"
    return copied


def check_end(ar: LinkedArrays, stream: Stream, primary: str) -> None:
    """The invariants after recovery: PAIR with the P-VOL at ``primary``, every acknowledged write on
    both volumes, the volumes equal."""
    p, s = ar.pair(ar.side(primary)), ar.pair(ar.side("b" if primary == "a" else "a"))
    assert (p["role"], p["state"], s["role"], s["state"]) == ("P-VOL", "PAIR", "S-VOL", "PAIR"), (p, s)
    a_image, b_image = ar.file(ar.a), ar.file(ar.b)
    stream.check_durable(a_image, "A after recovery")
    stream.check_durable(b_image, "B after recovery")
    if a_image != b_image:
        diff = [off // 512 for off in range(0, SIZE, 4096) if a_image[off:off + 4096] != b_image[off:off + 4096]]
        raise AssertionError(f"after recovery the volumes differ in {len(diff)} blocks (lba): {diff[:16]}")


def wait_for_line(sp: SanlabProcess, text: str, seconds: float = 30.0) -> None:
    """Until the array's log has a line holding ``text`` (read as it grows, every millisecond)."""
    deadline = time.monotonic() + seconds
    seen_upto = 0
    with open(sp.log_path, "rb") as f:
        while True:
            f.seek(seen_upto)
            chunk = f.read()
            if text.encode() in chunk:
                return
            seen_upto += chunk.rfind(b"\n") + 1  # a line not complete yet is read again
            assert time.monotonic() < deadline, f"{sp.portal} never logged {text} in {seconds:g} s"
            time.sleep(0.001)


def in_background(fn: Callable[[], Any]) -> Callable[[float], Any]:
    """Run ``fn`` on a thread; the returned call waits (at most its seconds) for ``fn``'s result."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()

    def result(seconds: float) -> Any:
        t.join(seconds)
        assert out, f"{fn} did not end in {seconds:g} s"
        return out[0]
    return result


def writes_at_b(ar: LinkedArrays, before: Stream, copied: int, log: Callable[[str], None]) -> tuple[Stream, int]:
    """The host writing on at B, the P-VOL after the recovery, once ``before`` ended: a fault after
    the exchange may have left B in PAIR with its session to A dead while no host wrote, and the
    host's first write at B then finds A unreachable: fence data refuses it (NOT READY, 02h/04h/03h)
    and suspends the pair (README, fence levels).  The documented answer is `pair resync` at B, and
    the host writes again: allowed once, only so.  The stream that ended, and ``copied`` with what
    that resync copied."""
    at_b = before.moved(ar.b, B)
    at_b.start()
    at_b.until(at_b.acked + AT_EACH, stop_on_error=True)
    if at_b.error is not None:
        assert "sense 2/04/03" in str(at_b.error) and ar.state(ar.b) == "PSUE", \
            f"a host write at B failed after the recovery: {at_b.error!r}, B {ar.pair(ar.b)}"
        log(f"  B's first writes met the fence ({ar.pair(ar.b)['reason']}): resync at B, the host writes again")
        pair_with_primary(ar, "b")
        copied = check_copy(ar, ar.b, "the resync at B", since=copied)
        at_b = at_b.moved(ar.b, B)
        at_b.start()
        at_b.until(at_b.acked + AT_EACH)
    at_b.finish()
    assert at_b.error is None, f"a host write at B failed after the recovery: {at_b.error!r}"
    return at_b, copied


class RemoteOp:
    """An operation whose case moves the host from array to array: it runs the whole case."""

    faults: frozenset[str] = frozenset()
    """The faults the operation is run with (its docstring says why not the others)."""

    def run(self, ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
            log: Callable[[str], None]) -> Outcome:
        """Set up, stream, inject at ``moment``, check the promise, recover and check the invariants."""
        raise NotImplementedError

    copy_passes = 1
    """How often a copy may send a track the host writes meanwhile (:func:`check_copy`)."""

    @staticmethod
    def paired(ar: LinkedArrays) -> None:
        """A sync pair, fence data, in PAIR (volumes known identical: all zeros)."""
        ar.create("--no-copy", "--fence", "data")
        ar.wait(ar.a, "PAIR")
        ar.wait(ar.b, "PAIR")


def async_paired(ar: LinkedArrays) -> None:
    """An async pair (journals ``ja`` at A, ``jb`` at B) in PAIR, volumes known identical."""
    ar.ok(ar.a, "journal", "create", "ja", *ar.journal_args("a"))
    ar.ok(ar.b, "journal", "create", "jb", *ar.journal_args("b"))
    ar.ok(ar.a, "pair", "create", "p0", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
          "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0", "--no-copy")
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")


class SyncTakeover(RemoteOp):
    """The disaster drill: at the moment the fault hits A's side, `sanlab pair takeover p0` runs at B
    while the host may still be writing at A; the host then writes at B.  horctakeover's table
    decides by what B sees: A gone (kill-p) or unreachable (link-cut) is an S-VOL takeover (exit 2,
    B SSWS); A still answering (a drive lost under the P-VOL, a slow link) makes it a swap (exit 1
    with the JSON result, B the P-VOL at once).  Promise right after: B holds every write A
    acknowledged (fence data).  Recovery (README, Swap): the fault healed, `pair swap` at B (A back
    unaware is refused by B and goes PSUE; B becomes the P-VOL and A catches up by bitmap), the host
    writing at B throughout; then the failback, `pair swap` at A, the host moving back to A.

    Left out: kill-s, drive-loss-s and full-fs-p (the fault is at the array that is to take over,
    or only fails A's writes: the drill has nothing to save), sync-create's COPY (an S-VOL in COPY
    refuses takeover: README)."""

    faults = frozenset({"kill-p", "link-cut", "drive-loss-p", "slow-peer"})
    EXIT = {"kill-p": 2, "link-cut": 2, "drive-loss-p": 1, "slow-peer": 1}
    """horctakeover's exit code for each fault: 2 S-VOL takeover, 1 swap (A answers, in step)."""

    def run(self, ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
            log: Callable[[str], None]) -> Outcome:
        self.paired(ar)
        at_a, cp = takeover_while_writing(ar, fault, rng, moment, self.EXIT[fault.name])
        ended(at_a)
        states = seen(ar)
        at_a.check_durable(ar.file(ar.b), "B right after the takeover")
        promise = f"B holds all {at_a.acked} writes A acknowledged"
        log(f"  takeover exit {cp.returncode}; A's host ended by {type(at_a.error).__name__} after {at_a.acked} "
            f"acked, {at_a.issued} issued; A {states[0]}, B {states[1]}; {promise}")
        at_b = at_a.moved(ar.b, B)
        at_b.start()
        at_b.until(at_b.acked + AT_EACH)
        fault.heal(ar)
        pair_with_primary(ar, "b")  # the host goes on writing at B meanwhile
        copied = check_copy(ar, ar.b, "the swap at B")
        at_b.until(at_b.acked + AT_EACH)
        log(f"  failover done: B the P-VOL in PAIR, copied {copied} bytes back to A; now the failback")
        swap = in_background(lambda: ar.cli(ar.a, "pair", "swap", "p0"))
        ended(at_b)  # B turned S-VOL: its write gate refuses the host
        cp = swap(120)
        assert cp.returncode == 0, f"swap at A: {cp.returncode} {cp.stderr}"
        home = back_at_a(ar, at_b)
        copied += check_copy(ar, ar.a, "the swap back at A")
        check_end(ar, home, "a")
        log(f"  recovered: A the P-VOL again, PAIR, {home.acked} writes, copied {copied} bytes in all, volumes equal")
        return Outcome(moment, home.acked, promise, states, copied)


class SyncSwap(RemoteOp):
    """A planned swap, `sanlab pair swap p0` at B while A is reachable and the host writes at A, the
    fault hitting at a moment the seed picks: up to a second after the swap was asked (before the
    command reaches B, during the exchange or after it), or up to 20 ms after A's half turned S-VOL
    (its log says so), when B may not have turned yet.  Once A's half has turned S-VOL its write gate refuses the host, which moves to B.  The
    promise right after: every write the host had acknowledged is on both volumes (fence data, and
    a swap drains before it turns).  Recovery (README): the fault healed, then whatever the swap
    reached is finished by its own steps, the swap asked again at B if it did not happen, B
    resynced if it swapped and was suspended; the host writes at B.  The roles promised: B the
    P-VOL, A the S-VOL.

    A fault after the swap ended (kill-p, link-cut) may leave B, the P-VOL now, in PAIR with its
    session to A gone while no host wrote: the host's first write at B then finds A unreachable and
    fence data refuses it (NOT READY, 02h/04h/03h) and suspends the pair (README, fence levels);
    the documented answer is `pair resync` at B, and the host writes again.  That is allowed once,
    only so.

    Left out: slow-peer (a swap over a slow link is only slower: nothing breaks half way), the
    drive and filesystem faults (local to one array, they do not touch the swap's exchange)."""

    faults = frozenset({"kill-p", "kill-s", "link-cut"})
    AFTER = {"asked": 1.0, "A turned": 0.02}
    """The moments the seed picks from: the most seconds after the swap was asked, after A turned."""
    TURNED = '"swapped by the peer"'
    """A's log line when its half turned S-VOL (the pair_state event's reason)."""

    @classmethod
    def fault_later(cls, ar: LinkedArrays, fault: Fault, anchor: str, later: float) -> None:
        """The fault, ``later`` seconds after ``anchor`` (the swap asked: now; or A turned)."""
        if anchor == "A turned":
            wait_for_line(ar.a, cls.TURNED)
        time.sleep(later)
        fault.inject(ar)

    def run(self, ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
            log: Callable[[str], None]) -> Outcome:
        self.paired(ar)
        anchor = rng.choice(sorted(self.AFTER))
        later = rng.uniform(0.0, self.AFTER[anchor])
        swap: list[Callable[[float], Any]] = []
        injected: list[Callable[[float], Any]] = []

        def hit() -> None:
            swap.append(in_background(lambda: ar.cli(ar.b, "pair", "swap", "p0")))
            injected.append(in_background(lambda: self.fault_later(ar, fault, anchor, later)))
        at_a = Stream(ar.a, rng, moment, hit)
        at_a.start()
        at_a.hit.wait(60)
        assert at_a.hit.is_set(), f"the swap never started: {at_a.acked} writes acked, {at_a.error!r}"
        injected[0](30)
        cp: subprocess.CompletedProcess[str] = swap[0](120)
        ended(at_a)
        states = seen(ar)
        for sp in (ar.a, ar.b):  # a killed array's file is what it wrote
            at_a.check_durable(ar.file(sp), f"{ar.which(sp).upper()} right after the fault")
        promise = f"both volumes hold all {at_a.acked} writes A acknowledged"
        log(f"  swap asked, the fault {later * 1000:.0f} ms after {anchor}; swap exit {cp.returncode} "
            f"{cp.stderr.strip()[:200]}; A's host ended by {type(at_a.error).__name__} after {at_a.acked} acked; "
            f"A {states[0]}, B {states[1]}; {promise}")
        fault.heal(ar)
        pair_with_primary(ar, "b")
        copied = check_copy(ar, ar.b, "the swap", passes=self.copy_passes)
        at_b, copied = writes_at_b(ar, at_a, copied, log)
        check_end(ar, at_b, "b")
        log(f"  recovered: B the P-VOL, PAIR, {at_b.acked} writes, copied {copied} bytes, volumes equal")
        return Outcome(moment, at_b.acked, promise, states, copied)


class SyncReverse(RemoteOp):
    """A reverse resync: the pair split `--rw` at A and the host writing at B's S-VOL, then `sanlab
    pair resync p0 --reverse` at A (B's data wins: B is asked to swap, becomes the P-VOL and sends A
    what differs, README) while the host goes on writing at B; the fault hits up to a second after
    the resync was asked (before it reaches B, during the exchange or during the copy back).
    Promise right after: B holds every write the host made there and was acknowledged (B's own
    volume; a killed B's file is what it wrote).  Recovery (README): the fault healed, then `pair
    swap` at B if B has not swapped (what the refusal of a second `resync --reverse` at A says to
    do), `pair resync` at B if it swapped and was suspended; a host write B failed (fence data, B
    the P-VOL with A gone) is written again there after it.  The roles promised: B the P-VOL."""

    faults = frozenset({"kill-p", "kill-s", "link-cut", "slow-peer", "drive-loss-p", "drive-loss-s",
                        "full-fs-p", "full-fs-s"})
    WITHIN = 1.0
    """The fault hits at most this many seconds after the reverse resync was asked."""

    def run(self, ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
            log: Callable[[str], None]) -> Outcome:
        self.paired(ar)
        ar.ok(ar.a, "pair", "split", "p0", "--rw")
        ar.wait(ar.a, "PSUS")
        ar.wait(ar.b, "SSUS")
        later = rng.uniform(0.0, self.WITHIN)
        asked: list[Callable[[float], Any]] = []
        injected: list[Callable[[float], Any]] = []

        def inject_later() -> None:
            time.sleep(later)
            fault.inject(ar)

        def hit() -> None:
            asked.append(in_background(lambda: ar.cli(ar.a, "pair", "resync", "p0", "--reverse")))
            injected.append(in_background(inject_later))
        at_b = Stream(ar.b, rng, moment, hit, B)
        at_b.start()
        at_b.hit.wait(60)
        assert at_b.hit.is_set(), f"the reverse resync never started: {at_b.acked} writes acked, {at_b.error!r}"
        injected[0](30)
        cp: subprocess.CompletedProcess[str] = asked[0](120)
        at_b.until(at_b.acked + AT_EACH, stop_on_error=True)  # the host goes on, unless B refuses
        at_b.halt.set()
        at_b.join(60)
        assert not at_b.is_alive(), "the host's stream at B did not stop"
        states = seen(ar)
        if ar.up(ar.b) or ar.which(ar.b) not in ar.raid:
            at_b.check_durable(ar.file(ar.b), "B right after the fault")
        promise = f"B holds all {at_b.acked} writes it acknowledged"
        log(f"  reverse resync asked, the fault {later * 1000:.0f} ms later; resync exit {cp.returncode} "
            f"{cp.stderr.strip()[:200]}; B's host {'ended by ' + type(at_b.error).__name__ if at_b.error else 'went on'} "
            f"after {at_b.acked} acked; A {states[0]}, B {states[1]}; {promise}")
        fault.heal(ar)
        pair_with_primary(ar, "b")
        # B killed once it is the P-VOL (the exchange done) resends its activity log's tracks when
        # it restarts (README, difference bitmap): a second copy by bitmap, of the same area.
        resend = 1 if fault.name == "kill-s" else 0
        copied = check_copy(ar, ar.b, "the reverse resync", passes=self.copy_passes + resend)
        again, copied = writes_at_b(ar, at_b, copied, log)
        check_end(ar, again, "b")
        log(f"  recovered: B the P-VOL, PAIR, {again.acked} writes, copied {copied} bytes, volumes equal")
        return Outcome(moment, again.acked, promise, states, copied)


class AsyncTakeover(RemoteOp):
    """The disaster drill of an async pair: at the moment the fault hits A's side, `sanlab pair
    takeover p0` runs at B while the host writes at A; the host then writes at B.  A gone (kill-p)
    or unreachable (link-cut) is an S-VOL takeover (exit 2, B SSWS, every entry B acquired applied
    first); A answering (a drive lost under the P-VOL, a slow link) makes it a swap (exit 1, B the
    P-VOL at once, after pulling what A's journal held).  The promise is the async one: B holds a
    prefix of the stream, writes 1..k; the writes A took after k are given up by the takeover
    (README: an async copy is a past state; a planned swap gives up what the primary takes after
    its catch-up) and must not show anywhere after recovery.  Recovery (README, Swap): the fault
    healed, `pair swap` at B (A's unsent journal tail becomes its bitmap, B copies back only the
    difference) with the host writing at B; then the failback: the host stops at B (README: stop
    them first), `pair swap` at A, the host writes at A.  Every copy by bitmap, the volumes equal.

    Left out: kill-s, drive-loss-s and the filesystem faults (at the array that is to take over,
    or only failing A's writes: the drill has nothing to save)."""

    faults = frozenset({"kill-p", "link-cut", "drive-loss-p", "slow-peer"})
    EXIT = {"kill-p": 2, "link-cut": 2, "drive-loss-p": 1, "slow-peer": 1}

    def run(self, ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
            log: Callable[[str], None]) -> Outcome:
        async_paired(ar)
        at_a, cp = takeover_while_writing(ar, fault, rng, moment, self.EXIT[fault.name])
        at_a.halt.set()  # the host moves to B (a swap's gate may have ended it already)
        at_a.join(60)
        assert not at_a.is_alive(), "the host's stream at A did not stop"
        states = seen(ar)
        k = at_a.check_prefix(ar.file(ar.b), "B right after the takeover")
        promise = f"B a prefix (writes 1..{k}; {at_a.acked} acked at A)"
        log(f"  takeover exit {cp.returncode}; A's host ended by {type(at_a.error).__name__ if at_a.error else 'the test'} "
            f"after {at_a.acked} acked, {at_a.issued} issued; A {states[0]}, B {states[1]}; {promise}")
        at_b = at_a.moved(ar.b, B)
        given_up = set(range(k + 1, at_a.issued + 1))
        at_b.unsure -= given_up
        at_b.refused |= given_up
        at_b.start()
        at_b.until(at_b.acked + AT_EACH)
        fault.heal(ar)
        pair_with_primary(ar, "b")  # the host goes on writing at B meanwhile
        copied = check_copy(ar, ar.b, "the swap at B", passes=ASYNC_PASSES)
        at_b.until(at_b.acked + AT_EACH)
        at_b.finish()
        assert at_b.error is None, f"a host write at B failed after the failover: {at_b.error!r}"
        wait_restored(ar, ar.a)
        at_b.check_durable(ar.file(ar.a), "A, the S-VOL, after the failover")
        log(f"  failover done: B the P-VOL in PAIR, copied {copied} bytes back to A; now the failback")
        cp = ar.cli(ar.a, "pair", "swap", "p0")
        assert cp.returncode == 0, f"swap at A: {cp.returncode} {cp.stderr}"
        home = back_at_a(ar, at_b)
        copied += check_copy(ar, ar.a, "the swap back at A", passes=ASYNC_PASSES)
        wait_restored(ar, ar.b)
        check_end(ar, home, "a")
        log(f"  recovered: A the P-VOL again, PAIR, {home.acked} writes, copied {copied} bytes in all, volumes equal")
        return Outcome(moment, home.acked, promise, states, copied)


class AsyncReverse(SyncReverse):
    """:class:`SyncReverse` of an async pair: B, the S-VOL split ``--rw``, wins; its writes are
    copied back to A by bitmap (three passes at most under the host's writes), then A pulls B's
    journal.  The same promise (B holds every write it acknowledged), recovery and invariants."""

    copy_passes = ASYNC_PASSES

    @staticmethod
    def paired(ar: LinkedArrays) -> None:
        async_paired(ar)


class AsyncSwap(RemoteOp):
    """A planned swap of an async pair made as README says: the host stops writing at A (at the
    moment the seed picks), then `sanlab pair swap p0` at B (B pulls what A's journal holds and
    applies it, and the roles exchange), the fault hitting as in :class:`SyncSwap` (up to a second
    after the swap was asked, or up to 20 ms after A's half turned S-VOL).  Promise right after:
    B holds a prefix of the stream in order (what it had not pulled is in A's journal or, once A
    turned, A's bitmap).  Recovery as for the sync swap: the fault healed, the swap finished or
    asked again at B, B resynced if suspended; the host writes at B.  Then every write A
    acknowledged is on both volumes: the host had stopped, so the swap gives nothing up.

    Left out: slow-peer and the drive and filesystem faults, as for sync-swap."""

    faults = frozenset({"kill-p", "kill-s", "link-cut"})
    copy_passes = ASYNC_PASSES

    def run(self, ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
            log: Callable[[str], None]) -> Outcome:
        async_paired(ar)
        anchor = rng.choice(sorted(SyncSwap.AFTER))
        later = rng.uniform(0.0, SyncSwap.AFTER[anchor])
        at_a = Stream(ar.a, rng, moment, lambda: None)
        at_a.start()
        at_a.hit.wait(60)
        at_a.halt.set()  # README: stop the host's writes, then swap
        at_a.join(60)
        assert not at_a.is_alive() and at_a.error is None, f"the host's writes at A: {at_a.error!r}"
        swap = in_background(lambda: ar.cli(ar.b, "pair", "swap", "p0"))
        in_background(lambda: SyncSwap.fault_later(ar, fault, anchor, later))(30)
        cp: subprocess.CompletedProcess[str] = swap(120)
        states = seen(ar)
        if ar.up(ar.b):
            held_restored(ar, ar.b)
        k = at_a.check_prefix(ar.file(ar.b), "B right after the fault")
        promise = f"B a prefix (writes 1..{k} of {at_a.acked}), after recovery all of them"
        log(f"  swap asked, the fault {later * 1000:.0f} ms after {anchor}; swap exit {cp.returncode} "
            f"{cp.stderr.strip()[:200]}; A {states[0]}, B {states[1]}; {promise}")
        fault.heal(ar)
        pair_with_primary(ar, "b")
        copied = check_copy(ar, ar.b, "the swap", passes=self.copy_passes)
        at_b, copied = writes_at_b(ar, at_a, copied, log)
        wait_restored(ar, ar.a)
        check_end(ar, at_b, "b")
        log(f"  recovered: B the P-VOL, PAIR, {at_b.acked} writes, copied {copied} bytes, volumes equal")
        return Outcome(moment, at_b.acked, promise, states, copied)


def held_restored(ar: LinkedArrays, sp: SanlabProcess, seconds: float = 30.0) -> None:
    """Until the array's journal holds no entry it has yet to apply or send (B's ``jb``, A's ``ja``):
    its volume is then read in one piece, no restore running beside the read."""
    name = "ja" if sp is ar.a else "jb"
    deadline = time.monotonic() + seconds
    while (st := ar.ok(sp, "journal", "status", name, "--json"))["entries"]:
        assert time.monotonic() < deadline, f"{name} still holds entries after {seconds:g} s: {st}"
        time.sleep(0.2)


def back_at_a(ar: LinkedArrays, at_b: Stream) -> Stream:
    """The failback's end: the host writes at A again while the pair comes to PAIR with A the
    P-VOL; none of its writes may fail.  The stream at A."""
    home = at_b.moved(ar.a, A)
    home.start()
    home.until(home.acked + AT_EACH)
    pair_with_primary(ar, "a")
    home.finish()
    assert home.error is None, f"a host write at A failed after the failback: {home.error!r}"
    return home


def takeover_while_writing(ar: LinkedArrays, fault: Fault, rng: random.Random, moment: int,
                           want: int) -> tuple[Stream, subprocess.CompletedProcess[str]]:
    """The drill's first half: the host writes at A; when the fault hits A's side, `sanlab pair
    takeover p0` runs at B.  Checked: it exits ``want`` (horctakeover's code) with its JSON saying
    which takeover it made.  The stream at A and the command's result."""
    takeover: list[Callable[[float], Any]] = []

    def hit() -> None:
        fault.inject(ar)
        takeover.append(in_background(lambda: ar.cli(ar.b, "pair", "takeover", "p0")))
    at_a = Stream(ar.a, rng, moment, hit)
    at_a.start()
    at_a.hit.wait(60)
    assert at_a.hit.is_set(), f"the fault never hit: {at_a.acked} writes acked, {at_a.error!r}"
    cp: subprocess.CompletedProcess[str] = takeover[0](120)
    assert cp.returncode == want, f"takeover at B exited {cp.returncode}, not {want}: {cp.stdout}{cp.stderr}"
    assert cp.stdout.strip(), f"takeover at B said nothing on stdout (exit {cp.returncode}): {cp.stderr}"
    assert json.loads(cp.stdout)["takeover"] == ("swap" if want == 1 else "svol"), cp.stdout
    return at_a, cp


def wait_restored(ar: LinkedArrays, secondary: SanlabProcess, seconds: float = 60.0) -> None:
    """Until the async secondary at ``secondary`` restored everything its primary handed out (its
    journal empty and no lag, as a pull after now said)."""
    name = "ja" if secondary is ar.a else "jb"
    after = time.time()
    deadline = time.monotonic() + seconds
    while True:
        st = ar.ok(secondary, "journal", "status", name, "--json")
        if (st["role"] == "secondary" and st["lag_entries"] == 0 and st["entries"] == 0
                and (st["primary_seen"] or 0) > after):
            return
        assert time.monotonic() < deadline, f"{name} did not drain in {seconds:g} s: {st}"
        time.sleep(0.2)


REMOTE_OPS: dict[str, Callable[[], RemoteOp]] = {"sync-takeover": SyncTakeover, "sync-swap": SyncSwap,
                                                 "sync-reverse": SyncReverse, "async-takeover": AsyncTakeover,
                                                 "async-swap": AsyncSwap, "async-reverse": AsyncReverse}

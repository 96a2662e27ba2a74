"""The fault matrix of issue 19: (pair operation) x (fault) x (moment), each case a real pair of
`sanlab serve` processes, A (P-VOL) on 127.0.0.1 and B (S-VOL) on 127.0.0.2, that reach each other
only through two TCP relays on 127.0.0.3 the harness can cut and heal.

A case runs a host stream (QD1, our initiator) at A's LUN 0: write i (1, 2, ...) puts 4 KiB at a
block the seed picks, holding (i, lba) repeated, so any image of the volume says which write each
block holds. The seed also picks the moment: after how many acknowledged writes the fault hits.
After the fault the case checks what the pair's rules promise at once (sync, fence data: every
acknowledged write is at the S-VOL; async: the S-VOL holds a prefix of the stream), then recovers
by the README's procedure (restart the killed array or heal the link; `pair resync` at A if the
pair stayed suspended), then the invariants: both halves PAIR, the resync went by bitmap (the bytes
copied bounded by the tracks the case wrote, never the volume), A holds every acknowledged write and
B's volume equals A's byte for byte.

The rig (the arrays, their relays, RAID groups and small filesystems) is harness.py; the host stream
and its checks stream.py; the operations that move the host from array to array (takeover, swap),
with their own run and recovery, remote_ops.py.

Adding a case is one row of ``MATRIX``; a new operation or fault is one class in ``OPS`` / ``FAULTS``.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess
from tests.faults.harness import (
    JOURNAL_DRIVES, JOURNAL_GROUP, LOST_DRIVE, LinkedArrays, Outcome
)
from tests.faults.remote_ops import REMOTE_OPS, RemoteOp
from tests.faults.stream import AREA_TRACKS, BS, CHUNK, Stream
from tests.integration.test_async_pairs import wait_drained
from tests.integration.test_sync_pairs import A, B, SIZE, TRACK

DIRTY = range(32, 64)
"""Tracks the resync operation writes while the pair is split (what the resync must send)."""
SETTLE = 15.0
"""How long recovery waits for a pair to come back to PAIR by itself before asking for a resync."""


# ---- operations -----------------------------------------------------------------------------------

class Op:
    """A pair operation: ``setup`` makes the pair and brings it to the moment the stream starts;
    ``promise`` checks, right after the fault, what the pair's rules promise at B's S-VOL."""

    mode = "sync"
    host_survives: frozenset[str] = frozenset({"slow-peer"})
    """The faults the host's writes must not notice (async: anything but losing A)."""
    extra_tracks = 0
    """Tracks beyond the stream's area a resync may legitimately send."""
    settles_split = False
    """The pair is split when the fault hits: recovery resyncs it even when it is in PSUS."""

    def setup(self, ar: LinkedArrays) -> None:
        ar.create("--no-copy", "--fence", "data")
        ar.wait(ar.a, "PAIR")
        ar.wait(ar.b, "PAIR")

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        stream.check_durable(ar.file(ar.b), "S-VOL after the fault")
        return "every acked write at the S-VOL"

    def copy_bound(self) -> tuple[int, bool]:
        """The most bytes recovery may copy, and whether that must stay under half the volume
        (resync by bitmap, never a silent full copy)."""
        return (AREA_TRACKS + self.extra_tracks) * TRACK, True


class SyncPair(Op):
    """A sync pair (fence data) in PAIR under the stream."""


class SyncResync(Op):
    """A sync pair split while 32 tracks are written, then resynced (paced: 0.5 MiB/s, 4 s) under the
    stream; the fault hits while the resync copies (or just after)."""

    extra_tracks = len(DIRTY)

    def setup(self, ar: LinkedArrays) -> None:
        ar.create("--no-copy", "--fence", "data", "--pace", "0.5")
        split_dirty_resync(ar)

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        # The stream's tracks were in step when the resync began (not in its bitmap): a write to a
        # track the copy does not have to send is mirrored before GOOD (README, initial copy), so
        # fence data holds for them during COPY as in PAIR. The dirty tracks are the copy's business.
        stream.check_durable(ar.file(ar.b), "S-VOL after the fault (during COPY)")
        return "every acked write at the S-VOL (its tracks were in step)"


class SyncCreate(Op):
    """A sync pair created with its initial copy (paced: 2 MiB/s, 4 s for the 8 MiB) while the
    stream writes: the fault hits during the copy (or just after).  Until PAIR the S-VOL is no
    copy (README, initial copy): nothing is promised there; after recovery the copy must have
    resumed from its bitmap (the volume sent once, plus the stream's tracks), never restarted."""

    def setup(self, ar: LinkedArrays) -> None:
        ar.create("--fence", "data", "--pace", "2")

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        return "none until PAIR (the initial copy)"

    def copy_bound(self) -> tuple[int, bool]:
        return SIZE + AREA_TRACKS * TRACK, False


class Split:
    """A pair split (PSUS at A, SSUS at B) while the stream writes at A: the S-VOL keeps the image of
    the split, A's difference bitmap the tracks to resend; recovery is `pair resync`.  Mixed in
    before the pair's kind (:class:`Op`, :class:`AsyncPair`), whose setup forms the pair."""

    host_survives = frozenset({"kill-s", "link-cut", "slow-peer", "full-fs-s"})
    settles_split = True

    def setup(self, ar: LinkedArrays) -> None:
        super().setup(ar)  # type: ignore[misc]  # the pair's kind, after this in the MRO
        ar.ok(ar.a, "pair", "split", "p0")
        ar.wait(ar.a, "PSUS")
        ar.wait(ar.b, "SSUS")

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        if ar.which(ar.b) in ar.raid and ar.b.proc.poll() is not None:
            return "S-VOL down (RAID: read after recovery)"
        held = stream.blocks(ar.file(ar.b))
        assert not any(held.values()), f"the S-VOL took writes made after the split: {held}"
        return "the S-VOL still the image of the split"


class SyncSplit(Split, Op):
    """A sync pair (fence data) split under the stream (:class:`Split`)."""


class AsyncPair(Op):
    """An async pair (journals of 16 MiB) in PAIR under the stream."""

    mode = "async"
    host_survives = frozenset({"kill-s", "link-cut", "slow-peer", "full-fs-s"})

    def setup(self, ar: LinkedArrays) -> None:
        self.journals(ar)
        self.create(ar, "--no-copy")
        ar.wait(ar.a, "PAIR")
        ar.wait(ar.b, "PAIR")

    journal_options: tuple[str, ...] = ()
    """More `journal create` options for A's journal (a fault's: JournalFull)."""

    def journals(self, ar: LinkedArrays) -> None:
        ar.ok(ar.a, "journal", "create", "ja", *ar.journal_args("a"), *self.journal_options)
        ar.ok(ar.b, "journal", "create", "jb", *ar.journal_args("b"))

    @staticmethod
    def create(ar: LinkedArrays, *extra: str) -> None:
        ar.ok(ar.a, "pair", "create", "p0", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
              "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0", *extra)

    restore_stalls = False
    """The fault keeps B from restoring (its S-VOL's filesystem full): its image is read as it is."""

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        # B up: it restores what it acquired before we look (nothing more arrives during the fault).
        settles = ar.b.proc.poll() is None and not self.restore_stalls
        b_image = settled_s_vol(ar) if settles else ar.file(ar.b)
        k = stream.check_prefix(b_image, "S-VOL after the fault")
        return f"S-VOL a prefix (writes 1..{k} of {stream.acked} acked)"


class AsyncCreate(AsyncPair):
    """An async pair created with its initial copy (paced: 2 MiB/s, 4 s for the 8 MiB) while the
    stream writes: the fault hits during the copy (or just after).  As for sync-create, the S-VOL is
    no copy until PAIR (README: the initial copy goes by bitmap, writes meanwhile recorded and
    copied); after recovery the copy must have resumed from its bitmap, never restarted."""

    def setup(self, ar: LinkedArrays) -> None:
        self.journals(ar)
        self.create(ar, "--pace", "2")

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        return "none until PAIR (the initial copy)"

    def copy_bound(self) -> tuple[int, bool]:
        return SIZE + AREA_TRACKS * TRACK, False


class AsyncSplit(Split, AsyncPair):
    """An async pair split under the stream (:class:`Split`): every entry B had acquired restored,
    the rest to A's bitmap."""


class AsyncResync(AsyncPair):
    """An async pair split while 32 tracks are written, then resynced (paced: 0.5 MiB/s, 4 s) under
    the stream; the fault hits while the resync copies (or just after).  A resync goes by bitmap
    as the initial copy does, so the S-VOL is no consistent image until PAIR: nothing is promised
    there; after recovery the copy resumed from its bitmap."""

    extra_tracks = len(DIRTY)

    def setup(self, ar: LinkedArrays) -> None:
        self.journals(ar)
        self.create(ar, "--no-copy", "--pace", "0.5")
        split_dirty_resync(ar)

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        return "none until PAIR (a resync by bitmap)"


def split_dirty_resync(ar: LinkedArrays) -> None:
    """The pair just made, once PAIR: split, :data:`DIRTY` written at A, resynced (the copy paced
    by the pair's ``--pace``, so the stream and the fault meet it under way)."""
    ar.wait(ar.a, "PAIR")
    ar.ok(ar.a, "pair", "split", "p0")
    ar.wait(ar.a, "PSUS")
    dirty(ar)
    assert ar.pair(ar.a)["pending_bytes"] == len(DIRTY) * TRACK
    ar.ok(ar.a, "pair", "resync", "p0")


def dirty(ar: LinkedArrays) -> None:
    """The tracks :data:`DIRTY` written at A (the pair split), each with its own byte."""
    async def go() -> None:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:faults", command_timeout=10.0)
        async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
            await s.clear_unit_attentions(0)
            for t in DIRTY:
                await s.write16(0, t * TRACK // BS, bytes([t]) * TRACK, BS)
    asyncio.run(go())


def settled_s_vol(ar: LinkedArrays, seconds: float = 30.0) -> bytes:
    """B's volume once it restored every entry it holds (nothing more arrives while the fault lasts)."""
    deadline = time.monotonic() + seconds
    while ar.ok(ar.b, "journal", "status", "jb", "--json")["entries"]:
        assert time.monotonic() < deadline, "B did not restore what it acquired"
        time.sleep(0.2)
    return ar.file(ar.b)


# ---- faults ---------------------------------------------------------------------------------------

class Fault:
    name = ""
    until_refused = False
    """The host goes on after the fault until a write is refused (what the fault is about)."""
    refusal = ""
    """With ``until_refused``: what the refusal must say (its sense, as ScsiCommandError prints it)."""
    must_refuse = True
    """With ``until_refused``: some write of the stream must meet the fault (else it may)."""
    fenced = ""
    """Another refusal allowed: the fence holding once an earlier write (or the copy) met the fault."""

    def refusals(self) -> tuple[str, ...]:
        return (self.refusal, self.fenced) if self.fenced else (self.refusal,)
    raid = False
    small = False
    """The ``side`` array's LUN 0 file on a small filesystem of its own."""
    journal_fs = False
    """The ``side`` array's journals on a tmpfs of their own."""
    journal_raid = False
    """The ``side`` array's journal on a RAID-5 catalog volume."""
    side = ""
    """The array whose LUN 0 (or journal) the fault is about ("a", "b")."""
    unnoticed = False
    """Host writes go on whatever the operation (RAID-5 outlives a drive, a journal was allocated in full)."""

    journal_options: tuple[str, ...] = ()
    """`journal create` options the fault needs at A's journal (async operations pass them on)."""

    def inject(self, ar: LinkedArrays) -> None:
        raise NotImplementedError

    def heal(self, ar: LinkedArrays) -> None:
        raise NotImplementedError

    def outage(self, ar: LinkedArrays, stream: Stream) -> None:
        """The host's writes while the fault lasts, when it is not to notice it."""
        stream.until(stream.acked + OUTAGE)


class KillP(Fault):
    name = "kill-p"

    def inject(self, ar: LinkedArrays) -> None:
        ar.a.stop(signal.SIGKILL)

    def heal(self, ar: LinkedArrays) -> None:
        ar.a = ar.start("a")


class KillS(Fault):
    name = "kill-s"

    def inject(self, ar: LinkedArrays) -> None:
        ar.b.stop(signal.SIGKILL)

    def heal(self, ar: LinkedArrays) -> None:
        ar.b = ar.start("b")


class LinkCut(Fault):
    name = "link-cut"

    def inject(self, ar: LinkedArrays) -> None:
        ar.to_a.cut()
        ar.to_b.cut()

    def heal(self, ar: LinkedArrays) -> None:
        ar.to_a.heal()
        ar.to_b.heal()


class JournalFull(LinkCut):
    """An async pair's link cut for longer than its journal can hold (A's journal made with
    `--threshold 25 --full-timeout 1`: PFUL past 4 of its 16 MiB, PFUS a second later): the host
    writes on until A shows PFUS, and never notices (README: a host write never fails for want of
    journal space; the unsent entries become the difference bitmap).  Recovery: the link healed,
    `pair resync` at A copies that difference only (bounded by the stream's tracks)."""

    name = "journal-full"
    unnoticed = True
    journal_options = ("--threshold", "25", "--full-timeout", "1")
    SECONDS = 180.0

    def outage(self, ar: LinkedArrays, stream: Stream) -> None:
        deadline = time.monotonic() + self.SECONDS
        while ar.state(ar.a) != "PFUS":
            assert time.monotonic() < deadline, \
                f"A not PFUS {self.SECONDS:g} s into the outage: {ar.pair(ar.a)}"
            stream.until(stream.acked + OUTAGE, timeout=self.SECONDS)
        stream.until(stream.acked + OUTAGE)  # and on into the bitmap


class SlowPeer(Fault):
    """Both directions between A and B held 50 ms a chunk (a congested WAN, a peer whose disks lag):
    nothing may fail or suspend, the host only waits longer."""
    name = "slow-peer"
    DELAY = 0.05

    def inject(self, ar: LinkedArrays) -> None:
        ar.to_a.delay = ar.to_b.delay = self.DELAY

    def heal(self, ar: LinkedArrays) -> None:
        ar.to_a.delay = ar.to_b.delay = 0.0


class DriveLoss(Fault):
    """A drive file of the RAID-5 group under the P-VOL (``side`` a) or the S-VOL (b) cut to nothing,
    as a disk that died: the array fails the member at its next short read and serves degraded;
    nothing may fail or suspend.  Recovery is README's: `admin fail-drive` (when the array has not
    failed it yet), `admin replace-drive` in the same slot, `admin wait-rebuild`."""

    side = "a"
    raid = True
    unnoticed = True
    group = "rg0"

    def drive(self, sp: SanlabProcess) -> Path:
        """The drive file that dies."""
        return sp.data_dir / "drives" / f"d{LOST_DRIVE}.img"

    def replacement(self) -> tuple[str, ...]:
        """`replace-drive`'s arguments beyond group and index: none for a configuration's group (its slot)."""
        return ()

    def inject(self, ar: LinkedArrays) -> None:
        os.truncate(self.drive(ar.side(self.side)), 0)

    def heal(self, ar: LinkedArrays) -> None:
        sp = ar.side(self.side)
        replace_lost_drive(lambda *words: ar.ok(sp, *words), self.group, self.replacement())


def lose_drive(sp: SanlabProcess) -> None:
    """Drive :data:`LOST_DRIVE` of group rg0 cut to nothing, as a disk that died."""
    os.truncate(sp.data_dir / "drives" / f"d{LOST_DRIVE}.img", 0)


def replace_lost_drive(ok: Callable[..., Any], group: str = "rg0", replacement: tuple[str, ...] = ()) -> None:
    """README's procedure for a lost drive, through ``ok`` (the array's CLI: words -> parsed output):
    `admin fail-drive` when the array has not failed it yet, `admin replace-drive` (in its slot, or
    ``replacement``'s ``path=``), `admin wait-rebuild`."""
    row = next(g for g in ok("show", "--json")["raid_groups"] if g["name"] == group)
    if row["drives"][LOST_DRIVE]["state"] != "failed":
        ok("admin", "fail-drive", f"group={group}", f"index={LOST_DRIVE}")
    ok("admin", "replace-drive", f"group={group}", f"index={LOST_DRIVE}", *replacement)
    ok("admin", "wait-rebuild", f"group={group}")


class FullFs(Fault):
    """The filesystem under the P-VOL's file (sparse) filled by another file: A's writes to blocks
    not allocated yet fail (ENOSPC).  The host gets CHECK CONDITION for them, never GOOD; nothing
    it was acknowledged may be lost, and the S-VOL must not keep a write the P-VOL could not make.
    Recovery: the filler removed, host writes go on."""

    name = "full-fs-p"
    side = "a"
    small = True
    until_refused = True
    refusal = "sense 7/27/07"  # DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT: a thin LU without room

    def filesystem(self, ar: LinkedArrays) -> Path:
        """The filesystem the filler fills."""
        return ar.small[self.side]

    def inject(self, ar: LinkedArrays) -> None:
        fill_up(self.filesystem(ar))

    def heal(self, ar: LinkedArrays) -> None:
        (self.filesystem(ar) / "filler").unlink()


def fill_up(fs: Path) -> None:
    """The filesystem mounted at ``fs`` filled by a file ``filler`` (until ENOSPC)."""
    with open(fs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\xff" * (1 << 20))
                f.flush()
        except OSError:
            pass  # full


class FullFsS(FullFs):
    """The filesystem under the S-VOL's file (sparse) filled: B cannot write a block it has not
    allocated yet, whether a mirrored write (sync) or a restore (async).  Sync, fence data: the
    host's write that B could not make fails (CHECK CONDITION) and the pair suspends, so no write is
    acknowledged that the S-VOL lacks.  Async: the host never notices; the S-VOL stays a prefix.
    Recovery: the filler removed, `pair resync` at A if the pair suspended."""

    name = "full-fs-s"
    side = "b"
    refusal = "sense 7/27/07"  # B's answer, passed on to the host (README, fence levels: the peer answered)
    fenced = "sense 2/04/03"  # NOT READY, MANUAL INTERVENTION REQUIRED: fence data after a copy met it
    must_refuse = False
    """The stream's writes may all land on blocks B has allocated already (an initial copy wrote the
    stream's whole area): then only a copy of untouched tracks can meet the full filesystem."""


class DriveLossP(DriveLoss):
    name = "drive-loss-p"
    side = "a"


class DriveLossS(DriveLoss):
    name = "drive-loss-s"
    side = "b"


class JournalFullFs(FullFs):
    """The filesystem holding an array's journal file (a tmpfs of its own, the journal 16 MiB of its
    18) filled by another file at the moment.  The rules: a journal file is allocated in full when
    it is made (replication/async_pairs.py), so its writes never need room and never meet ENOSPC;
    README: "a host write never fails for want of journal space".  So nothing may fail, suspend or
    go PFUL/PFUS: the host goes on, the S-VOL stays a prefix of the stream, no acknowledged write is
    lost.  Recovery: the filler removed."""

    small = False
    journal_fs = True
    until_refused = False
    refusal = ""
    unnoticed = True

    def filesystem(self, ar: LinkedArrays) -> Path:
        return ar.journal_fs[self.side]

    def heal(self, ar: LinkedArrays) -> None:
        # The promise rests on the journal's blocks being allocated before the filesystem filled.
        journals = list(self.filesystem(ar).glob("*.jnl"))
        assert journals, f"no journal file on {self.filesystem(ar)}"
        for jnl in journals:
            st = jnl.stat()
            assert st.st_blocks * 512 >= st.st_size, f"{jnl.name}: only {st.st_blocks * 512} of {st.st_size} bytes allocated"
        super().heal(ar)


class JournalDriveLoss(DriveLoss):
    """A drive of the RAID-5 group under an array's journal (the catalog volume ``jvol``, `journal
    create --volume`) cut to nothing: RAID-5 outlives one drive, so as for a LUN's drive nothing
    may fail, suspend or go PFUL/PFUS, and the journal's order and contents hold (the S-VOL a
    prefix, every acknowledged write kept).  Recovery: the catalog group's drive replaced by a new
    file (`replace-drive path=`) and rebuilt."""

    raid = False
    journal_raid = True
    group = JOURNAL_GROUP

    def drive(self, sp: SanlabProcess) -> Path:
        return sp.data_dir / JOURNAL_DRIVES[LOST_DRIVE]

    def replacement(self) -> tuple[str, ...]:
        return (f"path={JOURNAL_DRIVES[LOST_DRIVE]}.new",)


def sided(cls: type[Fault], name: str, side: str) -> Callable[[], Fault]:
    """``cls`` at the array ``side`` ("a": the P side, "b": the S side), called ``name``."""
    return type(f"{cls.__name__}{side.upper()}", (cls,), {"name": name, "side": side})


OPS: dict[str, Callable[[], Op | RemoteOp]] = {"sync-create": SyncCreate, "sync-pair": SyncPair,
                                               "sync-resync": SyncResync, "sync-split": SyncSplit,
                                               "async-pair": AsyncPair, "async-create": AsyncCreate,
                                               "async-split": AsyncSplit, "async-resync": AsyncResync,
                                               **REMOTE_OPS}
FAULTS: dict[str, Callable[[], Fault]] = {"kill-p": KillP, "kill-s": KillS, "link-cut": LinkCut,
                                          "slow-peer": SlowPeer, "drive-loss-p": DriveLossP,
                                          "drive-loss-s": DriveLossS, "full-fs-p": FullFs,
                                          "full-fs-s": FullFsS, "journal-full": JournalFull,
                                          **{f"{name}-{end}": sided(cls, f"{name}-{end}", side)
                                             for name, cls in (("journal-full-fs", JournalFullFs),
                                                               ("journal-drive-loss", JournalDriveLoss))
                                             for end, side in (("p", "a"), ("s", "b"))}}

MATRIX: list[tuple[str, str]] = [
    ("sync-pair", "kill-p"),
    ("sync-pair", "kill-s"),
    ("sync-pair", "link-cut"),
    ("sync-resync", "kill-p"),
    ("sync-resync", "kill-s"),
    ("sync-resync", "link-cut"),
    ("async-pair", "kill-p"),
    ("async-pair", "kill-s"),
    ("async-pair", "link-cut"),
    ("sync-pair", "slow-peer"),
    ("sync-resync", "slow-peer"),
    ("async-pair", "slow-peer"),
    ("sync-split", "kill-p"),
    ("sync-split", "kill-s"),
    ("sync-split", "link-cut"),
    ("sync-split", "slow-peer"),
    ("sync-pair", "drive-loss-p"),
    ("sync-pair", "drive-loss-s"),
    ("sync-resync", "drive-loss-p"),
    ("sync-resync", "drive-loss-s"),
    ("sync-split", "drive-loss-p"),
    ("async-pair", "drive-loss-p"),
    ("async-pair", "drive-loss-s"),
    ("sync-pair", "full-fs-p"),
    ("sync-split", "full-fs-p"),
    ("sync-create", "kill-p"),
    ("sync-create", "kill-s"),
    ("sync-create", "link-cut"),
    ("sync-create", "slow-peer"),
    ("sync-create", "drive-loss-p"),
    ("async-pair", "full-fs-p"),
    ("sync-takeover", "kill-p"),
    ("sync-takeover", "link-cut"),
    ("sync-takeover", "drive-loss-p"),
    ("sync-takeover", "slow-peer"),
    ("sync-swap", "kill-p"),
    ("sync-swap", "kill-s"),
    ("sync-swap", "link-cut"),
    ("async-pair", "journal-full-fs-p"),
    ("async-pair", "journal-full-fs-s"),
    ("async-pair", "journal-drive-loss-p"),
    ("async-pair", "journal-drive-loss-s"),
    ("async-pair", "journal-full"),
    ("sync-pair", "full-fs-s"),
    ("sync-create", "full-fs-s"),
    ("sync-resync", "full-fs-s"),
    ("sync-split", "full-fs-s"),
    ("async-pair", "full-fs-s"),
    *((op, fault) for op in ("async-create", "async-split", "async-resync", "sync-reverse")
      for fault in ("kill-p", "kill-s", "link-cut", "slow-peer", "drive-loss-p", "drive-loss-s",
                    "full-fs-p", "full-fs-s")),
    *((op, fault) for op in ("async-create", "async-split", "async-resync")
      # Not journal-full: the journal takes no writes while the pair copies or is split, so it
      # cannot fill; the link cut that would fill it is the link-cut row.
      for fault in ("journal-full-fs-p", "journal-full-fs-s", "journal-drive-loss-p", "journal-drive-loss-s")),
    ("async-takeover", "kill-p"),
    ("async-takeover", "link-cut"),
    ("async-takeover", "drive-loss-p"),
    ("async-takeover", "slow-peer"),
    ("async-swap", "kill-p"),
    ("async-swap", "kill-s"),
    ("async-swap", "link-cut"),
    *(("async-reverse", fault) for fault in ("kill-p", "kill-s", "link-cut", "slow-peer", "drive-loss-p",
                                             "drive-loss-s", "full-fs-p", "full-fs-s")),
]
"""The cases: (operation, fault). Each runs at the moments its seeds pick."""

MOMENTS = (5, 400)
"""The fault hits after this many acknowledged writes (the seed picks one in the range)."""
OUTAGE = 50
"""Writes the host goes on with during the fault, when the pair's rules say it goes on (async)."""


RECOVERABLE: dict[tuple[str, str], str] = {
    ("PAIR", "PAIR"): "in step (async: A's journal holds what B could not read yet)",
    ("down", "PAIR"): "A killed: restarted, it resends its activity log's tracks (README, difference bitmap)",
    ("down", "COPY"): "A killed mid-copy: restarted, it resumes the copy from its bitmap",
    ("COPY", "down"): "B killed mid-copy before A's copy tried its next track (a paced copy waits between "
                      "tracks, then for its session's reconnect): B restarted, the copy goes on from A's bitmap, "
                      "or it failed meanwhile (PSUE) and `pair resync` at A",
    ("PSUE", "down"): "B killed, A suspended by the fence: B restarted, `pair resync` at A",
    ("PSUE", "PAIR"): "link lost, B could not be told: healed, `pair resync` at A",
    ("PSUE", "COPY"): "link lost mid-copy, B could not be told: healed, `pair resync` at A",
    ("PAIR", "down"): "async, B killed: restarted, it resumes from its journal's pointers",
    ("COPY", "COPY"): "a resync still copying (the fault stopped nothing): it ends in PAIR by itself",
    ("COPY", "PAIR"): "a resync ending between the two reads (A read first, then B told PAIR): PAIR by itself",
    ("PFUS", "PAIR"): "async, journal full for longer than its time-out: healed, `pair resync` at A",
    ("PSUS", "SSUS"): "split: `pair resync` at A",
    ("down", "SSUS"): "split, A killed: restarted, `pair resync` at A",
    ("PSUS", "down"): "split, B killed: restarted, `pair resync` at A",
}
"""The (A, B) states a fault may leave before recovery, and the documented procedure that resolves
each; anything else is a disagreement the documentation does not cover."""


def run_case(tmp: Path, op_name: str, fault_name: str, seed: int, log: Callable[[str], None] = print) -> Outcome:
    op, fault = OPS[op_name](), FAULTS[fault_name]()
    rng = random.Random(seed)
    moment = rng.randrange(*MOMENTS)
    log(f"fault case {op_name} x {fault_name}: seed {seed}, fault after {moment} acknowledged writes")
    def only(switch: bool) -> frozenset[str]:
        return frozenset({fault.side}) if switch else frozenset()
    ar = LinkedArrays(tmp, only(fault.raid), only(fault.small), only(fault.journal_fs), only(fault.journal_raid))
    try:
        if isinstance(op, RemoteOp):  # the host moves between the arrays: the operation runs its case
            return op.run(ar, fault, rng, moment, log)
        return _run(ar, op, fault, rng, moment, log)
    except BaseException:
        for sp in (ar.a, ar.b):
            log(f"--- {sp.portal} log tail ---\n{sp.log()[-3000:]}")
        raise
    finally:
        ar.stop()


def _run(ar: LinkedArrays, op: Op, fault: Fault, rng: random.Random, moment: int,
         log: Callable[[str], None]) -> Outcome:
    if fault.journal_options:
        assert isinstance(op, AsyncPair), f"{fault.name} is a fault of async pairs"
        op.journal_options = fault.journal_options
    if isinstance(op, AsyncPair):
        op.restore_stalls = fault.name == "full-fs-s"
    op.setup(ar)
    a_state = ar.state(ar.a)
    stream = Stream(ar.a, rng, moment, lambda: fault.inject(ar))
    stream.start()
    stream.hit.wait(60)
    assert stream.hit.is_set(), f"the fault never hit: {stream.acked} writes acked, {stream.error!r}"
    survives = fault.name in op.host_survives or fault.unnoticed
    if survives:  # the host goes on as if nothing happened
        fault.outage(ar, stream)
    elif fault.until_refused:  # the host goes on until a write meets the fault
        stream.until(stream.acked + OUTAGE, stop_on_error=True)
        if fault.must_refuse or stream.error is not None:
            assert stream.error is not None and any(r in str(stream.error) for r in fault.refusals()), \
                f"no write refused for want of space in {OUTAGE} writes: {stream.error!r}"
    stream.finish()
    if survives:
        assert stream.error is None, f"a host write failed during {fault.name}: {stream.error!r}"
    log(f"  fault in {a_state} after {moment} acked writes + {stream.delay * 1000:.2f} ms: {stream.acked} acked, {stream.issued} issued, stream ended by "
        f"{type(stream.error).__name__ if stream.error else 'the test'}")
    states = (ar.state(ar.a) if ar.a.proc.poll() is None else "down",
              ar.state(ar.b) if ar.b.proc.poll() is None else "down")
    assert states in RECOVERABLE, f"A {states[0]} and B {states[1]}: a disagreement no documented recovery covers"
    promise = op.promise(ar, stream)
    log(f"  before recovery: A {states[0]}, B {states[1]}; promise: {promise}")
    recovered = time.time()
    recover(ar, op, fault)
    a_row, b_row = ar.pair(ar.a), ar.pair(ar.b)
    assert a_row["state"] == b_row["state"] == "PAIR", (a_row, b_row)
    assert a_row["role"] == "P-VOL" and b_row["role"] == "S-VOL", (a_row, b_row)
    if op.mode == "async":
        wait_drained(ar, after=recovered)
    bound, partial = op.copy_bound()
    assert a_row["copied_bytes"] <= bound and (bound < SIZE // 2 or not partial), \
        f"recovery copied {a_row['copied_bytes']} bytes, more than the {bound} the case allows: {a_row}"
    a_image = ar.file(ar.a)
    stream.check_durable(a_image, "P-VOL after recovery")
    b_image = ar.file(ar.b)
    if a_image != b_image:
        diff = [(off // BS, a_image[off:off + 16].hex(), b_image[off:off + 16].hex())
                for off in range(0, len(a_image), CHUNK) if a_image[off:off + CHUNK] != b_image[off:off + CHUNK]]
        raise AssertionError(f"after recovery the S-VOL differs from the P-VOL in {len(diff)} blocks "
                             f"(lba, A's first bytes, B's): {diff[:8]}; {stream.acked} acked, {stream.issued} issued")
    log(f"  recovered: PAIR on both sides, copied {a_row['copied_bytes']} bytes, volumes equal")
    return Outcome(moment, stream.acked, promise, states, int(a_row["copied_bytes"]))


def recover(ar: LinkedArrays, op: Op, fault: Fault) -> None:
    """The documented procedure: the killed array restarted (or the link healed); a pair that does
    not come back to PAIR by itself is resynced from A (`sanlab pair resync`)."""
    fault.heal(ar)
    deadline = time.monotonic() + SETTLE
    state = ar.state(ar.a)
    while state in ("COPY", "PAIR") and time.monotonic() < deadline:
        if state == "PAIR" and ar.state(ar.b) == "PAIR":
            return
        time.sleep(0.3)
        state = ar.state(ar.a)
    if state in ("PSUE", "PSUS", "PFUS"):
        resync(ar)
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")



def resync(ar: LinkedArrays, seconds: float = 30.0) -> None:
    """`pair resync` at A, asked again while A's link to a restarted B is not up yet."""
    deadline = time.monotonic() + seconds
    while True:
        cp = ar.cli(ar.a, "pair", "resync", "p0")
        if cp.returncode == 0:
            return
        assert time.monotonic() < deadline, f"pair resync kept failing: {cp.stderr}"
        time.sleep(0.5)

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

Adding a case is one row of ``MATRIX``; a new operation or fault is one class in ``OPS`` / ``FAULTS``.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, free_port, start_sanlab
from tests.integration.test_async_pairs import wait_drained
from tests.integration.test_sync_pairs import A, B, SIZE, TRACK, Arrays, Proxy, config

BS = 512
CHUNK = 4096
AREA_TRACKS = 16
"""The stream writes only the first 16 tracks (1 MiB) of the 8 MiB volume: a resync that sends more
than the tracks a case wrote is a copy the bitmap did not ask for."""
DIRTY = range(32, 64)
"""Tracks the resync operation writes while the pair is split (what the resync must send)."""
SETTLE = 15.0
"""How long recovery waits for a pair to come back to PAIR by itself before asking for a resync."""


RAID_LUN0 = """
[[raid_groups]]
name = "rg0"
level = 5
stripe_size = "64KiB"
drive_size = "4MiB"
drives = ["drives/d0.img", "drives/d1.img", "drives/d2.img"]
"""
"""A RAID-5 group of three 4 MiB drive files: LUN 0 on it has the file LUN's 8 MiB."""
LOST_DRIVE = 1
"""The member a drive-loss fault takes away."""
SMALL_FS = "12m"
"""The tmpfs under a LUN file a full-filesystem fault fills (the file is 8 MiB, sparse)."""


def raid_config(me: str, peer: str, peer_portal: str) -> str:
    """config()'s array with LUN 0 on :data:`RAID_LUN0`'s group instead of a file."""
    cfg = config(me, peer, peer_portal, ("1MiB",))  # the group's TOML goes before the targets
    head, targets = cfg.split("[[targets]]", 1)
    lun1 = targets.split("[[targets.luns]]", 1)[1].replace("lun = 0", "lun = 1")
    return (head + RAID_LUN0 + f'[[targets]]\nname = "{me}"\n[[targets.luns]]\nlun = 0\nraid_group = "rg0"\n'
            + "[[targets.luns]]" + lun1)


class LinkedArrays(Arrays):
    """A and B of test_sync_pairs, each reaching the other through a relay the test controls; an
    array in ``raid`` ("a", "b") has its LUN 0 on a RAID-5 group (:data:`RAID_LUN0`)."""

    def __init__(self, tmp: Path, raid: frozenset[str] = frozenset(), small: frozenset[str] = frozenset()) -> None:
        self.tmp = tmp
        self.raid = raid
        self.small: dict[str, Path] = {}
        """The arrays whose LUN 0 file lives on a tmpfs of its own (a filesystem a fault can fill)."""
        self.pa, self.pb = free_port("127.0.0.1"), free_port("127.0.0.2")
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        for which in small:
            fs = tmp / f"fs-{which}"
            fs.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS}", "tmpfs", str(fs)], check=True)
            self.small[which] = fs
            (tmp / which / "data").mkdir()
            (tmp / which / "data" / "lun0.img").symlink_to(fs / "lun0.img")
        self.to_a, self.to_b = Proxy(("127.0.0.1", self.pa)), Proxy(("127.0.0.2", self.pb))
        self.a = self.start("a")
        self.b = self.start("b")

    def start(self, which: str) -> SanlabProcess:
        me, peer, relay = (A, B, self.to_b) if which == "a" else (B, A, self.to_a)
        portal = f"127.0.0.3:{relay.port}"
        cfg = raid_config(me, peer, portal) if which in self.raid else config(me, peer, portal, self.SIZES, self.EXTRA)
        return start_sanlab(self.tmp / which, cfg, *(("127.0.0.1", self.pa) if which == "a" else ("127.0.0.2", self.pb)))

    def which(self, sp: SanlabProcess) -> str:
        return "a" if sp is self.a else "b"

    def file(self, sp: SanlabProcess) -> bytes:
        """LUN 0's bytes: its file, or for a RAID LUN what a host reads (the array must be up)."""
        if self.which(sp) not in self.raid:
            return super().file(sp)
        target = A if sp is self.a else B

        async def read() -> bytes:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:faults-reader", command_timeout=30.0)
            out = bytearray()
            async with IscsiSession(sp.host, sp.port, target, cfg) as s:
                await s.clear_unit_attentions(0)
                step = (1 << 20) // BS
                for lba in range(0, SIZE // BS, step):
                    out += await s.read16(0, lba, step, BS)
            return bytes(out)
        return asyncio.run(asyncio.wait_for(read(), 120))

    def state(self, sp: SanlabProcess) -> str:
        return str(self.pair(sp)["state"])

    def stop(self) -> None:
        super().stop()
        self.to_a.close()
        self.to_b.close()
        for fs in self.small.values():
            subprocess.run(["umount", "-l", str(fs)], check=False)


def payload(i: int, lba: int) -> bytes:
    return (i.to_bytes(8, "big") + lba.to_bytes(8, "big")) * (CHUNK // 16)


class Stream(threading.Thread):
    """The host: QD1 numbered writes to LUN 0 of ``target`` (A) until stopped or a write fails
    (``error``), each at a 4 KiB block of the first ``area_tracks`` tracks.  ``lbas[i - 1]`` is where
    write i went; ``acked`` how many were answered GOOD.  The fault hits once, with write
    ``moment + 1`` on its way; ``moment`` may be set later, while the stream runs (local_matrix.py
    sets it once the operation under test has been answered)."""

    target = A
    area_tracks = AREA_TRACKS
    reconnect = True
    """The host's session logs in again after a lost connection (a link cut heals under it)."""

    def __init__(self, sp: SanlabProcess, rng: random.Random, moment: int, fault: Callable[[], None],
                 target: str = A, area_tracks: int = AREA_TRACKS) -> None:
        super().__init__(daemon=True)
        self.sp, self.rng = sp, rng
        self.target, self.area_tracks = target, area_tracks
        self.moment, self.fault = moment, fault
        self.delay = rng.uniform(0.0, 0.002)
        """How long after write ``moment + 1`` is sent the fault hits (it may be answered first)."""
        self.lbas: list[int] = []
        self.acked = 0
        self.halt = threading.Event()
        self.hit = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        async def go() -> None:
            # Longer than the arrays' own 5 s peer timeout, so the host hears how the array ends a
            # write the fault caught (fence data: CHECK CONDITION) rather than giving up first.
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:faults", command_timeout=15.0,
                                  reconnect=self.reconnect)
            async with IscsiSession(self.sp.host, self.sp.port, self.target, cfg) as s:
                await s.clear_unit_attentions(0)
                while not self.halt.is_set():
                    lba = self.rng.randrange(self.area_tracks * TRACK // CHUNK) * (CHUNK // BS)
                    self.lbas.append(lba)
                    write = asyncio.ensure_future(s.write16(0, lba, payload(len(self.lbas), lba), BS))
                    # The fault, with write moment+1 on its way (at most once; ">=": a moment set
                    # from another thread may already be behind by the time it is read).
                    if self.acked >= self.moment and not self.hit.is_set():
                        await asyncio.sleep(self.delay)
                        self.fault()
                        self.hit.set()
                    await write
                    self.acked = len(self.lbas)
        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - judged by the case (expected after some faults)
            self.error = exc

    def until(self, n: int, timeout: float = 60.0, stop_on_error: bool = False) -> None:
        """Until ``n`` writes were acknowledged (or, with ``stop_on_error``, the stream ended on a
        failed write)."""
        deadline = time.monotonic() + timeout
        while self.acked < n:
            if stop_on_error and not self.is_alive():
                return
            assert self.is_alive(), f"the stream stopped after {self.acked} writes: {self.error!r}"
            assert time.monotonic() < deadline, f"only {self.acked} of {n} writes in {timeout}s"
            time.sleep(0.005)

    def finish(self) -> None:
        self.halt.set()
        self.join(30)
        assert not self.is_alive(), "the stream did not stop"

    @property
    def issued(self) -> int:
        return len(self.lbas)

    def blocks(self, image: bytes) -> dict[int, int]:
        """Which write each 4 KiB block of the area holds (0: never written), checking each block
        is whole: one write's bytes, or zeros."""
        held: dict[int, int] = {}
        for lba in range(0, self.area_tracks * TRACK // BS, CHUNK // BS):
            blk = image[lba * BS:lba * BS + CHUNK]
            i = int.from_bytes(blk[:8], "big")
            if i == 0:
                assert blk == bytes(CHUNK), f"block {lba}: torn or foreign data {blk[:16].hex()}"
            else:
                assert 0 < i <= self.issued and self.lbas[i - 1] == lba and blk == payload(i, lba), \
                    f"block {lba}: holds {blk[:16].hex()}, not a write of the stream to it"
            held[lba] = i
        return held

    def last_before(self, k: int) -> dict[int, int]:
        """Each block's last write among writes 1..k (0: none)."""
        last: dict[int, int] = {lba: 0 for lba in range(0, self.area_tracks * TRACK // BS, CHUNK // BS)}
        for i in range(1, k + 1):
            last[self.lbas[i - 1]] = i
        return last

    def check_durable(self, image: bytes, where: str) -> None:
        """Every acknowledged write is in ``image``: each block holds its last acknowledged write, or
        a later write that was in flight (its outcome unknown to the host)."""
        held, last = self.blocks(image), self.last_before(self.acked)
        for lba, i in last.items():
            v = held[lba]
            assert v == i or (v > self.acked and self.lbas[v - 1] == lba), \
                f"{where}: acknowledged write {i} at block {lba} lost (block holds write {v}; {self.acked} acked)"

    def check_prefix(self, image: bytes, where: str) -> int:
        """``image`` is the stream cut at one point k (writes 1..k, none after): k."""
        held = self.blocks(image)
        k = max(held.values())
        last = self.last_before(k)
        wrong = {lba: (held[lba], last[lba]) for lba in held if held[lba] != last[lba]}
        assert not wrong, f"{where}: not a prefix of the stream at write {k}: block -> (holds, expected) {wrong}"
        return k


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
        ar.wait(ar.a, "PAIR")
        ar.ok(ar.a, "pair", "split", "p0")
        ar.wait(ar.a, "PSUS")

        async def dirty() -> None:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:faults", command_timeout=10.0)
            async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
                await s.clear_unit_attentions(0)
                for t in DIRTY:
                    await s.write16(0, t * TRACK // BS, bytes([t]) * TRACK, BS)
        asyncio.run(dirty())
        assert ar.pair(ar.a)["pending_bytes"] == len(DIRTY) * TRACK
        ar.ok(ar.a, "pair", "resync", "p0")

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


class SyncSplit(Op):
    """A sync pair split (PSUS at A, SSUS at B) while the stream writes at A: the S-VOL keeps the
    image of the split, A's difference bitmap the tracks to resend; recovery is `pair resync`."""

    host_survives = frozenset({"kill-s", "link-cut", "slow-peer"})
    settles_split = True

    def setup(self, ar: LinkedArrays) -> None:
        super().setup(ar)
        ar.ok(ar.a, "pair", "split", "p0")
        ar.wait(ar.a, "PSUS")
        ar.wait(ar.b, "SSUS")

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        if ar.which(ar.b) in ar.raid and ar.b.proc.poll() is not None:
            return "S-VOL down (RAID: read after recovery)"
        held = stream.blocks(ar.file(ar.b))
        assert not any(held.values()), f"the S-VOL took writes made after the split: {held}"
        return "the S-VOL still the image of the split"


class AsyncPair(Op):
    """An async pair (journals of 16 MiB) in PAIR under the stream."""

    mode = "async"
    host_survives = frozenset({"kill-s", "link-cut", "slow-peer"})

    def setup(self, ar: LinkedArrays) -> None:
        ar.ok(ar.a, "journal", "create", "ja", "--size", "16MiB")
        ar.ok(ar.b, "journal", "create", "jb", "--size", "16MiB")
        ar.ok(ar.a, "pair", "create", "p0", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
              "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0", "--no-copy")
        ar.wait(ar.a, "PAIR")
        ar.wait(ar.b, "PAIR")

    def promise(self, ar: LinkedArrays, stream: Stream) -> str:
        # B up: it restores what it acquired before we look (nothing more arrives during the fault).
        b_image = settled_s_vol(ar) if ar.b.proc.poll() is None else ar.file(ar.b)
        k = stream.check_prefix(b_image, "S-VOL after the fault")
        return f"S-VOL a prefix (writes 1..{k} of {stream.acked} acked)"


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
    raid = False
    small = False
    """The ``side`` array's LUN 0 file on a small filesystem of its own."""
    side = ""
    """The array whose LUN 0 is on RAID for this fault ("a", "b"; with ``raid``)."""

    def inject(self, ar: LinkedArrays) -> None:
        raise NotImplementedError

    def heal(self, ar: LinkedArrays) -> None:
        raise NotImplementedError


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

    def inject(self, ar: LinkedArrays) -> None:
        lose_drive(ar.a if self.side == "a" else ar.b)

    def heal(self, ar: LinkedArrays) -> None:
        sp = ar.a if self.side == "a" else ar.b
        replace_lost_drive(lambda *words: ar.ok(sp, *words))


def lose_drive(sp: SanlabProcess) -> None:
    """Drive :data:`LOST_DRIVE` of group rg0 cut to nothing, as a disk that died."""
    os.truncate(sp.data_dir / "drives" / f"d{LOST_DRIVE}.img", 0)


def replace_lost_drive(ok: Callable[..., Any]) -> None:
    """README's procedure for a lost drive, through ``ok`` (the array's CLI: words -> parsed output):
    `admin fail-drive` when the array has not failed it yet, `admin replace-drive` in the same slot,
    `admin wait-rebuild`."""
    group = next(g for g in ok("show", "--json")["raid_groups"] if g["name"] == "rg0")
    if group["drives"][LOST_DRIVE]["state"] != "failed":
        ok("admin", "fail-drive", "group=rg0", f"index={LOST_DRIVE}")
    ok("admin", "replace-drive", "group=rg0", f"index={LOST_DRIVE}")  # in its slot (README)
    ok("admin", "wait-rebuild", "group=rg0")


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

    def inject(self, ar: LinkedArrays) -> None:
        fill_up(ar.small[self.side])

    def heal(self, ar: LinkedArrays) -> None:
        (ar.small[self.side] / "filler").unlink()


def fill_up(fs: Path) -> None:
    """The filesystem mounted at ``fs`` filled by a file ``filler`` (until ENOSPC)."""
    with open(fs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\xff" * (1 << 20))
                f.flush()
        except OSError:
            pass  # full


class DriveLossP(DriveLoss):
    name = "drive-loss-p"
    side = "a"


class DriveLossS(DriveLoss):
    name = "drive-loss-s"
    side = "b"


OPS: dict[str, Callable[[], Op]] = {"sync-create": SyncCreate, "sync-pair": SyncPair, "sync-resync": SyncResync,
                                    "sync-split": SyncSplit,
                                    "async-pair": AsyncPair}
FAULTS: dict[str, Callable[[], Fault]] = {"kill-p": KillP, "kill-s": KillS, "link-cut": LinkCut,
                                          "slow-peer": SlowPeer, "drive-loss-p": DriveLossP,
                                          "drive-loss-s": DriveLossS, "full-fs-p": FullFs}

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
    ("PSUE", "down"): "B killed, A suspended by the fence: B restarted, `pair resync` at A",
    ("PSUE", "PAIR"): "link lost, B could not be told: healed, `pair resync` at A",
    ("PSUE", "COPY"): "link lost mid-copy, B could not be told: healed, `pair resync` at A",
    ("PAIR", "down"): "async, B killed: restarted, it resumes from its journal's pointers",
    ("COPY", "COPY"): "a resync still copying (the fault stopped nothing): it ends in PAIR by itself",
    ("COPY", "PAIR"): "a resync ending between the two reads (A read first, then B told PAIR): PAIR by itself",
    ("PSUS", "SSUS"): "split: `pair resync` at A",
    ("down", "SSUS"): "split, A killed: restarted, `pair resync` at A",
    ("PSUS", "down"): "split, B killed: restarted, `pair resync` at A",
}
"""The (A, B) states a fault may leave before recovery, and the documented procedure that resolves
each; anything else is a disagreement the documentation does not cover."""


@dataclass
class Outcome:
    """What a case saw, for its report line."""

    moment: int
    acked: int
    promise: str
    states: tuple[str, str]
    copied_bytes: int


def run_case(tmp: Path, op_name: str, fault_name: str, seed: int, log: Callable[[str], None] = print) -> Outcome:
    op, fault = OPS[op_name](), FAULTS[fault_name]()
    rng = random.Random(seed)
    moment = rng.randrange(*MOMENTS)
    log(f"fault case {op_name} x {fault_name}: seed {seed}, fault after {moment} acknowledged writes")
    ar = LinkedArrays(tmp, frozenset({fault.side}) if fault.raid else frozenset(),
                      frozenset({fault.side}) if fault.small else frozenset())
    try:
        return _run(ar, op, fault, rng, moment, log)
    except BaseException:
        for sp in (ar.a, ar.b):
            log(f"--- {sp.portal} log tail ---\n{sp.log()[-3000:]}")
        raise
    finally:
        ar.stop()


def _run(ar: LinkedArrays, op: Op, fault: Fault, rng: random.Random, moment: int,
         log: Callable[[str], None]) -> Outcome:
    op.setup(ar)
    a_state = ar.state(ar.a)
    stream = Stream(ar.a, rng, moment, lambda: fault.inject(ar))
    stream.start()
    stream.hit.wait(60)
    assert stream.hit.is_set(), f"the fault never hit: {stream.acked} writes acked, {stream.error!r}"
    survives = fault.name in op.host_survives or fault.raid  # RAID-5 outlives one drive
    if survives:  # the host goes on as if nothing happened
        stream.until(stream.acked + OUTAGE)
    elif fault.until_refused:  # the host goes on until a write meets the fault
        stream.until(stream.acked + OUTAGE, stop_on_error=True)
        assert stream.error is not None and fault.refusal in str(stream.error), \
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

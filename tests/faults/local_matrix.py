"""The local-copy part of issue 19's fault matrix: (copy operation) x (fault) x (moment), each case one
real `sanlab serve` whose LUN 0 is the original and LUN 1 the copy of local copy pair ``c1``.

The host is matrix.py's :class:`Stream` (QD1, our initiator) at LUN 0: write i puts 4 KiB at a block
of the first :data:`AREA` tracks holding (i, lba) repeated, so any image says which write each block
holds.  The rest of the original holds a known pattern (:func:`base_track`), so that "the copy equals
the original" compares data, not zeros.  The operation is asked for through the management socket
while the stream runs (``before``: writes acknowledged before the request, ``after``: writes issued
before its answer); the seed picks after how many more acknowledged writes the fault hits, and the
delay after that write is sent.  Then the documented recovery (README, "Local copies": the killed
array restarted on the same data directory and port, the filesystem given room, the RAID drive
replaced; a pair left in PSUE resynchronised with `sanlab copy resync`, which copies the whole pair),
then the invariants:

* the original, as a host reads it, holds every acknowledged write, each block whole, and outside
  the stream's area exactly what the operation promises (the base, the tracks written while split,
  the copy's image after a restore);
* division: the copy, as a host reads it, is the stream cut at one point k with
  ``before <= k <= after`` - read right after the split, after the fault, after recovery, and, once
  ``detail`` says DIVISION COMPLETED, the copy's file too; the same k every time;
* generation, resync, restore: the pair ends in PAIR and the copy's file equals the original byte
  for byte; restore: the original is the copy's image with the writes made from one point of the
  restore's request on;
* the bytes the recovery copied: after kill -9 exactly the tracks the bitmap files held at the kill
  (``gen`` | ``active``, plus the tracks still to restore), never the volume; otherwise within what
  the operation had to copy (resync and restore: the tracks that differed; never a silent full copy).

Rows left out (:data:`LEFT_OUT` says why): resync and restore under a full filesystem under the copy.
copy-division splits during the generation: a pair split in PAIR has every track on the copy already,
nothing (no division copy, no copy-on-write) for a fault to hit.  The kills come after the operation
was answered; a kill inside the request (between a state change's bitmaps and its record) is
test_local_copy.py's test_a_kill_as_a_resync_commits_its_record_keeps_the_copy_right.

Adding a case is one row of :data:`MATRIX`; a new operation or fault is one class in ``OPS`` / ``FAULTS``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import start_sanlab
from tests.faults.matrix import fill_up, lose_drive, replace_lost_drive
from tests.faults.stream import BS, Stream
from tests.integration.test_local_copy import T, TRACK, Array

SIZE_MIB = 128
SIZE = SIZE_MIB << 20
"""Both volumes: local copies have no pace and the mover copies a few hundred MiB/s; at 128 MiB a
generation or division copy under the stream lasts about as many host writes as :data:`MOMENTS` spans
(seen here: half done after ~140 writes), so most moments fall inside it."""
TRACKS = SIZE // TRACK
AREA = 64
"""The stream writes the first 64 tracks (4 MiB); the rest holds :func:`base_track`."""
DIRTY_P = range(AREA, TRACKS * 3 // 4)
"""Tracks the resync and restore cases write on the original while the pair is split (92 MiB: enough
for the copy to last while the seeds' moments pass)."""
DIRTY_S = range(TRACKS * 3 // 4 - 32, TRACKS * 3 // 4 + 32)
"""Tracks they write on the copy (half of them the original's too: both sides of a track differ)."""
SMALL_FS = f"{SIZE_MIB + 4}m"
"""The tmpfs under the copy's (sparse) file for full-fs-copy: room for the copy and a little more."""
MOMENTS = (1, 250)
"""The fault hits after this many more acknowledged writes once the operation was answered."""
WARMUP = 20
"""Writes acknowledged before the operation is asked for."""
OUTAGE = 50
"""Writes the host goes on with after the fault when the host is to notice nothing."""
NEVER = 1 << 62
NAME = "c1"


def base_track(t: int) -> bytes:
    """Track ``t``'s bytes in the base image (outside the stream's area)."""
    return (b"base-track" + t.to_bytes(6, "big")) * (TRACK // 16)


def dirty_track(t: int, side: int) -> bytes:
    """Track ``t``'s bytes after the split-time write on LUN ``side``."""
    return (b"dirty-lun" + bytes([side]) + t.to_bytes(6, "big")) * (TRACK // 16)


def local_config(raid: bool) -> str:
    """LUN 0 and LUN 1 of :data:`SIZE`; with ``raid`` LUN 0 on a RAID-5 group of three drive files."""
    lun1 = f'[[targets.luns]]\nlun = 1\nfile = "lun1.img"\nsize = "{SIZE_MIB}MiB"\n'
    if not raid:
        lun0 = f'[[targets.luns]]\nlun = 0\nfile = "lun0.img"\nsize = "{SIZE_MIB}MiB"\n'
        return f'initiator_name = "{T}"\n[[targets]]\nname = "{T}"\n{lun0}{lun1}'
    group = ('[[raid_groups]]\nname = "rg0"\nlevel = 5\nstripe_size = "64KiB"\n'
             f'drive_size = "{SIZE_MIB // 2}MiB"\ndrives = ["drives/d0.img", "drives/d1.img", "drives/d2.img"]\n')
    return (f'initiator_name = "{T}"\n{group}[[targets]]\nname = "{T}"\n'
            f'[[targets.luns]]\nlun = 0\nraid_group = "rg0"\n{lun1}')


class LocalArray(Array):
    """test_local_copy's array with LUN 0 and LUN 1 of :data:`SIZE` (LUN 0 on RAID-5 with ``raid``, LUN
    1's file on a tmpfs of its own with ``small``)."""

    def __init__(self, tmp: Path, raid: bool = False, small: bool = False) -> None:
        self.tmp, self.size, self.raid = tmp, SIZE, raid
        self.fs: Path | None = None
        (tmp / "data").mkdir()
        if small:
            self.fs = tmp / "fs-copy"
            self.fs.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS}", "tmpfs", str(self.fs)], check=True)
            (tmp / "data" / "lun1.img").symlink_to(self.fs / "lun1.img")
        self.cfg = local_config(raid)
        self.sp = start_sanlab(tmp, self.cfg)

    @property
    def up(self) -> bool:
        """The array's process is running."""
        return self.sp.proc.poll() is None

    def display(self) -> dict[str, Any]:
        """``copy display`` of c1 through the management socket (quicker than the CLI under the stream)."""
        return dict(self.req("copy_display", name=NAME)[0])

    def write(self, lun: int, start_track: int, tracks: list[bytes]) -> None:
        """Host writes of whole tracks from ``start_track`` on (1 MiB per command)."""
        async def go() -> None:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:filler", command_timeout=60.0)
            async with IscsiSession(self.sp.host, self.sp.port, T, cfg) as s:
                await s.clear_unit_attentions(lun)
                per = 16
                for i in range(0, len(tracks), per):
                    await s.write16(lun, (start_track + i) * TRACK // BS, b"".join(tracks[i:i + per]), BS)
        asyncio.run(asyncio.wait_for(go(), 120))

    def read_area(self, lun: int) -> bytes:
        """The stream's area of LUN ``lun`` as a host reads it."""
        async def go() -> bytes:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:area-reader", command_timeout=30.0)
            async with IscsiSession(self.sp.host, self.sp.port, T, cfg) as s:
                await s.clear_unit_attentions(lun)
                return await s.read16(lun, 0, AREA * TRACK // BS, BS)
        return asyncio.run(asyncio.wait_for(go(), 60))

    def saved(self) -> dict[str, Any]:
        """c1's record in the catalog (the array down: what a restart loads)."""
        with contextlib.closing(sqlite3.connect(self.sp.data_dir / "catalog.db")) as db:
            (body,) = db.execute("SELECT body FROM local_copies WHERE name=?", (NAME,)).fetchone()
        return dict(json.loads(body))

    def stop(self) -> None:
        """The array killed if it runs (the case is over), the tmpfs unmounted."""
        if self.up:
            self.sp.stop(signal.SIGKILL)
        if self.fs is not None:
            subprocess.run(["umount", "-l", str(self.fs)], check=False)


def tracks_of(image: bytes) -> list[bytes]:
    """``image`` cut into tracks."""
    return [image[t * TRACK:(t + 1) * TRACK] for t in range(len(image) // TRACK)]


def outside(image: bytes) -> bytes:
    """The bytes past the stream's area."""
    return image[AREA * TRACK:]


def check_outside(image: bytes, expected: bytes, where: str) -> None:
    """Past the stream's area ``image`` is ``expected`` (the tracks that differ named)."""
    got = outside(image)
    if got != expected:
        bad = [AREA + t for t in range(len(expected) // TRACK)
               if got[t * TRACK:(t + 1) * TRACK] != expected[t * TRACK:(t + 1) * TRACK]]
        raise AssertionError(f"{where}: {len(bad)} tracks past the stream's area differ from what they must "
                             f"hold: {bad[:12]} (first bytes {got[(bad[0] - AREA) * TRACK:][:16].hex()})")


def check_suffix(stream: Stream, image: bytes, lo: int, hi: int, where: str) -> int:
    """``image`` (the area, zeros before the cut) holds the writes after one point s of the stream,
    ``lo <= s <= hi``, and none before it (the write in flight at the end may have landed): s."""
    held, last = stream.blocks(image), stream.last_before(stream.acked)
    s_min, s_max = lo, hi
    for lba, v in held.items():
        i = last[lba]
        if v == 0:
            s_min = max(s_min, i)  # no write to the block after s: its last one is at or before s
        elif v == i or v > stream.acked:  # the last acknowledged write, or one in flight that landed
            s_max = min(s_max, v - 1)
        else:
            raise AssertionError(f"{where}: block {lba} holds write {v}, its last acknowledged write is {i}")
    assert s_min <= s_max, (f"{where}: no single point of the stream between writes {lo} and {hi} explains the "
                            f"image (blocks say after {s_min}, before {s_max + 1})")
    return s_min


def bits(path: Path) -> set[int]:
    """The set bits of a bitmap file as it is on disk (replication/local_copy.py's files)."""
    raw = path.read_bytes()
    return {i * 8 + b for i, byte in enumerate(raw) for b in range(8) if byte >> b & 1}


class LocalStream(Stream):
    """matrix.py's stream without reconnecting: a killed array comes back only after the stream has
    ended (the heal), so the host's session waiting for it would only stretch the case (up to its
    15 s command timeout)."""

    reconnect = False


@dataclass
class Case:
    """What one case knows as it runs."""

    ar: LocalArray
    stream: Stream
    base: bytes
    """The original's image when the stream began (area zeros)."""
    before: int = 0
    after: int = 0
    copy_image: bytes = b""
    """Restore: what a host read from the copy before the restore."""
    cut: int | None = None
    """Division: the point of the stream the copy holds."""
    left: set[int] = field(default_factory=set)
    """kill: the tracks the bitmap files held at the kill (what the restart must copy)."""
    restore: set[int] = field(default_factory=set)
    """kill in RCPY: the tracks still to restore at the kill."""
    saved: dict[str, Any] = field(default_factory=dict)
    """kill: the catalog's record at the kill."""
    notes: list[str] = field(default_factory=list)
    """What the report line says besides the checks."""


# ---- operations -----------------------------------------------------------------------------------

class LocalOp:
    """A copy operation: ``prepare`` brings the pair (before the stream) to where the operation starts,
    ``start`` asks for it under the stream; the checks say what it promises."""

    name = ""
    final = "PAIR"
    """The state the pair ends in after recovery."""
    states: frozenset[str] = frozenset({"COPY", "PAIR"})
    """The states the pair may be in right after a fault that leaves the array up (and after a restart)."""

    def prepare(self, case: Case) -> None:
        """Nothing: the pair is created under the stream."""

    def start(self, case: Case) -> None:
        """Ask for the operation (the stream runs): through the management socket, as hosts' scripts would."""
        raise NotImplementedError

    def right_after(self, case: Case) -> str:
        """Checked as soon as the operation was answered (the fault maybe already on its way)."""
        return ""

    def promise(self, case: Case) -> str:
        """Checked after the fault, before recovery, when the array is up."""
        return ""

    def expected_outside(self, case: Case) -> bytes:
        """The original past the stream's area after recovery."""
        return outside(case.base)

    def check_original(self, case: Case, original: bytes) -> str:
        """After recovery: the stream's area of the original (what a host reads)."""
        case.stream.check_durable(original[:AREA * TRACK], "the original after recovery")
        return "every acked write on the original"

    def check_copy(self, case: Case, original: bytes) -> str:
        """After recovery: the copy against the original."""
        copy = case.ar.file(1)
        if copy != original:
            diff = [t for t in range(TRACKS) if copy[t * TRACK:(t + 1) * TRACK] != original[t * TRACK:(t + 1) * TRACK]]
            raise AssertionError(f"after recovery the copy's file differs from the original in {len(diff)} tracks: "
                                 f"{diff[:12]}; {case.stream.acked} acked, {case.stream.issued} issued")
        return "copy == original"

    def copy_bound(self, case: Case) -> int:
        """The most bytes the operation (with no fault) may report copied."""
        return SIZE + AREA * TRACK


class Generation(LocalOp):
    """`copy create` under the stream: the fault hits during the generation copy (or just after)."""

    name = "copy-generation"

    def start(self, case: Case) -> None:
        case.ar.req("copy_create", name=NAME, pvol=f"{T}/0", svol=f"{T}/1")


class Division(LocalOp):
    """`copy create` and `copy split` back to back under the stream: the generation has hardly begun, so
    nearly every track of the point-in-time image is still on the original, and the fault hits while
    the division copy and the stream's copy-on-writes carry it over."""

    name = "copy-division"
    final = "PSUS"
    states = frozenset({"PSUS"})

    def start(self, case: Case) -> None:
        case.ar.req("copy_create", name=NAME, pvol=f"{T}/0", svol=f"{T}/1")
        case.before = case.stream.acked
        case.ar.req("copy_split", name=NAME)
        case.after = case.stream.issued

    def view(self, case: Case, image: bytes, where: str) -> str:
        k = case.stream.check_prefix(image[:AREA * TRACK], where)
        assert case.before <= k <= case.after, \
            f"{where}: the copy holds the stream up to write {k}, not between {case.before} and {case.after}"
        assert case.cut in (None, k), f"{where}: the copy's image moved from write {case.cut} to {k}"
        case.cut = k
        return f"{where}: cut at {k} ({case.before}..{case.after})"

    def right_after(self, case: Case) -> str:
        try:
            image = case.ar.read_area(1)
        except Exception as exc:  # noqa: BLE001 - only a kill that came first excuses it
            if case.stream.hit.is_set() and not case.ar.up:
                return f"the copy not read right after the split: the kill came first ({type(exc).__name__})"
            raise
        return self.view(case, image, "the copy right after the split")

    def promise(self, case: Case) -> str:
        return self.view(case, case.ar.read_area(1), "the copy after the fault")

    def check_copy(self, case: Case, original: bytes) -> str:
        ar = case.ar
        view = ar.read(1)
        self.view(case, view, "the copy after recovery")
        check_outside(view, outside(case.base), "the copy after recovery")
        deadline = time.monotonic() + 60
        while ar.display()["detail"] != "DIVISION COMPLETED":
            assert time.monotonic() < deadline, f"the division copy did not end: {ar.display()}"
            time.sleep(0.1)
        assert ar.file(1) == view, "the copy's file once DIVISION COMPLETED is not the image hosts read"
        return f"the copy after recovery, its file too: cut at {case.cut}"

    def copy_bound(self, case: Case) -> int:
        return SIZE  # what the generation copied before the split: nothing more is counted in PSUS


class Split(LocalOp):
    """The common start of resync and restore: the pair created, in PAIR, split, then
    :data:`DIRTY_P` written on the original and :data:`DIRTY_S` on the copy (before the stream)."""

    def prepare(self, case: Case) -> None:
        ar = case.ar
        ar.ok("copy", "create", NAME, "--pvol", f"{T}/0", "--svol", f"{T}/1")
        ar.wait("PAIR")
        ar.ok("copy", "split", NAME)
        ar.write(0, DIRTY_P.start, [dirty_track(t, 0) for t in DIRTY_P])
        ar.write(1, DIRTY_S.start, [dirty_track(t, 1) for t in DIRTY_S])
        differ = set(DIRTY_P) | set(DIRTY_S)
        assert ar.display()["pending_bytes"] == len(differ) * TRACK

    def copy_bound(self, case: Case) -> int:
        return (len(set(DIRTY_P) | set(DIRTY_S)) + AREA) * TRACK


class Resync(Split):
    """`copy resync` under the stream (the stream's tracks differ too: it wrote them while split)."""

    name = "copy-resync"

    def start(self, case: Case) -> None:
        case.ar.req("copy_resync", name=NAME)

    def expected_outside(self, case: Case) -> bytes:
        image = tracks_of(case.base)
        for t in DIRTY_P:
            image[t] = dirty_track(t, 0)
        return b"".join(image[AREA:])


class Restore(Split):
    """`copy restore` (reverse resync, online) under the stream: the original ends as the copy's image
    with the writes made from the restore on."""

    name = "copy-restore"
    states = frozenset({"RCPY", "PAIR"})

    def prepare(self, case: Case) -> None:
        super().prepare(case)
        case.copy_image = case.ar.read(1)

    def start(self, case: Case) -> None:
        case.before = case.stream.acked
        case.ar.req("copy_restore", name=NAME)
        case.after = case.stream.issued

    def expected_outside(self, case: Case) -> bytes:
        return outside(case.copy_image)

    def check_original(self, case: Case, original: bytes) -> str:
        # The writes before the restore are gone with the rest of the original's image (that is what a
        # restore is for); every acknowledged write from the restore's point on is there.
        assert case.copy_image[:AREA * TRACK] == bytes(AREA * TRACK)  # the stream began after the split
        s = check_suffix(case.stream, original[:AREA * TRACK], case.before, case.after, "the original after the restore")
        return f"original = the copy's image + writes after {s} ({case.before}..{case.after})"


# ---- faults ---------------------------------------------------------------------------------------

class LocalFault:
    """A fault: ``inject`` runs on the stream's thread with a write on its way; ``heal`` undoes it."""

    name = ""
    raid = False
    small = False
    host = "survives"
    """What the host sees: "survives" (its writes go on as if nothing happened), "may-refuse" (they go
    on, but one may be refused with :attr:`refusal`: the stream then ends), "dies" (the array is gone)."""
    refusal = ""
    states: frozenset[str] = frozenset()
    """States the fault may leave the pair in beyond the operation's own."""

    def inject(self, ar: LocalArray) -> None:
        """The fault (on the stream's thread, a write on its way)."""
        raise NotImplementedError

    def heal(self, case: Case) -> None:
        """The README's first step of recovery for this fault (a pair left in PSUE is resynced after)."""
        raise NotImplementedError


class Kill(LocalFault):
    """kill -9 of the array; heal: `sanlab serve` again on the same data directory and port."""

    name = "kill"
    host = "dies"

    def inject(self, ar: LocalArray) -> None:
        ar.sp.stop(signal.SIGKILL)

    def heal(self, case: Case) -> None:
        ar = case.ar
        # What the restart must copy: the bitmap files as the kill left them (replication/local_copy.py:
        # ``active`` merged into ``gen`` where writes are mirrored; RCPY restores pdiff | sdiff).
        d = ar.sp.data_dir / "local-copies"
        case.saved = ar.saved()
        state = case.saved["state"]
        gen = bits(d / f"{NAME}.gen")
        if state in ("COPY", "PAIR", "RCPY"):
            case.left = gen | bits(d / f"{NAME}.active")
        if state == "RCPY":
            case.restore = bits(d / f"{NAME}.pdiff") | bits(d / f"{NAME}.sdiff")
        case.notes.append(f"killed in PSUS, {len(gen)} tracks of the image still on the original" if state == "PSUS"
                          else f"killed in {state}: {len(case.left)} tracks to copy, {len(case.restore)} to restore")
        ar.restart()


class DriveLoss(LocalFault):
    """A drive of the RAID-5 group under the original cut to nothing, as a disk that died: the array
    fails it at its next short read and serves degraded; nothing of the pair may notice.  Heal:
    README's procedure (matrix.py :func:`replace_lost_drive`)."""

    name = "drive-loss"
    raid = True

    def inject(self, ar: LocalArray) -> None:
        lose_drive(ar.sp)

    def heal(self, case: Case) -> None:
        replace_lost_drive(case.ar.ok)


class FullFsCopy(LocalFault):
    """The tmpfs under the copy's (sparse) file filled by another file: the copy's writes to blocks it
    has not allocated yet fail (ENOSPC).  Heal: the filler removed."""

    name = "full-fs-copy"
    small = True
    host = "may-refuse"
    refusal = "sense 7/27/07"
    states = frozenset({"PSUE"})

    def inject(self, ar: LocalArray) -> None:
        assert ar.fs is not None
        fill_up(ar.fs)

    def heal(self, case: Case) -> None:
        assert case.ar.fs is not None
        (case.ar.fs / "filler").unlink()


OPS: dict[str, Callable[[], LocalOp]] = {"copy-generation": Generation, "copy-division": Division,
                                         "copy-resync": Resync, "copy-restore": Restore}
FAULTS: dict[str, Callable[[], LocalFault]] = {"kill": Kill, "drive-loss": DriveLoss, "full-fs-copy": FullFsCopy}

MATRIX: list[tuple[str, str]] = [
    ("copy-generation", "kill"),
    ("copy-division", "kill"),
    ("copy-resync", "kill"),
    ("copy-restore", "kill"),
    ("copy-generation", "drive-loss"),
    ("copy-division", "drive-loss"),
    ("copy-resync", "drive-loss"),
    ("copy-restore", "drive-loss"),
    ("copy-generation", "full-fs-copy"),
    ("copy-division", "full-fs-copy"),
]
"""The cases: (operation, fault). Each runs at the moments its seeds pick."""

LEFT_OUT: dict[tuple[str, str], str] = {
    ("copy-resync", "full-fs-copy"): "the generation allocated every block of the copy's file and a resync only "
                                     "overwrites them: a full filesystem cannot touch it (no case, nothing to see)",
    ("copy-restore", "full-fs-copy"): "a restore writes the original and only reads the copy",
}
"""Rows of op x fault not in :data:`MATRIX`, and why."""


@dataclass
class Outcome:
    """What a case saw, for its report line."""

    moment: int
    acked: int
    state: str
    """The pair's state once the fault was healed (before the rest of recovery)."""
    copied_bytes: int
    checks: list[str]


def run_case(tmp: Path, op_name: str, fault_name: str, seed: int, log: Callable[[str], None] = print) -> Outcome:
    """One case at ``seed`` (the moment and the stream's blocks), its report lines through ``log``."""
    op, fault = OPS[op_name](), FAULTS[fault_name]()
    rng = random.Random(seed)
    moment = rng.randrange(*MOMENTS)
    log(f"local fault case {op_name} x {fault_name}: seed {seed}, fault after {moment} acknowledged writes "
        f"once the operation was answered")
    ar = LocalArray(tmp, raid=fault.raid, small=fault.small)
    try:
        return _run(ar, op, fault, rng, moment, log)
    except BaseException:
        log(f"--- array log tail ---\n{ar.sp.log()[-3000:]}")
        raise
    finally:
        ar.stop()


def _run(ar: LocalArray, op: LocalOp, fault: LocalFault, rng: random.Random, moment: int,
         log: Callable[[str], None]) -> Outcome:
    began = time.monotonic()
    ar.write(0, AREA, [base_track(t) for t in range(AREA, TRACKS)])
    base = bytes(AREA * TRACK) + b"".join(base_track(t) for t in range(AREA, TRACKS))
    stream = LocalStream(ar.sp, rng, NEVER, lambda: fault.inject(ar), T, AREA)
    case = Case(ar, stream, base)
    op.prepare(case)
    stream.start()
    stream.until(WARMUP)
    op.start(case)
    stream.moment = stream.acked + moment
    answered = stream.acked
    checks = [c for c in (op.right_after(case),) if c]
    stream.hit.wait(60)
    assert stream.hit.is_set(), f"the fault never hit: {stream.acked} writes acked, {stream.error!r}"
    if fault.host != "dies":  # the host goes on (until a write meets the fault, where it may)
        stream.until(stream.acked + OUTAGE, stop_on_error=fault.host == "may-refuse")
    stream.finish()
    if fault.host != "dies" and stream.error is not None:
        assert fault.host == "may-refuse" and fault.refusal in str(stream.error), \
            f"a host write failed during {fault.name}: {stream.error!r}"
    row = ar.display() if ar.up else {"state": "down", "detail": "", "progress": ""}
    state = row["state"]
    log(f"  fault {stream.moment - answered} writes after the answer (+{stream.delay * 1000:.2f} ms): {stream.acked} "
        f"acked, {stream.issued} issued, stream ended by {type(stream.error).__name__ if stream.error else 'the test'}; "
        f"pair {state} {row['detail']} {row['progress']}%")
    if ar.up:
        assert state in op.states | fault.states, f"the pair in {state} after {fault.name}"
        if state != "PSUE":  # a suspended copy promises nothing until resynchronised (README)
            checks += [c for c in (op.promise(case),) if c]
    fault.heal(case)
    state = ar.display()["state"]
    assert state in op.states | fault.states, f"the pair in {state} after {fault.name} was healed"
    final = op.final
    if state == "PSUE":  # README: a suspended copy is resynchronised, the whole pair copied again
        ar.ok("copy", "resync", NAME)
        final = "PAIR"
    ar.wait(final)
    row = ar.display()
    original = ar.read(0)
    checks.append(op.check_original(case, original))
    check_outside(original, op.expected_outside(case), "the original after recovery")
    checks.append(LocalOp.check_copy(op, case, original) if state == "PSUE" else op.check_copy(case, original))
    copied = int(row["copied_bytes"])
    if case.saved:  # killed: the restart copied what the bitmap files held, no more, no less
        expected = int(case.saved["copied_bytes"]) + (len(case.left) + len(case.restore)) * TRACK
        assert copied == expected, \
            f"the restart copied {copied} bytes, not the {expected} the bitmaps held at the kill ({case.notes})"
        # ... and those were what the operation had to copy (resync, restore: the differences).
        assert len(case.left | case.restore) * TRACK <= op.copy_bound(case), f"after the kill: {case.notes}"
    elif state == "PSUE":
        assert copied == SIZE, f"the resync from PSUE copied {copied} bytes, not the pair's {SIZE}"
    else:
        assert copied <= op.copy_bound(case), f"{copied} bytes copied, more than the case's {op.copy_bound(case)}"
    log(f"  {state}{' -> resync' if state == 'PSUE' else ''} -> {final}; copied {copied} bytes; "
        f"{'; '.join(case.notes + checks)} ({time.monotonic() - began:.1f} s)")
    return Outcome(moment, stream.acked, state, copied, checks)

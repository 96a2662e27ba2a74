"""Local copy pairs on a real array (issue 17): `sanlab serve`, the `sanlab copy` CLI, qemu-io and the
project's initiator as hosts; a numbered writer stream makes the division instant checkable."""
from __future__ import annotations

import asyncio
import json
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
from sanlab.tools.mgmt import request
from tests.conftest import full_file_system, need, start_sanlab

pytestmark = pytest.mark.integration

T = "iqn.2026-11.org.sanlab:array0"
TRACK = 64 << 10
BS = 512
WAIT = "60"


def config(size_mib: int, luns: int = 3) -> str:
    body = "".join(f'[[targets.luns]]\nlun = {n}\nfile = "lun{n}.img"\nsize = "{size_mib}MiB"\n' for n in range(luns))
    return f'initiator_name = "{T}"\n[[targets]]\nname = "{T}"\n{body}'


class Array:
    def __init__(self, tmp: Path, size_mib: int, luns: int = 3) -> None:
        self.tmp, self.size = tmp, size_mib << 20
        self.cfg = config(size_mib, luns)
        self.sp = start_sanlab(tmp, self.cfg)

    def restart(self) -> None:
        self.sp = start_sanlab(self.tmp, self.cfg, port=self.sp.port)

    def cli(self, *words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(self.sp.data_dir)],
                              capture_output=True, text=True, timeout=120)

    def ok(self, *words: str) -> Any:
        cp = self.cli(*words)
        assert cp.returncode == 0, f"{words}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}\n{self.sp.log()[-3000:]}"
        return json.loads(cp.stdout) if cp.stdout.strip().startswith(("{", "[")) else cp.stdout

    def req(self, op: str, **args: Any) -> Any:
        """Operation ``op`` through the management socket (faster than the CLI where the CLI is not tested)."""
        reply = request(self.sp.data_dir, op, args)
        assert reply["ok"], f"{op} {args}: {reply}"
        return reply["result"]

    def row(self, name: str = "c1") -> dict[str, Any]:
        return dict(self.ok("copy", "display", name, "--json")[0])

    def wait(self, state: str, name: str = "c1") -> None:
        cp = self.cli("copy", "wait", name, "--state", state, "--timeout", WAIT)
        assert cp.returncode == 0, f"{cp.stderr}\n{self.row(name)}"

    def create_and_split(self) -> None:
        """Create c1 and divide it at once (two requests back to back: the generation has hardly begun).
        Each answers in seconds; one that does not fails the test with the array's stacks (an
        unexplained hang here stopped stop 23's and stop 24's CI runs; never seen elsewhere)."""
        for op, args in (("copy_create", {"name": "c1", "pvol": f"{T}/0", "svol": f"{T}/1"}), ("copy_split", {"name": "c1"})):
            try:
                reply = request(self.sp.data_dir, op, args, timeout=90.0)
            except TimeoutError:
                raise AssertionError(f"{op} took over 90 s; the array's stacks:\n{self.sp.stacks()}") from None
            assert reply["ok"], reply

    def create(self, svol: int = 1, name: str = "c1", *extra: str, pvol: int = 0) -> dict[str, Any]:
        return dict(self.ok("copy", "create", name, "--pvol", f"{T}/{pvol}", "--svol", f"{T}/{svol}", *extra))

    def bits(self, name: str, kind: str) -> set[int]:
        """The set bits of pair ``name``'s bitmap file ``kind`` (gen, pdiff, sdiff, active) as on disk."""
        raw = (self.sp.data_dir / "local-copies" / f"{name}.{kind}").read_bytes()
        return {i * 8 + b for i, byte in enumerate(raw) for b in range(8) if byte >> b & 1}

    def file(self, lun: int) -> bytes:
        return (self.sp.data_dir / f"lun{lun}.img").read_bytes()

    def qemu_write(self, lun: int, offset: int, length: int, pattern: int) -> None:
        cp = subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} {offset} {length}",
                             f"iscsi://{self.sp.portal}/{T}/{lun}"], capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stderr + cp.stdout

    def read(self, lun: int) -> bytes:
        """What a host reads from LUN ``lun`` (the point-in-time view of a divided copy)."""
        async def go() -> bytes:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:reader", command_timeout=30.0)
            out = bytearray()
            async with IscsiSession(self.sp.host, self.sp.port, T, cfg) as s:
                await s.clear_unit_attentions(lun)
                step = (1 << 20) // BS
                for lba in range(0, self.size // BS, step):
                    cdb = bytes([0x88, 0]) + lba.to_bytes(8, "big") + step.to_bytes(4, "big") + b"\0\0"
                    out += (await s.run(lun, cdb, read_length=step * BS)).data
            return bytes(out)
        try:
            return asyncio.run(asyncio.wait_for(go(), 120))
        except TimeoutError:
            raise AssertionError(f"reading LUN {lun} took over 120 s; the array's stacks:\n{self.sp.stacks()}") from None


class Writer(threading.Thread):
    """A numbered QD1 writer: write ``i`` puts 4 KiB at a random block of LUN 0, holding ``i`` and its LBA.
    ``acked[i]`` is the monotonic time the write was answered."""

    def __init__(self, ar: Array, seed: int = 1) -> None:
        super().__init__(daemon=True)
        self.ar, self.rng = ar, random.Random(seed)
        self.lbas: list[int] = []
        self.issued: list[float] = []
        self.acked: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    @staticmethod
    def payload(i: int, lba: int) -> bytes:
        return (i.to_bytes(8, "big") + lba.to_bytes(8, "big")) * 256

    def run(self) -> None:
        async def go() -> None:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:writer", command_timeout=30.0)
            async with IscsiSession(self.ar.sp.host, self.ar.sp.port, T, cfg) as s:
                await s.clear_unit_attentions(0)
                while not self.stop.is_set():
                    i = len(self.lbas)
                    lba = self.rng.randrange(self.ar.size // 4096) * 8
                    self.lbas.append(lba)
                    self.issued.append(time.monotonic())
                    cdb = bytes([0x8A, 0]) + lba.to_bytes(8, "big") + (8).to_bytes(4, "big") + b"\0\0"
                    await s.run(0, cdb, self.payload(i, lba))
                    self.acked.append(time.monotonic())
        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def image(self, base: bytes, upto: int, start: int = 0) -> bytes:
        """``base`` with writes start..upto-1 applied."""
        img = bytearray(base)
        for i in range(start, upto):
            lba = self.lbas[i]
            img[lba * BS:lba * BS + 4096] = self.payload(i, lba)
        return bytes(img)

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        assert not self.is_alive(), f"the writer did not stop in 60 s; the array's stacks:\n{self.ar.sp.stacks()}"
        assert self.error is None, repr(self.error)


@pytest.fixture
def array(tmp_path: Path) -> Any:
    need("qemu-io")
    made: list[Array] = []

    def make(size_mib: int = 8, luns: int = 3) -> Array:
        made.append(Array(tmp_path, size_mib, luns))
        return made[-1]
    yield make
    for ar in made:
        if ar.sp.proc.poll() is None:
            ar.sp.stop(signal.SIGKILL)


def last_seq(img: bytes) -> int:
    """The highest write number a Writer left in ``img`` (-1 for none)."""
    best = -1
    for off in range(0, len(img), 4096):
        blk = img[off:off + 16]
        i, lba = int.from_bytes(blk[:8], "big"), int.from_bytes(blk[8:], "big")
        if lba * BS == off and blk * 256 == img[off:off + 4096]:
            best = max(best, i)
    return best


def test_generation_under_host_writes_ends_identical(array: Any) -> None:
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x5A)
    w = Writer(ar)
    w.start()
    row = ar.create()
    assert row["state"] == "COPY" and row["pvol"] == f"{T}/0" and row["svol"] == f"{T}/1"
    ar.wait("PAIR")
    time.sleep(0.3)  # writes in PAIR are mirrored
    w.finish()
    row = ar.row()
    assert row["detail"] == "GENERATION COMPLETED" and row["progress"] == 100 and row["pending_bytes"] == 0
    assert row["copied_bytes"] >= ar.size
    assert ar.file(0) == ar.file(1) == w.image(bytes([0x5A]) * ar.size, len(w.acked))
    cp = ar.cli("copy", "wait", "c1", "--state", "PSUS", "--timeout", "0.5")
    assert cp.returncode == 1


@pytest.mark.timeout(300)
def test_division_under_a_running_writer_is_the_instant_image(array: Any) -> None:
    ar = array(64)
    began = time.monotonic()
    steps: list[str] = []

    def step(what: str) -> None:
        steps.append(f"{time.monotonic() - began:6.1f} s  {what}")
    try:
        _division_under_a_running_writer(ar, step)
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\nsteps so far:\n" + "\n".join(steps)
                             + f"\narray log tail:\n{ar.sp.log()[-1500:]}\nthe array's stacks:\n{ar.sp.stacks()}") from exc


def _division_under_a_running_writer(ar: Array, step: Any) -> None:
    ar.qemu_write(0, 0, ar.size, 0x11)
    step("original filled")
    base = bytes([0x11]) * ar.size
    w = Writer(ar)
    w.start()
    time.sleep(0.2)
    before = time.monotonic()
    ar.create_and_split()  # during generation: most tracks still to copy (copy-on-write)
    after = time.monotonic()
    step(f"created and divided ({len(w.acked)} writes acknowledged)")
    assert ar.row()["state"] == "PSUS"
    time.sleep(1.0)
    w.finish()
    step(f"writer stopped ({len(w.acked)} writes acknowledged)")
    view = ar.read(1)  # the copy as hosts see it (division copy maybe still running)
    step("copy read")
    k = last_seq(view) + 1
    acked_before = sum(1 for t in w.acked if t < before)
    issued_after = next((i for i, t in enumerate(w.issued) if t > after), len(w.issued))
    assert acked_before <= k <= issued_after
    expected = w.image(base, k)
    # Compared outside ``assert``: pytest's own explanation of two unequal 64 MiB values is a difflib
    # run that takes minutes (a CI run spent its 300 s there); _which_writes says what differs.
    if view != expected:
        raise AssertionError(_which_writes(view, expected, w, before, after))
    ar.wait("PSUS")
    deadline = time.monotonic() + 60
    while ar.row()["detail"] != "DIVISION COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.1)
    step("division copy waited for")
    assert ar.row()["detail"] == "DIVISION COMPLETED"
    copy, original = ar.file(1), ar.file(0)
    if copy != expected:
        raise AssertionError("the copy volume's file after the division copy: "
                             + _which_writes(copy, expected, w, before, after))
    final = w.image(base, len(w.acked))
    if original != final:
        raise AssertionError("the original's file: " + _which_writes(original, final, w, before, after))
    # Not a tautology: the image at a later instant (every acknowledged write) is not the copy's.
    later_matches = view == final
    assert not later_matches, "the copy equals the image after the last write: the check proves nothing"


def _which_writes(view: bytes, expected: bytes, w: Writer, before: float, after: float, shown: int = 12) -> str:
    """The 4 KiB blocks where the copy's view differs from the expected instant image, each told as
    the writes (number, issue and answer times relative to the division's request) found there."""
    def what(block: bytes, off: int) -> str:
        i, lba = int.from_bytes(block[:8], "big"), int.from_bytes(block[8:16], "big")
        if block == Writer.payload(i, lba) and lba * BS == off and i < len(w.issued):
            acked = f"{w.acked[i] - before:+.3f}" if i < len(w.acked) else "never"
            return f"write {i} (issued {w.issued[i] - before:+.3f} s, answered {acked} s)"
        if block == bytes([0x11]) * 4096:
            return "the original fill"
        return f"other: {block[:16].hex()}"
    lines = [f"division requested at 0, answered at {after - before:+.3f} s; {len(w.acked)} writes answered"]
    diff = [off for off in range(0, len(view), 4096) if view[off:off + 4096] != expected[off:off + 4096]]
    lines.append(f"{len(diff)} blocks of 4 KiB differ; the first {min(shown, len(diff))}:")
    for off in diff[:shown]:
        writes = [i for i, lba in enumerate(w.lbas) if lba * BS == off]
        lines.append(f"  @{off} (track {off // TRACK}): copy has {what(view[off:off + 4096], off)}; expected "
                     f"{what(expected[off:off + 4096], off)}; writes there: {writes[:8]}")
    return "\n".join(lines)


def test_resync_and_restore_copy_only_the_difference(array: Any) -> None:
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x21)
    ar.create()
    ar.wait("PAIR")
    ar.ok("copy", "split", "c1")
    ar.qemu_write(1, 0, 4096, 0x01)
    ar.qemu_write(0, 10 * TRACK, 2 * TRACK, 0x02)
    ar.qemu_write(1, 100 * TRACK + 512, 4096, 0x03)  # copy side: differs too
    assert ar.row()["pending_bytes"] == 4 * TRACK
    row = ar.ok("copy", "resync", "c1")
    assert row["state"] in ("COPY", "PAIR")
    ar.wait("PAIR")
    assert ar.row()["copied_bytes"] == 4 * TRACK
    assert ar.file(0) == ar.file(1)
    ar.ok("copy", "split", "c1")
    ar.qemu_write(1, 50 * TRACK, TRACK, 0x44)
    ar.qemu_write(0, 51 * TRACK, 4096, 0x45)
    copy_image = ar.read(1)
    ar.ok("copy", "restore", "c1")
    ar.wait("PAIR")
    assert ar.row()["copied_bytes"] == 2 * TRACK
    assert ar.file(0) == copy_image == ar.file(1)


def test_extent_operations_leave_the_rest_untouched(array: Any) -> None:
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x31)
    ar.create()
    ar.wait("PAIR")
    ext = f"{16 * TRACK // BS}:{8 * TRACK // BS}"  # 1 MiB at 1 MiB
    row = ar.ok("copy", "split", "c1", "--extent", ext)
    assert row["state"] == "PAIR" and row["extent_state"] == "PSUS" and row["detail"] == "EXTENT DIVISION COMPLETED"
    ar.qemu_write(0, 16 * TRACK, 4096, 0x32)  # inside the divided extent: not mirrored
    ar.qemu_write(0, 40 * TRACK, 4096, 0x33)  # outside: still mirrored
    a, b = ar.file(0), ar.file(1)
    assert b[16 * TRACK:16 * TRACK + 4096] == bytes([0x31]) * 4096
    assert b[40 * TRACK:40 * TRACK + 4096] == bytes([0x33]) * 4096
    ar.ok("copy", "resync", "c1", "--extent", ext)  # extent couple
    ar.wait("PAIR")
    for _ in range(100):
        if ar.row()["extent"] is None:
            break
        time.sleep(0.1)
    assert ar.row()["extent"] is None and ar.file(0) == ar.file(1)
    # Extent update of a divided pair: only the extent is brought up to date.
    ar.ok("copy", "split", "c1")
    ar.qemu_write(0, 0, ar.size, 0x34)
    ar.ok("copy", "resync", "c1", "--extent", ext)
    for _ in range(100):
        if ar.row()["detail"] == "EXTENT UPDATE COMPLETED":
            break
        time.sleep(0.1)
    row = ar.row()
    assert row["state"] == "PSUS" and row["detail"] == "EXTENT UPDATE COMPLETED"
    b2 = ar.file(1)
    lo, hi = 16 * TRACK, 24 * TRACK
    assert b2[lo:hi] == bytes([0x34]) * (hi - lo)
    assert b2[:lo] == a[:lo] and b2[hi:] == a[hi:]  # the rest: the point-in-time image of the split
    # Dividing the extent again makes it like the rest (PSUS): no extent left.
    assert ar.ok("copy", "split", "c1", "--extent", ext)["extent"] is None
    # Extent restore: the original takes the copy's data in the extent only.
    ar.qemu_write(1, 2 * TRACK, 4096, 0x35)  # inside the extent restored below
    ar.qemu_write(1, 20 * TRACK, 4096, 0x36)  # outside it
    before = ar.file(0)
    row = ar.ok("copy", "restore", "c1", "--extent", "0:" + str(8 * TRACK // BS))
    assert row["state"] == "PSUS" and row["extent_state"] in ("RCPY", "PAIR")
    for _ in range(100):
        if ar.row()["extent_state"] == "PAIR":
            break
        time.sleep(0.1)
    after = ar.file(0)
    assert ar.row()["extent_state"] == "PAIR"
    assert after[2 * TRACK:2 * TRACK + 4096] == bytes([0x35]) * 4096
    assert after[8 * TRACK:] == before[8 * TRACK:]  # the rest of the original untouched
    cp = ar.cli("copy", "resync", "c1", "--extent", ext)  # one extent at a time: refused
    assert cp.returncode == 1 and "one extent at a time" in cp.stderr


def test_kill_during_division_copy_on_write_keeps_the_image_and_the_writes(array: Any) -> None:
    ar = array(64)
    ar.qemu_write(0, 0, ar.size, 0x41)
    base = bytes([0x41]) * ar.size
    ar.create_and_split()  # at once: nearly every track is still on the original
    w = Writer(ar)
    w.start()
    time.sleep(1.0)
    ar.sp.stop(signal.SIGKILL)
    w.stop.set()
    w.join(30)
    acked = len(w.acked)
    ar.restart()
    assert ar.row()["state"] == "PSUS"
    img0 = ar.read(0)
    # Every acknowledged write is there (the one in flight may or may not be).
    assert img0 in (w.image(base, acked), w.image(base, min(acked + 1, len(w.lbas))))
    assert ar.read(1) == base  # the point-in-time image: none of the writes after the division
    ar.wait("PSUS")


def test_kill_during_generation_then_restart_ends_identical(array: Any) -> None:
    ar = array(64)
    ar.qemu_write(0, 0, ar.size, 0x51)
    w = Writer(ar)
    w.start()
    ar.create()
    time.sleep(0.5)
    ar.sp.stop(signal.SIGKILL)
    w.stop.set()
    w.join(30)
    ar.restart()
    ar.wait("PAIR")
    assert ar.file(0) == ar.file(1)
    img = ar.file(0)
    base = bytes([0x51]) * ar.size
    assert img in (w.image(base, len(w.acked)), w.image(base, min(len(w.acked) + 1, len(w.lbas))))


def test_a_consistency_group_divides_at_one_point_of_the_write_stream(array: Any) -> None:
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x61)
    base = bytes([0x61]) * ar.size
    ar.create(1, "g1", "--group", "g")
    ar.create(2, "g2", "--group", "g")  # two copies of one original
    ar.wait("PAIR", "g1")
    ar.wait("PAIR", "g2")
    w = Writer(ar)
    w.start()
    time.sleep(0.5)
    rows = ar.ok("copy", "split", "--group", "g")
    time.sleep(0.3)
    w.finish()
    assert [r["state"] for r in rows] == ["PSUS", "PSUS"]
    v1, v2 = ar.read(1), ar.read(2)
    k = last_seq(v1) + 1
    assert k > 0 and v1 == v2 == w.image(base, k)
    assert ar.read(0) == w.image(base, len(w.acked)) != v1


@pytest.mark.parametrize("op", ["resync", "restore"])
def test_kill_during_resync_or_restore_then_restart_copies_only_the_rest(array: Any, op: str) -> None:
    """kill -9 while a resync (or a reverse resync) copies 48 MiB of differences under a writer: after the
    restart the copy finishes, copying exactly the tracks the bitmap files still held (part of the
    difference, never a full copy), and both volumes hold the operation's image with every
    acknowledged write on top."""
    ar = array(64)
    ar.qemu_write(0, 0, ar.size, 0x71)
    ar.create()
    ar.wait("PAIR")
    ar.ok("copy", "split", "c1")
    # 48 MiB differ on the side the operation copies from, one track on the other side.
    side, other = (0, 1) if op == "resync" else (1, 0)
    ar.qemu_write(side, 0, ar.size * 3 // 4, 0x72)
    ar.qemu_write(other, ar.size - TRACK, 4096, 0x73)
    tracks = ar.size // TRACK
    differ = set(range(tracks * 3 // 4)) | {tracks - 1}
    assert ar.row()["pending_bytes"] == len(differ) * TRACK
    base = ar.read(side)  # what both volumes hold once the operation is done (before the writer's writes)
    w = Writer(ar)
    w.start()
    while len(w.acked) < 20 and w.is_alive():
        time.sleep(0.01)
    before = len(w.acked)
    reply = request(ar.sp.data_dir, f"copy_{op}", {"name": "c1"})
    after = len(w.issued)
    assert reply["ok"], reply
    time.sleep(0.03)  # a few writes land while the copy runs (the mover needs ~0.15 s for 48 MiB)
    ar.sp.stop(signal.SIGKILL)
    w.stop.set()
    w.join(30)
    acked = len(w.acked)
    gen, active = ar.bits("c1", "gen"), ar.bits("c1", "active")
    restore = ar.bits("c1", "pdiff") | ar.bits("c1", "sdiff") if op == "restore" else set()
    left = gen | active | restore
    assert (restore if op == "restore" else gen), "the copy ended before the kill: nothing left to resume"
    # What is left is part of the difference and of the tracks the writer wrote: never the whole volume.
    assert left <= differ | {lba * BS // TRACK for lba in w.lbas} and len(left) < tracks
    ar.restart()
    assert ar.row()["state"] in ("COPY", "RCPY", "PAIR")
    ar.wait("PAIR")
    row = ar.row()
    # A restored track whose mirrored write may have been cut is copied again forward (gen | active).
    assert row["copied_bytes"] == (len(restore) + len(gen | active)) * TRACK
    img = ar.file(0)
    assert img == ar.file(1)
    # A resync keeps every write; a restore puts the copy's image back over the writes before it
    # (the one in flight at the restore may fall on either side).  The write in flight at the kill may
    # or may not be there.
    starts = [0] if op == "resync" else list(range(before, after + 1))
    ends = (acked, min(acked + 1, len(w.lbas)))
    assert any(img == w.image(base, e, s) for s in starts for e in ends)


@pytest.mark.slow  # ~15 s under a writer; the default run keeps the kill -9 during resync and restore
def test_three_copies_and_a_copy_of_a_copy(array: Any) -> None:
    """P (LUN 0) with three copies (LUNs 1-3) divided at three instants of a writer's stream, and a copy of
    the first copy (LUN 1 -> LUN 4); a fourth copy and a second level of cascade are refused.  The cascaded
    copy follows its original through the division, keeps its own division image while the first copy is
    resynchronised under it, and resyncs copying only the difference."""
    ar = array(8, luns=6)
    ar.qemu_write(0, 0, ar.size, 0x81)
    base = bytes([0x81]) * ar.size
    for n in (1, 2, 3):
        ar.req("copy_create", name=f"c{n}", pvol=f"{T}/0", svol=f"{T}/{n}")
    cp = ar.cli("copy", "create", "c5", "--pvol", f"{T}/0", "--svol", f"{T}/5")
    assert cp.returncode == 1 and "has 3 copies already" in cp.stderr
    ar.req("copy_create", name="cc", pvol=f"{T}/1", svol=f"{T}/4")  # a copy of a copy, its original still generating
    cp = ar.cli("copy", "create", "ccc", "--pvol", f"{T}/4", "--svol", f"{T}/5")
    assert cp.returncode == 1 and "one level of cascade only" in cp.stderr
    for name in ("c1", "c2", "c3", "cc"):
        ar.wait("PAIR", name)
    assert ar.file(4) == ar.file(1) == ar.file(0) == base
    w = Writer(ar)
    w.start()
    for n in (1, 2, 3):
        time.sleep(0.3)
        ar.req("copy_split", name=f"c{n}")
    time.sleep(0.3)
    w.finish()
    views = {n: ar.read(n) for n in (1, 2, 3, 4)}
    ks = {n: last_seq(views[n]) + 1 for n in (1, 2, 3)}
    assert 0 < ks[1] <= ks[2] <= ks[3] < len(w.acked)
    for n in (1, 2, 3):
        assert views[n] == w.image(base, ks[n]), f"copy {n}"
    assert views[4] == views[1]  # cc in PAIR followed LUN 1 (the writes up to c1's division, no later)
    assert ar.read(0) == w.image(base, len(w.acked))
    # Divide the cascade, then change its original (LUN 1) by a host write and by a resync of c1.
    ar.req("copy_split", name="cc")
    ar.qemu_write(1, 5 * TRACK + 4096, 4096, 0x82)
    after_split = {lba * BS // TRACK for lba in w.lbas[ks[1]:]}
    differ = after_split | {5}
    assert ar.row("c1")["pending_bytes"] == len(differ) * TRACK
    ar.req("copy_resync", name="c1")
    ar.wait("PAIR", "c1")
    assert ar.row("c1")["copied_bytes"] == len(differ) * TRACK
    assert ar.file(1) == ar.file(0) == w.image(base, len(w.acked))
    assert ar.read(4) == views[1]  # the copy-on-write into LUN 4 kept cc's division image
    ar.req("copy_resync", name="cc")
    ar.wait("PAIR", "cc")
    assert ar.row("cc")["copied_bytes"] == len(differ) * TRACK
    assert ar.file(4) == ar.file(1) == ar.file(0)
    for n in (2, 3):  # the other copies still hold their instants, on their own volumes
        assert ar.file(n) == views[n]


def test_create_on_a_full_file_system_is_refused_naming_the_file_and_leaves_nothing(array: Any, tmp_path: Path) -> None:
    """The pairs' bitmap directory on a file system that is full: `copy create` fails with the reason
    and the file (not a Python class name), keeps no half-made bitmap and no wrapper on the LUs (the
    host's I/O goes on as before), and works once there is room."""
    ar = array(8)
    with full_file_system(tmp_path / "small") as small:
        (ar.sp.data_dir / "local-copies").symlink_to(small)
        ar.qemu_write(0, 0, 4096, 0x61)
        cp = ar.cli("copy", "create", "c1", "--pvol", f"{T}/0", "--svol", f"{T}/1")
        assert cp.returncode != 0
        assert "No space left on device" in cp.stderr and "/local-copies/c1." in cp.stderr, cp.stderr
        assert "OSError" not in cp.stderr, cp.stderr
        assert sorted(p.name for p in small.iterdir()) == ["filler"]  # no half-made bitmap kept
        assert ar.ok("copy", "display", "--json") == []
        ar.qemu_write(1, 0, 4096, 0x62)  # the S-VOL-to-be is a plain LU still: it takes host writes
        assert ar.file(1)[:4096] == bytes([0x62]) * 4096
        (small / "filler").unlink()
        ar.create()
        ar.wait("PAIR")
        assert ar.file(0) == ar.file(1)


KILL_AT_RESYNC_RECORD = '''
"""`sanlab serve`, killed (SIGKILL, as kill -9) {when} a resync of a divided pair commits its record
(COPY): SANLAB_TEST_WRAP="python THIS"."""
import os
import sys

from sanlab.replication import local_copies

real_save = local_copies.LocalCopyManager._save


async def save(self, *pairs):
    resync = any(self.records[p.name].state == "PSUS" and p.state.name == "COPY" for p in pairs)
    if resync and "{when}" == "before":
        os.kill(os.getpid(), 9)
    await real_save(self, *pairs)
    if resync and "{when}" == "after":
        os.kill(os.getpid(), 9)

local_copies.LocalCopyManager._save = save
from sanlab.tools.cli import main  # noqa: E402
sys.exit(main(sys.argv[4:]))  # argv: THIS, python, -m, sanlab.tools.cli, serve ...
'''


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_as_a_resync_commits_its_record_keeps_the_copy_right(
        array: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """kill -9 just before, or just after, a resync of a divided pair commits its record (COPY).
    Before: the restart finds the pair divided, so it must find the divided pair's bitmaps.  (When the
    resync's ``gen`` marks and ``pdiff``/``sdiff`` clears reached the disk first, the copy's reads of
    the differing tracks came from the original, "the image is still there", and the division copy
    wrote the original's data over the copy's own write: an acknowledged write lost, and a write
    made to the original after the division in the point-in-time image.)  After: the restart finds
    COPY with the bitmap changes maybe not flushed, and the resync copies the differing tracks."""
    wrapper = tmp_path / "kill_at_resync_record.py"
    wrapper.write_text(KILL_AT_RESYNC_RECORD.replace("{when}", when))
    monkeypatch.setenv("SANLAB_TEST_WRAP", f"{sys.executable} {wrapper}")
    ar = array(8)
    monkeypatch.delenv("SANLAB_TEST_WRAP")
    ar.qemu_write(0, 0, ar.size, 0x91)
    ar.create()
    ar.wait("PAIR")
    ar.ok("copy", "split", "c1")
    ar.qemu_write(1, 3 * TRACK, 4096, 0x92)  # the copy's own write (sdiff)
    ar.qemu_write(0, 5 * TRACK, 4096, 0x93)  # the original's (pdiff)
    view = ar.read(1)
    assert ar.cli("copy", "resync", "c1").returncode != 0  # the array died answering it
    assert ar.sp.proc.wait(30) == -signal.SIGKILL
    ar.restart()
    if when == "before":
        assert ar.row()["state"] == "PSUS"
        assert ar.read(1) == view  # the copy's write is there, track 5 the image of the division
        assert ar.row()["pending_bytes"] == 2 * TRACK  # both tracks still differ
        ar.ok("copy", "resync", "c1")  # asked again
    ar.wait("PAIR")
    assert ar.row()["copied_bytes"] == 2 * TRACK  # the two tracks that differ, no more
    assert ar.file(0) == ar.file(1) == ar.read(0)
    assert ar.file(1)[5 * TRACK:5 * TRACK + 4096] == bytes([0x93]) * 4096

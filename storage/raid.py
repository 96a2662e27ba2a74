"""RAID groups on drive files: levels 0, 1, 5, 6 and 10 (SPEC §3, seed 004 1st embodiment).

A :class:`RaidGroup` turns a list of :class:`Drive` s into one linear byte
address space.  Layout (chunk = ``stripe_size`` bytes on one drive):

* RAID 0 — chunk *c* on drive ``c % n``.
* RAID 1 — every drive holds everything.
* RAID 10 — drives pair up (0,1), (2,3)...; chunks are striped over the pairs.
* RAID 5 — left-symmetric: in stripe *s* parity P sits on drive
  ``n-1 - s % n`` and the data chunks follow it, wrapping around.
* RAID 6 — as RAID 5 with Q on the drive after P; Q is the Reed-Solomon
  syndrome Σ gⁱ·Dᵢ over GF(2⁸) (polynomial 0x11D, g = 2), so any two lost
  chunks of a stripe can be solved for.

Parity is computed with numpy on whole byte ranges (table lookups for the GF
multiply), never in Python byte loops.  Small writes read-modify-write
(P ^= ΔD, Q ^= gⁱ·ΔD); writes covering most of a stripe, and every write to a
degraded stripe, reconstruct the stripe range and compute parity afresh.

Crash consistency (the RAID-5 "write hole"): a **write-intent bitmap** beside
the drives marks a region dirty, durably, before any stripe in it is written,
and is cleared lazily once the region is quiet.  After a crash the group
resynchronises the parity of every dirty region from its data, so parity is
consistent again and every acknowledged write (data and parity were both on
the drives before the acknowledgement) reads back.  We chose a bitmap over a
data journal because it costs one fdatasync per region transition instead of
writing every block twice; the price is that a crash *while degraded* can
leave the missing drive's chunk in a dirty stripe unrecoverable — the same
trade Linux md makes without a journal device, and stated here so it is known.

Drive states survive restarts (``raid-<name>.state``, :class:`GroupStateFile`): a member taken
out (by the operator or by an I/O error) stays out, because it missed writes; a replacement
being rebuilt comes back REBUILDING with its **rebuild watermark**, the stripes below which it
holds valid data.  Reads above the watermark reconstruct from the other members and the rebuild
resumes there.  Flush order, so that a crash at any moment (kill -9 included) never lets a
member that is behind serve reads:

1. a failure is on disk before any write that skipped the failed member is acknowledged;
2. replace-drive: the replacement file exists, then the state file names it REBUILDING at
   watermark 0, and only then does the drive list (catalog, ``raid-<name>.json``) name it — the
   state file's record wins if a crash falls between the two (:func:`open_group`);
3. each checkpoint fdatasyncs the replacement's rebuilt stripes *before* the state file's
   watermark moves past them (the watermark on disk never runs ahead of the data);
4. the end of a rebuild syncs the replacement, then records it ONLINE.

The state file is replaced atomically (write, fsync, rename, fsync of the directory).
"""
from __future__ import annotations

import asyncio
import enum
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import numpy as np
import numpy.typing as npt

from sanlab.storage.volume import EmulatedBlockOps, VolumeError

_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
"""preadv2 flag: fail with EAGAIN instead of waiting for the disk (Linux 4.14+)."""

Bytes = npt.NDArray[np.uint8]
_T = TypeVar("_T")

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sanlab-raid")


# --- GF(2^8) arithmetic for RAID 6 ---------------------------------------------------------------

def _gf_tables() -> tuple[Bytes, Bytes]:
    exp = np.zeros(512, dtype=np.uint8)
    log = np.zeros(256, dtype=np.uint8)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    exp[255:510] = exp[0:255]
    return exp, log


GF_EXP, GF_LOG = _gf_tables()


def gf_mul(data: Bytes, c: int) -> Bytes:
    """Multiply every byte of ``data`` by the constant ``c`` in GF(2⁸)."""
    if c == 0:
        return np.zeros_like(data)
    if c == 1:
        return data.copy()
    out = GF_EXP[(GF_LOG[data].astype(np.uint16) + int(GF_LOG[c])) % 255]
    out[data == 0] = 0
    return out.astype(np.uint8)


def syndromes(chunks: list[Bytes], with_q: bool) -> tuple[Bytes, Bytes | None]:
    """P = ⊕ Dᵢ and (RAID 6) Q = ⊕ gⁱ·Dᵢ of a stripe's data chunks."""
    p = np.zeros_like(chunks[0])
    q = np.zeros_like(chunks[0]) if with_q else None
    for i, c in enumerate(chunks):
        p ^= c
        if q is not None:
            q ^= gf_mul(c, gf_pow2(i))
    return p, q


def gf_pow2(i: int) -> int:
    """gⁱ with g = 2."""
    return int(GF_EXP[i % 255])


def gf_inv(c: int) -> int:
    return int(GF_EXP[(255 - int(GF_LOG[c])) % 255])


def gf_mul_scalar(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return int(GF_EXP[(int(GF_LOG[a]) + int(GF_LOG[b])) % 255])


# --- drives ------------------------------------------------------------------------------------------


class DriveState(enum.Enum):
    ONLINE = "online"
    FAILED = "failed"
    REBUILDING = "rebuilding"


class Drive:
    """One member: a file (or block device) of ``size`` bytes."""

    def __init__(self, path: str, size: int, create: bool = True) -> None:
        self.path = path
        self.size = size
        self.state = DriveState.ONLINE
        self.rebuilt_to = 0
        """While REBUILDING: bytes below this offset are valid."""
        self._fd: int | None = None
        self.error: str | None = None
        """Why the drive could not be opened (its state is then FAILED)."""
        try:
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            self._fd = os.open(path, flags, 0o600)
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)
        except OSError as exc:
            self.state = DriveState.FAILED
            self.error = f"{path}: {exc.strerror or exc}"

    @property
    def readable(self) -> bool:
        return self.state is DriveState.ONLINE

    def fail(self) -> None:
        """Take the drive out (explicit failure or an I/O error)."""
        self.state = DriveState.FAILED

    def pread(self, length: int, offset: int) -> bytes:
        if self._fd is None or self.state is DriveState.FAILED:
            raise OSError(f"drive {self.path} is failed")
        data = os.pread(self._fd, length, offset)
        return data + bytes(length - len(data))

    def pread_nowait(self, buf: memoryview, offset: int) -> bool:
        """Fill ``buf`` from the page cache (``preadv`` with RWF_NOWAIT); False when that would
        wait for the disk, the file ends early, the drive is not ONLINE or the read fails: the
        caller then reads the ordinary way (which also takes a failing drive out)."""
        if self._fd is None or self.state is not DriveState.ONLINE or not _RWF_NOWAIT:
            return False
        try:
            return os.preadv(self._fd, [buf], offset, _RWF_NOWAIT) == len(buf)
        except OSError:
            return False

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        if self._fd is None or self.state is DriveState.FAILED:
            raise OSError(f"drive {self.path} is failed")
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def sync(self) -> None:
        if self._fd is not None and self.state is not DriveState.FAILED:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- layout ------------------------------------------------------------------------------------------


class RaidLevel(enum.IntEnum):
    RAID0 = 0
    RAID1 = 1
    RAID5 = 5
    RAID6 = 6
    RAID10 = 10


_MIN_DRIVES = {RaidLevel.RAID0: 1, RaidLevel.RAID1: 2, RaidLevel.RAID5: 3, RaidLevel.RAID6: 4, RaidLevel.RAID10: 4}


@dataclass(frozen=True, slots=True)
class Layout:
    """Pure address arithmetic of one RAID level (property-tested against a flat model)."""

    level: RaidLevel
    drives: int
    chunk: int
    drive_size: int

    def __post_init__(self) -> None:
        if self.drives < _MIN_DRIVES[self.level]:
            raise ValueError(f"RAID {int(self.level)} needs at least {_MIN_DRIVES[self.level]} drives")
        if self.level is RaidLevel.RAID10 and self.drives % 2:
            raise ValueError("RAID 10 needs an even number of drives")
        if self.chunk <= 0 or self.chunk % 512:
            raise ValueError("stripe size must be a positive multiple of 512")

    @property
    def data_chunks(self) -> int:
        """Data chunks per stripe."""
        return {RaidLevel.RAID0: self.drives, RaidLevel.RAID1: 1, RaidLevel.RAID5: self.drives - 1,
                RaidLevel.RAID6: self.drives - 2, RaidLevel.RAID10: self.drives // 2}[self.level]

    @property
    def stripes(self) -> int:
        return self.drive_size // self.chunk

    @property
    def capacity(self) -> int:
        return self.stripes * self.data_chunks * self.chunk

    def parity_drives(self, stripe: int) -> tuple[int, ...]:
        """(P,) or (P, Q) drive indexes of a stripe; () for levels without parity."""
        n = self.drives
        if self.level is RaidLevel.RAID5:
            return (n - 1 - stripe % n,)
        if self.level is RaidLevel.RAID6:
            p = n - 1 - stripe % n
            return (p, (p + 1) % n)
        return ()

    def data_drives(self, stripe: int, index: int) -> tuple[int, ...]:
        """Drives holding data chunk ``index`` of ``stripe`` (several for mirrors)."""
        n = self.drives
        if self.level is RaidLevel.RAID0:
            return (index,)
        if self.level is RaidLevel.RAID1:
            return tuple(range(n))
        if self.level is RaidLevel.RAID10:
            return (2 * index, 2 * index + 1)
        par = self.parity_drives(stripe)
        return ((par[-1] + 1 + index) % n,)

    def segments(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int, int]]:
        """Split a logical range into (stripe, data index, offset in chunk, length, offset in request)."""
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise VolumeError(f"range {offset}+{length} outside RAID group of {self.capacity} bytes")
        done = 0
        per_stripe = self.data_chunks * self.chunk
        while done < length:
            pos = offset + done
            stripe, within = divmod(pos, per_stripe)
            index, coff = divmod(within, self.chunk)
            n = min(self.chunk - coff, length - done)
            yield stripe, index, coff, n, done
            done += n


# --- the group ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _StripeWrite:
    stripe: int
    parts: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(data index, offset in chunk, length, offset in request)"""


class PersistentBitmap:
    """A bit per unit (a region of stripes, a stripe), in a file; a set bit is durable before
    :meth:`set` returns (pwrite + fdatasync), a cleared one lazily.  Thread-safe: members are set
    from the I/O pool."""

    def __init__(self, path: str | None, bits: int, fresh: bool = False) -> None:
        self.path = path
        """The file (None: kept in memory only, for groups without a state directory)."""
        self.bits = bytearray((bits + 7) // 8)
        self._mutex = threading.Lock()
        self._closed = False
        self._fd: int | None = None
        if path is None:
            return
        exists = os.path.exists(path) and not fresh
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if exists:
            old = os.pread(self._fd, len(self.bits), 0)
            self.bits[:len(old)] = old
        else:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, bytes(self.bits), 0)
            os.fsync(self._fd)

    def dirty(self) -> list[int]:
        return [i for i in range(len(self.bits) * 8) if self.bits[i >> 3] & (1 << (i & 7))]

    def has(self, unit: int) -> bool:
        return bool(self.bits[unit >> 3] & (1 << (unit & 7)))

    def set(self, unit: int) -> bool:
        """Mark the unit, durably; True if this changed the bitmap."""
        byte, bit = unit >> 3, 1 << (unit & 7)
        with self._mutex:
            if self.bits[byte] & bit:
                return False
            self.bits[byte] |= bit
            if self._fd is not None:
                os.pwrite(self._fd, bytes([self.bits[byte]]), byte)
                os.fdatasync(self._fd)
        return True

    def clear(self, unit: int) -> None:
        byte, bit = unit >> 3, 1 << (unit & 7)
        with self._mutex:
            if self.bits[byte] & bit:
                self.bits[byte] &= ~bit & 0xFF
                if self._fd is not None:
                    os.pwrite(self._fd, bytes([self.bits[byte]]), byte)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)

    def remove(self) -> None:
        """Close and delete the file."""
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


WriteIntentBitmap = PersistentBitmap
"""The write-intent bitmap: one bit per region of stripes, set before the region is written."""


@dataclass(frozen=True, slots=True)
class RebuildRecord:
    """A rebuild in progress as the state file holds it."""

    index: int
    """Member being rebuilt."""
    path: str
    """The replacement drive file."""
    stripes_done: int
    """Watermark: stripes ``< stripes_done`` are rebuilt and synced on the replacement."""
    rate: int = 0
    """Pace, bytes of the replacement per second (0: as fast as the drives go); kept across restarts."""


@dataclass(frozen=True, slots=True)
class GroupState:
    """What must survive a restart of a group's member states (see the module docstring)."""

    failed: frozenset[int] = frozenset()
    rebuild: RebuildRecord | None = None


class GroupStateFile:
    """``raid-<name>.state``: member failures and the rebuild watermark, JSON, replaced atomically."""

    VERSION = 1

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> GroupState:
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return GroupState()
        except (OSError, ValueError) as exc:
            # Guessing here could bring a stale member back online: refuse to open instead.
            raise VolumeError(f"RAID state file {self.path} is unreadable: {exc}") from None
        rb = raw.get("rebuild")
        return GroupState(frozenset(int(i) for i in raw.get("failed", [])),
                          RebuildRecord(int(rb["index"]), str(rb["path"]), int(rb["stripes_done"]),
                                        int(rb.get("rate", 0))) if rb else None)

    def save(self, state: GroupState) -> None:
        body: dict[str, object] = {"version": self.VERSION, "failed": sorted(state.failed), "rebuild": None}
        if state.rebuild is not None:
            body["rebuild"] = {"index": state.rebuild.index, "path": state.rebuild.path,
                               "stripes_done": state.rebuild.stripes_done, "rate": state.rebuild.rate}
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(body).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself is durable before we go on (flush order, module docstring)
        finally:
            os.close(dfd)


class RaidGroup:
    """A RAID group: linear byte addressing over its drives, degraded mode, rebuild, scrub."""

    REGION_STRIPES = 64
    """Stripes per write-intent bit."""

    CHECKPOINT_STRIPES = 256
    """A rebuild records its watermark at least every this many stripes ..."""
    CHECKPOINT_SECONDS = 1.0
    """... and at least this often, so a restart redoes little."""

    def __init__(self, level: RaidLevel | int, drives: list[Drive], stripe_size: int = 64 * 1024,
                 bitmap_path: str | None = None, state_path: str | None = None) -> None:
        size = min(d.size for d in drives)
        self.layout = Layout(RaidLevel(level), len(drives), stripe_size, size)
        self.level = self.layout.level
        self.drives = drives
        self._locks: dict[int, asyncio.Lock] = {}
        self._region_users: dict[int, int] = {}
        self.bitmap: WriteIntentBitmap | None = None
        self._state_file = GroupStateFile(state_path) if state_path is not None else None
        self._ahead_path = os.path.splitext(state_path)[0] + ".rebuilt" if state_path is not None else None
        self._ahead: PersistentBitmap | None = None
        """While rebuilding: stripes rebuilt ahead of the watermark, on demand of a host write."""
        self._rebuild: RebuildRecord | None = None
        """The rebuild in progress (its ``stripes_done`` is the watermark last made durable)."""
        self.rebuild_progress: float | None = None
        self.rebuild_rate: float | None = None
        """Bytes of the replacement rebuilt per second since the rebuild (re)started."""
        self.rebuild_eta: float | None = None
        """Seconds left at that rate."""
        self.rebuild_error: str | None = None
        """Why the last rebuild stopped short (None when it did not fail)."""
        self._rebuild_running = False
        self._rebuild_idle = asyncio.Event()
        self._rebuild_idle.set()
        self._stop_rebuild = False
        self._closed = False
        if self._state_file is not None:
            self._apply(self._state_file.load())
        self._persisted_failed = self._failed_members()
        if bitmap_path is not None and self.level in (RaidLevel.RAID5, RaidLevel.RAID6):
            regions = (self.layout.stripes + self.REGION_STRIPES - 1) // self.REGION_STRIPES
            self.bitmap = WriteIntentBitmap(bitmap_path, regions)
        failed = sum(not d.readable for d in drives)
        if failed > self.redundancy:
            raise VolumeError(f"RAID {int(self.level)} group has {failed} failed drives; it tolerates "
                              f"{self.redundancy}")

    def _apply(self, state: GroupState) -> None:
        """Bring member states back from the state file (at open)."""
        for i in state.failed:
            if 0 <= i < len(self.drives):
                self.drives[i].fail()
        rb = state.rebuild
        if rb is None or not 0 <= rb.index < len(self.drives):
            return
        drive = self.drives[rb.index]
        if drive.path != rb.path:
            raise VolumeError(f"RAID state file names {rb.path} as drive {rb.index} being rebuilt, the group "
                              f"has {drive.path}")
        if drive.state is DriveState.FAILED:  # the replacement itself is gone: it is a failed member now
            self.rebuild_error = f"replacement {drive.path} could not be opened ({drive.error})"
            return
        drive.state = DriveState.REBUILDING
        done = min(rb.stripes_done, self.layout.stripes)
        drive.rebuilt_to = done * self.layout.chunk
        self._ahead = PersistentBitmap(self._ahead_path, self.layout.stripes)
        self._rebuild = RebuildRecord(rb.index, rb.path, done, rb.rate)
        self.rebuild_progress = done / self.layout.stripes if self.layout.stripes else 1.0

    def _failed_members(self) -> frozenset[int]:
        return frozenset(i for i, d in enumerate(self.drives) if d.state is DriveState.FAILED)

    def _save_state(self) -> None:
        """Write the member states (blocking: call through :meth:`_run` on the loop)."""
        failed = self._failed_members()
        if self._state_file is not None:
            self._state_file.save(GroupState(failed, self._rebuild))
        self._persisted_failed = failed

    async def _persist_failures(self) -> None:
        """Make a member failure seen since the last save durable (flush order rule 1)."""
        if self._failed_members() != self._persisted_failed:
            await self._run(self._save_state)

    @property
    def capacity(self) -> int:
        return self.layout.capacity

    @property
    def redundancy(self) -> int:
        """Drives that may fail without data loss (per mirror pair for RAID 10)."""
        return {RaidLevel.RAID0: 0, RaidLevel.RAID1: len(self.drives) - 1, RaidLevel.RAID5: 1,
                RaidLevel.RAID6: 2, RaidLevel.RAID10: 1}[self.level]

    @property
    def degraded(self) -> bool:
        return any(not d.readable for d in self.drives)

    def _lock(self, stripe: int) -> asyncio.Lock:
        lock = self._locks.get(stripe)
        if lock is None:
            lock = self._locks[stripe] = asyncio.Lock()
        return lock

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)

    # --- crash recovery ------------------------------------------------------------------------

    async def recover(self) -> tuple[int, int]:
        """Resynchronise the parity of every dirty region (after a crash).

        Returns (dirty regions checked, stripes whose parity had to be rewritten).
        """
        if self.bitmap is None:
            return 0, 0
        fixed = 0
        dirty = self.bitmap.dirty()
        for region in dirty:
            first = region * self.REGION_STRIPES
            for stripe in range(first, min(first + self.REGION_STRIPES, self.layout.stripes)):
                async with self._lock(stripe):
                    fixed += await self._run(self._resync_stripe, stripe, True)
            self.bitmap.clear(region)
        return len(dirty), fixed

    # --- reads ----------------------------------------------------------------------------------

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from logical ``offset``."""
        out = bytearray(length)
        for stripe, index, coff, n, roff in self.layout.segments(offset, length):
            out[roff:roff + n] = await self._run(self._read_chunk, stripe, index, coff, n)
        return bytes(out)

    def read_nowait(self, offset: int, length: int) -> bytearray | None:
        """``length`` bytes from logical ``offset`` if every chunk is in the page cache of an ONLINE
        drive holding it, else None (then :meth:`read`).  Never reconstructs: a chunk whose drive is
        failed or rebuilding, or not cached, sends the whole read the ordinary way."""
        out = bytearray(length)
        view = memoryview(out)
        lay = self.layout
        drives = self.drives
        for stripe, index, coff, n, roff in lay.segments(offset, length):
            base = stripe * lay.chunk + coff
            part = view[roff:roff + n]
            if not any(drives[d].pread_nowait(part, base) for d in lay.data_drives(stripe, index)):
                return None
        return out

    def _read_chunk(self, stripe: int, index: int, coff: int, n: int) -> bytes:
        lay = self.layout
        base = stripe * lay.chunk + coff
        for d in lay.data_drives(stripe, index):
            drive = self.drives[d]
            if self._valid(drive, base, n):
                try:
                    return drive.pread(n, base)
                except OSError:
                    drive.fail()
        if self.level in (RaidLevel.RAID0, RaidLevel.RAID1, RaidLevel.RAID10):
            raise VolumeError(f"no readable copy of stripe {stripe} chunk {index}")
        return self._reconstruct(stripe, coff, n)[index].tobytes()

    def _stripe_whole(self, stripe: int) -> bool:
        """Every member holds valid data for ``stripe``."""
        base = stripe * self.layout.chunk
        return all(self._valid(d, base, self.layout.chunk) for d in self.drives)

    def _valid(self, drive: Drive, base: int, n: int) -> bool:
        """``drive`` holds valid data over [base, base+n) (a range within one chunk)."""
        if drive.state is DriveState.ONLINE:
            return True
        if drive.state is not DriveState.REBUILDING:
            return False
        if base + n <= drive.rebuilt_to:
            return True
        return self._ahead is not None and self._ahead.has(base // self.layout.chunk)

    def _read_member(self, d: int, base: int, n: int) -> Bytes | None:
        drive = self.drives[d]
        if not self._valid(drive, base, n):
            return None
        try:
            return np.frombuffer(drive.pread(n, base), dtype=np.uint8)
        except OSError:
            drive.fail()
            return None

    def _reconstruct(self, stripe: int, coff: int, n: int) -> list[Bytes]:
        """All data chunks of a parity stripe over [coff, coff+n), solving for missing ones."""
        lay = self.layout
        base = stripe * lay.chunk + coff
        k = lay.data_chunks
        data: list[Bytes | None] = [self._read_member(lay.data_drives(stripe, i)[0], base, n) for i in range(k)]
        par = lay.parity_drives(stripe)
        p = self._read_member(par[0], base, n)
        q = self._read_member(par[1], base, n) if len(par) > 1 else None
        missing = [i for i, v in enumerate(data) if v is None]
        if not missing:
            return [v for v in data if v is not None]
        if len(missing) == 1 and p is not None:
            x = missing[0]
            acc = p.copy()
            for i, v in enumerate(data):
                if v is not None:
                    acc ^= v
            data[x] = acc
        elif len(missing) == 1 and q is not None:
            x = missing[0]
            acc = q.copy()
            for i, v in enumerate(data):
                if v is not None:
                    acc ^= gf_mul(v, gf_pow2(i))
            data[x] = gf_mul(acc, gf_inv(gf_pow2(x)))
        elif len(missing) == 2 and p is not None and q is not None:
            x, y = missing
            pxy, qxy = p.copy(), q.copy()
            for i, v in enumerate(data):
                if v is not None:
                    pxy ^= v
                    qxy ^= gf_mul(v, gf_pow2(i))
            # Dx = A·Pxy ⊕ B·Qxy with A = g^(y-x)/(g^(y-x)⊕1), B = g^(-x)/(g^(y-x)⊕1).
            gyx = gf_pow2(y - x)
            denom = gf_inv(gyx ^ 1)
            a = gf_mul_scalar(gyx, denom)
            b = gf_mul_scalar(gf_inv(gf_pow2(x)), denom)
            dx = gf_mul(pxy, a) ^ gf_mul(qxy, b)
            data[x] = dx
            data[y] = pxy ^ dx
        else:
            raise VolumeError(f"stripe {stripe}: {len(missing)} data chunks lost, parity insufficient")
        return [v for v in data if v is not None]

    # --- writes ---------------------------------------------------------------------------------

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at logical ``offset``; returns once data and parity are on the drives."""
        view = memoryview(data)
        stripes: dict[int, _StripeWrite] = {}
        for stripe, index, coff, n, roff in self.layout.segments(offset, len(view)):
            stripes.setdefault(stripe, _StripeWrite(stripe)).parts.append((index, coff, n, roff))
        regions = sorted({s // self.REGION_STRIPES for s in stripes})
        await self._enter_regions(regions)
        try:
            for sw in stripes.values():
                async with self._lock(sw.stripe):
                    if self._rebuild is not None:
                        await self._run(self._rebuild_ahead, sw.stripe)
                    await self._run(self._write_stripe, sw, view)
        finally:
            self._leave_regions(regions)
            # A member that failed under this write missed it: that must be on disk before the
            # write is acknowledged, or a restart would bring the member back with stale data.
            await self._persist_failures()

    async def _enter_regions(self, regions: list[int]) -> None:
        for r in regions:
            self._region_users[r] = self._region_users.get(r, 0) + 1
            if self.bitmap is not None:
                await self._run(self.bitmap.set, r)

    def _leave_regions(self, regions: list[int]) -> None:
        for r in regions:
            left = self._region_users[r] - 1
            if left:
                self._region_users[r] = left
            else:
                del self._region_users[r]
                if self.bitmap is not None:
                    # Cleared without a sync: a crash before the clear reaches disk only costs a resync.
                    self.bitmap.clear(r)

    def _write_member(self, d: int, data: bytes | memoryview, base: int) -> None:
        drive = self.drives[d]
        if drive.state is DriveState.FAILED:
            return
        try:
            drive.pwrite(data, base)
        except OSError:
            drive.fail()
            if sum(not x.readable for x in self.drives) > self.redundancy:
                raise VolumeError(f"drive {drive.path} failed; the group is beyond its redundancy") from None

    def _write_stripe(self, sw: _StripeWrite, view: memoryview) -> None:
        lay = self.layout
        stripe = sw.stripe
        if not lay.parity_drives(stripe):
            for index, coff, n, roff in sw.parts:
                for d in lay.data_drives(stripe, index):
                    self._write_member(d, view[roff:roff + n], stripe * lay.chunk + coff)
            if not any(self.drives[d].state is not DriveState.FAILED
                       for index, *_ in sw.parts for d in lay.data_drives(stripe, index)):
                raise VolumeError(f"stripe {stripe}: no drive left to write")
            return
        members = [lay.data_drives(stripe, i)[0] for i in range(lay.data_chunks)] + list(lay.parity_drives(stripe))
        stripe_ok = all(self._valid(self.drives[d], stripe * lay.chunk, lay.chunk) for d in members)
        small = len(sw.parts) * 2 <= lay.data_chunks
        if stripe_ok and small:
            self._read_modify_write(sw, view)
        else:
            self._reconstruct_write(sw, view)

    def _read_modify_write(self, sw: _StripeWrite, view: memoryview) -> None:
        lay = self.layout
        stripe = sw.stripe
        lo = min(c for _, c, _, _ in sw.parts)
        hi = max(c + n for _, c, n, _ in sw.parts)
        base = stripe * lay.chunk
        par = lay.parity_drives(stripe)
        p = np.frombuffer(self.drives[par[0]].pread(hi - lo, base + lo), dtype=np.uint8).copy()
        q = (np.frombuffer(self.drives[par[1]].pread(hi - lo, base + lo), dtype=np.uint8).copy()
             if len(par) > 1 else None)
        writes: list[tuple[int, bytes | memoryview, int]] = []
        for index, coff, n, roff in sw.parts:
            d = lay.data_drives(stripe, index)[0]
            old = np.frombuffer(self.drives[d].pread(n, base + coff), dtype=np.uint8)
            new = np.frombuffer(view[roff:roff + n], dtype=np.uint8)
            delta = old ^ new
            p[coff - lo:coff - lo + n] ^= delta
            if q is not None:
                q[coff - lo:coff - lo + n] ^= gf_mul(delta, gf_pow2(index))
            writes.append((d, view[roff:roff + n], base + coff))
        for d, data, off in writes:
            self._write_member(d, data, off)
        self._write_member(par[0], p.tobytes(), base + lo)
        if q is not None:
            self._write_member(par[1], q.tobytes(), base + lo)

    def _reconstruct_write(self, sw: _StripeWrite, view: memoryview) -> None:
        lay = self.layout
        stripe = sw.stripe
        lo = min(c for _, c, _, _ in sw.parts)
        hi = max(c + n for _, c, n, _ in sw.parts)
        base = stripe * lay.chunk
        full = {i for i, c, n, _ in sw.parts if c == lo and n == hi - lo}
        if len(full) == lay.data_chunks:
            chunks = [np.zeros(hi - lo, dtype=np.uint8) for _ in range(lay.data_chunks)]
        else:
            chunks = [c.copy() for c in self._reconstruct(stripe, lo, hi - lo)]
        for index, coff, n, roff in sw.parts:
            chunks[index][coff - lo:coff - lo + n] = np.frombuffer(view[roff:roff + n], dtype=np.uint8)
        self._write_parity_and_data(stripe, lo, chunks, {i for i, *_ in sw.parts})

    def _write_parity_and_data(self, stripe: int, lo: int, chunks: list[Bytes], which: set[int]) -> None:
        lay = self.layout
        base = stripe * lay.chunk + lo
        p, q = syndromes(chunks, self.level is RaidLevel.RAID6)
        for i in which:
            self._write_member(lay.data_drives(stripe, i)[0], chunks[i].tobytes(), base)
        par = lay.parity_drives(stripe)
        self._write_member(par[0], p.tobytes(), base)
        if q is not None:
            self._write_member(par[1], q.tobytes(), base)

    # --- scrub, resync, rebuild -----------------------------------------------------------------------

    def _resync_stripe(self, stripe: int, repair: bool) -> int:
        """Compare stored parity with the data's; rewrite it when ``repair``.  1 if it differed."""
        lay = self.layout
        if not lay.parity_drives(stripe) or not self._stripe_whole(stripe):
            # A stripe missing a member has no redundancy to check; above a rebuild's watermark the
            # rebuild itself makes the stripe consistent when it gets there.
            return 0
        chunks = self._reconstruct(stripe, 0, lay.chunk)
        p, q = syndromes(chunks, self.level is RaidLevel.RAID6)
        par = lay.parity_drives(stripe)
        base = stripe * lay.chunk
        bad = self._read_member(par[0], base, lay.chunk)
        differs = bad is None or not np.array_equal(bad, p)
        if q is not None:
            bq = self._read_member(par[1], base, lay.chunk)
            differs = differs or bq is None or not np.array_equal(bq, q)
        if differs and repair:
            self._write_member(par[0], p.tobytes(), base)
            if q is not None:
                self._write_member(par[1], q.tobytes(), base)
        return int(differs)

    async def scrub(self, repair: bool = True) -> int:
        """Check (and repair) parity of every stripe; returns the number of mismatched stripes."""
        bad = 0
        for stripe in range(self.layout.stripes):
            async with self._lock(stripe):
                bad += await self._run(self._resync_stripe, stripe, repair)
        return bad

    def fail_drive(self, index: int) -> None:
        """Mark a member failed (operator command or test); durable before this returns."""
        self.drives[index].fail()
        self._save_state()

    @property
    def rebuilding(self) -> int | None:
        """Index of the member being rebuilt (also while paused by a restart), else None."""
        return self._rebuild.index if self._rebuild is not None else None

    async def begin_rebuild(self, index: int, replacement: Drive, rate: int = 0) -> None:
        """Put ``replacement`` in as member ``index``, REBUILDING from stripe 0, and make that durable.

        Call :meth:`run_rebuild` next.  The caller may record the new drive list only after this
        returns (flush order rule 2, module docstring).  ``rate`` paces the rebuild (bytes of the
        replacement per second, 0 for no limit), as arrays let an operator keep host I/O first.
        """
        if self.redundancy == 0:
            raise VolumeError("RAID 0 cannot rebuild")
        if self._rebuild is not None:
            raise VolumeError(f"drive {self._rebuild.index} is being rebuilt")
        if not 0 <= index < len(self.drives):
            raise VolumeError(f"no drive {index}")
        if replacement.state is DriveState.FAILED:
            raise VolumeError(f"replacement drive unusable: {replacement.error or replacement.path}")
        old = self.drives[index]
        if not self._has_rebuild_source(index):
            raise VolumeError(f"too many other members are out: nothing to rebuild drive {index} from")
        replacement.state = DriveState.REBUILDING
        replacement.rebuilt_to = 0
        self.drives[index] = replacement
        self._rebuild = RebuildRecord(index, replacement.path, 0, max(0, rate))
        self.rebuild_progress = 0.0
        self.rebuild_error = None
        try:
            await self._run(replacement.sync)
            # A fresh (empty) ahead-bitmap before the record that makes it count.
            self._ahead = await self._run(PersistentBitmap, self._ahead_path, self.layout.stripes, True)
            await self._run(self._save_state)
        except OSError as exc:
            self.drives[index] = old
            self._rebuild = None
            self._ahead = None
            self.rebuild_progress = None
            raise VolumeError(f"cannot record the rebuild of drive {index}: {exc}") from None
        old.close()

    def _has_rebuild_source(self, index: int) -> bool:
        others = [i for i, d in enumerate(self.drives) if i != index and not d.readable]
        if self.level is RaidLevel.RAID1:
            return len(others) < len(self.drives) - 1
        if self.level is RaidLevel.RAID10:
            return (index ^ 1) not in others
        return len(others) < self.redundancy

    async def rebuild(self, index: int, replacement: Drive,
                      progress: Callable[[float], None] | None = None) -> None:
        """Rebuild member ``index`` onto ``replacement`` while I/O goes on (begin, then run)."""
        await self.begin_rebuild(index, replacement)
        await self.run_rebuild(progress)

    async def run_rebuild(self, progress: Callable[[float], None] | None = None) -> None:
        """Rebuild from the watermark to the end (a new rebuild, or one a restart interrupted).

        Returns early, with the watermark recorded, when :meth:`close` asks it to stop.  On a
        failure the replacement is taken out (FAILED, durably), ``rebuild_error`` says why and the
        error is raised.
        """
        rb = self._rebuild
        if rb is None:
            return
        if self._rebuild_running:
            raise VolumeError(f"drive {rb.index} is already being rebuilt")
        self._rebuild_running = True
        self._rebuild_idle.clear()
        lay = self.layout
        target = self.drives[rb.index]
        stripe = first = durable = rb.stripes_done
        started = last = time.monotonic()
        try:
            while stripe < lay.stripes and not self._stop_rebuild:
                async with self._lock(stripe):
                    if self._ahead is None or not self._ahead.has(stripe):  # else a host write did it
                        await self._run(self._rebuild_stripe, stripe, rb.index)
                    target.rebuilt_to = (stripe + 1) * lay.chunk
                stripe += 1
                now = time.monotonic()
                self.rebuild_progress = stripe / lay.stripes
                if now > started:
                    self.rebuild_rate = (stripe - first) * lay.chunk / (now - started)
                    self.rebuild_eta = (lay.stripes - stripe) * lay.chunk / self.rebuild_rate \
                        if self.rebuild_rate else None
                if progress is not None:
                    progress(self.rebuild_progress)
                if rb.rate:
                    ahead = (stripe - first) * lay.chunk / rb.rate - (now - started)
                    if ahead > 0:
                        await asyncio.sleep(min(ahead, self.CHECKPOINT_SECONDS))
                if stripe < lay.stripes and (stripe - durable >= self.CHECKPOINT_STRIPES
                                             or now - last >= self.CHECKPOINT_SECONDS):
                    await self._run(self._checkpoint, stripe)
                    durable, last = stripe, now
            if stripe < lay.stripes:  # asked to stop: keep what is done for the next start
                await self._run(self._checkpoint, stripe)
                return
            await self._run(target.sync)
            target.state = DriveState.ONLINE
            self._rebuild = None
            await self._run(self._save_state)
            self._drop_ahead()
            self.rebuild_progress = self.rebuild_rate = self.rebuild_eta = None
        except Exception as exc:
            self.rebuild_error = f"rebuild of drive {rb.index} stopped at stripe {stripe} of {lay.stripes}: {exc}"
            target.fail()
            self._rebuild = None
            self.rebuild_progress = self.rebuild_rate = self.rebuild_eta = None
            try:
                await self._run(self._save_state)
                self._drop_ahead()
            except OSError:
                pass  # the failure is in memory; the record on disk still says REBUILDING (safe)
            raise VolumeError(self.rebuild_error) from exc
        finally:
            self._rebuild_running = False
            self._rebuild_idle.set()

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.remove()
            self._ahead = None

    def _rebuild_ahead(self, stripe: int) -> None:
        """Rebuild ``stripe`` on the replacement now, before a host write changes it (under its lock).

        A write to a stripe missing a member is the write hole: a crash between its data and its
        parity leaves the missing chunk unrecoverable.  Rebuilding the stripe first makes the write
        an ordinary one on a whole stripe, which the write-intent bitmap covers; the cost is paid
        once per stripe, only while a rebuild runs.  The replacement's chunk is synced before its
        bit is set (same rule as the watermark).
        """
        rb = self._rebuild
        if rb is None or self._ahead is None:
            return
        target = self.drives[rb.index]
        base = stripe * self.layout.chunk
        if target.state is not DriveState.REBUILDING or self._valid(target, base, self.layout.chunk):
            return
        try:
            self._rebuild_stripe(stripe, rb.index)
            target.sync()
        except OSError:
            target.fail()  # the write goes on degraded; the rebuild loop reports the failure
            return
        self._ahead.set(stripe)

    def _checkpoint(self, stripes_done: int) -> None:
        """Sync the replacement, then move the durable watermark (flush order rule 3)."""
        rb = self._rebuild
        assert rb is not None
        self.drives[rb.index].sync()
        self._rebuild = RebuildRecord(rb.index, rb.path, stripes_done, rb.rate)
        self._save_state()

    async def stop_rebuild(self) -> None:
        """Stop a running rebuild after the stripe in hand, its watermark recorded."""
        self._stop_rebuild = True
        await self._rebuild_idle.wait()

    def _rebuild_stripe(self, stripe: int, index: int) -> None:
        lay = self.layout
        base = stripe * lay.chunk
        target = self.drives[index]
        if self.level in (RaidLevel.RAID1, RaidLevel.RAID10):
            for i in range(lay.data_chunks):
                ds = lay.data_drives(stripe, i)
                if index in ds:
                    src = next(d for d in ds if d != index and self.drives[d].readable)
                    target.pwrite(self.drives[src].pread(lay.chunk, base), base)
            return
        # Parity levels: treat the member as missing, solve the stripe, write its chunk.
        chunks = self._reconstruct(stripe, 0, lay.chunk)
        par = lay.parity_drives(stripe)
        if index in par:
            p, q = syndromes(chunks, len(par) > 1)
            target.pwrite((p if index == par[0] or q is None else q).tobytes(), base)
        else:
            i = next(i for i in range(lay.data_chunks) if lay.data_drives(stripe, i)[0] == index)
            target.pwrite(chunks[i].tobytes(), base)

    async def flush(self) -> None:
        for d in self.drives:
            await self._run(d.sync)

    async def close(self) -> None:
        if self._closed:
            return
        await self.stop_rebuild()
        self._closed = True
        await self.flush()
        if self.bitmap is not None:
            self.bitmap.close()
        if self._ahead is not None:
            self._ahead.close()
        for d in self.drives:
            d.close()


class RaidVolume(EmulatedBlockOps):
    """A RAID group seen as a :class:`~sanlab.storage.volume.Volume` of logical blocks.

    UNMAP, WRITE SAME and COMPARE AND WRITE are the emulated ones (a RAID group
    cannot deallocate); the range lock makes COMPARE AND WRITE atomic.
    """

    def __init__(self, group: RaidGroup, block_size: int = 512) -> None:
        self.group = group
        self._block_size = block_size
        self._num_blocks = group.capacity // block_size

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self._num_blocks:
            raise VolumeError(f"range {lba}+{n} outside volume of {self._num_blocks} blocks")

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        return await self.group.read(lba * self._block_size, nblocks * self._block_size)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if len(data) % self._block_size:
            raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
        self._check(lba, len(data) // self._block_size)
        await self.group.write(lba * self._block_size, data)
        if fua:
            await self.group.flush()

    async def read(self, lba: int, nblocks: int) -> bytes:
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self._raw_read(lba, nblocks)

    # NowaitIO (storage/volume.py): the READ/WRITE fast path of the device server.  Reads whose
    # chunks are all cached are answered on the event loop; everything else takes read/write.

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """:meth:`read` finished from the drives' page cache, or None (see RaidGroup.read_nowait).
        Not while an overlapping write holds the range: a read sees a write whole or not at all."""
        if not nblocks or self.range_lock.would_wait(lba, nblocks, exclusive=False):
            return None
        self._check(lba, nblocks)
        return self.group.read_nowait(lba * self._block_size, nblocks * self._block_size)

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """Always False: a RAID write is never done half on the loop.  A mirror or parity update
        cut short by a would-block could not be finished by :meth:`write` (a RAID 5/6
        read-modify-write would compute parity from data already new on the drive)."""
        return False

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """None: an uncached RAID read takes :meth:`read` (chunk by chunk in the pool)."""
        return None

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """None: RAID writes take :meth:`write`, under the stripe locks and write-intent bitmap."""
        return None

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        async with self.range_lock.hold(lba, len(data) // self._block_size):
            await self._raw_write(lba, data, fua)

    async def flush(self) -> None:
        await self.group.flush()

    async def close(self) -> None:
        await self.group.close()


def open_group(name: str, level: int, drive_paths: list[str], drive_size: int, stripe_size: int,
               meta_dir: str) -> RaidGroup:
    """Open (or, the first time, create) a named RAID group whose description lives in ``meta_dir``.

    The first start creates the drive files and writes ``raid-<name>.json``.  Later
    starts open the drives without creating them: a drive file that has gone
    missing is a failed member (the group runs degraded), never a blank one.

    Creating makes no directories (the caller decides where drives may go: the management
    socket refuses a missing directory, the config creates those inside the data directory)
    and is all or nothing: the layout is checked before any file exists, and a failure removes
    the drive files, bitmap and description it made, so a retry starts from a clean slate.
    """
    meta_path = os.path.join(meta_dir, f"raid-{name}.json")
    state_path = os.path.join(meta_dir, f"raid-{name}.state")
    bitmap_path = os.path.join(meta_dir, f"raid-{name}.bitmap")
    exists = os.path.exists(meta_path)
    drive_paths = list(drive_paths)
    record = GroupStateFile(state_path).load().rebuild if exists else None
    if not exists and os.path.exists(state_path):
        os.unlink(state_path)  # left by a deleted group of the same name: not this group's
    if record is not None and 0 <= record.index < len(drive_paths):
        # The state file names the replacement before the drive list does (flush order rule 2):
        # a crash between the two leaves the list behind, and the record wins.
        drive_paths[record.index] = record.path
    want = {"name": name, "level": int(level), "drives": drive_paths, "drive_size": drive_size,
            "stripe_size": stripe_size}
    if exists:
        with open(meta_path) as f:
            have = json.load(f)
        stale_list = False
        if record is not None and isinstance(have.get("drives"), list) and record.index < len(have["drives"]):
            stale_list = have["drives"][record.index] != record.path
            have["drives"][record.index] = record.path
        if have != want:
            raise VolumeError(f"RAID group {name}: the configuration differs from {meta_path} "
                              f"(on disk {have}, configured {want})")
        if stale_list:
            _write_json(meta_path, want)
    else:
        layout = Layout(RaidLevel(level), len(drive_paths), stripe_size, drive_size)  # ValueError: nothing made yet
        if layout.capacity <= 0:
            raise ValueError(f"a {drive_size}-byte drive holds no whole {stripe_size}-byte stripe")
        for p in drive_paths:
            d = os.path.dirname(p) or "."
            if not os.path.isdir(d):
                raise VolumeError(f"RAID group {name}: drive {p}: directory {d} does not exist")
    made = [] if exists else [p for p in (*drive_paths, bitmap_path, state_path, state_path + ".tmp",
                                          os.path.splitext(state_path)[0] + ".rebuilt", meta_path + ".tmp")
                              if not os.path.lexists(p)]
    drives: list[Drive] = []
    group: RaidGroup | None = None
    try:
        drives = [Drive(p, drive_size, create=not exists) for p in drive_paths]
        if not exists and (bad := [d.error or d.path for d in drives if not d.readable]):
            raise VolumeError(f"RAID group {name}: cannot create drive files {', '.join(bad)}")
        group = RaidGroup(level, drives, stripe_size, bitmap_path, state_path)
        if not exists:
            _write_json(meta_path, want)
    except BaseException:
        if group is not None and group.bitmap is not None:
            group.bitmap.close()
        for drive in drives:
            drive.close()
        for p in made:
            if os.path.lexists(p):
                os.unlink(p)
        raise
    return group


def _write_json(path: str, body: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_drive_path(meta_dir: str, name: str, index: int, path: str) -> None:
    """Record ``path`` as member ``index`` in ``raid-<name>.json`` (after :meth:`RaidGroup.begin_rebuild`)."""
    meta_path = os.path.join(meta_dir, f"raid-{name}.json")
    with open(meta_path) as f:
        desc = json.load(f)
    desc["drives"][index] = path
    _write_json(meta_path, desc)

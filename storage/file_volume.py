"""A volume in a plain file (or block device): sparse or allocated, page-cache fast path, holes
punched for UNMAP, atomic writes through a one-slot journal (storage/atomic.py)."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import structlog

from sanlab.storage.atomic import MAX_ATOMIC_BYTES, AtomicJournal
from sanlab.storage.emulated import WRITE_SAME_CHUNK_BYTES
from sanlab.storage.group_commit import GroupCommit
from sanlab.storage.range_lock import RangeLock
from sanlab.storage.volume import LbaExtent, ProvisioningStatus, VolumeError, first_mismatch, io_failure

log = structlog.get_logger("sanlab.storage")

T = TypeVar("T")


# One bounded pool for blocking file I/O (ARCHITECTURE.md convention 6: the
# loop never waits on disk).  Two cores here: a few threads overlap fsync with
# page-cache copies without thrashing.
_IO_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sanlab-io")
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
_RWF_DSYNC: int = getattr(os, "RWF_DSYNC", 0)
"""pwritev2's per-write O_DSYNC (Linux 4.7): a FUA write syncs its own range, not the whole file's
dirty pages as fdatasync does (what FUA asks, SBC-3 §5.47; a copy-on-write's data durable without
flushing what a background copy wrote meanwhile)."""
"""``preadv2``/``pwritev2`` flag, Linux ≥ 4.14: fail with EAGAIN instead of waiting for the disk (0 where
unsupported).  Buffered writes honour it only where the file system does (:meth:`FileVolume._write_nowait`)."""
INLINE_WRITE_MAX = 128 * 1024
"""Largest buffered write done on the event loop when RWF_NOWAIT writes are unsupported."""
INLINE_WRITE_BUDGET = 0.002
"""An inline write slower than this means the page cache is throttling: use the pool for a while."""
INLINE_WRITE_PAUSE = 0.1
"""How long writes go to the pool after a slow inline write.  Short: on a busy machine a write is
also slow when another process's fsync holds the file system's journal, or the thread was merely
preempted, and a long pause sent every write of a volume written beside fsyncs (an async pair's
journal, bench/README.md) through the pool for good; the next probe costs one write on the loop."""

FALLOC_FL_KEEP_SIZE = 0x01
"""linux/falloc.h: leave the file size as it is (a hole punched at the end does not shorten the file)."""
FALLOC_FL_PUNCH_HOLE = 0x02
"""linux/falloc.h: deallocate a byte range (whole file-system blocks; partial ones are zeroed)."""


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate(2)`` wrapper, or None where there is none (Python has only posix_fallocate)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    call: Callable[[int, int, int, int], int] = fn
    return call


_FALLOCATE = _libc_fallocate()


class FileVolume:
    """A volume backed by one file, created at ``size_bytes`` if missing.

    ``thin`` (the default): the file is sparse; UNMAP and WRITE SAME with UNMAP
    punch holes (``FALLOC_FL_PUNCH_HOLE``), GET LBA STATUS reads the holes back
    with ``SEEK_DATA``/``SEEK_HOLE``.  A hole reads as zeros, so LBPRZ holds.
    Thick (``thin=False``): the whole file is allocated when the volume is opened
    (``posix_fallocate``) and UNMAP only writes zeros, so it stays allocated.

    Atomic writes (:class:`~storage.atomic.AtomicWriter`) go through a one-slot journal beside
    the file (``<path>.atomic``); a record a crash left there is applied when the volume opens.

    The volume can grow while in use (:class:`Resizable`): the file is extended, sparse when thin,
    allocated when thick.  A file longer than ``size_bytes`` keeps its length, but the volume is
    ``size_bytes`` long: the caller decides which size wins (``tools/assemble.py`` lets the file win).
    """

    def __init__(self, path: str, size_bytes: int, block_size: int = 512, readonly: bool = False,
                 thin: bool = True) -> None:
        if block_size not in (512, 4096):
            raise ValueError(f"block size must be 512 or 4096, not {block_size}")
        if size_bytes <= 0 or size_bytes % block_size:
            raise ValueError(f"size {size_bytes} is not a positive multiple of the block size {block_size}")
        self.path = path
        self._block_size = block_size
        self.readonly = readonly
        self._thin = thin
        self._group_flush = GroupCommit(self._fdatasync)
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        self._fd = os.open(path, flags, 0o600)
        st = os.fstat(self._fd)
        if st.st_size < size_bytes and not readonly:
            os.ftruncate(self._fd, size_bytes)  # sparse: no blocks allocated
        self.allocation_error: OSError | None = None
        """Thick: why the file could not be allocated in full (None: it was, or it is thin)."""
        if not thin and not readonly:
            try:
                os.posix_fallocate(self._fd, 0, size_bytes)
            except OSError as exc:  # e.g. a file system without fallocate: stays sparse
                self.allocation_error = exc
                log.warning("fallocate_failed", path=path, error=str(exc))
        self._num_blocks = size_bytes // block_size
        self._closed = False
        self.range_lock = RangeLock()
        """Serialises overlapping operations (module docstring: atomicity)."""
        self._nowait_write_ok = True
        self._inline_writes_paused_until = 0.0
        self._journal = AtomicJournal(path + ".atomic")
        self._journal_turn = asyncio.Lock()
        """One atomic write at a time uses the one journal slot."""
        self._grow_turn = asyncio.Lock()
        """One capacity change at a time: each starts from the capacity the previous one left."""
        if not readonly:
            self._recover_atomic()

    def _recover_atomic(self) -> None:
        """Finish an atomic write a crash interrupted after its record was durable (storage/atomic.py)."""
        pending = self._journal.pending()
        if pending is None:
            return
        lba, data = pending
        if len(data) % self._block_size or lba + len(data) // self._block_size > self._num_blocks:
            log.error("atomic_journal_foreign", path=self._journal.path, lba=lba, length=len(data))
            return
        log.info("atomic_write_replayed", path=self.path, lba=lba, blocks=len(data) // self._block_size)
        self.write_sync(lba, data, fua=True)
        self._journal.clear()

    @property
    def atomic_max_blocks(self) -> int:
        """:data:`~sanlab.storage.atomic.MAX_ATOMIC_BYTES` in blocks: what the one journal slot takes."""
        return MAX_ATOMIC_BYTES // self._block_size  # a read-only volume refuses them as any write

    @property
    def block_size(self) -> int:
        """512 or 4096, as given when the volume was opened."""
        return self._block_size

    @property
    def num_blocks(self) -> int:
        """``size_bytes // block_size`` at open; larger after :meth:`grow`."""
        return self._num_blocks

    @property
    def thin(self) -> bool:
        """The ``thin`` argument: a sparse file whose UNMAP punches holes."""
        return self._thin

    @property
    def lbprz(self) -> bool:
        """Always True, thin or thick."""
        return True  # holes and the zeros UNMAP writes both read as zeros

    def _check(self, lba: int, nblocks: int) -> None:
        if lba < 0 or nblocks < 0 or lba + nblocks > self._num_blocks:
            raise VolumeError(f"range {lba}+{nblocks} outside volume of {self._num_blocks} blocks")

    def _check_writable(self) -> None:
        if self.readonly:
            raise VolumeError("volume is read-only")

    # --- blocking halves (run in the executor) -------------------------------------------------------

    def read_sync(self, lba: int, nblocks: int) -> bytes:
        """Blocking ``pread`` of ``nblocks`` blocks at ``lba``, without the range lock (the caller holds it);
        VolumeError outside the volume.  Past the end of a short file the blocks read as zeros."""
        self._check(lba, nblocks)
        want = nblocks * self._block_size
        try:
            data = os.pread(self._fd, want, lba * self._block_size)
        except OSError as exc:
            raise io_failure(exc, "read failed") from exc
        if len(data) < want:  # a file shorter than the volume reads as zeros
            data += bytes(want - len(data))
        return data

    def _pwrite_all(self, data: bytes | bytearray | memoryview, off: int, flags: int = 0) -> None:
        """Every byte of ``data`` at ``off`` (``flags``: pwritev2's, e.g. RWF_DSYNC); an OSError becomes a
        VolumeError (SpaceExhausted when the filesystem is full: the file is sparse, a write into a
        hole needs room)."""
        view = memoryview(data)
        try:
            while view:
                done = os.pwritev(self._fd, [view], off, flags) if flags else os.pwrite(self._fd, view, off)
                view = view[done:]
                off += done
        except OSError as exc:
            raise io_failure(exc, "write failed") from exc

    def write_sync(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Blocking ``pwrite`` of whole blocks at ``lba`` (then ``fdatasync`` with ``fua``), without the range
        lock; VolumeError when read-only, not whole blocks or outside the volume."""
        self._check_writable()
        n = len(data)
        if n % self._block_size:
            raise VolumeError(f"write of {n} bytes is not whole blocks")
        self._check(lba, n // self._block_size)
        if fua and _RWF_DSYNC:
            self._pwrite_all(data, lba * self._block_size, _RWF_DSYNC)
            return
        self._pwrite_all(data, lba * self._block_size)
        if fua:
            self._fdatasync_sync("write failed")

    def _fdatasync_sync(self, what: str) -> None:
        """``fdatasync`` of the file; its failure (EIO, ENOSPC where the file system reserves late) a
        VolumeError saying ``what``, as any I/O error of the backing store."""
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise io_failure(exc, what) from exc

    def _fill_sync(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview) -> None:
        bs = self._block_size
        per = max(1, WRITE_SAME_CHUNK_BYTES // bs)
        chunk = bytes(block) * min(per, nblocks)
        done = 0
        while done < nblocks:
            n = min(per, nblocks - done)
            self._pwrite_all(memoryview(chunk)[:n * bs], (lba + done) * bs)
            done += n

    def _punch_sync(self, lba: int, nblocks: int) -> None:
        """Deallocate (thin) or zero (thick, or no hole punching here) the blocks."""
        if not nblocks:
            return
        bs = self._block_size
        if self._thin and _FALLOCATE is not None:
            rc = _FALLOCATE(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, lba * bs, nblocks * bs)
            if rc == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise VolumeError(f"fallocate(PUNCH_HOLE) failed: {os.strerror(err)}")
            log.warning("punch_hole_unsupported", path=self.path)
        self._fill_sync(lba, nblocks, bytes(bs))

    def unmap_sync(self, lba: int, nblocks: int) -> None:
        """Blocking UNMAP: holes punched (thin) or zeros written (thick, or no hole punching here);
        VolumeError as for :meth:`write_sync`."""
        self._check_writable()
        self._check(lba, nblocks)
        self._punch_sync(lba, nblocks)

    def write_same_sync(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview,
                        unmap: bool = False, fua: bool = False) -> None:
        """Blocking WRITE SAME of the one block ``block`` over ``nblocks`` blocks; with ``unmap`` a thin
        volume punches holes instead.  VolumeError as for :meth:`write_sync`, or when ``block`` is not
        one block long."""
        self._check_writable()
        if len(block) != self._block_size:
            raise VolumeError(f"WRITE SAME block of {len(block)} bytes, block size {self._block_size}")
        self._check(lba, nblocks)
        # SBC-3 §4.7: with the UNMAP bit a device server that can unmap does so, and the blocks
        # read back as deallocated blocks do (zeros, LBPRZ) whatever the Data-Out block was; the
        # block is written only by one that cannot (a thick volume).
        if unmap and self._thin:
            self._punch_sync(lba, nblocks)
        else:
            self._fill_sync(lba, nblocks, block)
        if fua:
            self._fdatasync_sync("write same failed")

    def lba_status_sync(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """Extents from ``SEEK_DATA``/``SEEK_HOLE``: a block is deallocated only if wholly in a hole."""
        if not 0 <= lba < self._num_blocks:
            raise VolumeError(f"LBA {lba} outside volume of {self._num_blocks} blocks")
        bs, end = self._block_size, self._num_blocks
        if not self._thin:
            return [(lba, end - lba, ProvisioningStatus.MAPPED)]
        out: list[LbaExtent] = []
        cur = lba
        while cur < end:
            off = cur * bs
            try:
                data = os.lseek(self._fd, off, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data at or after off: a hole up to the end
                    data = end * bs
                elif exc.errno == errno.EINVAL:  # no SEEK_DATA here: report mapped
                    data = off
                else:
                    raise VolumeError(f"lseek(SEEK_DATA) failed: {exc}") from exc
            if data >= off + bs:
                nxt, status = min(data // bs, end), ProvisioningStatus.DEALLOCATED
            else:
                try:
                    hole = os.lseek(self._fd, max(data, off), os.SEEK_HOLE)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise VolumeError(f"lseek(SEEK_HOLE) failed: {exc}") from exc
                    hole = end * bs
                nxt, status = min(max(-(-hole // bs), cur + 1), end), ProvisioningStatus.MAPPED
            if out and out[-1][2] == status:
                out[-1] = (out[-1][0], nxt - out[-1][0], status)
            elif len(out) == max_ranges:
                break
            else:
                out.append((cur, nxt - cur, status))
            cur = nxt
        return out

    def _grow_needed(self, num_blocks: int) -> bool:
        """Whether growing to ``num_blocks`` changes anything; refuses what it must not do."""
        self._check_writable()
        if num_blocks < self._num_blocks:
            raise ValueError(f"{self.path}: {num_blocks} blocks is less than the volume's {self._num_blocks}: a "
                             "volume only grows (shrinking would cut off blocks hosts may hold data in)")
        return num_blocks > self._num_blocks

    def _extend_sync(self, num_blocks: int) -> None:
        """Extend the backing file from the current capacity to ``num_blocks`` blocks.

        Thin: the file is extended sparse (``ftruncate``), so the new blocks are holes that read
        as zeros and GET LBA STATUS reports them deallocated.  Thick: the new range is allocated
        (``posix_fallocate``) as the whole file was at open, so writes there cannot run out of
        space.  Either way the file is ``fsync``'d before the capacity is reported: a crash after
        hosts saw the new capacity must not bring back the old size.  On failure the file keeps
        its old length.  Does not change :attr:`num_blocks` (the caller does, see :meth:`grow`).
        """
        old, bs = self._num_blocks, self._block_size
        old_bytes, new_bytes = old * bs, num_blocks * bs
        file_size = os.fstat(self._fd).st_size
        if file_size > old_bytes:
            # Bytes past the old end were never part of the volume (e.g. a partial last block of an
            # image file): the new blocks must read as zeros like the rest of a fresh area (LBPRZ).
            self._punch_sync(old, min(-(-file_size // bs), num_blocks) - old)
        try:
            if file_size < new_bytes:
                os.ftruncate(self._fd, new_bytes)  # sparse: no blocks allocated
            if not self._thin:
                os.posix_fallocate(self._fd, old_bytes, new_bytes - old_bytes)
            os.fsync(self._fd)  # the new length is metadata that fdatasync need not write
        except OSError as exc:
            # Unlike open (which logs and stays sparse), a thick volume that cannot get its space
            # refuses to grow: accepting would promise capacity that ENOSPC could take back later.
            try:
                os.ftruncate(self._fd, max(file_size, old_bytes))
            except OSError as undo:
                log.error("grow_undo_failed", path=self.path, error=str(undo))
            raise VolumeError(f"{self.path}: cannot grow to {new_bytes} bytes: {exc.strerror or exc}") from exc

    def grow_sync(self, num_blocks: int) -> None:
        """Blocking :meth:`grow` (for callers without an event loop)."""
        if self._grow_needed(num_blocks):
            self._extend_sync(num_blocks)
            self._num_blocks = num_blocks

    def write_atomic_sync(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """Journal, apply, clear (storage/atomic.py); every step durable before the next."""
        self._check_writable()
        if len(data) % self._block_size or len(data) > MAX_ATOMIC_BYTES:
            raise VolumeError(f"atomic write of {len(data)} bytes: whole blocks up to {MAX_ATOMIC_BYTES}")
        self._check(lba, len(data) // self._block_size)
        try:
            self._journal.record(lba, data)
        except OSError as exc:  # nothing written yet: the host hears of it, the volume is as it was
            raise io_failure(exc, "atomic write journal failed") from exc
        self.write_sync(lba, data, fua=True)
        try:
            self._journal.clear()
        except OSError as exc:
            # The data is written and durable; the record left behind holds the same bytes, which a
            # recovery at open would write again over whatever came after: say so loudly.
            log.error("atomic_journal_not_cleared", path=self._journal.path, lba=lba, error=str(exc))
            raise io_failure(exc, "atomic write journal failed") from exc

    def compare_and_write_sync(self, lba: int, verify: bytes | bytearray | memoryview,
                               data: bytes | bytearray | memoryview, fua: bool) -> int | None:
        """Blocking COMPARE AND WRITE: write ``data`` if the blocks equal ``verify`` and return None, else
        the offset of the first differing byte.  Atomic only under the caller's exclusive range hold."""
        self._check_writable()
        if len(verify) != len(data) or len(data) % self._block_size:
            raise VolumeError("COMPARE AND WRITE buffers must be the same whole number of blocks")
        off = first_mismatch(self.read_sync(lba, len(data) // self._block_size), verify)
        if off is None:
            self.write_sync(lba, data, fua)
        return off

    # --- the async protocol --------------------------------------------------------------------------

    def _read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """The data if it is all in the page cache (``preadv`` with RWF_NOWAIT), else None.

        Reading cached data on the event loop costs a memcpy; a thread hop costs far more
        (bench/README.md).  Anything that would wait for the disk still goes to the pool.
        """
        want = nblocks * self._block_size
        buf = bytearray(want)
        try:
            n = os.preadv(self._fd, [buf], lba * self._block_size, _RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise VolumeError(f"read failed: {exc}") from exc
        return buf if n == want else None

    def _write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> int:
        """Bytes written on the loop without waiting for the disk; the caller finishes the rest.

        ``pwritev`` with RWF_NOWAIT where the file system supports it for buffered writes.
        Where it does not (EOPNOTSUPP, e.g. ext4 before Linux 6.x), a small buffered write is a
        page-cache copy that only blocks under dirty-page throttling: we do it inline and, if one
        ever takes longer than :data:`INLINE_WRITE_BUDGET`, send writes to the pool for a while.
        """
        if self._nowait_write_ok:
            try:
                return os.pwritev(self._fd, [data], lba * self._block_size, _RWF_NOWAIT)
            except BlockingIOError:
                return 0
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise io_failure(exc, "write failed") from exc
                self._nowait_write_ok = False
        if len(data) > INLINE_WRITE_MAX or time.monotonic() < self._inline_writes_paused_until:
            return 0
        t0 = time.monotonic()
        self._pwrite_all(data, lba * self._block_size)
        if time.monotonic() - t0 > INLINE_WRITE_BUDGET:
            self._inline_writes_paused_until = time.monotonic() + INLINE_WRITE_PAUSE
        return len(data)

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """:meth:`read` finished without waiting, or None when it would wait (data not in the page
        cache, an overlapping write in flight): then the caller uses :meth:`read`.  The command fast
        path (``scsi/sbc.py``) lives on this; the range is checked by the caller."""
        if not _RWF_NOWAIT or not nblocks or self.range_lock.would_wait(lba, nblocks, exclusive=False):
            return None
        return self._read_nowait(lba, nblocks)

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """:meth:`write` (not FUA) finished without waiting; False when it would wait (an overlapping
        operation in flight, dirty-page throttling, no RWF_NOWAIT), and then the caller uses
        :meth:`write`, which may rewrite part of the range with the same bytes."""
        bs = self._block_size
        if (not _RWF_NOWAIT or not data or self.readonly or len(data) % bs
                or self.range_lock.would_wait(lba, len(data) // bs)):
            return False
        return self._write_nowait(lba, data) == len(data)

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """:meth:`read` in the thread pool, started now, holding the range from now until it ends;
        None when the range is held by an overlapping write (then :meth:`read` queues for it)."""
        return self._pooled(lba, nblocks, False, self.read_sync, lba, nblocks)

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """:meth:`write` (not FUA) in the thread pool, started now; None as for :meth:`read_pooled`."""
        if self.readonly or len(data) % self._block_size:
            return None
        return self._pooled(lba, len(data) // self._block_size, True, self.write_sync, lba, data, False)

    def _pooled(self, lba: int, nblocks: int, exclusive: bool, fn: Callable[..., T],
                *args: object) -> asyncio.Future[T] | None:
        lock = self.range_lock
        if lock.would_wait(lba, nblocks, exclusive=exclusive):
            return None
        holder = lock.take(lba, nblocks, exclusive=exclusive)
        fut = asyncio.get_running_loop().run_in_executor(_IO_POOL, fn, *args)
        fut.add_done_callback(lambda _f: lock.give_back(holder))
        return fut

    async def read(self, lba: int, nblocks: int) -> bytes:
        """Under a shared range hold: from the page cache on the loop when all of it is there
        (RWF_NOWAIT), else :meth:`read_sync` in the I/O pool."""
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            if _RWF_NOWAIT and nblocks:
                self._check(lba, nblocks)
                data = self._read_nowait(lba, nblocks)
                if data is not None:
                    return bytes(data)
            return await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.read_sync, lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Under an exclusive range hold: without ``fua`` (and where RWF_NOWAIT exists), what
        :meth:`_write_nowait` can write on the loop, the rest in the I/O pool; with ``fua`` all of it in the
        pool, then ``fdatasync``."""
        bs = self._block_size
        async with self.range_lock.hold(lba, len(data) // bs):
            if _RWF_NOWAIT and not fua and data and not self.readonly:
                if len(data) % bs:
                    raise VolumeError(f"write of {len(data)} bytes is not whole blocks")
                self._check(lba, len(data) // bs)
                done = self._write_nowait(lba, data)
                if done == len(data):
                    return
                # Finish in the pool from the first whole block not yet written (rewriting part of
                # one block is harmless: same bytes).
                skip = done - done % bs
                lba, data = lba + skip // bs, memoryview(data)[skip:]
            await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.write_sync, lba, data, fua)

    async def unmap(self, lba: int, nblocks: int) -> None:
        """:meth:`unmap_sync` in the I/O pool under an exclusive range hold."""
        async with self.range_lock.hold(lba, nblocks):
            await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.unmap_sync, lba, nblocks)

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """:meth:`write_same_sync` in the I/O pool under an exclusive range hold."""
        async with self.range_lock.hold(lba, nblocks):
            await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.write_same_sync, lba, nblocks,
                                                             block, unmap, fua)

    async def get_lba_status(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """:meth:`lba_status_sync` in the I/O pool.  No range hold: an UNMAP or write in flight may show
        or not."""
        return await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.lba_status_sync, lba,
                                                                max_ranges)

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """:meth:`compare_and_write_sync` in the I/O pool under an exclusive range hold (what makes it
        atomic)."""
        async with self.range_lock.hold(lba, len(data) // self._block_size):
            return await asyncio.get_running_loop().run_in_executor(
                _IO_POOL, self.compare_and_write_sync, lba, verify, data, fua)

    async def write_atomic(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """:meth:`write_atomic_sync` in the I/O pool under an exclusive range hold and the journal's turn;
        durable on return.  VolumeError when read-only, not whole blocks, over MAX_ATOMIC_BYTES or out of range."""
        async with self.range_lock.hold(lba, len(data) // self._block_size), self._journal_turn:
            await asyncio.get_running_loop().run_in_executor(_IO_POOL, self.write_atomic_sync, lba, data)

    async def grow(self, num_blocks: int) -> None:
        """Grow to ``num_blocks`` blocks (:class:`Resizable`; the file work is :meth:`_extend_sync`)."""
        async with self._grow_turn:
            if not self._grow_needed(num_blocks):
                return
            await asyncio.get_running_loop().run_in_executor(_IO_POOL, self._extend_sync, num_blocks)
            # Set here, on the loop, not in the pool thread: the caller establishes the unit
            # attention in the same loop step, so no command sees the new capacity before it.
            self._num_blocks = num_blocks

    async def flush(self) -> None:
        """``fdatasync`` of the file in the I/O pool (nothing to do on a read-only volume); callers
        that arrive together share one (storage/group_commit.py)."""
        if not self.readonly:
            await self._group_flush()

    async def _fdatasync(self) -> None:
        await asyncio.get_running_loop().run_in_executor(_IO_POOL, self._fdatasync_sync, "flush failed")

    async def close(self) -> None:
        """Flush, then close the file and its atomic journal; later calls do nothing."""
        if self._closed:
            return
        await self.flush()
        os.close(self._fd)
        self._journal.close()
        self._closed = True

"""One persistent bitmap for every "which parts are in which state" record (issue 13, seam 3).

Used by the RAID write-intent bitmap (a bit per region of stripes: parity may be stale there),
the rebuild's ahead-map (a bit per stripe rebuilt before the sequential rebuild reached it), the
migratory copy's copied-map (a bit per chunk now held by the destination) and, next, by pair
difference bitmaps.  The file is the bits themselves, bit ``u`` in byte ``u // 8`` at mask
``1 << (u % 8)``; its length is fixed by the owner, who knows how many units there are.

Flush order — what a caller can rely on after a crash (kill -9 or power loss):

* :meth:`set` returns only once the bit is on stable storage (pwrite, then fdatasync).  Set the
  bit *before* the state it guards can be observed (write-intent: before the region is written;
  copied/rebuilt: after the data it vouches for is synced, before anything relies on it).
* :meth:`mark` changes the bit in memory only; it reaches the disk at the next :meth:`flush` or
  :meth:`set`.  For bits whose loss costs only repeated work (a chunk copied again), flushed in
  batches.  :attr:`pending` says whether any marked bit is not yet durable.
* :meth:`clear` is lazy as well (memory, then the next flush): a crash may bring a cleared bit back.
  Owners give bits the meaning where a stale *set* bit costs work (a region resynchronised for
  nothing), never data.

The in-memory bits are authoritative while the process runs; all methods are thread-safe (RAID
members set bits from the I/O thread pool).  Two locks: the bits' mutex is held only to change or
copy bits, never across a disk write, so the event loop's :meth:`mark`/:meth:`clear` never wait
for a flush's fdatasync in a worker thread; the flush lock orders the flushes, so a flush returns
only after every bit changed before it began is on disk, whoever's write carries it.
"""
from __future__ import annotations

import contextlib
import os
import threading


class PersistentBitmap:
    """A fixed number of bits, mirrored in a file with the flush order of the module docstring."""

    def __init__(self, path: str | None, bits: int, fresh: bool = False) -> None:
        """Open ``path`` (creating it all-clear when missing, or when ``fresh``); ``path`` None keeps
        the bits in memory only (groups and tests without a state directory)."""
        self.path = path
        self.size = bits
        """Number of units."""
        self.bits = bytearray((bits + 7) // 8)
        self._mutex = threading.Lock()
        """Held to change or copy the bits and :attr:`_unsynced` (never across a disk write)."""
        self._flushing = threading.Lock()
        """Held by the flush writing the bits (module docstring)."""
        self._unsynced: set[int] = set()
        """Byte offsets changed in memory and not yet taken by a flush."""
        self._writing = 0
        """Flushes taken and not yet synced (their bytes are not durable yet: :attr:`pending`)."""
        self._in_flight: frozenset[int] = frozenset()
        """Byte offsets the flush now writing took (one at a time: the flush lock): not durable yet."""
        self._closed = False
        self._fd: int | None = None
        if path is None:
            return
        new_file = not os.path.exists(path)
        exists = not new_file and not fresh
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if exists:
                old = os.pread(self._fd, len(self.bits), 0)
                self.bits[:len(old)] = old
            else:
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, bytes(self.bits), 0)
                os.fsync(self._fd)
        except OSError as exc:
            # A full or read-only file system: no descriptor left open, and the error names the file
            # (the management reply says which one).
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if new_file:  # a file this call made and could not fill is no bitmap: not left behind
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise OSError(exc.errno, exc.strerror, path) from exc

    # --- reading ------------------------------------------------------------------------------------

    def has(self, unit: int) -> bool:
        """Whether bit ``unit`` is set (in memory)."""
        return bool(self.bits[unit >> 3] & (1 << (unit & 7)))

    def set_units(self) -> list[int]:
        """Every set unit, ascending."""
        return [u for u in range(self.size) if self.bits[u >> 3] & (1 << (u & 7))]

    def count(self) -> int:
        """Number of set units."""
        return sum(bin(b).count("1") for b in self.bits)

    def all_set(self) -> bool:
        """Every unit is set (in memory), e.g. every chunk copied."""
        return self.count() == self.size

    def first_clear(self, start: int = 0) -> int:
        """The first clear unit at or after ``start`` (``size`` when there is none)."""
        for u in range(start, self.size):
            if not self.bits[u >> 3] & (1 << (u & 7)):
                return u
        return self.size

    def first_set(self, start: int = 0) -> int | None:
        """The first set unit at or after ``start``, or None when there is none."""
        if start >= self.size:
            return None
        byte = start >> 3
        first = self.bits[byte] & (0xFF << (start & 7)) & 0xFF
        while not first:
            byte += 1
            if byte >= len(self.bits):
                return None
            first = self.bits[byte]
        unit = (byte << 3) + ((first & -first).bit_length() - 1)
        return unit if unit < self.size else None

    @property
    def pending(self) -> bool:
        """Some marked or cleared bit is not yet on disk."""
        return bool(self._unsynced) or self._writing > 0

    def durable(self, unit: int) -> bool:
        """Bit ``unit`` on disk is as in memory: no change to its byte waits for, or is in, a flush.
        Per byte (a neighbour's change makes it False too): a caller that needs one bit durable
        flushes only when this says so, not whenever any bit of the map is :attr:`pending`."""
        return self.durable_units(unit, unit + 1)

    def durable_units(self, start: int, stop: int) -> bool:
        """:meth:`durable` for every unit of ``[start, stop)`` (one lock, one look per byte)."""
        with self._mutex:
            if not self._unsynced and not self._in_flight:
                return True
            return not any(b in self._unsynced or b in self._in_flight
                           for b in range(start >> 3, ((stop - 1) >> 3) + 1))

    # --- changing -----------------------------------------------------------------------------------

    def set(self, unit: int) -> bool:
        """Set bit ``unit`` durably (with any bit marked before); True if it was clear."""
        byte, bit = unit >> 3, 1 << (unit & 7)
        with self._mutex:
            changed = not self.bits[byte] & bit
            if changed:
                self.bits[byte] |= bit
                self._unsynced.add(byte)
        self.flush()
        return changed

    def mark(self, unit: int) -> None:
        """Set bit ``unit`` in memory; durable at the next :meth:`flush` or :meth:`set`."""
        byte, bit = unit >> 3, 1 << (unit & 7)
        with self._mutex:
            if not self.bits[byte] & bit:
                self.bits[byte] |= bit
                self._unsynced.add(byte)

    def mark_all(self) -> None:
        """Set every bit in memory (e.g. every track to copy); durable at the next flush or set."""
        with self._mutex:
            full, rest = divmod(self.size, 8)
            self.bits[:full] = b"\xff" * full
            if rest:
                self.bits[full] |= (1 << rest) - 1
            self._unsynced.update(range(len(self.bits)))

    def clear(self, unit: int) -> None:
        """Clear bit ``unit`` in memory; on disk at the next :meth:`flush` or :meth:`set` (a crash
        before that brings it back)."""
        byte, bit = unit >> 3, 1 << (unit & 7)
        with self._mutex:
            if self.bits[byte] & bit:
                self.bits[byte] &= ~bit & 0xFF
                self._unsynced.add(byte)

    def flush(self) -> None:
        """Make every marked and cleared bit durable.

        Under the flush lock: the changed bytes are copied (and taken off :attr:`_unsynced`) under
        the mutex, then written and synced without it.  A flush that finds nothing unsynced has
        still waited for the flush before it, which may carry bits changed before this call."""
        with self._flushing:
            with self._mutex:
                if self._closed and self._unsynced:
                    # A bit that would silently stay in memory breaks the flush order the owner relies on.
                    raise ValueError(f"persistent bitmap {self.path} is closed")
                if not self._unsynced:
                    return
                changed = sorted(self._unsynced)
                whole = len(changed) > 64  # many bytes changed: one write, not one each
                image = bytes(self.bits) if whole else bytes(self.bits[b] for b in changed)
                self._unsynced.clear()
                self._writing += 1
                self._in_flight = frozenset(changed)
            try:
                if self._fd is not None:
                    if whole:
                        os.pwrite(self._fd, image, 0)
                    else:
                        for byte, value in zip(changed, image):
                            os.pwrite(self._fd, bytes((value,)), byte)
                    os.fdatasync(self._fd)
            except BaseException:
                with self._mutex:
                    self._unsynced.update(changed)  # not durable: the next flush tries them again
                raise
            finally:
                with self._mutex:
                    self._writing -= 1
                    self._in_flight = frozenset()

    # --- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._closed:
            return
        self.flush()
        with self._flushing:  # a flush still writing keeps the file until it has synced
            self._closed = True
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.fsync(fd)
                os.close(fd)

    def remove(self) -> None:
        """Close and delete the file."""
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

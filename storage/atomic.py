"""All-or-nothing writes (WRITE ATOMIC(16), SBC-4 §4.29 and §5.48) through a one-slot redo journal.

A ``pwrite`` of several blocks is not all-or-nothing: after a power loss any
prefix of its pages (in any order) may be on the medium.  An atomic write is
therefore made durable in the journal first, then applied in place:

1. the record (header + data) is written to the journal file and ``fdatasync``'d;
2. the data is written to the volume and ``fdatasync``'d;
3. the record is invalidated (magic zeroed) and the journal ``fdatasync``'d.

A crash before 1 completes leaves a record whose checksum does not match (or
none): the volume was not touched, the write never happened.  A crash after 1
leaves a valid record, which :meth:`AtomicJournal.pending` finds when the volume
is opened and the volume writes again: the whole write happened.  Step 3 is
synced before the command completes because a valid record left behind would be
replayed over later writes to the same blocks.

Against other commands the write is atomic through the volume's range lock
(exclusive for the whole range, so no read sees part of it).
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Protocol, runtime_checkable

import structlog

log = structlog.get_logger("sanlab.storage")

JOURNAL_HEADER = struct.Struct(">8sQII")
"""MAGIC, LBA, LENGTH (bytes of data), CRC-32 of LBA|LENGTH|data; the data follows at :data:`DATA_OFFSET`."""
MAGIC = b"SLATOMIC"
"""First field of a valid record; :meth:`AtomicJournal.clear` zeroes it."""
DATA_OFFSET = 4096
"""Data starts on its own page so the header write never shares a page with it."""
MAX_ATOMIC_BYTES = 1 << 20
"""MAXIMUM ATOMIC TRANSFER LENGTH in bytes (converted per block size): 1 MiB, a journal write that
costs no more than an ordinary large write."""


@runtime_checkable
class AtomicWriter(Protocol):
    """A volume that can write a range all-or-nothing (optional beside :class:`~storage.volume.Volume`)."""

    @property
    def atomic_max_blocks(self) -> int:
        """Largest atomic write in blocks; 0 when this volume cannot do them now."""
        ...

    async def write_atomic(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``lba`` so that after any crash either all of it or none of it is there;
        durable when this returns (an atomic write is always FUA)."""
        ...


def _checksum(lba: int, data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data, zlib.crc32(struct.pack(">QI", lba, len(data))))


class AtomicJournal:
    """The one-slot journal file of one volume (blocking; callers run it in the I/O pool and hold
    the volume's range lock and the journal's own turn)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def record(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """Step 1: the record is durable when this returns."""
        fd = self._open()
        header = JOURNAL_HEADER.pack(MAGIC, lba, len(data), _checksum(lba, data))
        os.pwritev(fd, [header, bytes(DATA_OFFSET - len(header)), data], 0)
        os.fdatasync(fd)

    def clear(self) -> None:
        """Step 3: the record will not be replayed."""
        fd = self._open()
        os.pwrite(fd, bytes(len(MAGIC)), 0)
        os.fdatasync(fd)

    def pending(self) -> tuple[int, bytes] | None:
        """(lba, data) of a complete record left by a crash, or None (no journal, cleared, torn)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            head = os.pread(fd, JOURNAL_HEADER.size, 0)
            if len(head) < JOURNAL_HEADER.size:
                return None
            magic, lba, length, crc = JOURNAL_HEADER.unpack(head)
            if magic != MAGIC or length > MAX_ATOMIC_BYTES:
                return None
            data = os.pread(fd, length, DATA_OFFSET)
            if len(data) != length or _checksum(lba, data) != crc:
                log.warning("atomic_journal_torn", path=self.path, lba=lba)  # step 1 never finished
                return None
            return lba, data
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the journal file if it is open (a later :meth:`record` or :meth:`clear` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""A RAID member: a drive file (or block device) and its state."""
from __future__ import annotations

import enum
import errno
import os
import stat

_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
"""preadv2 flag: fail with EAGAIN instead of waiting for the disk (Linux 4.14+)."""


class DriveState(enum.Enum):
    """What a member can be trusted with (kept across restarts in storage/raid_state.py)."""

    ONLINE = "online"
    """Valid data everywhere: read and written."""
    FAILED = "failed"
    """Out of the group: it missed writes and is never read or written again."""
    REBUILDING = "rebuilding"
    """A replacement: written, but read only where the rebuild made it valid (:attr:`Drive.rebuilt_to`)."""


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
            st = os.fstat(self._fd)
            if stat.S_ISREG(st.st_mode) and st.st_size < size:
                if not create:
                    # A member of an existing group is never shorter than the drive: one that is
                    # was truncated or replaced by another file.  Extending it would serve its
                    # lost blocks as zeros; it is taken out instead (the group reads around it).
                    raise OSError(errno.EIO, f"{st.st_size} bytes, shorter than the drive's {size}: "
                                             "lost or damaged")
                os.ftruncate(self._fd, size)
        except OSError as exc:
            self.state = DriveState.FAILED
            self.error = f"{path}: {exc.strerror or exc}"

    @property
    def readable(self) -> bool:
        """ONLINE: any read may go to it (a REBUILDING member only where the group says it is valid)."""
        return self.state is DriveState.ONLINE

    def fail(self) -> None:
        """Take the drive out (explicit failure or an I/O error)."""
        self.state = DriveState.FAILED

    def pread(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset`` (blocking); OSError when the drive is FAILED or the read
        fails — or comes back short: the file is made the drive's size when the group is created,
        so a read that ends early inside the drive means the file shrank under the array (lost)."""
        if self._fd is None or self.state is DriveState.FAILED:
            raise OSError(f"drive {self.path} is failed")
        data = os.pread(self._fd, length, offset)
        if len(data) < length and offset + length <= self.size:
            raise OSError(errno.EIO, f"{self.path}: read of {length} bytes at {offset} got {len(data)}: "
                                     "the drive file shrank (lost or damaged)")
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
        """All of ``data`` at ``offset`` (blocking, not synced); OSError when the drive is FAILED or the
        write fails."""
        if self._fd is None or self.state is DriveState.FAILED:
            raise OSError(f"drive {self.path} is failed")
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def sync(self) -> None:
        """``fdatasync`` (blocking); nothing to do for a FAILED drive or one that never opened."""
        if self._fd is not None and self.state is not DriveState.FAILED:
            os.fdatasync(self._fd)

    def close(self) -> None:
        """Close the file (idempotent); the state stays as it is."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

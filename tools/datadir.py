"""One array per data directory: an advisory lock held by ``sanlab serve`` for its whole life.

Everything an array keeps lives in its data directory: the catalog, RAID drive files and their
write-intent bitmaps, migration bitmaps, persistent reservations and the management socket.  Two
processes on one directory would open the same drives and catalog and replace each other's
socket, so ``sanlab serve`` takes an exclusive ``flock`` on ``<data_dir>/sanlab.lock`` before it
opens, creates or removes anything else there, and keeps it until it exits.

``flock`` rather than a pid file alone: the kernel drops the lock when the process dies (kill -9
included), so there is no stale lock to clean up after a crash.  The holder's pid is written into
the file for the message a second process prints; it is read only when the lock is refused, so a
pid left behind by a dead holder is never believed.  The file itself stays: unlinking it at exit
would let a process that opened the old file lock it while a newer one locks a fresh file.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "sanlab.lock"


class DataDirBusy(Exception):
    """Another live process holds the data directory; the message names its pid."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"sanlab process {pid}" if pid is not None else "another process (pid not yet written)"
        super().__init__(f"data directory {data_dir} is in use by {who} (lock {data_dir / LOCK_NAME}); "
                         "stop it first or use another --data-dir")
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """The exclusive lock on one data directory, held until :meth:`release` or process exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, pid_wait: float = 1.0) -> None:
        """Take the lock (creating the directory and the lock file if missing) or raise DataDirBusy.

        Creating the directory is the one change made before the lock is held; nothing inside it
        is touched except the lock file.  ``pid_wait`` bounds how long a refused caller waits for
        the holder to write its pid (it locks first, then writes).
        """
        if self._fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC (Python's default): a child process must not inherit the lock and keep it alive.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise DataDirBusy(self.data_dir, self._holder(pid_wait)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _holder(self, wait: float) -> int | None:
        """The pid in the lock file, waiting up to ``wait`` s for a holder that has not written it yet."""
        deadline = time.monotonic() + wait
        while True:
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                return int(text)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def release(self) -> None:
        """Drop the lock (the file stays; see the module docstring)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

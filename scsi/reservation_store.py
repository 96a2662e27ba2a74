"""Where persistent reservations with APTPL survive a restart: SQLite, off the event loop (SPC-4 §5.9.4).

One :class:`ReservationStore` per device server, ``<state_dir>/reservations.sqlite`` (WAL,
``synchronous=FULL``: GOOD for an APTPL change means it survives power loss, ARCHITECTURE.md
conventions 6 and 7).  Every SQLite call runs on the store's one worker thread, so the event loop
never waits for a commit's fsync, and the calls run in the order they were submitted: a commit
submitted first is durable first.  :meth:`ReservationStore.save` is the ordering point: it records
the state and submits its commit in the same event-loop step as the state change that produced it,
and the PERSISTENT RESERVE OUT handler returns GOOD only once that commit is done.

A store that cannot be read or written fails the command that needed it with HARDWARE ERROR /
INTERNAL TARGET FAILURE (SPC-4 annex D), logged with the file's path.

What the store has been told last, per logical unit, is also kept in memory (:meth:`saved`): it is
what a power on (TARGET COLD RESET) restores, so a cold reset arriving while a commit is still on
its way restores that state, not the one before it.
"""
from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import structlog

from sanlab.scsi.sense import Asc, ScsiError, SenseKey

STORE_NAME = "reservations.sqlite"
"""File name of the APTPL store inside the state directory."""

log = structlog.get_logger("sanlab.scsi.reservations")

_T = TypeVar("_T")


class ReservationStore:
    """APTPL state of the logical units of one device server, in SQLite (one transaction per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """The database file (created, with its directory, by :meth:`open`)."""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sanlab-pr-store")
        self._db: sqlite3.Connection | None = None
        """Used on the worker thread only."""
        self._opening: asyncio.Future[dict[str, dict[str, Any]]] | None = None
        self._saved: dict[str, dict[str, Any]] | None = None
        """LU id → the state last read or saved; None until :meth:`open` has read the file."""

    def _submit(self, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run ``fn`` on the worker thread after everything submitted before it.

        Shielded: cancelling the caller (an aborted command) does not take a commit out of the
        queue, since the state it records has already changed in memory.
        """
        job: Future[_T] = self._worker.submit(fn)
        return asyncio.shield(asyncio.wrap_future(job))

    # --- worker thread -----------------------------------------------------------------------------

    def _open_sync(self) -> dict[str, dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path))
        db.execute("PRAGMA journal_mode=WAL")
        # GOOD for an APTPL change means it survives power loss (SPC-4 §5.9.4): sync every commit.
        db.execute("PRAGMA synchronous=FULL")
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS persistent_reservations "
                       "(lu TEXT PRIMARY KEY, state TEXT NOT NULL)")
        rows = db.execute("SELECT lu, state FROM persistent_reservations").fetchall()
        self._db = db
        return {str(lu): dict(json.loads(state)) for lu, state in rows}

    def _write_sync(self, lu_id: str, text: str | None) -> None:
        db = self._db
        assert db is not None, "open() runs first on the same thread"
        with db:
            if text is None:
                db.execute("DELETE FROM persistent_reservations WHERE lu = ?", (lu_id,))
            else:
                db.execute("INSERT OR REPLACE INTO persistent_reservations (lu, state) VALUES (?, ?)",
                           (lu_id, text))

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- event loop --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """:meth:`open` has read the file: :meth:`saved` and :meth:`save` may be used."""
        return self._saved is not None

    async def _run(self, what: str, job: Awaitable[_T], **context: str) -> _T:
        """``job``'s result; a failing database becomes the SCSI answer (module docstring)."""
        try:
            return await job
        except (sqlite3.Error, OSError) as exc:
            log.error("reservation_store_failed", operation=what, path=str(self.path), error=str(exc), **context)
            raise ScsiError(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE) from exc

    async def open(self) -> None:
        """Open (or create) the database and read what it holds; later calls return at once."""
        if self._opening is None:
            self._opening = self._submit(self._open_sync)
        rows = await self._run("open", self._opening)
        if self._saved is None:
            self._saved = rows

    def saved(self, lu_id: str) -> dict[str, Any] | None:
        """The state of ``lu_id`` that survives a power loss (the last one saved), or None."""
        assert self._saved is not None, "open() first"
        return self._saved.get(lu_id)

    async def save(self, lu_id: str, state: dict[str, Any] | None) -> None:
        """Make ``state`` the one of ``lu_id`` that survives (None: nothing does); returns once it is
        durable.

        The commit is submitted before this first suspends, i.e. in the caller's event-loop step, so
        commits land in the order the state changed, and a caller resumes only after every commit
        submitted before its own.
        """
        assert self._saved is not None, "open() first"
        if state is None:
            self._saved.pop(lu_id, None)
            text = None
        else:
            self._saved[lu_id] = state
            text = json.dumps(state)
        await self._run("save", self._submit(functools.partial(self._write_sync, lu_id, text)), lu=lu_id)

    async def close(self) -> None:
        """Wait for the commits submitted so far, close the database and end the worker thread."""
        try:
            if self._opening is not None:
                await self._submit(self._close_sync)
        finally:
            self._worker.shutdown(wait=False)

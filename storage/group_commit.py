"""Group commit: callers of one flush that arrive together share it.

A flush (fdatasync) makes durable every write completed before it *began*.  So a caller arriving
while a flush runs cannot use that one; it waits for the next, which starts when the running one
ends and serves every caller that arrived meanwhile.  With many writers that each need a flush
(32 hosts' copy-on-writes, SYNCHRONIZE CACHE from every session) the disk sees two flushes in a
row at most, not one per caller, and no caller gets an answer its writes are not covered by.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


class GroupCommit:
    """``await commit()``: a call of ``flush`` that began after this call did (module docstring)."""

    def __init__(self, flush: Callable[[], Awaitable[None]]) -> None:
        self._flush = flush
        self._running: asyncio.Future[None] | None = None
        """The flush in progress."""
        self._next: asyncio.Future[None] | None = None
        """The flush that starts when the running one ends (shared by everyone waiting for it)."""
        self.flushes = 0
        """Flushes started (for tests and diagnostics)."""

    async def __call__(self) -> None:
        if self._running is None:
            fut = self._start()
        else:
            if self._next is None:
                self._next = asyncio.ensure_future(self._after(self._running))
            fut = self._next
        # Shielded: a caller that is cancelled does not cancel the flush the others wait for.
        await asyncio.shield(fut)

    def _start(self) -> asyncio.Future[None]:
        self.flushes += 1
        fut = self._running = asyncio.ensure_future(self._flush())
        fut.add_done_callback(self._ended)
        return fut

    def _ended(self, fut: asyncio.Future[None]) -> None:
        if self._running is fut:
            self._running = None

    async def _after(self, running: asyncio.Future[None]) -> None:
        await asyncio.wait((running,))  # its outcome is its own callers'
        self._next = None
        await self._start()

"""Serialising operations on overlapping block ranges of one volume (SBC-3 §5.2 atomicity).

Writes, WRITE SAME, UNMAP and COMPARE AND WRITE hold their range exclusively, reads share it;
disjoint ranges never wait for each other (see storage/volume.py's module docstring).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Holder:
    """One operation holding (or waiting for) a range."""

    start: int
    end: int
    exclusive: bool
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RangeLock:
    """Reader/writer lock over block ranges, first come first served per overlap.

    An operation waits for every *earlier* operation whose range overlaps its own,
    unless both are shared (reads).  Waiting only on earlier arrivals makes the
    waits a DAG: no deadlock, no starvation.  Arrival order is the order of
    :meth:`hold` calls on the event loop, i.e. the order the commands reached the
    volume.  The bookkeeping is a list scan; the in-flight count is bounded by the
    initiators' queue depths, so that is cheap next to any I/O.
    """

    def __init__(self) -> None:
        self._holders: list[Holder] = []

    @asynccontextmanager
    async def hold(self, lba: int, nblocks: int, *, exclusive: bool = True) -> AsyncIterator[None]:
        """Hold ``[lba, lba + nblocks)`` (shared when ``exclusive`` is False) for the ``async with`` body."""
        me = Holder(lba, lba + max(nblocks, 1), exclusive)
        before = [h for h in self._holders
                  if h.start < me.end and me.start < h.end and (exclusive or h.exclusive)]
        self._holders.append(me)
        try:
            for h in before:
                await h.done.wait()
            yield
        finally:
            me.done.set()
            self._holders.remove(me)

    def would_wait(self, lba: int, nblocks: int, *, exclusive: bool = True) -> bool:
        """Whether :meth:`hold` on this range would wait now.  An operation that then finishes
        without yielding to the loop needs no holder of its own: nothing can overlap it meanwhile."""
        if not self._holders:
            return False
        end = lba + max(nblocks, 1)
        return any(h.start < end and lba < h.end and (exclusive or h.exclusive) for h in self._holders)

    def take(self, lba: int, nblocks: int, *, exclusive: bool = True) -> Holder:
        """Hold the range at once, without an ``async with``: only when :meth:`would_wait` says
        False.  The caller ends it with :meth:`give_back` (e.g. from a future's done callback)."""
        me = Holder(lba, lba + max(nblocks, 1), exclusive)
        self._holders.append(me)
        return me

    def give_back(self, holder: Holder) -> None:
        """End a hold started by :meth:`take`."""
        holder.done.set()
        self._holders.remove(holder)

    @property
    def busy(self) -> int:
        """Operations holding or waiting for a range (for tests and diagnostics)."""
        return len(self._holders)

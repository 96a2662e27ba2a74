"""Task attributes within a logical unit's task set (SAM-5 §8.6-§8.8).

One task set per logical unit, shared by every I_T nexus (Control mode page
TST 000b).  Tasks arrive in command order (iSCSI CmdSN order); when each may
start depends on its attribute:

- SIMPLE (and UNTAGGED, ACA: there is no ACA condition here, so an ACA task is
  an ordinary one): starts once every older ORDERED task has completed.
- ORDERED: starts once every older task has completed; newer SIMPLE and
  ORDERED tasks wait for it.
- HEAD OF QUEUE: starts at once, whatever is waiting or running.

The common case — only SIMPLE tasks — costs a counter increment and decrement.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sanlab.scsi.task import TaskAttribute


class TaskSet:
    """When the tasks of one logical unit may start (module docstring)."""

    def __init__(self) -> None:
        self._running = 0
        """Tasks started and not yet completed (HEAD OF QUEUE ones included)."""
        self._barrier: asyncio.Future[None] | None = None
        """Completion of the newest ORDERED task not yet completed; newer tasks start after it."""
        self._drained: asyncio.Future[None] | None = None
        """Resolved when ``_running`` falls to zero (an ORDERED task waits for it)."""

    @property
    def running(self) -> int:
        """Tasks started and not yet completed (for tests and diagnostics)."""
        return self._running

    @property
    def open(self) -> bool:
        """No ORDERED task is pending: a SIMPLE task would start at once."""
        return self._barrier is None

    def start_now(self, attr: TaskAttribute) -> bool:
        """The fast path: count the task as started and say True if it need not wait (a SIMPLE task
        with no ORDERED one pending, or HEAD OF QUEUE); the caller then calls :meth:`stopped`."""
        if attr == TaskAttribute.HEAD_OF_QUEUE or (self._barrier is None and attr != TaskAttribute.ORDERED):
            self._running += 1
            return True
        return False

    @asynccontextmanager
    async def enabled(self, attr: TaskAttribute) -> AsyncIterator[None]:
        """Wait until a task with ``attr`` may start, and hold its place while it runs.

        Must be entered in command order: the admission (which barrier a task waits
        behind) happens before the first suspension point.
        """
        if attr == TaskAttribute.HEAD_OF_QUEUE:
            self._running += 1
            try:
                yield
            finally:
                self.stopped()
            return
        if attr != TaskAttribute.ORDERED:
            barrier = self._barrier
            if barrier is not None:
                # That ORDERED task completes only after every older one: waiting for it is enough.
                # Newer ORDERED tasks admitted meanwhile are younger than this one: not waited for.
                await asyncio.shield(barrier)
            self._running += 1
            try:
                yield
            finally:
                self.stopped()
            return
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        older, self._barrier = self._barrier, mine
        try:
            if older is not None:
                await asyncio.shield(older)
            # Older SIMPLE tasks woken by the same barrier resumed first (callbacks run in order),
            # so they are counted in _running before this looks.
            while self._running:
                if self._drained is None or self._drained.done():
                    self._drained = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._drained)
            self._running += 1
            try:
                yield
            finally:
                self.stopped()
        finally:
            if not mine.done():
                mine.set_result(None)
            if self._barrier is mine:
                self._barrier = None

    def stopped(self) -> None:
        """A task counted by :meth:`start_now` has completed."""
        self._running -= 1
        if not self._running and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

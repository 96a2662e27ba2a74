"""Start a coroutine by hand, synchronously, and hand it to a Task only when it really waits.

Python 3.12's eager tasks, for 3.11: the server steps a command's coroutine once where it
arrives (``IscsiServer._start``); most commands finish in that step and never cost a Task, the
rest are wrapped in :class:`EagerCoroutine` so a Task can run them from their first wait on.
"""
from __future__ import annotations

from typing import Any, Coroutine, Generator

_NOT_YET: Any = object()


class EagerCoroutine(Coroutine[Any, Any, None]):
    """A coroutine already started by hand (``IscsiServer._start``), as a coroutine a Task runs.

    Python 3.12's eager tasks, for 3.11: a command runs synchronously up to its first real
    suspension; only then does it become a Task.  The Task's first ``send`` gets the future the
    command is waiting on; everything after, cancellation included, goes to the command itself.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self._coro = coro
        self._first = first
        if getattr(first, "_asyncio_future_blocking", False):
            # Taken now, as a Task takes the future an ``await`` yields (asyncio's protocol): while
            # the flag stays set, another command stepped by hand that awaits the same future (the
            # reservation store's first open) fails with "await wasn't used with future".  The
            # flag is set again when the Task gets the future (:meth:`send`).
            first._asyncio_future_blocking = False

    def send(self, value: Any) -> Any:
        """The first step gives the wait the command stopped at by hand; then the command runs."""
        first = self._first
        if first is not _NOT_YET:
            self._first = _NOT_YET
            if getattr(first, "_asyncio_future_blocking", None) is False:
                first._asyncio_future_blocking = True  # as the command's await left it
            return first
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Into the command itself (a cancellation reaches its ``except``/``finally``)."""
        self._first = _NOT_YET
        return self._coro.throw(typ if val is None else val)

    def close(self) -> None:
        """Close the command's coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, None]:
        """Drive the command as ``await`` would (for code that awaits it rather than a Task)."""
        value = self.send(None)
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # noqa: BLE001 - forwarded as it came
                try:
                    value = self.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = self.send(sent)
                except StopIteration:
                    return

"""GroupCommit (storage/group_commit.py): callers share flushes, and each gets one that began after it called."""
from __future__ import annotations

import asyncio

import pytest

from sanlab.storage.group_commit import GroupCommit


class Disk:
    """A flush that waits for the test to let it end, and logs when each began and ended."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.gates: list[asyncio.Event] = []
        self.fail: Exception | None = None

    async def flush(self) -> None:
        n = len(self.gates)
        gate = asyncio.Event()
        self.gates.append(gate)
        self.events.append(("begin", n))
        await gate.wait()
        self.events.append(("end", n))
        if self.fail is not None:
            raise self.fail


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_callers_during_a_flush_share_the_next_one_and_none_returns_early() -> None:
    async def go() -> None:
        disk = Disk()
        commit = GroupCommit(disk.flush)
        first = asyncio.ensure_future(commit())
        await settle()
        later = [asyncio.ensure_future(commit()) for _ in range(10)]
        await settle()
        assert disk.events == [("begin", 0)]  # the next flush waits for the running one
        disk.gates[0].set()
        await first
        await settle()
        assert not any(t.done() for t in later)  # flush 0 began before they called: not theirs
        assert disk.events == [("begin", 0), ("end", 0), ("begin", 1)]
        disk.gates[1].set()
        await asyncio.gather(*later)
        assert commit.flushes == 2
        # Idle again: a new caller starts a flush at once.
        one = asyncio.ensure_future(commit())
        await settle()
        assert disk.events[-1] == ("begin", 2)
        disk.gates[2].set()
        await one
    asyncio.run(go())


def test_a_failed_flush_fails_its_callers_only_and_a_cancelled_caller_cancels_nothing() -> None:
    async def go() -> None:
        disk = Disk()
        commit = GroupCommit(disk.flush)
        a, b = asyncio.ensure_future(commit()), None
        await settle()
        b = asyncio.ensure_future(commit())
        c = asyncio.ensure_future(commit())
        await settle()
        disk.fail = OSError(5, "EIO")
        disk.gates[0].set()
        with pytest.raises(OSError):
            await a
        await settle()
        c.cancel()  # b and c share flush 1: cancelling c leaves b's flush running
        await settle()
        disk.fail = None
        disk.gates[1].set()
        await b
        with pytest.raises(asyncio.CancelledError):
            await c
        assert disk.events[-1] == ("end", 1)
    asyncio.run(go())

"""EagerCoroutine: a command stepped by hand to its first wait, then run by a Task (target/eager.py)."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from sanlab.target.eager import EagerCoroutine


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """What IscsiServer._start does with a command that waits: run it by hand to its first wait,
    then hand it to a Task."""
    first = coro.send(None)
    return asyncio.ensure_future(EagerCoroutine(coro, first))


async def test_a_started_command_resumes_in_a_task() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[object] = []

    async def command() -> None:
        seen.append("started")
        seen.append(await fut)
        await asyncio.sleep(0)  # a bare yield on the way is fine too
        seen.append("done")

    task = start(command())
    assert seen == ["started"]  # ran synchronously up to the wait
    fut.set_result(42)
    await task
    assert seen == ["started", 42, "done"]


@pytest.mark.parametrize("when", ["before-first-step", "while-waiting"])
async def test_cancelling_the_task_reaches_the_command(when: str) -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def command() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled inside")  # e.g. _execute turning an abort into TASK ABORTED
            raise
        finally:
            seen.append("cleaned up")

    task = start(command())
    if when == "while-waiting":
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled inside", "cleaned up"]


async def test_an_exception_after_the_wait_ends_the_task_with_it() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def command() -> None:
        await fut
        raise ValueError("boom")

    task = start(command())
    fut.set_result(None)
    with pytest.raises(ValueError, match="boom"):
        await task


async def test_two_commands_stepped_by_hand_may_wait_on_one_future() -> None:
    # The reservation store's first open: every command arriving before it finishes awaits the
    # same future.  Stepped by hand one after the other (IscsiServer._start), the second await
    # must not find the future's flag still set by the first (asyncio raised "await wasn't used
    # with future", answered as INTERNAL TARGET FAILURE).
    shared: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[int] = []

    async def command(i: int) -> None:
        seen.append(await shared + i)

    tasks = []
    for i in range(3):
        coro = command(i)
        first = coro.send(None)
        assert first is shared
        tasks.append(asyncio.ensure_future(EagerCoroutine(coro, first)))
    await asyncio.sleep(0)
    shared.set_result(10)
    await asyncio.gather(*tasks)
    assert sorted(seen) == [10, 11, 12]

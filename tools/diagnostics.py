"""What a running array is doing, on request: ``kill -USR1 PID`` logs the stack of every asyncio
task (``task_stacks``) and every thread (faulthandler, to the process's stderr).

An array that stops answering a management request or a host's command is a bug to be found in
the field, where no debugger is attached: a management operation waiting forever for a drain, a
mover waiting for a range.  The signal costs nothing until it is sent, stops nothing, and the
stacks say which await each task is parked on.
"""
from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("sanlab.tools.diagnostics")

STACK_LIMIT = 12
"""Innermost frames logged per task (the await a task is parked on is its innermost frame)."""


def task_stacks(loop: asyncio.AbstractEventLoop) -> list[dict[str, object]]:
    """Every unfinished task of ``loop``: its name, coroutine and await chain, innermost last."""
    out: list[dict[str, object]] = []
    for task in asyncio.all_tasks(loop):
        frames = _await_chain(task)
        out.append({
            "task": task.get_name(),
            "coro": getattr(task.get_coro(), "__qualname__", repr(task.get_coro())),
            "stack": [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in frames[-STACK_LIMIT:]],
        })
    return sorted(out, key=lambda t: str(t["task"]))


def _await_chain(task: asyncio.Task[Any]) -> list[FrameType]:
    """The frames of ``task``'s coroutine and of each coroutine it awaits, down to the one it is
    suspended in (a suspended coroutine's frame has no ``f_back``: the chain is ``cr_await``'s)."""
    coro: Any = task.get_coro()
    frames: list[FrameType] = []
    while coro is not None and len(frames) < 64:
        f = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if f is None:
            break
        frames.append(f)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def dump(loop: asyncio.AbstractEventLoop) -> None:
    """Log every task's stack, then write every thread's to stderr (the signal handler)."""
    tasks = task_stacks(loop)
    log.warning("task_stacks", count=len(tasks), tasks=tasks)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Answer SIGUSR1 with :func:`dump` for as long as ``loop`` runs."""
    loop.add_signal_handler(signal.SIGUSR1, dump, loop)

"""One supervisor for the array's background work (issue 13, seam 4; ARCHITECTURE.md convention 1).

Rebuilds, scrubs, migrations' background copies, the tiering loop and, next, replication's copy
movers run as tasks started by a :class:`Supervisor`, each under a kind and a name with its
context (the group or volume it works on).  Every task is reaped: its end is logged with that
context, an exception as ``background_task_failed`` with the traceback, and its state (running,
done, stopped, failed with the error) stays for ``sanlab show`` (:meth:`Supervisor.describe`);
nothing is left as an exception no one retrieved.

Stopping is asked for, not forced: a task is started with a ``stop`` (a coroutine function, or an
event to set) that makes it return after the unit of work in hand — a rebuild after its stripe with
its watermark recorded, a migration after its chunk with its copied-map flushed, the tiering loop
after its move.  Cancelling instead would abandon a drive write running in an executor thread
after the task had let go of its stripe or range lock, where a host write could overtake it.
Only a task started without a ``stop`` is cancelled.

:meth:`Supervisor.shutdown` stops the tasks kind by kind in the order the supervisor was made with,
each kind's tasks together, and a kind only once the one before has ended: the work that writes
*through* other work stops first (tiering moves LDEVs of volumes, a migration writes a volume,
both land on RAID groups whose rebuilds and scrubs stop last), so nothing still sends I/O down to
a layer whose background work has already stopped.

It lives in storage/ rather than tools/ because replication, which may import storage but not
tools, starts its copy movers under the same supervisor.
"""
from __future__ import annotations

import asyncio
import enum
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine, Sequence

import structlog

log = structlog.get_logger("sanlab.storage.supervisor")

StopRequest = Callable[[], Awaitable[None]] | asyncio.Event
"""How a task is asked to stop: a coroutine function that asks and may wait, or an event to set."""


class SupervisorError(Exception):
    """A task that cannot be started (unknown kind, one of that name running, shutting down)."""


class TaskState(enum.Enum):
    """Where a supervised task is."""

    RUNNING = "running"
    DONE = "done"
    """Returned by itself."""
    STOPPED = "stopped"
    """Returned (or was cancelled) after being asked to stop."""
    FAILED = "failed"
    """Raised an exception, or was cancelled without being asked to stop."""


@dataclass(slots=True, eq=False)
class SupervisedTask:
    """One task of a :class:`Supervisor` and what is known about it."""

    kind: str
    """What it is (``rebuild``, ``migration``, ...): decides when it stops at shutdown."""
    name: str
    """Which one of its kind (the group, the volume): at most one of a kind and name runs at a time."""
    context: dict[str, object]
    """Logged with every event of the task and shown (``group=rg0``, ``volume=v1``)."""
    task: asyncio.Task[Any]
    stop_request: StopRequest | None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    state: TaskState = TaskState.RUNNING
    error: str | None = None
    """Why it failed: the exception's type and message."""
    stopping: bool = False
    """Asked to stop (by :meth:`Supervisor.stop` or :meth:`Supervisor.shutdown`)."""

    def result(self) -> Any:
        """What the task returned (only for a task that is DONE or STOPPED without cancellation)."""
        return self.task.result()

    def describe(self) -> dict[str, Any]:
        """For ``sanlab show``: kind, name, state, error, context and seconds run so far (or in all)."""
        end = self.ended if self.ended is not None else time.monotonic()
        return {"kind": self.kind, "name": self.name, "state": self.state.value, "error": self.error,
                "context": dict(self.context), "seconds": round(end - self.started, 3)}


class Supervisor:
    """Starts, reaps, shows and stops (in order) the background tasks of one array."""

    def __init__(self, shutdown_order: Sequence[str]) -> None:
        """``shutdown_order``: every kind of task this supervisor runs, in the order they stop."""
        self.shutdown_order = tuple(shutdown_order)
        self._tasks: dict[tuple[str, str], SupervisedTask] = {}
        self._closing = False

    def start(self, kind: str, name: str, coro: Coroutine[Any, Any, Any], *, stop: StopRequest | None = None,
              **context: object) -> SupervisedTask:
        """Run ``coro`` as task ``name`` of ``kind``; ``stop`` asks it to return (else it is cancelled).

        Refused (SupervisorError, ``coro`` closed unrun) for a kind not in the shutdown order, while
        a task of the same kind and name runs, and once :meth:`shutdown` has begun.  A finished
        task of the same kind and name is replaced (its record goes).
        """
        why = None
        old = self._tasks.get((kind, name))
        if kind not in self.shutdown_order:
            why = f"no place for {kind} tasks in the shutdown order {self.shutdown_order}"
        elif self._closing:
            why = f"the array is shutting down: {kind} {name} not started"
        elif old is not None and not old.task.done():
            why = f"{kind} {name} is already running"
        if why is not None:
            coro.close()
            raise SupervisorError(why)
        job = SupervisedTask(kind, name, dict(context), asyncio.create_task(coro, name=f"{kind}:{name}"), stop)
        self._tasks[(kind, name)] = job
        job.task.add_done_callback(functools.partial(self._reap, job))
        log.info("background_task_started", kind=kind, task=name, **context)
        return job

    def _reap(self, job: SupervisedTask, task: asyncio.Task[Any]) -> None:
        """The done callback: record how the task ended and log it with its context."""
        job.ended = time.monotonic()
        ctx = {"kind": job.kind, "task": job.name, **job.context}
        if task.cancelled():
            if job.stopping:
                job.state = TaskState.STOPPED
                log.info("background_task_stopped", **ctx)
            else:
                job.state, job.error = TaskState.FAILED, "cancelled"
                log.error("background_task_cancelled", **ctx)
            return
        exc = task.exception()
        if exc is not None:
            job.state, job.error = TaskState.FAILED, f"{type(exc).__name__}: {exc}"
            log.error("background_task_failed", error=job.error, exc_info=exc, **ctx)
        elif job.stopping:
            job.state = TaskState.STOPPED
            log.info("background_task_stopped", **ctx)
        else:
            job.state = TaskState.DONE
            log.info("background_task_done", **ctx)

    def get(self, kind: str, name: str) -> SupervisedTask | None:
        """The task ``name`` of ``kind`` (running or the last one finished), or None."""
        return self._tasks.get((kind, name))

    def running(self, kind: str, name: str) -> bool:
        """Whether task ``name`` of ``kind`` is running."""
        job = self._tasks.get((kind, name))
        return job is not None and not job.task.done()

    async def wait(self, kind: str, name: str) -> SupervisedTask | None:
        """Wait until task ``name`` of ``kind`` has ended, however it ends; None when there is none.

        Cancelling the waiter does not cancel the task.
        """
        job = self._tasks.get((kind, name))
        if job is not None and not job.task.done():
            await asyncio.wait([job.task])
        return job

    async def stop(self, kind: str, name: str) -> SupervisedTask | None:
        """Ask task ``name`` of ``kind`` to stop and wait until it has ended (None when there is none)."""
        job = self._tasks.get((kind, name))
        if job is not None and not job.task.done():
            await self._stop(job)
        return job

    async def _stop(self, job: SupervisedTask) -> None:
        job.stopping = True
        if job.stop_request is None:
            job.task.cancel()
        elif isinstance(job.stop_request, asyncio.Event):
            job.stop_request.set()
        else:
            await job.stop_request()
        await asyncio.wait([job.task])

    async def shutdown(self) -> None:
        """Stop every task, kind by kind in the shutdown order; no task starts afterwards."""
        self._closing = True
        for kind in self.shutdown_order:
            jobs = [j for j in self._tasks.values() if j.kind == kind and not j.task.done()]
            if not jobs:
                continue
            log.info("background_tasks_stopping", kind=kind, tasks=[j.name for j in jobs])
            results = await asyncio.gather(*(self._stop(j) for j in jobs), return_exceptions=True)
            for job, result in zip(jobs, results):
                if isinstance(result, BaseException):  # the stop request itself failed: say so, go on
                    log.error("background_task_stop_failed", kind=kind, task=job.name, error=str(result),
                              exc_info=result, **job.context)

    def describe(self) -> list[dict[str, Any]]:
        """Every task known, running and finished, in shutdown order then by name."""
        rank = {kind: i for i, kind in enumerate(self.shutdown_order)}
        jobs = sorted(self._tasks.values(), key=lambda j: (rank[j.kind], j.name))
        return [j.describe() for j in jobs]

"""The task supervisor: every task reaped, a failure logged with its context and shown, shutdown in order."""
from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from sanlab.storage.supervisor import Supervisor, SupervisorError, TaskState


class Worker:
    """A background loop that works in units and stops after the unit in hand when asked."""

    def __init__(self, name: str, journal: list[str], unit: float = 0.01) -> None:
        self.name = name
        self.journal = journal
        self.unit = unit
        self.asked = False
        self.units = 0

    async def run(self) -> int:
        while not self.asked:
            await asyncio.sleep(self.unit)  # a unit of work that must not be cut off
            self.units += 1
        self.journal.append(f"{self.name} ended")
        return self.units

    async def stop(self) -> None:
        self.journal.append(f"{self.name} asked")
        self.asked = True


async def test_a_failure_is_logged_with_its_context_and_shown() -> None:
    sup = Supervisor(["migration", "rebuild"])

    async def rebuild() -> None:
        await asyncio.sleep(0)
        raise OSError(5, "Input/output error")

    with capture_logs() as logs:
        sup.start("rebuild", "rg0", rebuild(), group="rg0", drive=2)
        job = await sup.wait("rebuild", "rg0")
    assert job is not None and job.state is TaskState.FAILED
    (failed,) = [e for e in logs if e["event"] == "background_task_failed"]
    assert failed["kind"] == "rebuild" and failed["task"] == "rg0" and failed["group"] == "rg0"
    assert failed["drive"] == 2 and failed["error"] == "OSError: [Errno 5] Input/output error"
    assert failed["log_level"] == "error" and isinstance(failed["exc_info"], OSError)
    assert sup.describe() == [{"kind": "rebuild", "name": "rg0", "state": "failed",
                               "error": "OSError: [Errno 5] Input/output error",
                               "context": {"group": "rg0", "drive": 2}, "seconds": sup.describe()[0]["seconds"]}]
    # A task that ends by itself is shown done, with what it returned.
    sup.start("migration", "v1", asyncio.sleep(0, result=7), volume="v1")
    done = await sup.wait("migration", "v1")
    assert done is not None and done.state is TaskState.DONE and done.result() == 7
    assert [(d["kind"], d["state"]) for d in sup.describe()] == [("migration", "done"), ("rebuild", "failed")]


async def test_shutdown_stops_kind_by_kind_in_the_stated_order() -> None:
    order = ["tiering", "migration", "scrub", "rebuild"]
    sup = Supervisor(order)
    journal: list[str] = []
    workers = [Worker("rebuild rg0", journal), Worker("migration v1", journal), Worker("rebuild rg1", journal),
               Worker("tiering auto", journal, unit=0.05), Worker("migration v2", journal, unit=0.03)]
    for w in workers:
        kind, name = w.name.split()
        sup.start(kind, name, w.run(), stop=w.stop)
    await asyncio.sleep(0.06)
    await sup.shutdown()
    # Each kind is asked, and has ended, before the next kind is asked; a kind's tasks stop together.
    position = {entry: i for i, entry in enumerate(journal)}
    assert position["tiering auto ended"] < min(position["migration v1 asked"], position["migration v2 asked"])
    assert max(position["migration v1 ended"], position["migration v2 ended"]) < \
        min(position["rebuild rg0 asked"], position["rebuild rg1 asked"])
    assert position["migration v2 asked"] < position["migration v1 ended"]  # together, not one after the other
    assert all(w.units > 0 for w in workers)
    assert {d["state"] for d in sup.describe()} == {"stopped"}
    assert [d["kind"] for d in sup.describe()] == ["tiering", "migration", "migration", "rebuild", "rebuild"]
    with pytest.raises(SupervisorError, match="shutting down"):
        sup.start("rebuild", "rg2", Worker("late", journal).run())


async def test_stopping_asks_the_task_and_never_cancels_the_unit_in_hand() -> None:
    sup = Supervisor(["tiering", "rebuild"])
    journal: list[str] = []
    slow = Worker("rebuild rg0", journal, unit=0.2)
    job = sup.start("rebuild", "rg0", slow.run(), stop=slow.stop, group="rg0")
    await asyncio.sleep(0.05)  # inside its first unit
    with capture_logs() as logs:
        await sup.stop("rebuild", "rg0")
    assert slow.units == 1 and job.state is TaskState.STOPPED and job.result() == 1  # the unit was finished
    assert [e["event"] for e in logs] == ["background_task_stopped"] and logs[0]["group"] == "rg0"
    # An event is a stop request too; a task given none is cancelled.
    event = asyncio.Event()
    sup.start("tiering", "auto", event.wait(), stop=event)
    never = asyncio.Event()
    plain = sup.start("rebuild", "rg1", never.wait())
    await sup.shutdown()
    assert event.is_set() and plain.task.cancelled() and plain.state is TaskState.STOPPED


async def test_one_task_of_a_kind_and_name_at_a_time() -> None:
    sup = Supervisor(["scrub"])
    gate = asyncio.Event()
    sup.start("scrub", "rg0", gate.wait())
    with pytest.raises(SupervisorError, match="scrub rg0 is already running"):
        sup.start("scrub", "rg0", gate.wait())
    with pytest.raises(SupervisorError, match="no place for copy tasks"):
        sup.start("copy", "p1", gate.wait())
    sup.start("scrub", "rg1", gate.wait())  # another name is another task
    gate.set()
    await sup.wait("scrub", "rg0")
    again = sup.start("scrub", "rg0", asyncio.sleep(0))  # a finished one is replaced
    await sup.wait("scrub", "rg0")
    assert sup.get("scrub", "rg0") is again and again.state is TaskState.DONE
    # Something cancelling a task behind the supervisor's back is a failure, and says so.
    rogue = sup.start("scrub", "rg2", asyncio.Event().wait(), group="rg2")
    with capture_logs() as logs:
        rogue.task.cancel()
        await sup.wait("scrub", "rg2")
    assert rogue.state is TaskState.FAILED and rogue.error == "cancelled"
    assert [(e["event"], e["group"]) for e in logs] == [("background_task_cancelled", "rg2")]

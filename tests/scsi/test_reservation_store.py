"""The APTPL store (scsi/reservation_store.py): commits off the event loop, in order, durable before
GOOD (SPC-4 §5.9.4), and what a cold reset restores while a commit is on its way."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.reservation_store import STORE_NAME, ReservationStore
from sanlab.scsi.sense import parse_sense
from sanlab.scsi.task import ScsiStatus, ScsiTask
from tests.scsi.helpers import NX, NX2, TARGET, cdb10, make_lu
from tests.scsi.test_reservations import READ_KEYS, REGISTER, Lu, prin, ready

APTPL = 0x01


def stored(state_dir: Path) -> dict[str, str]:
    """What another connection finds in the file: what is durable."""
    db = sqlite3.connect(str(state_dir / STORE_NAME))
    try:
        return dict(db.execute("SELECT lu, state FROM persistent_reservations").fetchall())
    finally:
        db.close()


class Gate:
    """Holds the store's worker thread inside its next writes until opened."""

    def __init__(self, store: ReservationStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.threads: list[int] = []
        write = store._write_sync

        def gated(lu_id: str, text: str | None) -> None:
            self.threads.append(threading.get_ident())
            assert self.open.wait(10)
            write(lu_id, text)

        monkeypatch.setattr(store, "_write_sync", gated)


@pytest.fixture
async def t(tmp_path: Path) -> AsyncIterator[Lu]:
    server = await ready({0: make_lu(tmp_path)}, tmp_path / "state", NX, NX2)
    yield Lu(server)
    await server.close()


@pytest.fixture
def gate(t: Lu, monkeypatch: pytest.MonkeyPatch) -> Gate:
    """The gate on ``t``'s store."""
    assert t.server.reservation_store is not None
    return Gate(t.server.reservation_store, monkeypatch)


async def test_commit_runs_off_the_loop_and_good_waits_for_it(t: Lu, gate: Gate, tmp_path: Path) -> None:
    register = asyncio.ensure_future(t.out(NX, REGISTER, sa_key=0xA, flags=APTPL))
    await asyncio.sleep(0.05)
    # The commit waits on the worker thread; the PROUT has no answer yet, and the loop still runs
    # other commands (another I_T nexus reads, and sees the registration the PROUT made).
    assert not register.done() and gate.threads and gate.threads[0] != threading.get_ident()
    assert (await t.run(NX2, cdb10(0x28, 0, 1))).status == ScsiStatus.GOOD
    assert (await t.keys(NX2))[1] == [0xA]
    assert stored(tmp_path / "state") == {}
    gate.open.set()
    assert (await register).status == ScsiStatus.GOOD
    assert list(stored(tmp_path / "state")) == [t.server.luns[0].reservations.lu_id]  # durable before GOOD


async def test_commits_land_in_the_order_the_state_changed(t: Lu, gate: Gate, tmp_path: Path) -> None:
    first = asyncio.ensure_future(t.out(NX, REGISTER, sa_key=0xA, flags=APTPL))
    second = asyncio.ensure_future(t.out(NX2, REGISTER, sa_key=0xB, flags=APTPL))
    third = asyncio.ensure_future(t.out(NX, REGISTER, key=0xA, sa_key=0xC, flags=APTPL))
    await asyncio.sleep(0.05)
    gate.open.set()
    assert [(await f).status for f in (first, second, third)] == [ScsiStatus.GOOD] * 3
    (state,) = stored(tmp_path / "state").values()
    assert '"key": 12' in state and '"key": 11' in state and '"key": 10' not in state
    # APTPL off: the stored state goes, also durable before GOOD.
    assert (await t.out(NX2, REGISTER, key=0xB, sa_key=0xB)).status == ScsiStatus.GOOD
    assert stored(tmp_path / "state") == {}


async def test_a_cold_reset_restores_the_state_on_its_way(t: Lu, gate: Gate) -> None:
    register = asyncio.ensure_future(t.out(NX, REGISTER, sa_key=0xA, flags=APTPL))
    await asyncio.sleep(0.05)
    t.server.target_reset(NX2, cold=True)
    assert await t.ua(NX2) == 0x2901
    assert (await t.keys(NX2)) == (0, [0xA])  # what the queued commit will have made durable
    gate.open.set()
    assert (await register).status == ScsiStatus.GOOD


async def test_a_store_that_cannot_be_opened_is_a_hardware_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    server = DeviceServer(TARGET, {0: make_lu(tmp_path)}, state_dir=tmp_path / "state")
    for _ in range(2):  # every command that needs the state, not only the first
        r = await server.execute(ScsiTask(NX, 0, prin(READ_KEYS)))
        assert r.status == ScsiStatus.CHECK_CONDITION
        s = parse_sense(r.sense)
        assert (s.key, s.asc_ascq) == (0x4, 0x4400)
    await server.close()


async def test_the_store_reads_what_it_saved(tmp_path: Path) -> None:
    a = ReservationStore(tmp_path / STORE_NAME)
    await a.open()
    assert a.saved("lu") is None
    await a.save("lu", {"aptpl": True, "registrations": [], "reservation": None})
    await a.save("other", None)  # nothing stored, nothing removed
    await a.close()
    b = ReservationStore(tmp_path / STORE_NAME)
    await b.open()
    assert b.saved("lu") == {"aptpl": True, "registrations": [], "reservation": None}
    await b.save("lu", None)
    assert b.saved("lu") is None
    await b.close()
    assert stored(tmp_path) == {}

"""The catalog: older files upgraded, changes all or nothing, commits off the event loop."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from sanlab.storage.catalog import Catalog

# The V/R and LU/V tables as catalogs made before the multiple-virtualization flag have them.
OLD_TABLES = """
CREATE TABLE virtual_volumes (
    vvol INTEGER PRIMARY KEY, real TEXT NOT NULL, real_start INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE lus (
    name TEXT PRIMARY KEY, vvol INTEGER NOT NULL REFERENCES virtual_volumes(vvol),
    vstart INTEGER NOT NULL, size INTEGER NOT NULL);
INSERT INTO virtual_volumes VALUES (1, 'v0', 0, 1000), (2, 'v0', 900, 100), (3, 'v0', 1000, 50), (4, 'v1', 0, 1000);
INSERT INTO lus VALUES ('a', 1, 0, 500), ('b', 1, 499, 10), ('c', 1, 509, 10), ('d', 4, 0, 1000);
"""


async def test_an_older_catalog_gains_the_multiple_virtualization_flag(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_TABLES)
    old.close()

    cat = Catalog(path)
    # Rows that overlap another were made when overlapping needed no asking: they are marked, so
    # they load under the rule that refuses an unasked overlap; the others are not.
    assert {r["vvol"]: r["multiple_virtualization"] for r in cat.virtual_volumes()} == {1: 1, 2: 1, 3: 0, 4: 0}
    assert {r["name"]: r["multiple_virtualization"] for r in cat.lus()} == {"a": 1, "b": 1, "c": 0, "d": 0}
    assert [(r["vvol"], r["real"], r["real_start"], r["size"]) for r in cat.virtual_volumes()][:2] == \
        [(1, "v0", 0, 1000), (2, "v0", 900, 100)]
    await cat.close()
    db = sqlite3.connect(path)  # a row written without the flag, as older code did
    db.execute("INSERT INTO virtual_volumes (vvol, real, real_start, size) VALUES (5, 'v9', 0, 1)")
    db.commit()
    db.close()

    again = Catalog(path)  # already upgraded: nothing changes on the next open
    assert {r["vvol"]: r["multiple_virtualization"] for r in again.virtual_volumes()} == \
        {1: 1, 2: 1, 3: 0, 4: 0, 5: 0}
    await again.close()


async def test_a_commit_runs_off_the_event_loop(tmp_path: Path) -> None:
    """Convention 6: while a commit waits (here for another writer's lock), the event loop goes on."""
    cat = Catalog(tmp_path / "catalog.db")
    other = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock: the catalog's commit must wait for it
    ticks = 0

    async def commit() -> None:
        async with cat.change() as change:
            change.add_vvol(1, "v0", 0, 100, False)

    committing = asyncio.create_task(commit())
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1  # the loop runs while the commit is blocked
    assert not committing.done() and cat.virtual_volumes() == []  # readers see committed state only
    other.execute("COMMIT")
    other.close()
    await committing
    assert ticks == 20 and [r["vvol"] for r in cat.virtual_volumes()] == [1]
    await cat.close()


async def test_a_change_is_all_or_nothing(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.db")
    async with cat.change() as change:
        change.add_group("rg0", 1, 65536, 1 << 20, ["a.img", "b.img"])
    # The second statement fails (no group rg9): the first, in the same change, is not committed.
    with pytest.raises(sqlite3.IntegrityError):
        async with cat.change() as change:
            change.add_volume("v0", 512, 2048, [("rg0", 0), ("rg9", 0)])
    assert cat.volumes() == []
    with pytest.raises(RuntimeError):  # an exception in the block: nothing is committed
        async with cat.change() as change:
            change.add_volume("v1", 512, 2048, [("rg0", 1)])
            raise RuntimeError("the operation failed before its commit")
    assert cat.volumes() == []
    async with cat.change() as change:
        change.add_volume("v2", 512, 2048, [("rg0", 2)])
        change.set_meta("ldev_size", "1048576")
    assert [v["ldevs"] for v in cat.volumes()] == [[("rg0", 2)]] and cat.get_meta("ldev_size") == "1048576"
    await cat.close()


async def test_a_caller_cancelled_during_its_commit_learns_the_outcome_first(tmp_path: Path) -> None:
    """The commit cannot be called back once its thread has it: the caller applies it, then is cancelled."""
    cat = Catalog(tmp_path / "catalog.db")
    other = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    applied = []

    async def operation() -> None:
        async with cat.change() as change:
            change.add_external("b0", "127.0.0.2", 3260, "iqn.x", 0, "off", 10.0)
        applied.append("running objects changed")  # what an operation does after its commit
        await asyncio.sleep(3600)

    task = asyncio.create_task(operation())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for its commit
    other.execute("COMMIT")
    other.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert applied == ["running objects changed"] and [e["name"] for e in cat.externals()] == ["b0"]
    await cat.close()


async def test_remotes_round_trip_and_an_older_catalog_gains_the_table(tmp_path: Path) -> None:
    from sanlab.storage.catalog import RemoteRow

    path = tmp_path / "catalog.db"
    old = sqlite3.connect(path)  # a catalog from before remotes: no such table
    old.executescript(OLD_TABLES)
    old.close()
    cat = Catalog(path)
    assert cat.remotes() == []
    b = RemoteRow("array-b", (("127.0.0.2", 3260), ("::1", 3261)), "iqn.2026-11.org.sanlab:array-b",
                  "array-a", "a-to-b-secret-12", "array-b", "b-to-a-secret-12")
    c = RemoteRow("array-c", (("127.0.0.3", 3260),), "iqn.2026-11.org.sanlab:array-c")
    async with cat.change() as change:
        change.add_remote(c)
        change.add_remote(b)
    assert cat.remotes() == [b, c]
    with pytest.raises(sqlite3.IntegrityError):  # one remote per name
        async with cat.change() as change:
            change.add_remote(c)
    assert "a-to-b-secret-12" not in repr(b) and "b-to-a-secret-12" not in repr(b)  # left out of the repr
    await cat.close()

    again = Catalog(path)  # after a restart
    assert again.remotes() == [b, c]
    async with again.change() as change:
        change.delete_remote("array-b")
    assert again.remotes() == [c]
    await again.close()
    # The secrets are in this file: only its owner may read it.
    assert path.stat().st_mode & 0o777 == 0o600

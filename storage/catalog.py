"""The array's catalog: every storage table in SQLite (ARCHITECTURE.md convention 7).

RAID groups, LDEV assignments, logical volumes, the V/R table (virtual
volumes), the LU/V table (LUs), LU exports and the remotes added at run time
(peer arrays, with their CHAP secrets: the file is owner-only) live here.  Each management
operation is one transaction (:meth:`Catalog.change`, its rows recorded through
the typed methods of :class:`CatalogChange`): it happens entirely or not at all,
and a restart brings back exactly the committed state.  WAL mode keeps readers
off the writer's back; ``synchronous=FULL`` makes a commit durable before it
returns, and the commit runs on the catalog's own thread, off the event loop.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raid_groups (
    name TEXT PRIMARY KEY, level INTEGER NOT NULL, stripe_size INTEGER NOT NULL,
    drive_size INTEGER NOT NULL, drives TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY, block_size INTEGER NOT NULL, blocks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS volume_ldevs (
    volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE, seq INTEGER NOT NULL,
    grp TEXT NOT NULL REFERENCES raid_groups(name), idx INTEGER NOT NULL,
    PRIMARY KEY (volume, seq), UNIQUE (grp, idx));
CREATE TABLE IF NOT EXISTS virtual_volumes (
    vvol INTEGER PRIMARY KEY, real TEXT NOT NULL, real_start INTEGER NOT NULL, size INTEGER NOT NULL,
    multiple_virtualization INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lus (
    name TEXT PRIMARY KEY, vvol INTEGER NOT NULL REFERENCES virtual_volumes(vvol),
    vstart INTEGER NOT NULL, size INTEGER NOT NULL, multiple_virtualization INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS externals (
    name TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, target TEXT NOT NULL,
    lun INTEGER NOT NULL, lock TEXT NOT NULL, timeout REAL NOT NULL);
CREATE TABLE IF NOT EXISTS migrations (
    dest TEXT PRIMARY KEY REFERENCES volumes(name), source TEXT NOT NULL, start INTEGER NOT NULL,
    end_block INTEGER NOT NULL, chunk INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exports (
    target TEXT NOT NULL, lun INTEGER NOT NULL, lu TEXT NOT NULL REFERENCES lus(name),
    PRIMARY KEY (target, lun));
CREATE TABLE IF NOT EXISTS remotes (
    name TEXT PRIMARY KEY, portals TEXT NOT NULL, target TEXT NOT NULL,
    chap_user TEXT, chap_secret TEXT, mutual_user TEXT, mutual_secret TEXT);
CREATE TABLE IF NOT EXISTS pairs (name TEXT PRIMARY KEY, role TEXT NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS local_copies (name TEXT PRIMARY KEY, state TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS command_devices (target TEXT NOT NULL, lun INTEGER NOT NULL, PRIMARY KEY (target, lun));
CREATE TABLE IF NOT EXISTS journals (name TEXT PRIMARY KEY, body TEXT NOT NULL);
"""
# A table added after catalogs were in use needs no step of its own: SCHEMA's CREATE TABLE IF NOT
# EXISTS runs at every open and adds it (``remotes`` came this way); ADDED_COLUMNS is for columns.

# Columns added after catalogs were already in use: (table, column, declaration, what to set in
# the rows an older catalog already has).  CREATE TABLE IF NOT EXISTS leaves an existing table
# as it was, so :meth:`Catalog._upgrade` adds what is missing, in one transaction.
ADDED_COLUMNS: list[tuple[str, str, str, str | None]] = [
    # Mappings made before overlaps needed multiple_virtualization=yes were allowed to overlap:
    # mark the ones that do, so they load (storage/vvol.py refuses an unasked overlap) and
    # show what they are.
    ("virtual_volumes", "multiple_virtualization", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE virtual_volumes SET multiple_virtualization=1 WHERE EXISTS (SELECT 1 FROM virtual_volumes o "
     "WHERE o.vvol != virtual_volumes.vvol AND o.real = virtual_volumes.real "
     "AND o.real_start < virtual_volumes.real_start + virtual_volumes.size "
     "AND virtual_volumes.real_start < o.real_start + o.size)"),
    ("lus", "multiple_virtualization", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE lus SET multiple_virtualization=1 WHERE EXISTS (SELECT 1 FROM lus o "
     "WHERE o.name != lus.name AND o.vvol = lus.vvol AND o.vstart < lus.vstart + lus.size "
     "AND lus.vstart < o.vstart + o.size)"),
]


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A RAID group of the catalog."""

    name: str
    level: int
    stripe_size: int
    """Bytes of one drive in one stripe (the chunk)."""
    drive_size: int
    drives: list[str]
    """Drive file paths, member 0 first."""


@dataclass(frozen=True, slots=True)
class RemoteRow:
    """A remote (peer array) added at run time."""

    name: str
    portals: tuple[tuple[str, int], ...]
    """(host, port) of each portal, in the order they are tried."""
    target: str
    """The peer's target name (IQN) used for replication."""
    chap_user: str | None = None
    chap_secret: str | None = field(default=None, repr=False)
    """Never in a repr: a log line or a traceback showing the row must not show the secret."""
    mutual_user: str | None = None
    """The peer's own CHAP name (mutual CHAP)."""
    mutual_secret: str | None = field(default=None, repr=False)


Statement = tuple[str, tuple[object, ...]]


class CatalogChange:
    """The rows one management operation adds, changes and removes: committed together or not at all.

    Got from :meth:`Catalog.change`; each method records one statement (nothing touches the
    database before the commit), so the SQL stays here, beside the schema it belongs to.
    """

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        """What the commit executes, in order."""

    def _add(self, sql: str, *params: object) -> None:
        self.statements.append((sql, params))

    def set_meta(self, key: str, value: str) -> None:
        """Set an array-wide setting (``ldev_size``)."""
        self._add("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                  key, value)

    # --- RAID groups

    def add_group(self, name: str, level: int, stripe_size: int, drive_size: int, drives: list[str]) -> None:
        """A new RAID group on ``drives`` (paths as the array opens them)."""
        self._add("INSERT INTO raid_groups (name, level, stripe_size, drive_size, drives) VALUES (?, ?, ?, ?, ?)",
                  name, level, stripe_size, drive_size, json.dumps(drives))

    def set_group_drives(self, name: str, drives: list[str]) -> None:
        """The drive list of group ``name`` (a member replaced)."""
        self._add("UPDATE raid_groups SET drives=? WHERE name=?", json.dumps(drives), name)

    def delete_group(self, name: str) -> None:
        """Remove group ``name`` (none of its LDEVs may belong to a volume: the foreign key says so)."""
        self._add("DELETE FROM raid_groups WHERE name=?", name)

    # --- volumes and their LDEVs

    def add_volume(self, name: str, block_size: int, blocks: int, ldevs: Sequence[tuple[str, int]]) -> None:
        """Volume ``name`` on ``ldevs`` ((group, index) in the volume's order)."""
        self._add("INSERT INTO volumes (name, block_size, blocks) VALUES (?, ?, ?)", name, block_size, blocks)
        for seq, (group, index) in enumerate(ldevs):
            self._add("INSERT INTO volume_ldevs (volume, seq, grp, idx) VALUES (?, ?, ?, ?)", name, seq, group, index)

    def move_ldev(self, volume: str, seq: int, group: str, index: int) -> None:
        """LDEV ``seq`` of ``volume`` is now LDEV ``index`` of ``group`` (rearrangement)."""
        self._add("UPDATE volume_ldevs SET grp=?, idx=? WHERE volume=? AND seq=?", group, index, volume, seq)

    def delete_volume(self, name: str) -> None:
        """Remove volume ``name`` and its LDEV list."""
        self._add("DELETE FROM volumes WHERE name=?", name)

    # --- the V/R and LU/V tables, exports

    def add_vvol(self, vvol: int, real: str, real_start: int, size: int, multiple_virtualization: bool) -> None:
        """A V/R row: virtual volume ``vvol`` is ``size`` blocks of ``real`` from ``real_start``."""
        self._add("INSERT INTO virtual_volumes (vvol, real, real_start, size, multiple_virtualization) "
                  "VALUES (?, ?, ?, ?, ?)", vvol, real, real_start, size, int(multiple_virtualization))

    def delete_vvol(self, vvol: int) -> None:
        """Remove V/R row ``vvol``."""
        self._add("DELETE FROM virtual_volumes WHERE vvol=?", vvol)

    def add_lu(self, name: str, vvol: int, vstart: int, size: int, multiple_virtualization: bool) -> None:
        """An LU/V row: LU ``name`` is ``size`` blocks of virtual volume ``vvol`` from ``vstart``."""
        self._add("INSERT INTO lus (name, vvol, vstart, size, multiple_virtualization) VALUES (?, ?, ?, ?, ?)",
                  name, vvol, vstart, size, int(multiple_virtualization))

    def delete_lu(self, name: str) -> None:
        """Remove LU/V row ``name``."""
        self._add("DELETE FROM lus WHERE name=?", name)

    def add_export(self, target: str, lun: int, lu: str) -> None:
        """LU ``lu`` is served as LUN ``lun`` of ``target``."""
        self._add("INSERT INTO exports (target, lun, lu) VALUES (?, ?, ?)", target, lun, lu)

    def delete_export(self, target: str, lun: int) -> None:
        """LUN ``lun`` of ``target`` is no longer served."""
        self._add("DELETE FROM exports WHERE target=? AND lun=?", target, lun)

    # --- external volumes and migrations

    def add_external(self, name: str, host: str, port: int, target: str, lun: int, lock: str,
                     timeout: float) -> None:
        """A peer's LUN mapped at run time as external volume ``name``."""
        self._add("INSERT INTO externals (name, host, port, target, lun, lock, timeout) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  name, host, port, target, lun, lock, timeout)

    def delete_external(self, name: str) -> None:
        """Remove run-time external volume ``name``."""
        self._add("DELETE FROM externals WHERE name=?", name)

    def add_migration(self, dest: str, source: str, start: int, end: int, chunk: int) -> None:
        """A migratory copy of ``source`` into volume ``dest`` (blocks ``start`` to ``end``), copying."""
        self._add("INSERT INTO migrations (dest, source, start, end_block, chunk, state) "
                  "VALUES (?, ?, ?, ?, ?, 'copying')", dest, source, start, end, chunk)

    def set_migration_state(self, dest: str, state: str) -> None:
        """The migration into ``dest`` is now ``state`` (``detached``)."""
        self._add("UPDATE migrations SET state=? WHERE dest=?", state, dest)

    # --- remotes

    def add_remote(self, row: RemoteRow) -> None:
        """A remote (peer array) added at run time."""
        self._add("INSERT INTO remotes (name, portals, target, chap_user, chap_secret, mutual_user, mutual_secret) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)", row.name, json.dumps([list(p) for p in row.portals]), row.target,
                  row.chap_user, row.chap_secret, row.mutual_user, row.mutual_secret)

    def delete_remote(self, name: str) -> None:
        """Remove run-time remote ``name``."""
        self._add("DELETE FROM remotes WHERE name=?", name)

    # --- remote-copy pairs (replication/manager.py owns the record's fields)

    def put_pair(self, name: str, role: str, state: str, body: dict[str, Any]) -> None:
        """Pair half ``name`` as it stands now (role and state as columns, the whole record as JSON)."""
        self._add("INSERT INTO pairs (name, role, state, body) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE "
                  "SET role=excluded.role, state=excluded.state, body=excluded.body", name, role, state,
                  json.dumps(body))

    def delete_pair(self, name: str) -> None:
        """Forget pair half ``name`` (back to SMPL)."""
        self._add("DELETE FROM pairs WHERE name=?", name)

    # --- journals of asynchronous copy (replication/journal.py owns the record's fields and pointers)

    def put_journal(self, name: str, body: dict[str, Any]) -> None:
        """Journal ``name`` as it stands now: its volume and its persistent pointers, as JSON."""
        self._add("INSERT INTO journals (name, body) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET body=excluded.body",
                  name, json.dumps(body))

    def delete_journal(self, name: str) -> None:
        """Forget journal ``name``."""
        self._add("DELETE FROM journals WHERE name=?", name)
    # --- local copy pairs (replication/local_copies.py owns the record's fields)

    def put_local_copy(self, name: str, state: str, body: dict[str, Any]) -> None:
        """Local copy pair ``name`` as it stands now (the whole record as JSON)."""
        self._add("INSERT INTO local_copies (name, state, body) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                  "SET state=excluded.state, body=excluded.body", name, state, json.dumps(body))

    def delete_local_copy(self, name: str) -> None:
        """Forget local copy pair ``name``."""
        self._add("DELETE FROM local_copies WHERE name=?", name)

    # --- command devices (seed 003 FIG. 5: the command device management table)

    def add_command_device(self, target: str, lun: int) -> None:
        """A command device served as ``lun`` of ``target``, created at run time."""
        self._add("INSERT INTO command_devices (target, lun) VALUES (?, ?)", target, lun)

    def delete_command_device(self, target: str, lun: int) -> None:
        """Forget the run-time command device at ``lun`` of ``target``."""
        self._add("DELETE FROM command_devices WHERE target=? AND lun=?", target, lun)


class Catalog:
    """SQLite-backed tables of the storage configuration.

    Changes are committed on the catalog's one worker thread (:meth:`change`), so the event loop
    never waits for a ``synchronous=FULL`` commit's fsync (ARCHITECTURE.md convention 6), and they
    are committed in the order they were submitted.  The worker has the writing connection to
    itself.  Reads run on the thread that made the catalog (the event loop's), on a connection of
    their own: in WAL mode a reader neither waits for the writer nor syncs anything, and it sees
    the last committed state, never a change still in flight.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # Made and set up here, at start, before anything is served; from then on used on the worker only.
        self._writer = self._connect(check_same_thread=False)
        # Owner-only: the remotes' CHAP secrets are in it (SQLite gives the -wal and -shm files the
        # database file's mode).  The management socket beside it is owner-only for the same reason.
        os.chmod(self.path, 0o600)
        self._writer.executescript(SCHEMA)
        self._upgrade()
        self._reader = self._connect(check_same_thread=True)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sanlab-catalog")
        self._closed = False

    def _connect(self, *, check_same_thread: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=check_same_thread)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed change survives power loss
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _upgrade(self) -> None:
        """Add the :data:`ADDED_COLUMNS` an older catalog lacks (all in one transaction)."""
        statements: list[Statement] = []
        for table, column, decl, fill in ADDED_COLUMNS:
            if column in {r["name"] for r in self._writer.execute(f"PRAGMA table_info({table})")}:
                continue
            statements.append((f"ALTER TABLE {table} ADD COLUMN {column} {decl}", ()))
            if fill is not None:
                statements.append((fill, ()))
        if statements:
            self._apply(statements)

    def _apply(self, statements: list[Statement]) -> None:
        """Execute ``statements`` in one transaction (on the worker thread, or at start)."""
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @asynccontextmanager
    async def change(self) -> AsyncIterator[CatalogChange]:
        """One all-or-nothing change: record it in the block; it is committed when the block ends.

        An exception in the block commits nothing; a failing commit raises here, after its rollback.
        The caller changes its running objects only after the block (or undoes what it changed
        before it when the block raises).  Work that must be done before the commit and undone
        with it (a file the change names) goes in the block, after the statements.
        """
        change = CatalogChange()
        yield change
        if change.statements:
            await self._commit(change.statements)

    async def _commit(self, statements: list[Statement]) -> None:
        """Commit on the worker and wait for it; a cancelled caller learns the outcome first.

        Once the worker has the transaction it cannot be called back, and the caller decides from
        the outcome whether to apply or undo its running change: so a cancellation that arrives
        meanwhile is held back until the commit is done and delivered again afterwards (the
        caller's next await, or its end, raises it).
        """
        if self._closed:
            raise sqlite3.ProgrammingError("the catalog is closed")
        done = asyncio.wrap_future(self._worker.submit(self._apply, statements))
        cancelled = False
        while not done.done():
            try:
                await asyncio.wait([done])  # being cancelled here leaves ``done`` running
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
        done.result()

    async def close(self) -> None:
        """Close after every commit submitted so far (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._worker.submit(self._writer.close))
        self._worker.shutdown(wait=False)
        self._reader.close()

    # --- reads (committed state) ------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """An array-wide setting, or ``default``."""
        row = self._reader.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row["value"]) if row else default

    def groups(self) -> list[GroupRow]:
        """The RAID groups, by name."""
        return [GroupRow(r["name"], r["level"], r["stripe_size"], r["drive_size"], json.loads(r["drives"]))
                for r in self._reader.execute("SELECT * FROM raid_groups ORDER BY name")]

    def volumes(self) -> list[dict[str, Any]]:
        """The volumes, by name: ``name``, ``block_size``, ``blocks`` and ``ldevs`` [(group, index)]."""
        out = []
        for r in self._reader.execute("SELECT * FROM volumes ORDER BY name").fetchall():
            ldevs = [(x["grp"], x["idx"]) for x in self._reader.execute(
                "SELECT grp, idx FROM volume_ldevs WHERE volume=? ORDER BY seq", (r["name"],))]
            out.append({"name": r["name"], "block_size": r["block_size"], "blocks": r["blocks"], "ldevs": ldevs})
        return out

    def virtual_volumes(self) -> list[dict[str, Any]]:
        """The V/R table, by virtual volume number."""
        return [dict(r) for r in self._reader.execute("SELECT * FROM virtual_volumes ORDER BY vvol")]

    def lus(self) -> list[dict[str, Any]]:
        """The LU/V table, by LU name."""
        return [dict(r) for r in self._reader.execute("SELECT * FROM lus ORDER BY name")]

    def externals(self) -> list[dict[str, Any]]:
        """The run-time external volumes, by name."""
        return [dict(r) for r in self._reader.execute("SELECT * FROM externals ORDER BY name")]

    def migrations(self) -> list[dict[str, Any]]:
        """The migrations (``state`` copying or detached), by destination."""
        return [dict(r) for r in self._reader.execute("SELECT * FROM migrations ORDER BY dest")]

    def exports(self) -> list[dict[str, Any]]:
        """The exports, by target and LUN."""
        return [dict(r) for r in self._reader.execute("SELECT * FROM exports ORDER BY target, lun")]

    def pairs(self) -> list[dict[str, Any]]:
        """Every pair half's record (the JSON body), by name."""
        return [dict(json.loads(r["body"])) for r in self._reader.execute("SELECT body FROM pairs ORDER BY name")]

    def journals(self) -> list[dict[str, Any]]:
        """Every journal's record (the JSON body), by name."""
        return [dict(json.loads(r["body"])) for r in self._reader.execute("SELECT body FROM journals ORDER BY name")]
    def local_copies(self) -> list[dict[str, Any]]:
        """Every local copy pair's record (the JSON body), by name."""
        return [dict(json.loads(r["body"])) for r in self._reader.execute("SELECT body FROM local_copies ORDER BY name")]

    def command_devices(self) -> list[tuple[str, int]]:
        """(target, LUN) of the command devices created at run time."""
        return [(str(r["target"]), int(r["lun"]))
                for r in self._reader.execute("SELECT target, lun FROM command_devices ORDER BY target, lun")]

    def remotes(self) -> list[RemoteRow]:
        """The remotes added at run time, by name."""
        return [RemoteRow(r["name"], tuple((str(h), int(p)) for h, p in json.loads(r["portals"])), r["target"],
                          r["chap_user"], r["chap_secret"], r["mutual_user"], r["mutual_secret"])
                for r in self._reader.execute("SELECT * FROM remotes ORDER BY name")]

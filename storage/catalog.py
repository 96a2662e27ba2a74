"""The array's catalog: every storage table in SQLite (ARCHITECTURE.md convention 7).

RAID groups, LDEV assignments, logical volumes, the V/R table (virtual
volumes), the LU/V table (LUs) and LU exports live here.  Each management
operation is one transaction: it happens entirely or not at all, and a restart
brings back exactly the committed state.  WAL mode keeps readers off the
writer's back; ``synchronous=FULL`` makes a commit durable before it returns.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
"""

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
    name: str
    level: int
    stripe_size: int
    drive_size: int
    drives: list[str]


class Catalog:
    """SQLite-backed tables of the storage configuration."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Add the :data:`ADDED_COLUMNS` an older catalog lacks (all in one transaction)."""
        missing = [(t, c, decl, fill) for t, c, decl, fill in ADDED_COLUMNS
                   if c not in {r["name"] for r in self.db.execute(f"PRAGMA table_info({t})")}]
        if not missing:
            return
        with self.transaction() as db:
            for table, column, decl, fill in missing:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                if fill is not None:
                    db.execute(fill)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing change (BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row["value"]) if row else default

    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                   (key, value))

    # --- reads ---------------------------------------------------------------------------------

    def groups(self) -> list[GroupRow]:
        return [GroupRow(r["name"], r["level"], r["stripe_size"], r["drive_size"], json.loads(r["drives"]))
                for r in self.db.execute("SELECT * FROM raid_groups ORDER BY name")]

    def volumes(self) -> list[dict[str, Any]]:
        out = []
        for r in self.db.execute("SELECT * FROM volumes ORDER BY name"):
            ldevs = [(x["grp"], x["idx"]) for x in self.db.execute(
                "SELECT grp, idx FROM volume_ldevs WHERE volume=? ORDER BY seq", (r["name"],))]
            out.append({"name": r["name"], "block_size": r["block_size"], "blocks": r["blocks"], "ldevs": ldevs})
        return out

    def virtual_volumes(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM virtual_volumes ORDER BY vvol")]

    def lus(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM lus ORDER BY name")]

    def externals(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM externals ORDER BY name")]

    def migrations(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM migrations ORDER BY dest")]

    def exports(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM exports ORDER BY target, lun")]

"""The catalog: an existing catalog.db gains the columns added since it was made, keeping its rows."""
from __future__ import annotations

import sqlite3
from pathlib import Path

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

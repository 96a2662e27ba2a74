"""Virtual volumes: V/R and LU/V tables, address conversion, multiple virtualization, stacking."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanlab.storage.volume import FileVolume, VolumeError
from sanlab.storage.vvol import LuVRow, MappingTables, VRRow


def tables(tmp: Path) -> MappingTables:
    t = MappingTables()
    t.add_real("R1", FileVolume(str(tmp / "r1.img"), 1000 * 512))
    t.add_real("R2", FileVolume(str(tmp / "r2.img"), 300 * 512))
    return t


async def test_lu_part_of_a_virtual_volume(tmp_path: Path) -> None:
    t = tables(tmp_path)
    t.map_virtual(VRRow(1, "R1", 100, 400))
    t.map_lu(LuVRow("LU0", 1, 50, 200))
    lu = t.lu_volume("LU0")
    assert lu.num_blocks == 200
    data = os.urandom(512 * 3)
    await lu.write(10, data)
    # LU block 10 → virtual block 60 → real block 160 (FIG. 5 conversions).
    assert t.resolve("LU0", 10) == ("R1", 160)
    assert await t.real["R1"].read(160, 3) == data
    with pytest.raises(VolumeError):
        await lu.read(199, 2)


async def test_multiple_virtualization_flag(tmp_path: Path) -> None:
    t = tables(tmp_path)
    t.map_virtual(VRRow(1, "R1", 0, 500))
    t.map_virtual(VRRow(2, "R1", 600, 100))
    assert not t.multiple_virtualization(1)
    t.map_virtual(VRRow(3, "R1", 400, 150))
    assert t.multiple_virtualization(1) and t.multiple_virtualization(3) and not t.multiple_virtualization(2)
    # Two virtual volumes over the same real blocks see each other's writes.
    t.map_lu(LuVRow("A", 1, 0, 500))
    t.map_lu(LuVRow("B", 3, 0, 150))
    await t.lu_volume("A").write(450, b"\x42" * 512)
    assert await t.lu_volume("B").read(50, 1) == b"\x42" * 512


async def test_stacked_virtual_volume_on_an_lu(tmp_path: Path) -> None:
    t = tables(tmp_path)
    t.map_virtual(VRRow(1, "R2", 10, 200))
    t.map_lu(LuVRow("LU1", 1, 20, 150))
    t.map_virtual(VRRow(2, "LU1", 30, 100))  # a virtual volume on another LU (seed 002, 7th-9th embodiments)
    t.map_lu(LuVRow("LU2", 2, 5, 50))
    await t.lu_volume("LU2").write(1, b"\x07" * 512)
    assert t.resolve("LU2", 1) == ("R2", 10 + 20 + 30 + 5 + 1)
    assert await t.real["R2"].read(66, 1) == b"\x07" * 512
    with pytest.raises(ValueError):
        t.unmap_lu("LU1")  # carries #2
    with pytest.raises(ValueError):
        t.unmap_virtual(2)  # used by LU2


def test_table_errors(tmp_path: Path) -> None:
    t = tables(tmp_path)
    with pytest.raises(ValueError):
        t.map_virtual(VRRow(1, "R2", 250, 100))  # past the end of R2
    with pytest.raises(ValueError):
        t.map_virtual(VRRow(1, "nowhere", 0, 1))
    t.map_virtual(VRRow(1, "R2", 0, 100))
    with pytest.raises(ValueError):
        t.map_virtual(VRRow(1, "R2", 0, 10))
    with pytest.raises(ValueError):
        t.map_lu(LuVRow("L", 1, 90, 20))
    with pytest.raises(ValueError):
        t.map_lu(LuVRow("L", 9, 0, 1))


@settings(max_examples=50)
@given(vstart=st.integers(0, 99), real_start=st.integers(0, 499), lu_start=st.integers(0, 49),
       lba=st.integers(0, 49))
def test_resolve_matches_arithmetic(vstart: int, real_start: int, lu_start: int, lba: int) -> None:
    t = MappingTables()

    class Dummy:
        block_size = 512
        num_blocks = 10_000

    t.add_real("R", Dummy())  # type: ignore[arg-type]
    t.map_virtual(VRRow(7, "R", real_start, 100 + vstart))
    t.map_lu(LuVRow("L", 7, vstart, 50))
    name, block = t.resolve("L", lba)
    assert (name, block) == ("R", real_start + vstart + lba)

"""Virtual volumes: V/R and LU/V tables, address conversion, multiple virtualization, stacking."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanlab.storage.volume import VolumeError

from sanlab.storage.file_volume import FileVolume
from sanlab.storage.vvol import LuVRow, MappingTables, OverlapError, VRRow


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
    t.map_virtual(VRRow(3, "R1", 400, 150, multiple_virtualization=True))
    assert t.multiple_virtualization(1) and t.multiple_virtualization(3) and not t.multiple_virtualization(2)
    assert t.sharing_vvols(1) == [3] and t.sharing_vvols(3) == [1] and t.sharing_vvols(2) == []
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


@pytest.mark.parametrize("start,size", [(499, 1), (0, 1000), (450, 100), (100, 10)])
def test_an_overlapping_virtual_volume_needs_multiple_virtualization(tmp_path: Path, start: int, size: int) -> None:
    t = tables(tmp_path)
    t.map_virtual(VRRow(1, "R1", 100, 400))  # blocks 100-499
    with pytest.raises(OverlapError, match=r"already mapped by virtual volume #1 and multiple virtualization"):
        t.map_virtual(VRRow(2, "R1", start, size))
    assert 2 not in t.vr
    t.map_virtual(VRRow(3, "R2", start % 300, 1))  # the same blocks of another real volume are free
    t.map_virtual(VRRow(4, "R1", 500, 100))  # the next block on is free
    t.map_virtual(VRRow(2, "R1", start, size, multiple_virtualization=True))  # asked for: allowed
    assert t.sharing_vvols(2)[:1] == [1] and t.vr[2].multiple_virtualization and not t.vr[1].multiple_virtualization


def test_rows_read_back_from_the_catalog_load_in_any_order(tmp_path: Path) -> None:
    """#3 was made first without asking, #2 later over it with asking: read back by number, #3 must still load."""
    t = tables(tmp_path)
    rows = [VRRow(1, "R1", 0, 100), VRRow(2, "R1", 50, 100, multiple_virtualization=True), VRRow(3, "R1", 100, 100)]
    with pytest.raises(OverlapError):
        for r in rows:
            t.map_virtual(r)
    t2 = tables(tmp_path)
    for r in rows:
        t2.map_virtual(r, restore=True)
    t2.map_lu(LuVRow("A", 3, 0, 10))
    t2.map_lu(LuVRow("B", 3, 5, 10, multiple_virtualization=True))
    t2.map_lu(LuVRow("C", 3, 10, 10), restore=True)  # overlaps B, which asked
    assert sorted(t2.vr) == [1, 2, 3] and t2.sharing_lus("C") == ["B"]


def test_an_overlapping_lu_needs_multiple_virtualization(tmp_path: Path) -> None:
    t = tables(tmp_path)
    t.map_virtual(VRRow(1, "R1", 0, 1000))
    t.map_lu(LuVRow("A", 1, 0, 100))
    t.map_lu(LuVRow("B", 1, 100, 100))  # adjacent, not overlapping
    with pytest.raises(OverlapError, match=r"LU C: blocks 150-249 of virtual volume #1 are already mapped by LU B"):
        t.map_lu(LuVRow("C", 1, 150, 100))
    with pytest.raises(OverlapError, match=r"by LU A, B "):
        t.map_lu(LuVRow("C", 1, 0, 1000))
    assert "C" not in t.luv
    t.map_lu(LuVRow("C", 1, 50, 100, multiple_virtualization=True))
    assert t.sharing_lus("C") == ["A", "B"] and t.sharing_lus("A") == ["C"]
    with pytest.raises(ValueError, match="outside #1"):
        t.map_lu(LuVRow("D", 1, 900, 101, multiple_virtualization=True))  # past the end of #1, asked or not


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

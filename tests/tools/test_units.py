"""The one size rule: a unit means bytes (whole blocks where blocks are counted), a bare number the declared unit."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.tools.units import Quantity, format_size, parse_quantity, to_blocks, to_bytes

MiB = 1 << 20


@pytest.mark.parametrize("text,expected", [
    ("2048", Quantity(2048, None)), (2048, Quantity(2048, None)), (" 7 ", Quantity(7, None)),
    ("1MiB", Quantity(1, MiB)), ("1mib", Quantity(1, MiB)), ("1M", Quantity(1, MiB)), ("1MB", Quantity(1, MiB)),
    ("3 GiB", Quantity(3, 1 << 30)), ("2TiB", Quantity(2, 1 << 40)), ("4KiB", Quantity(4, 1024)),
    ("512B", Quantity(512, 1)), ("0", Quantity(0, None)),
])
def test_parse_quantity(text: object, expected: Quantity) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("bad", ["", "1.5GiB", "-1", "1 PiB", "1MiBs", "MiB", "1,024", True, 1.0, None, ["1"]])
def test_what_is_not_a_size(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^size=.* is not a size \(a whole number, or one with a unit: B, KiB"):
        parse_quantity(bad)


def test_a_bare_number_is_the_declared_unit_and_a_unit_is_bytes() -> None:
    # The bug of issue 12: 1MiB taken as 1048576 blocks; on 512-byte blocks it is 2048.
    assert to_blocks("1MiB", 512) == 2048
    assert to_blocks("1MiB", 4096) == 256
    assert to_blocks("2048", 512) == 2048 and to_blocks(2048, 4096) == 2048  # bare: blocks, whatever their size
    assert to_bytes("1MiB") == MiB and to_bytes(2048) == 2048 and to_bytes("2048") == 2048
    assert to_blocks("0B", 512) == 0


@pytest.mark.parametrize("text,block_size", [("1000B", 512), ("2KiB", 4096), ("513B", 512), ("6KiB", 4096)])
def test_a_unit_that_is_not_whole_blocks_is_refused_naming_the_block_size(text: str, block_size: int) -> None:
    with pytest.raises(ValueError, match=rf"^vstart={text} \(\d+ bytes\) is not a whole number of "
                                         rf"{block_size}-byte blocks$"):
        to_blocks(text, block_size, "vstart")


@given(st.integers(0, 1 << 20), st.sampled_from(["B", "KiB", "MiB", "GiB"]), st.sampled_from([512, 4096]))
def test_to_blocks_is_exact_or_refuses(n: int, unit: str, block_size: int) -> None:
    nbytes = n * {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1 << 30}[unit]
    if nbytes % block_size:
        with pytest.raises(ValueError):
            to_blocks(f"{n}{unit}", block_size)
    else:
        assert to_blocks(f"{n}{unit}", block_size) * block_size == nbytes


@pytest.mark.parametrize("n,text", [(0, "0 B"), (512, "512 B"), (4096, "4 KiB"), (2 << 30, "2 GiB"),
                                    (30000 * 512, "14.65 MiB"), (3 << 40, "3 TiB"), (1536, "1.50 KiB")])
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text

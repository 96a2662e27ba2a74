"""Sizes as people write them, and the one rule that turns them into bytes or blocks.

The rule, the same for the configuration file, the command line, the management
socket and (later) the command device:

* a number **with a unit** — ``B``, ``KiB``, ``MiB``, ``GiB``, ``TiB`` (also
  spelled ``K``, ``KB``, ``M``, ... : always powers of 1024) — is a number of
  **bytes**; where the quantity is counted in blocks it must be a whole number
  of the volume's blocks, or it is refused with a message naming the block size;
* a **bare number** is in the quantity's own unit, which each operation
  declares (``tools/operations.py``): bytes for ``create-volume size=``,
  blocks for ``create-vvol size=``.

The unit travels with the value up to the code that knows the block size (a
virtual volume's blocks are those of the real volume under it), which is why
the command line sends ``"1MiB"`` as written instead of converting it: issue 12
found ``size=1MiB`` turned into 1,048,576 by the command line and then taken as
*blocks* by the array, a 512 MiB window onto another LU's data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_QUANTITY_RE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE | re.ASCII)
_UNIT_BYTES = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_UNIT_NAMES = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))

UNITS_HELP = "B, KiB, MiB, GiB, TiB"
"""The units a size may carry, for messages and help."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """A size as written: a number and, when one was given, its unit."""

    number: int
    unit_bytes: int | None
    """Bytes per unit (1 for ``B``, 1024 for ``KiB``, ...); None for a bare number."""

    @property
    def has_unit(self) -> bool:
        """The value was written with a unit (then it is bytes)."""
        return self.unit_bytes is not None


def parse_quantity(value: object, what: str = "size") -> Quantity:
    """``"1MiB"`` → Quantity(1, 1048576); ``"2048"`` and ``2048`` → Quantity(2048, None).

    Raises ValueError naming ``what`` for anything else (booleans, floats, text that is
    not a whole number with an optional unit).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return Quantity(value, None)  # JSON numbers are bare numbers: no unit can ride on them
    if isinstance(value, str) and (m := _QUANTITY_RE.match(value)):
        unit = m.group(2)
        if unit is None:
            return Quantity(int(m.group(1)), None)
        return Quantity(int(m.group(1)), _UNIT_BYTES[unit[0].upper()])
    raise ValueError(f"{what}={value!r} is not a size (a whole number, or one with a unit: {UNITS_HELP})")


def is_size(value: object) -> bool:
    """True when :func:`parse_quantity` accepts ``value``."""
    try:
        parse_quantity(value)
    except ValueError:
        return False
    return True


def to_bytes(value: object, what: str = "size") -> int:
    """A quantity whose bare numbers are bytes → bytes (a unit is bytes as well)."""
    q = parse_quantity(value, what)
    return q.number * (q.unit_bytes or 1)


def to_blocks(value: object, block_size: int, what: str = "size") -> int:
    """A quantity whose bare numbers are blocks → blocks of ``block_size`` bytes.

    With a unit it is bytes, and must be a whole number of blocks: rounding would
    silently map more or less than was asked for.
    """
    q = parse_quantity(value, what)
    if q.unit_bytes is None:
        return q.number
    nbytes = q.number * q.unit_bytes
    if nbytes % block_size:
        raise ValueError(f"{what}={value} ({nbytes} bytes) is not a whole number of {block_size}-byte blocks")
    return nbytes // block_size


def format_size(nbytes: int) -> str:
    """Bytes for people: ``"2 GiB"``, ``"14.65 MiB"``, ``"512 B"`` (exact when it divides evenly)."""
    for unit, name in _UNIT_NAMES:
        if abs(nbytes) >= unit:
            if nbytes % unit == 0:
                return f"{nbytes // unit} {name}"
            return f"{nbytes / unit:.2f} {name}"
    return f"{nbytes} B"


def format_blocks(blocks: int, block_size: int) -> str:
    """A block count with its size: ``"8192 blocks (4 MiB)"``."""
    return f"{blocks} blocks ({format_size(blocks * block_size)})"

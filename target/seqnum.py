"""32-bit serial number arithmetic for CmdSN/StatSN/DataSN (RFC 1982, as RFC 7143 §4.2.2.1 requires)."""
from __future__ import annotations

MOD = 1 << 32
HALF = 1 << 31


def sn_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & 0xFFFFFFFF


def sn_lt(a: int, b: int) -> bool:
    """``a < b`` in serial number arithmetic."""
    return a != b and ((b - a) & 0xFFFFFFFF) < HALF


def sn_le(a: int, b: int) -> bool:
    """``a <= b`` in serial number arithmetic."""
    return a == b or sn_lt(a, b)


def sn_in_window(sn: int, low: int, high: int) -> bool:
    """``low <= sn <= high`` in serial number arithmetic."""
    return sn_le(low, sn) and sn_le(sn, high)

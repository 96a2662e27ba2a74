"""The 8-byte SAM LUN field (SAM-5 §4.7): peripheral and flat space addressing."""
from __future__ import annotations

NOT_SUPPORTED = -1
"""A LUN we cannot address: the device server answers LOGICAL UNIT NOT SUPPORTED."""

MAX_LUN = 16383
"""The largest LUN :func:`encode_lun` can put in the field: flat space addressing has 14 bits
(SAM-5 §4.7).  A logical unit numbered outside 0..MAX_LUN could not be listed by REPORT LUNS."""

LUN_RANGE = f"0..{MAX_LUN} (peripheral device addressing 0-255, flat space addressing 256-{MAX_LUN}, SAM-5 §4.7)"
"""The LUNs this target serves, in words for error messages."""


def decode_lun(field: bytes | bytearray | memoryview) -> int:
    """LUN number from the 8-byte field; :data:`NOT_SUPPORTED` for other methods or levels.

    Peripheral device addressing (method 00b) with BUS IDENTIFIER 0, and flat
    space addressing (01b), single level (the next six bytes zero): SAM-5 §4.7.
    Logical unit addressing (10b), extended addressing (11b) and multi-level
    LUNs are not served: the device server answers LOGICAL UNIT NOT SUPPORTED.
    ``ValueError`` only when the field is not 8 bytes.
    """
    if len(field) != 8:
        raise ValueError("a LUN field is 8 bytes")
    if any(field[2:]):
        return NOT_SUPPORTED  # second-level addressing: not a single-level LUN we serve
    method = field[0] >> 6
    if method == 0b00:  # peripheral device addressing: bus 0, LUN in byte 1
        return field[1] if field[0] == 0 else NOT_SUPPORTED
    if method == 0b01:  # flat space addressing: 14-bit LUN
        return ((field[0] & 0x3F) << 8) | field[1]
    return NOT_SUPPORTED


def encode_lun(lun: int) -> bytes:
    """Peripheral addressing below 256, flat space addressing up to 16383 (as Linux expects)."""
    if lun < 0:
        raise ValueError(f"LUN {lun} is negative")
    if lun < 256:
        return bytes([0, lun]) + bytes(6)
    if lun <= MAX_LUN:
        return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)
    raise ValueError(f"LUN {lun} needs more than 14 bits")


PERIPHERAL_LUNS: dict[bytes, int] = {encode_lun(n): n for n in range(256)}
"""LUN field → LUN for LUNs 0-255 as Linux and libiscsi send them (peripheral device addressing,
SAM-5 §4.7): :func:`decode_lun`'s answers for the fields seen on nearly every command, looked up."""

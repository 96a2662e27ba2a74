"""The 8-byte LUN field (SAM-5 §4.7)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.scsi.lun import MAX_LUN, NOT_SUPPORTED, decode_lun, encode_lun


@pytest.mark.parametrize("field, lun", [
    ("0000000000000000", 0),
    ("00ff000000000000", 255),  # peripheral device addressing, bus 0
    ("4000000000000000", 0),  # flat space addressing
    ("412c000000000000", 300),
    ("7fff000000000000", 16383),
])
def test_decode(field: str, lun: int) -> None:
    assert decode_lun(bytes.fromhex(field)) == lun


@pytest.mark.parametrize("field", [
    "0105000000000000",  # peripheral, bus 1
    "8001000000000000",  # logical unit addressing (10b)
    "c001000000000000",  # extended addressing (11b)
    "0001000100000000",  # second level
    "0000000000000001",
])
def test_decode_not_supported(field: str) -> None:
    assert decode_lun(bytes.fromhex(field)) == NOT_SUPPORTED == -1


def test_decode_wrong_length() -> None:
    with pytest.raises(ValueError):
        decode_lun(bytes(7))


def test_encode() -> None:
    assert encode_lun(5) == bytes.fromhex("0005000000000000")
    assert encode_lun(255) == bytes.fromhex("00ff000000000000")
    assert encode_lun(256) == bytes.fromhex("4100000000000000")
    assert encode_lun(16383) == bytes.fromhex("7fff000000000000")
    for bad in (-1, 16384):
        with pytest.raises(ValueError):
            encode_lun(bad)


@given(st.integers(0, 16383))
def test_round_trip(lun: int) -> None:
    assert decode_lun(encode_lun(lun)) == lun
    assert decode_lun(memoryview(encode_lun(lun))) == lun


@given(st.binary(min_size=8, max_size=8))
def test_decode_any_field(field: bytes) -> None:
    lun = decode_lun(field)
    assert lun == NOT_SUPPORTED or 0 <= lun < 16384
    if lun != NOT_SUPPORTED and field[0] >> 6 == 0b01:
        assert encode_lun(lun)[0] >> 6 == (0 if lun < 256 else 1)


async def test_device_server_serves_only_luns_report_luns_can_list(tmp_path: Path) -> None:
    """Issue 12 item 4: a LUN outside 0..MAX_LUN never gets in, so REPORT LUNS keeps working."""
    from sanlab.scsi.device_server import DeviceServer
    from tests.scsi.helpers import NX, TARGET, make_lu, runner

    assert MAX_LUN == 16383
    encode_lun(MAX_LUN)  # the limit is the encoder's
    for bad in (-1, MAX_LUN + 1, 99999):
        with pytest.raises(ValueError, match=r"0\.\.16383"):
            DeviceServer(TARGET, {bad: make_lu(tmp_path, f"init{bad}")})
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path)})
    for bad in (-1, MAX_LUN + 1, 99999):
        with pytest.raises(ValueError, match=r"outside 0\.\.16383"):
            ds.add_lun(bad, make_lu(tmp_path, f"add{bad}"))
    ds.add_lun(MAX_LUN, make_lu(tmp_path, "last", lun=MAX_LUN))
    ds.nexus_added(NX)
    run = runner(ds)
    await run(bytes(6))  # the power-on unit attention
    res = await run(bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))  # REPORT LUNS, 256 bytes
    assert res.status == 0 and bytes(res.data_in) == bytes.fromhex("00000010 00000000 0000000000000000 7fff000000000000")
    await ds.close()

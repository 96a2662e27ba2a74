"""Sense data: exact fixed/descriptor bytes, field pointers, parse round trips (SPC-4 §4.5)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.scsi.sense import (Asc, FieldPointer, ScsiError, SenseKey, build_sense, invalid_field,
                               invalid_parameter, parse_sense)


def test_asc_values_and_aliases() -> None:
    assert int(Asc.LBA_OUT_OF_RANGE) == 0x2100
    assert int(Asc.INVALID_FIELD_IN_CDB) == 0x2400
    assert Asc(0x2900).name == "POWER_ON_RESET_OCCURRED"
    assert Asc["POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED"] == Asc(0x2900)  # SPC-3 name kept as an alias
    assert int(Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED) == 0x2903
    assert int(SenseKey.MISCOMPARE) == 0xE and int(SenseKey.VOLUME_OVERFLOW) == 0xD


def test_fixed_format_exact_bytes() -> None:
    sense = build_sense(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    assert sense == bytes.fromhex("70 00 05 00000000 0a 00000000 21 00 00 000000")
    assert len(sense) == 18


def test_fixed_format_information_sets_valid() -> None:
    sense = build_sense(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR, information=0x12345678)
    assert sense[0] == 0xF0
    assert sense[3:7] == bytes.fromhex("12345678")
    # An INFORMATION value wider than 32 bits cannot be reported in fixed format: VALID stays 0.
    wide = build_sense(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR, information=1 << 40)
    assert wide[0] == 0x70 and wide[3:7] == bytes(4)


def test_fixed_format_field_pointer() -> None:
    sense = invalid_field(2, 5).sense()
    assert sense[2] == 0x05 and sense[12:14] == b"\x24\x00"
    # SKSV | C/D | BPV | bit 5, field pointer 0002h (SPC-4 §4.5.2.4.2)
    assert sense[15:18] == bytes([0xCD, 0x00, 0x02])
    no_bit = invalid_field(7).sense()
    assert no_bit[15:18] == bytes([0xC0, 0x00, 0x07])
    param = invalid_parameter(9, 0).sense()
    assert param[12] == 0x26 and param[15:18] == bytes([0x88, 0x00, 0x09])


def test_descriptor_format_exact_bytes() -> None:
    sense = ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field_pointer=1, bit=4).sense(True)
    assert sense == bytes.fromhex("72 05 24 00 000000 08" "02 06 0000 cc 0001 00")
    plain = build_sense(SenseKey.UNIT_ATTENTION, Asc.POWER_ON_RESET_OCCURRED, descriptor=True)
    assert plain == bytes.fromhex("72 06 29 00 000000 00")
    info = build_sense(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR, descriptor=True, information=1 << 40)
    assert info[7] == 12 and info[8:12] == bytes([0, 0x0A, 0x80, 0]) and info[12:20] == (1 << 40).to_bytes(8, "big")


def test_scsi_error_fields() -> None:
    err = ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED, information=7)
    assert err.key is SenseKey.DATA_PROTECT and err.asc_ascq == 0x2700 and err.information == 7
    assert err.field_pointer is None
    assert parse_sense(err.sense()).asc_ascq == 0x2700
    fp = invalid_field(10, 3).field_pointer
    assert fp == FieldPointer(10, 3, True)


@pytest.mark.parametrize("descriptor", [False, True])
def test_parse_round_trip_simple(descriptor: bool) -> None:
    s = parse_sense(invalid_field(4, 7).sense(descriptor))
    assert (s.key, s.asc, s.ascq, s.descriptor) == (5, 0x24, 0x00, descriptor)
    assert s.field_pointer == FieldPointer(4, 7, True)


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_sense(b"\x70\x00")
    with pytest.raises(ValueError):
        parse_sense(bytes([0x7F]) + bytes(17))
    with pytest.raises(ValueError):
        parse_sense(bytes([0x70]) + bytes(9))


@given(key=st.sampled_from(list(SenseKey)), asc=st.integers(0, 0xFFFF),
       info=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
       fp=st.one_of(st.none(), st.builds(FieldPointer, st.integers(0, 0xFFFF),
                                         st.one_of(st.none(), st.integers(0, 7)), st.booleans())),
       descriptor=st.booleans())
def test_parse_round_trip(key: SenseKey, asc: int, info: int | None, fp: FieldPointer | None,
                          descriptor: bool) -> None:
    data = build_sense(key, asc, descriptor=descriptor, information=info, field_pointer=fp)
    s = parse_sense(data)
    assert (s.key, s.asc_ascq, s.information, s.field_pointer, s.descriptor) == (key, asc, info, fp, descriptor)

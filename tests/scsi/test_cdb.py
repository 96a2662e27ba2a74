"""CDB layouts and their checks (SPC-4 §4.2, SBC-3 §5)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.scsi.cdb import (InquiryCdb, ModeSenseCdb, Opcode, PageControl, ReadCapacityCdb, ReadWriteCdb,
                             ReportLunsCdb, RequestSenseCdb, SynchronizeCacheCdb, cdb_length, check_control,
                             control_offset, service_action)
from sanlab.scsi.sense import FieldPointer, ScsiError
from tests.scsi.helpers import cdb6, cdb10, cdb12, cdb16, inquiry


def pointer(exc: pytest.ExceptionInfo[ScsiError]) -> FieldPointer | None:
    assert exc.value.asc_ascq == 0x2400
    return exc.value.field_pointer


@pytest.mark.parametrize("op, length", [
    (Opcode.TEST_UNIT_READY, 6), (Opcode.INQUIRY, 6), (Opcode.READ_10, 10), (Opcode.MODE_SENSE_10, 10),
    (Opcode.READ_16, 16), (Opcode.SERVICE_ACTION_IN_16, 16), (Opcode.REPORT_LUNS, 12), (Opcode.READ_12, 12),
    (Opcode.VARIABLE_LENGTH, None), (0xC0, None), (0xE0, None),
])
def test_cdb_length_by_group(op: int, length: int | None) -> None:
    assert cdb_length(op) == length


def test_control_byte() -> None:
    assert control_offset(Opcode.READ_10) == 9
    check_control(cdb10(Opcode.READ_10))
    with pytest.raises(ScsiError) as e:
        check_control(cdb10(Opcode.READ_10, control=0x04))  # NACA
    assert pointer(e) == FieldPointer(9, 2)
    with pytest.raises(ScsiError) as e:
        check_control(bytes([0, 0, 0, 0, 0, 0x01]))  # obsolete LINK
    assert pointer(e) == FieldPointer(5, 0)
    with pytest.raises(ScsiError):
        check_control(bytes([Opcode.READ_16]) + bytes(9))  # shorter than its group says
    check_control(bytes([0xC0, 0xFF]))  # vendor specific: no layout to check


def test_service_action() -> None:
    assert service_action(bytes([0x9E, 0xF0 | 0x10]) + bytes(14)) == 0x10


def test_read_write_6() -> None:
    rw = ReadWriteCdb.parse(cdb6(Opcode.READ_6, 0x1FFFFF, 0))
    assert (rw.lba, rw.transfer_length, rw.fua, rw.protect) == (0x1FFFFF, 256, False, 0)
    assert ReadWriteCdb.parse(cdb6(Opcode.WRITE_6, 5, 3)).transfer_length == 3
    with pytest.raises(ScsiError) as e:
        ReadWriteCdb.parse(bytes([Opcode.READ_6, 0x20, 0, 0, 1, 0]))
    assert pointer(e) == FieldPointer(1, 7)


@pytest.mark.parametrize("build, op", [(cdb10, Opcode.READ_10), (cdb12, Opcode.WRITE_12), (cdb16, Opcode.READ_16)])
def test_read_write_flags(build: object, op: int) -> None:
    assert callable(build)
    rw = ReadWriteCdb.parse(build(op, 0x1234, 7, 0x08 | 0x10 | 0x60))
    assert (rw.lba, rw.transfer_length, rw.fua, rw.dpo, rw.protect) == (0x1234, 7, True, True, 3)


def test_read_16_wide_fields() -> None:
    rw = ReadWriteCdb.parse(cdb16(Opcode.WRITE_16, (1 << 64) - 1, 0xFFFFFFFF))
    assert rw.lba == (1 << 64) - 1 and rw.transfer_length == 0xFFFFFFFF


def test_read_10_obsolete_reladr() -> None:
    with pytest.raises(ScsiError) as e:
        ReadWriteCdb.parse(cdb10(Opcode.READ_10, 0, 1, 0x01))
    assert pointer(e) == FieldPointer(1, 0)


@given(lba=st.integers(0, 0xFFFFFFFF), blocks=st.integers(0, 0xFFFF), flags=st.integers(0, 0xFF).map(lambda f: f & 0xFE))
def test_read_10_decode(lba: int, blocks: int, flags: int) -> None:
    rw = ReadWriteCdb.parse(cdb10(Opcode.WRITE_10, lba, blocks, flags))
    assert (rw.lba, rw.transfer_length, rw.protect) == (lba, blocks, flags >> 5)


def test_inquiry_cdb() -> None:
    assert InquiryCdb.parse(inquiry(True, 0x83, 0x1000)) == InquiryCdb(True, 0x83, 0x1000)
    with pytest.raises(ScsiError) as e:
        InquiryCdb.parse(inquiry(flags=0x02))  # CMDDT
    assert pointer(e) == FieldPointer(1, 1)
    with pytest.raises(ScsiError) as e:
        InquiryCdb.parse(inquiry(False, 0x80))  # page code without EVPD
    assert pointer(e) == FieldPointer(2)


def test_report_luns_cdb() -> None:
    cdb = bytes([0xA0, 0, 0x02, 0, 0, 0]) + (16).to_bytes(4, "big") + bytes(2)
    assert ReportLunsCdb.parse(cdb) == ReportLunsCdb(2, 16)
    with pytest.raises(ScsiError) as e:
        ReportLunsCdb.parse(cdb[:6] + (15).to_bytes(4, "big") + bytes(2))
    assert pointer(e) == FieldPointer(6)
    with pytest.raises(ScsiError) as e:
        ReportLunsCdb.parse(bytes([0xA0, 0, 0x03]) + cdb[3:])
    assert pointer(e) == FieldPointer(2)


def test_request_sense_cdb() -> None:
    assert RequestSenseCdb.parse(bytes([3, 1, 0, 0, 252, 0])) == RequestSenseCdb(True, 252)
    with pytest.raises(ScsiError):
        RequestSenseCdb.parse(bytes([3, 2, 0, 0, 252, 0]))


def test_mode_sense_cdbs() -> None:
    six = ModeSenseCdb.parse(bytes([0x1A, 0x08, 0x80 | 0x3F, 0xFF, 200, 0]))
    assert (six.ten, six.dbd, six.llbaa, six.pc, six.page_code, six.subpage_code, six.allocation_length) == (
        False, True, False, PageControl.DEFAULT, 0x3F, 0xFF, 200)
    ten = ModeSenseCdb.parse(bytes([0x5A, 0x10, 0x08, 0, 0, 0, 0, 0x01, 0x00, 0]))
    assert (ten.ten, ten.dbd, ten.llbaa, ten.pc, ten.page_code, ten.allocation_length) == (
        True, False, True, PageControl.CURRENT, 0x08, 256)
    with pytest.raises(ScsiError):
        ModeSenseCdb.parse(bytes([0x1A, 0x10, 0x3F, 0, 200, 0]))  # LLBAA is reserved in MODE SENSE(6)


def test_read_capacity_cdbs() -> None:
    assert ReadCapacityCdb.parse(bytes([0x25]) + bytes(9)) == ReadCapacityCdb(0, False, 8)
    with pytest.raises(ScsiError) as e:
        ReadCapacityCdb.parse(bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]))  # LBA without PMI
    assert pointer(e) == FieldPointer(2)
    pmi = ReadCapacityCdb.parse(bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0]))
    assert pmi.pmi and pmi.lba == 1
    rc16 = ReadCapacityCdb.parse(bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2))
    assert rc16 == ReadCapacityCdb(0, False, 32)


def test_synchronize_cache_cdbs() -> None:
    assert SynchronizeCacheCdb.parse(cdb10(Opcode.SYNCHRONIZE_CACHE_10, 9, 3, 0x02)) == SynchronizeCacheCdb(9, 3, True)
    assert SynchronizeCacheCdb.parse(cdb16(Opcode.SYNCHRONIZE_CACHE_16, 1 << 40, 0)) == SynchronizeCacheCdb(
        1 << 40, 0, False)

"""Command tables: building, merging service actions, overriding, lookup (scsi/commands.py)."""
from __future__ import annotations

import pytest

from sanlab.scsi import sbc
from sanlab.scsi.cdb import Opcode
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx
from sanlab.scsi.kinds import DISK, SPC
from sanlab.scsi.reservation_state import EXCLUSIVE, READ
from sanlab.scsi.sense import FieldPointer, ScsiError, parse_sense
from sanlab.scsi.task import ScsiResult


async def h(ctx: Ctx) -> ScsiResult:  # pragma: no cover - never dispatched
    raise AssertionError


SAI = Opcode.SERVICE_ACTION_IN_16


def test_extend_merges_service_actions_and_refuses_duplicates() -> None:
    before = dict(DISK.table.get(SAI).service_actions)  # type: ignore[union-attr]
    bigger = DISK.table.extend({SAI: CommandSpec("SERVICE ACTION IN(16)", service_actions={0x1F: CommandSpec("X", h)})})
    sai = bigger.get(SAI)
    assert sai is not None and {0x10, 0x12, 0x1F} <= set(sai.service_actions)
    assert bigger.lookup(bytes([0x9E, 0x1F]) + bytes(14)).name == "X"
    # The table it came from is unchanged: tables are values, not a registry.
    assert dict(DISK.table.get(SAI).service_actions) == before  # type: ignore[union-attr]
    with pytest.raises(ScsiError):
        DISK.table.lookup(bytes([0x9E, 0x1F]) + bytes(14))
    with pytest.raises(ValueError):
        DISK.table.extend({SAI: CommandSpec("SERVICE ACTION IN(16)", service_actions={0x10: CommandSpec("Y", h)})})
    with pytest.raises(ValueError):
        DISK.table.extend({Opcode.READ_10: CommandSpec("READ(10)", h)})
    assert DISK.table.lookup(bytes([0x9E, 0x10]) + bytes(14)).name == "READ CAPACITY(16)"


def test_override_replaces_rows_and_single_service_actions() -> None:
    mine = CommandSpec("READ(10) elsewhere", h, reservation=EXCLUSIVE)
    table = DISK.table.override({
        Opcode.READ_10: mine,
        SAI: CommandSpec("SERVICE ACTION IN(16)", service_actions={0x12: CommandSpec("GET LBA STATUS", h)}),
        0xC0: CommandSpec("VENDOR C0", h),
    })
    assert table.get(Opcode.READ_10) is mine and table.get(0xC0) is not None
    assert table.lookup(bytes([0x9E, 0x12]) + bytes(14)).handler is h
    assert table.lookup(bytes([0x9E, 0x10]) + bytes(14)).name == "READ CAPACITY(16)"  # kept
    assert len(table) == len(DISK.table) + 1
    assert DISK.table.get(Opcode.READ_10) is not mine and 0xC0 not in DISK.table
    assert [op for op, _ in table.items()] == sorted(op for op, _ in table.items())


def test_lookup_answers_in_sense() -> None:
    with pytest.raises(ScsiError) as exc:
        SPC.lookup(bytes([0x28]) + bytes(9))  # READ(10) is not an SPC command
    s = parse_sense(exc.value.sense(False))
    assert (s.key, s.asc_ascq) == (0x5, 0x2000)
    with pytest.raises(ScsiError) as exc:
        DISK.table.lookup(bytes([0x9E, 0x01]) + bytes(14))
    assert parse_sense(exc.value.sense(False)).field_pointer == FieldPointer(1, 4)


def test_a_row_has_a_handler_or_service_actions() -> None:
    with pytest.raises(ValueError):
        CommandSpec("NOTHING")
    with pytest.raises(ValueError):
        CommandSpec("BOTH", h, service_actions={0: CommandSpec("X", h)})


def test_commands_lists_service_actions() -> None:
    listed = list(DISK.table.commands())
    assert (Opcode.READ_10, None) in [(op, sa) for op, sa, _ in listed]
    assert [(op, sa) for op, sa, _ in listed if op == SAI] == [(SAI, 0x10), (SAI, 0x12)]
    assert all(spec.handler is not None for _, _, spec in listed)


def test_disk_fast_path_matches_its_table() -> None:
    """DISK lets the device server answer READ/WRITE(10)/(16) without the table: its rows must be SBC's."""
    assert DISK.plain_io
    for op in (Opcode.READ_10, Opcode.READ_16):
        assert DISK.table.lookup(bytes([op]) + bytes(15)).handler is sbc.read
    for op in (Opcode.WRITE_10, Opcode.WRITE_16):
        assert DISK.table.lookup(bytes([op]) + bytes(15)).handler is sbc.write
    assert DISK.table.get(Opcode.READ_10).reservation is READ  # type: ignore[union-attr]

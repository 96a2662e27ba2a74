"""REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.35, §6.36).

Both are MAINTENANCE IN service actions.  The command list is generated from
the command table that dispatched the command — the LU kind's (``Ctx.table``,
scsi/kinds.py) — each time it is asked, so every row of that table appears
without being listed here, and an LU of another kind reports its own commands;
a row's ``available`` predicate hides commands the LU cannot honour (e.g.
SANITIZE BLOCK ERASE on a fully provisioned LU).  CDB usage data comes from
:attr:`CommandSpec.cdb_usage` or, where a row gives none, from the CDB length:
every bit but the CONTROL byte's may be used.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from sanlab.scsi.cdb import MaintenanceIn, Opcode, cdb_length
from sanlab.scsi.commands import CommandSpec, CommandTable
from sanlab.scsi.reservation_state import READ
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import invalid_field
from sanlab.scsi.task import ScsiResult

RSOC_CDB = struct.Struct(">BBBBHIxB")
"""REPORT SUPPORTED OPERATION CODES CDB (SPC-4 §6.35.1, table 278): opcode A3h, SERVICE ACTION 0Ch,
RCTD|REPORTING OPTIONS, REQUESTED OPERATION CODE, REQUESTED SERVICE ACTION, ALLOCATION LENGTH,
reserved, CONTROL."""
RSTMF_CDB = struct.Struct(">BBB3xIxB")
"""REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS CDB (SPC-4 §6.36, table 284): opcode A3h, SERVICE ACTION
0Dh, REPD, reserved, ALLOCATION LENGTH, reserved, CONTROL."""
ALL_COMMANDS_HEADER = struct.Struct(">I")
"""COMMAND DATA LENGTH (SPC-4 §6.35.2, table 280)."""
COMMAND_DESCRIPTOR = struct.Struct(">BxHxBH")
"""Command descriptor (SPC-4 §6.35.2, table 281): OPERATION CODE, reserved, SERVICE ACTION, reserved,
CTDP|SERVACTV, CDB LENGTH."""
ONE_COMMAND_HEADER = struct.Struct(">xBH")
"""One-command parameter data (SPC-4 §6.35.3, table 282): reserved, CTDP|SUPPORT, CDB SIZE."""
TIMEOUTS_DESCRIPTOR = struct.Struct(">HxBII")
"""Command timeouts descriptor (SPC-4 §6.35.4, table 285): DESCRIPTOR LENGTH (0Ah), reserved, COMMAND
SPECIFIC, NOMINAL COMMAND PROCESSING TIMEOUT, RECOMMENDED COMMAND TIMEOUT (seconds)."""

RCTD = 0x80
CTDP_DESCRIPTOR = 0x02
SERVACTV = 0x01
CTDP_ONE = 0x80
SUPPORT_NOT_SUPPORTED = 0b001
SUPPORT_CONFORMING = 0b011


class ReportingOptions:
    """REPORTING OPTIONS (SPC-4 §6.35.1, table 279)."""

    ALL = 0b000
    OPCODE = 0b001
    OPCODE_AND_SERVICE_ACTION = 0b010
    OPCODE_OR_SERVICE_ACTION = 0b011


@dataclass(frozen=True, slots=True)
class Supported:
    """One supported command as REPORT SUPPORTED OPERATION CODES sees it."""

    opcode: int
    service_action: int | None
    spec: CommandSpec

    @property
    def cdb_size(self) -> int:
        """CDB length from the group code (SPC-4 §4.2.5.1); 16 for the groups without one."""
        return cdb_length(self.opcode) or 16

    def usage(self) -> bytes:
        """CDB USAGE DATA: the row's own bitmap, else derived from the CDB length (SPC-4 §6.35.3)."""
        if self.spec.cdb_usage is not None:
            return self.spec.cdb_usage
        n = self.cdb_size
        body = bytearray(b"\xff" * n)
        body[0] = self.opcode
        if self.service_action is not None:
            body[1] = self.service_action  # the SERVICE ACTION field carries its own value
        body[n - 1] = 0x00  # CONTROL: neither NACA nor LINK is supported
        return bytes(body)

    def timeouts(self) -> bytes:
        """Command timeouts descriptor: no nominal time given, the row's recommended timeout."""
        return TIMEOUTS_DESCRIPTOR.pack(0x0A, 0, 0, self.spec.timeout)


def supported(table: CommandTable, lu: LogicalUnit | None) -> Iterator[Supported]:
    """Every command of ``table`` the LU supports, by opcode and service action."""
    for opcode, sa, row in table.commands():
        if lu is not None and row.available is not None and not row.available(lu):
            continue
        yield Supported(opcode, sa, row)


def _find(table: CommandTable, lu: LogicalUnit | None, opcode: int, sa: int | None) -> Supported | None:
    return next((s for s in supported(table, lu) if s.opcode == opcode and s.service_action == sa), None)


def _one_command(found: Supported | None, rctd: bool) -> bytes:
    if found is None:
        return ONE_COMMAND_HEADER.pack(SUPPORT_NOT_SUPPORTED, 0)
    usage = found.usage()
    out = ONE_COMMAND_HEADER.pack((CTDP_ONE if rctd else 0) | SUPPORT_CONFORMING, len(usage)) + usage
    return out + found.timeouts() if rctd else out


async def report_supported_operation_codes(ctx: Ctx) -> ScsiResult:
    """REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): all commands or one, with timeouts when RCTD."""
    _, _, b2, opcode, sa, alloc, _ = RSOC_CDB.unpack_from(ctx.cdb)
    rctd, option = bool(b2 & RCTD), b2 & 0x07
    if b2 & 0x78:
        raise invalid_field(2, 6)
    lu, table = ctx.lu, ctx.table
    row = table.get(opcode)
    has_sa = row is not None and row.handler is None
    if option == ReportingOptions.ALL:
        body = bytearray()
        for s in supported(table, lu):
            flags = (CTDP_DESCRIPTOR if rctd else 0) | (SERVACTV if s.service_action is not None else 0)
            body += COMMAND_DESCRIPTOR.pack(s.opcode, s.service_action or 0, flags, s.cdb_size)
            if rctd:
                body += s.timeouts()
        return data_in(ALL_COMMANDS_HEADER.pack(len(body)) + body, alloc)
    if option == ReportingOptions.OPCODE:
        if has_sa:
            raise invalid_field(3)  # the opcode has service actions: ask with option 010b
        return data_in(_one_command(_find(table, lu, opcode, None), rctd), alloc)
    if option == ReportingOptions.OPCODE_AND_SERVICE_ACTION:
        if row is not None and not has_sa:
            raise invalid_field(3)  # the opcode has no service actions: ask with option 001b
        return data_in(_one_command(_find(table, lu, opcode, sa), rctd), alloc)
    if option == ReportingOptions.OPCODE_OR_SERVICE_ACTION:
        found = _find(table, lu, opcode, sa if has_sa else None)
        if found is not None and not has_sa and sa:
            found = None  # a service action asked of an opcode that has none: not supported
        return data_in(_one_command(found, rctd), alloc)
    raise invalid_field(2, 2)


TMF_FLAGS = struct.Struct(">BBxB")
"""Supported task management functions (SPC-4 §6.36.2, table 285): ATS|ATSS|CACAS|CTSS|LURS|QTS|TRS|WAKES,
QAES|QTSS|ITNRS, reserved, ADDITIONAL DATA LENGTH."""
ATS, ATSS, CTSS, LURS, TRS = 0x80, 0x40, 0x10, 0x08, 0x02
REPD = 0x80


async def report_supported_task_management_functions(ctx: Ctx) -> ScsiResult:
    """REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.36): ABORT TASK, ABORT TASK SET, CLEAR TASK
    SET, LOGICAL UNIT RESET and TARGET RESET (the iSCSI warm/cold resets) — what the transport carries
    out; no CLEAR ACA (no ACA), no QUERY TASK.  REPD=1 adds the extended data with no timeouts given."""
    _, _, b2, alloc, _ = RSTMF_CDB.unpack_from(ctx.cdb)
    if b2 & 0x7F:
        raise invalid_field(2, 6)
    repd = bool(b2 & REPD)
    data = TMF_FLAGS.pack(ATS | ATSS | CTSS | LURS | TRS, 0, 0x0C if repd else 0)
    if repd:
        data += bytes(12)  # TMFTMOV=0: no timeouts reported
    return data_in(data, alloc)


COMMANDS: dict[int, CommandSpec] = {
    Opcode.MAINTENANCE_IN: CommandSpec("MAINTENANCE IN", service_actions={
        MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES: CommandSpec(
            "REPORT SUPPORTED OPERATION CODES", report_supported_operation_codes,
            reservation=READ, allowed_without_medium=True,
            cdb_usage=bytes([0xA3, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00])),
        MaintenanceIn.REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS: CommandSpec(
            "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", report_supported_task_management_functions,
            reservation=READ, allowed_without_medium=True,
            cdb_usage=bytes([0xA3, 0x0D, 0x80, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00])),
    }),
}
"""MAINTENANCE IN rows of the command table."""

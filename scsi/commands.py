"""Command tables: what a logical unit of each kind answers (ARCHITECTURE.md convention 2; SPC-4 §4.2).

A :class:`CommandSpec` is one row: the handler, its service actions, the checks that run before it
(LUN, unit attention, the reservation-conflict rule, medium state) and what REPORT SUPPORTED
OPERATION CODES says about it.  Each command family's module declares its rows as a plain dict and
imports nothing but this module; a :class:`CommandTable` is built from such dicts and never changes
afterwards, so one kind's table cannot leak into another's.

An :class:`LuKind` names a table, as tgt's device types do (a base command set, a type's table
overriding or adding entries): scsi/kinds.py builds the SPC base every kind shares and the disk kind
(SBC); another kind — e.g. a command device whose WRITE carries a management command and whose READ
returns its result — is ``LuKind("command-device", DISK.table.override({...}))``.  A logical unit
selects its kind by name (``LuConfig.kind``); the device server resolves it and dispatches through
that kind's table.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable

from sanlab.scsi.cdb import service_action
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.reservation_state import EXCLUSIVE, Rule
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field
from sanlab.scsi.task import ScsiResult

Handler = Callable[[Ctx], Awaitable[ScsiResult]]
"""A command's handler: decodes the CDB, does the work, returns the answer or raises ScsiError."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of a command table (ARCHITECTURE.md convention 2)."""

    name: str
    """The command's name as SPC-4/SBC-3 spell it (for logs)."""
    handler: Handler | None = None
    """None when the opcode dispatches on its SERVICE ACTION."""
    service_actions: Mapping[int, CommandSpec] = field(default_factory=dict)
    """Service action (byte 1 bits 4-0) → command, for SERVICE ACTION IN(16), MAINTENANCE IN, PR..."""
    any_lun: bool = False
    """Runs for a LUN that does not exist (INQUIRY, REPORT LUNS, REQUEST SENSE; SPC-4 §6.4.2, §6.33, §6.39)."""
    keeps_ua: bool = False
    """Neither reports nor clears a pending unit attention (SAM-5 §5.14)."""
    data_out: bool = False
    """Takes Data-Out (write-type): residuals count against the Data-Out length."""
    writes: bool = False
    """Changes the medium (read-only LUs, and later replication ordering)."""
    reservation: Rule = EXCLUSIVE
    """Who may run it past a reservation another I_T nexus holds: SPC-4 §5.9.1 table 60, SBC-3 §4.17
    table 13, SPC-2 annex B (scsi/reservation_state.py).  EXCLUSIVE, the default, is what those
    tables say of every command they do not list as allowed."""
    medium_error: Asc = Asc.UNRECOVERED_READ_ERROR
    """ASC/ASCQ of the MEDIUM ERROR a VolumeError becomes: WRITE ERROR for commands that store data."""
    allowed_without_medium: bool = False
    """Runs while the medium is absent (after START STOP UNIT ejected it from a removable LU);
    every other command gets NOT READY / MEDIUM NOT PRESENT (SBC-3 §4.2.2)."""
    cdb_usage: bytes | None = None
    """CDB USAGE DATA for REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35.3): a bit set for each CDB bit
    the device server looks at.  None: derived from the CDB length (every field may be used)."""
    timeout: int = 30
    """RECOMMENDED COMMAND TIMEOUT in seconds for the command timeouts descriptor (SPC-4 §6.35.4)."""
    detach_on_abort: bool = False
    """The command's work goes on without it (SANITIZE, SBC-3 §4.11.3): aborting the command (ABORT
    TASK, a reset, the connection's end) ends it at once instead of waiting for the work."""
    available: Callable[[LogicalUnit], bool] | None = None
    """Supported on this LU only when this says so (e.g. SANITIZE BLOCK ERASE needs a thin LU); REPORT
    SUPPORTED OPERATION CODES leaves the command out elsewhere.  None: always."""

    def __post_init__(self) -> None:
        if (self.handler is None) == (not self.service_actions):
            raise ValueError(f"{self.name}: a row has a handler or service actions, not both or neither")


class CommandTable:
    """Opcode → :class:`CommandSpec` for one kind of logical unit; built once, never changed."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Mapping[int, CommandSpec] | None = None) -> None:
        self._rows: dict[int, CommandSpec] = dict(sorted((rows or {}).items()))

    @classmethod
    def merge(cls, *families: Mapping[int, CommandSpec]) -> CommandTable:
        """A table of the command families' rows (each module's ``COMMANDS``): see :meth:`extend`."""
        return cls().extend(*families)

    def extend(self, *families: Mapping[int, CommandSpec]) -> CommandTable:
        """A new table with the families' rows added, none of which may be here already.

        Opcodes that dispatch on a SERVICE ACTION merge their service-action tables, so e.g. READ
        CAPACITY(16) and GET LBA STATUS can live in different modules; a service action twice, or an
        opcode twice otherwise, is a ValueError (one module must not silently replace another's row:
        that is what :meth:`override` is for).
        """
        rows = dict(self._rows)
        for family in families:
            for opcode, spec in family.items():
                have = rows.get(opcode)
                if have is None:
                    rows[opcode] = spec
                elif have.handler is None and spec.handler is None:
                    clash = set(have.service_actions) & set(spec.service_actions)
                    if clash:
                        raise ValueError(f"opcode {opcode:02x}: service actions {sorted(clash)} given twice")
                    rows[opcode] = replace(have, service_actions={**have.service_actions, **spec.service_actions})
                else:
                    raise ValueError(f"opcode {opcode:02x} given twice")
        return CommandTable(rows)

    def override(self, rows: Mapping[int, CommandSpec]) -> CommandTable:
        """A new table in which ``rows`` replace this table's rows or add new ones (an LU kind's own
        commands over its base).  Where both dispatch on a SERVICE ACTION, the service actions are
        replaced one by one and the others kept."""
        out = dict(self._rows)
        for opcode, spec in rows.items():
            have = out.get(opcode)
            if have is not None and have.handler is None and spec.handler is None:
                spec = replace(have, service_actions={**have.service_actions, **spec.service_actions})
            out[opcode] = spec
        return CommandTable(out)

    def get(self, opcode: int) -> CommandSpec | None:
        """The row of ``opcode`` (before service-action dispatch), or None."""
        return self._rows.get(opcode)

    def lookup(self, cdb: bytes) -> CommandSpec:
        """The row for ``cdb``, resolving service actions (SPC-4 §4.2.5.3).

        An unknown opcode is INVALID COMMAND OPERATION CODE, an unknown service action INVALID
        FIELD IN CDB pointing at the SERVICE ACTION field.
        """
        spec = self._rows.get(cdb[0])
        if spec is None:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)
        if spec.handler is None:
            sa = spec.service_actions.get(service_action(cdb))
            if sa is None:
                raise invalid_field(1, 4)
            return sa
        return spec

    def items(self) -> Iterator[tuple[int, CommandSpec]]:
        """(opcode, row) in opcode order."""
        return iter(self._rows.items())

    def commands(self) -> Iterator[tuple[int, int | None, CommandSpec]]:
        """Every command (opcode, service action or None, row with a handler), in opcode and service
        action order: what REPORT SUPPORTED OPERATION CODES lists."""
        for opcode, spec in self._rows.items():
            if spec.handler is not None:
                yield opcode, None, spec
            else:
                for sa, row in sorted(spec.service_actions.items()):
                    yield opcode, sa, row

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, opcode: object) -> bool:
        return opcode in self._rows


@dataclass(frozen=True, slots=True)
class LuKind:
    """A kind of logical unit: the command table its LUs answer with (tgt's device type)."""

    name: str
    """What ``LuConfig.kind`` says to select it ("disk")."""
    table: CommandTable
    """Opcode → command for LUs of this kind."""
    plain_io: bool = False
    """The device server may answer READ/WRITE(10)/(16) of these LUs on its fast path
    (``DeviceServer.start``), which runs ``sbc.plain_io`` without consulting the table: true only
    for a kind whose rows for those opcodes are SBC's :func:`~sanlab.scsi.sbc.read` and
    :func:`~sanlab.scsi.sbc.write`.  A kind answering them otherwise leaves it False."""

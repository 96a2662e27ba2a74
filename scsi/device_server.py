"""The SCSI device server of one target: dispatch, checks, unit attentions (SAM-5, SPC-4).

:meth:`DeviceServer.execute` is the one entry point.  Checks run in the order
tgt uses: LUN exists → control byte → unit attention → command lookup →
handler.  Handlers raise :class:`~sanlab.scsi.sense.ScsiError`; it becomes
CHECK CONDITION here with sense in the LU's format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

import structlog

from sanlab.scsi import sbc, spc
from sanlab.scsi.cdb import Opcode, ServiceActionIn16
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, build_sense, invalid_field
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask
from sanlab.storage.volume import VolumeError

log = structlog.get_logger("sanlab.scsi")

Handler = Callable[[Ctx], Awaitable[ScsiResult]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of the command table."""

    name: str
    handler: Handler | None = None
    service_actions: dict[int, "CommandSpec"] = field(default_factory=dict)
    """For opcodes that carry a SERVICE ACTION in byte 1 bits 4-0."""
    any_lun: bool = False
    """Runs for a LUN that does not exist (INQUIRY, REPORT LUNS, REQUEST SENSE; SPC-4 §5.2)."""
    keeps_ua: bool = False
    """Does not report or clear a pending unit attention (SAM-5 §5.14)."""
    writes: bool = False
    """Changes the medium (for read-only checks and, later, replication ordering)."""


COMMANDS: dict[int, CommandSpec] = {
    Opcode.TEST_UNIT_READY: CommandSpec("TEST UNIT READY", spc.test_unit_ready),
    Opcode.REQUEST_SENSE: CommandSpec("REQUEST SENSE", spc.request_sense, any_lun=True, keeps_ua=True),
    Opcode.INQUIRY: CommandSpec("INQUIRY", spc.inquiry, any_lun=True, keeps_ua=True),
    Opcode.REPORT_LUNS: CommandSpec("REPORT LUNS", spc.report_luns, any_lun=True, keeps_ua=True),
    Opcode.MODE_SENSE_6: CommandSpec("MODE SENSE(6)", spc.mode_sense_6),
    Opcode.MODE_SENSE_10: CommandSpec("MODE SENSE(10)", spc.mode_sense_10),
    Opcode.READ_CAPACITY_10: CommandSpec("READ CAPACITY(10)", sbc.read_capacity_10),
    Opcode.SERVICE_ACTION_IN_16: CommandSpec("SERVICE ACTION IN(16)", service_actions={
        ServiceActionIn16.READ_CAPACITY_16: CommandSpec("READ CAPACITY(16)", sbc.read_capacity_16),
    }),
    Opcode.READ_6: CommandSpec("READ(6)", sbc.read),
    Opcode.READ_10: CommandSpec("READ(10)", sbc.read),
    Opcode.READ_12: CommandSpec("READ(12)", sbc.read),
    Opcode.READ_16: CommandSpec("READ(16)", sbc.read),
    Opcode.WRITE_6: CommandSpec("WRITE(6)", sbc.write, writes=True),
    Opcode.WRITE_10: CommandSpec("WRITE(10)", sbc.write, writes=True),
    Opcode.WRITE_12: CommandSpec("WRITE(12)", sbc.write, writes=True),
    Opcode.WRITE_16: CommandSpec("WRITE(16)", sbc.write, writes=True),
    Opcode.SYNCHRONIZE_CACHE_10: CommandSpec("SYNCHRONIZE CACHE(10)", sbc.synchronize_cache),
    Opcode.SYNCHRONIZE_CACHE_16: CommandSpec("SYNCHRONIZE CACHE(16)", sbc.synchronize_cache),
}
"""Opcode → command: the device server's dispatch table (ARCHITECTURE.md convention 2)."""


def _check_condition(key: SenseKey, asc: int, descriptor: bool = False) -> ScsiResult:
    return ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=build_sense(key, asc, descriptor=descriptor))


class DeviceServer:
    """The logical units behind one target and the rules for reaching them."""

    def __init__(self, target_name: str, luns: dict[int, LogicalUnit]) -> None:
        self.target_name = target_name
        self._luns = dict(luns)
        self.log = log.bind(target=target_name)

    @property
    def luns(self) -> dict[int, LogicalUnit]:
        return self._luns

    def has_lun(self, lun: int) -> bool:
        return lun in self._luns

    # --- nexus and reset events ---------------------------------------------------------

    def nexus_added(self, nexus: Nexus) -> None:
        for lu in self._luns.values():
            lu.nexus_added(nexus)

    def nexus_removed(self, nexus: Nexus) -> None:
        for lu in self._luns.values():
            lu.nexus_removed(nexus)

    def lun_reset(self, lun: int, nexus: Nexus) -> bool:
        """LOGICAL UNIT RESET: every nexus, the issuer included, gets 29h/03h (SAM-5 §6.6)."""
        lu = self._luns.get(lun)
        if lu is None:
            return False
        lu.reset_ua(Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED)
        return True

    def target_reset(self, nexus: Nexus, cold: bool) -> None:
        """TARGET WARM/COLD RESET (RFC 7143 §11.5.1): a cold reset is a power-on (29h/01h)."""
        asc = Asc.POWER_ON_OCCURRED if cold else Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED
        for lu in self._luns.values():
            lu.reset_ua(asc)

    async def close(self) -> None:
        """Flush and close every volume."""
        for lu in self._luns.values():
            await lu.volume.close()

    # --- execution ------------------------------------------------------------------------

    def _lookup(self, cdb: bytes) -> CommandSpec:
        spec = COMMANDS.get(cdb[0])
        if spec is None:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)
        if spec.handler is None:
            sa = spec.service_actions.get(cdb[1] & 0x1F)
            if sa is None:
                raise invalid_field(1, 4)
            return sa
        return spec

    async def execute(self, task: ScsiTask) -> ScsiResult:
        """Run one command and return its status, data and sense."""
        cdb = task.cdb
        if not cdb:
            return _check_condition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
        lu = self._luns.get(task.lun)
        desc = bool(lu and lu.d_sense)
        try:
            spec = COMMANDS.get(cdb[0])
            if lu is None and not (spec is not None and spec.any_lun):
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED)
            spec = self._lookup(cdb)
            ctl = cdb[_control_offset(cdb[0])] if len(cdb) > _control_offset(cdb[0]) else 0
            if ctl & 0x04:
                raise invalid_field(_control_offset(cdb[0]), 2)  # NACA=1: ACA is not supported
            if ctl & 0x01:
                raise invalid_field(_control_offset(cdb[0]), 0)  # LINK is obsolete
            if lu is not None and not spec.keeps_ua:
                ua = lu.take_ua(task.nexus)
                if ua is not None:
                    return _check_condition(SenseKey.UNIT_ATTENTION, ua, desc)
            assert spec.handler is not None
            return await spec.handler(Ctx(self, task, lu))
        except ScsiError as exc:
            return ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=exc.sense(desc))
        except VolumeError as exc:
            self.log.error("volume_error", lun=task.lun, cdb=bytes(cdb[:16]).hex(), error=str(exc))
            spec = COMMANDS.get(cdb[0])
            asc = Asc.WRITE_ERROR if spec is not None and spec.writes else Asc.UNRECOVERED_READ_ERROR
            return _check_condition(SenseKey.MEDIUM_ERROR, asc, desc)


def _control_offset(opcode: int) -> int:
    """Index of the CONTROL byte: the last byte of the CDB (SPC-4 §4.2.5.7)."""
    from sanlab.scsi.cdb import cdb_length
    return cdb_length(opcode) - 1

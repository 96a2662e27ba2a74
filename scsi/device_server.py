"""The SCSI device server of one target: dispatch, checks, unit attentions (SAM-5, SPC-4).

:meth:`DeviceServer.execute` is the one entry point.  Checks run in tgt's
order (ARCHITECTURE.md convention 2):

1. the LUN exists — else only INQUIRY (qualifier 011b), REPORT LUNS and
   REQUEST SENSE run; anything else is LOGICAL UNIT NOT SUPPORTED (SPC-4 §6.4.2,
   §6.33, §6.39);
2. CDB length and CONTROL byte (NACA=1 → INVALID FIELD IN CDB);
3. unit attention for this I_T nexus (SAM-5 §5.14): reported and cleared by
   every command except INQUIRY, REPORT LUNS and REQUEST SENSE;
4. reservation conflict (:func:`sanlab.scsi.reservations.conflicts`, SPC-4 §5.9.1): RESERVATION
   CONFLICT status for a command the reservations in force do not let this I_T nexus run;
5. the command table: unknown opcode → INVALID COMMAND OPERATION CODE, unknown
   service action → INVALID FIELD IN CDB pointing at byte 1.

Handlers raise :class:`~sanlab.scsi.sense.ScsiError`; it becomes CHECK
CONDITION here with sense in the LU's format (D_SENSE).  A
:class:`~sanlab.storage.volume.VolumeError` becomes MEDIUM ERROR.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog

from sanlab.scsi import sbc, spc
from sanlab.scsi.cdb import Opcode, ServiceActionIn16, check_control, service_action
from sanlab.scsi.context import Ctx
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.lun import LUN_RANGE, MAX_LUN
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, build_sense, invalid_field
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask, TaskAttribute
from sanlab.storage.volume import VolumeError

log = structlog.get_logger("sanlab.scsi")

Handler = Callable[[Ctx], Awaitable[ScsiResult]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of the command table (ARCHITECTURE.md convention 2)."""

    name: str
    """The command's name as SPC-4/SBC-3 spell it (for logs)."""
    handler: Handler | None = None
    """None when the opcode dispatches on its SERVICE ACTION."""
    service_actions: dict[int, CommandSpec] = field(default_factory=dict)
    """Service action (byte 1 bits 4-0) → command, for SERVICE ACTION IN(16), MAINTENANCE IN, PR..."""
    any_lun: bool = False
    """Runs for a LUN that does not exist (INQUIRY, REPORT LUNS, REQUEST SENSE; SPC-4 §6.4.2, §6.33, §6.39)."""
    keeps_ua: bool = False
    """Neither reports nor clears a pending unit attention (SAM-5 §5.14)."""
    data_out: bool = False
    """Takes Data-Out (write-type): residuals count against the Data-Out length."""
    writes: bool = False
    """Changes the medium (read-only LUs, and later replication ordering)."""
    conflicts_with_reservation: bool = True
    """Fails with RESERVATION CONFLICT for a nexus another holds a reservation against (SPC-4 §5.9.1,
    table 53); used once PERSISTENT RESERVE exists."""
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


COMMANDS: dict[int, CommandSpec] = {
    Opcode.TEST_UNIT_READY: CommandSpec("TEST UNIT READY", spc.test_unit_ready),
    Opcode.REQUEST_SENSE: CommandSpec("REQUEST SENSE", spc.request_sense, any_lun=True, keeps_ua=True,
                                      conflicts_with_reservation=False, allowed_without_medium=True),
    Opcode.INQUIRY: CommandSpec("INQUIRY", spc.inquiry, any_lun=True, keeps_ua=True,
                                conflicts_with_reservation=False, allowed_without_medium=True),
    Opcode.REPORT_LUNS: CommandSpec("REPORT LUNS", spc.report_luns, any_lun=True, keeps_ua=True,
                                    conflicts_with_reservation=False, allowed_without_medium=True),
    Opcode.MODE_SENSE_6: CommandSpec("MODE SENSE(6)", spc.mode_sense, allowed_without_medium=True),
    Opcode.MODE_SENSE_10: CommandSpec("MODE SENSE(10)", spc.mode_sense, allowed_without_medium=True),
    Opcode.READ_CAPACITY_10: CommandSpec("READ CAPACITY(10)", sbc.read_capacity_10, conflicts_with_reservation=False),
    Opcode.SERVICE_ACTION_IN_16: CommandSpec("SERVICE ACTION IN(16)", service_actions={
        ServiceActionIn16.READ_CAPACITY_16: CommandSpec("READ CAPACITY(16)", sbc.read_capacity_16,
                                                        conflicts_with_reservation=False),
    }),
    Opcode.READ_6: CommandSpec("READ(6)", sbc.read),
    Opcode.READ_10: CommandSpec("READ(10)", sbc.read),
    Opcode.READ_12: CommandSpec("READ(12)", sbc.read),
    Opcode.READ_16: CommandSpec("READ(16)", sbc.read),
    Opcode.WRITE_6: CommandSpec("WRITE(6)", sbc.write, data_out=True, writes=True,
                                 medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_10: CommandSpec("WRITE(10)", sbc.write, data_out=True, writes=True,
                                 medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_12: CommandSpec("WRITE(12)", sbc.write, data_out=True, writes=True,
                                 medium_error=Asc.WRITE_ERROR),
    Opcode.WRITE_16: CommandSpec("WRITE(16)", sbc.write, data_out=True, writes=True,
                                 medium_error=Asc.WRITE_ERROR),
    Opcode.SYNCHRONIZE_CACHE_10: CommandSpec("SYNCHRONIZE CACHE(10)", sbc.synchronize_cache,
                                             medium_error=Asc.WRITE_ERROR),
    Opcode.SYNCHRONIZE_CACHE_16: CommandSpec("SYNCHRONIZE CACHE(16)", sbc.synchronize_cache,
                                             medium_error=Asc.WRITE_ERROR),
}
"""Opcode → command: the device server's dispatch table.  Later commands are new rows."""


def register(table: dict[int, CommandSpec]) -> None:
    """Add a command family's rows to :data:`COMMANDS` (one call per module, at import).

    Opcodes that dispatch on a SERVICE ACTION merge their service-action tables,
    so e.g. READ CAPACITY(16) and GET LBA STATUS can live in different modules.
    """
    for opcode, spec in table.items():
        have = COMMANDS.get(opcode)
        if have is None:
            COMMANDS[opcode] = spec
        elif have.handler is None and spec.handler is None:
            clash = set(have.service_actions) & set(spec.service_actions)
            if clash:
                raise ValueError(f"opcode {opcode:02x}: service actions {sorted(clash)} registered twice")
            have.service_actions.update(spec.service_actions)
        else:
            raise ValueError(f"opcode {opcode:02x} registered twice")


def check_lu_state(spec: CommandSpec, lu: LogicalUnit) -> None:
    """The logical unit's state may refuse the command before its handler runs.

    While a SANITIZE runs only INQUIRY, REPORT LUNS and REQUEST SENSE get through (SBC-3 §4.11,
    §5.19: NOT READY / LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS); without a medium only the
    commands marked ``allowed_without_medium`` run (SBC-3 §4.2.2: NOT READY / MEDIUM NOT PRESENT);
    a software write protected LU (Control mode page SWP, SPC-4 §7.5.8) refuses commands that write
    the medium with DATA PROTECT / LOGICAL UNIT SOFTWARE WRITE PROTECTED.
    """
    if lu.sanitizing and not spec.any_lun:
        raise ScsiError(SenseKey.NOT_READY, Asc.SANITIZE_IN_PROGRESS)
    if not lu.medium_present and not spec.allowed_without_medium:
        raise ScsiError(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
    if spec.writes and lu.swp:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.LOGICAL_UNIT_SOFTWARE_WRITE_PROTECTED)


def lookup(cdb: bytes) -> CommandSpec:
    """The table row for ``cdb``, resolving service actions (SPC-4 §4.2.5.3)."""
    spec = COMMANDS.get(cdb[0])
    if spec is None:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)
    if spec.handler is None:
        sa = spec.service_actions.get(service_action(cdb))
        if sa is None:
            raise invalid_field(1, 4)
        return sa
    return spec


class DeviceServer:
    """The logical units behind one target and the rules for reaching them."""

    def __init__(self, target_name: str, luns: dict[int, LogicalUnit], state_dir: Path | None = None) -> None:
        self.target_name = target_name
        """iSCSI name of the target this device server belongs to."""
        for lun in luns:
            self._check_lun(lun)
        self._luns = dict(luns)
        self.state_dir = state_dir
        """Directory for state that survives a restart (APTPL persistent reservations); None: none does."""
        self.on_abort: Callable[[int, list[Nexus]], Awaitable[None]] | None = None
        """Set by the transport: abort the tasks of these I_T nexuses on this LUN (PREEMPT AND ABORT,
        SPC-4 §5.9.11.5); returns once they have ended."""
        self.log = log.bind(target=target_name)

    @property
    def luns(self) -> dict[int, LogicalUnit]:
        """LUN → logical unit."""
        return self._luns

    def detaches_on_abort(self, cdb: bytes) -> bool:
        """Whether an abort may end this command without waiting for its work (see CommandSpec)."""
        try:
            return lookup(bytes(cdb)).detach_on_abort
        except ScsiError:
            return False

    def has_lun(self, lun: int) -> bool:
        """A logical unit exists at ``lun``."""
        return lun in self._luns

    def _check_lun(self, lun: int) -> None:
        # One LUN REPORT LUNS cannot encode would make that command fail for every host.
        if not 0 <= lun <= MAX_LUN:
            raise ValueError(f"LUN {lun} of {self.target_name} is outside {LUN_RANGE}")

    def add_lun(self, lun: int, lu: LogicalUnit) -> None:
        """Export another logical unit while running (management command); ValueError for a LUN
        that exists or that the LUN field cannot encode (outside 0..MAX_LUN)."""
        self._check_lun(lun)
        if lun in self._luns:
            raise ValueError(f"LUN {lun} already exists on {self.target_name}")
        nexuses = {nx for other in self._luns.values() for nx in other.nexuses}
        for nx in nexuses:
            lu.nexus_added(nx)
        self._luns[lun] = lu
        self._luns_changed(exclude=lun)

    def remove_lun(self, lun: int) -> LogicalUnit:
        """Stop exporting ``lun``; returns the logical unit (its volume stays open)."""
        lu = self._luns.pop(lun)
        self._luns_changed()
        return lu

    async def resize_lun(self, lun: int, num_blocks: int) -> bool:
        """Grow LUN ``lun`` to ``num_blocks`` blocks while hosts use it (management command).

        Every I_T nexus then gets UNIT ATTENTION / CAPACITY DATA HAS CHANGED (2Ah/09h) on that
        LUN and READ CAPACITY reports the new size (:meth:`LogicalUnit.grow`).  False when the
        LUN already had that capacity (nothing changed, no unit attention).  KeyError: no such
        LUN; ValueError / VolumeError: the volume refused (shrinking, read-only, cannot grow).
        """
        lu = self._luns.get(lun)
        if lu is None:
            raise KeyError(f"{self.target_name} has no LUN {lun}")
        old = lu.num_blocks
        changed = await lu.grow(num_blocks)
        if changed:
            self.log.info("lun_capacity_changed", lun=lun, old_blocks=old, blocks=lu.num_blocks,
                          block_size=lu.block_size, nexuses=len(lu.nexuses))
        return changed

    def _luns_changed(self, exclude: int | None = None) -> None:
        # REPORTED LUNS DATA HAS CHANGED, through the other logical units (SPC-4 §6.33).
        for n, other in self._luns.items():
            if n != exclude:
                other.add_ua(Asc.REPORTED_LUNS_DATA_HAS_CHANGED)

    # --- nexus and reset events ----------------------------------------------------------------------

    def nexus_added(self, nexus: Nexus) -> None:
        """A new I_T nexus: every LU reports 29h/00h POWER ON, RESET, OR BUS DEVICE RESET OCCURRED."""
        for lu in self._luns.values():
            lu.nexus_added(nexus)

    def nexus_removed(self, nexus: Nexus) -> None:
        """The I_T nexus is gone: drop its unit attentions and sense."""
        for lu in self._luns.values():
            lu.nexus_removed(nexus)
            reservations.nexus_lost(lu, nexus)

    def lun_reset(self, lun: int, nexus: Nexus) -> bool:
        """LOGICAL UNIT RESET task management function (SAM-5 clause 7): False when there is no such LU.

        The logical unit reset (SAM-5 §6.3, "logical unit reset") establishes a
        unit attention with 29h/03h BUS DEVICE RESET FUNCTION OCCURRED for every
        I_T nexus known to the LU, the issuer's included, replacing older UAs
        (the reset clears the conditions they reported).
        """
        lu = self._luns.get(lun)
        if lu is None:
            return False
        lu.reset_ua(Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED)
        reservations.reset(lu)
        lu.reset()
        self.log.info("lun_reset", lun=lun, initiator=nexus.initiator_port)
        return True

    def target_reset(self, nexus: Nexus, cold: bool) -> None:
        """TARGET WARM RESET / TARGET COLD RESET (RFC 7143 §11.5.1) on every LU.

        A warm reset is SAM-5's hard reset of the target: 29h/03h BUS DEVICE
        RESET FUNCTION OCCURRED, as for a LU reset.  A cold reset is a power
        cycle: 29h/01h POWER ON OCCURRED (SPC-4 annex D).  Every nexus gets it.
        """
        asc = Asc.POWER_ON_OCCURRED if cold else Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED
        for lu in self._luns.values():
            lu.reset_ua(asc)
            reservations.reset(lu, power_on=cold)
            lu.reset()
        self.log.info("target_reset", cold=cold, initiator=nexus.initiator_port)

    async def close(self) -> None:
        """Flush and close every volume; one volume's failure (a peer gone) does not stop the others."""
        for lun, lu in self._luns.items():
            try:
                await lu.volume.close()
            except VolumeError as exc:
                self.log.error("volume_close_failed", lun=lun, error=str(exc))

    # --- execution -------------------------------------------------------------------------------------

    def execute_nowait(self, task: ScsiTask) -> ScsiResult | asyncio.Future[ScsiResult] | None:
        """:meth:`plain_io` for a task: its answer as a ScsiResult (or the future of one), or None:
        then :meth:`execute` runs it.  Only SIMPLE tasks are taken (an ORDERED or HEAD OF QUEUE
        task must be placed in the task set)."""
        if task.attr != TaskAttribute.SIMPLE:
            return None
        answer = self.plain_io(task.nexus, task.lun, task.cdb, task.data_out)
        if answer is None or isinstance(answer, asyncio.Future):
            return answer
        if answer is True:
            return ScsiResult(transfer_length=len(task.data_out), data_out_direction=True)
        assert isinstance(answer, bytearray)
        return ScsiResult(data_in=answer, transfer_length=len(answer))

    def plain_io(self, nexus: Nexus, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview,
                 length: int | None = None) -> bytearray | bool | asyncio.Future[ScsiResult] | None:
        """A plain READ/WRITE of a SIMPLE task answered here and now: the data read (exactly the
        CDB's transfer length, which must be ``length`` bytes when that is given), True for a
        write done, or — when the transfer must wait for the
        disk — the future of its answer (started in the thread pool, still no coroutine); None
        when only :meth:`execute` can give the answer.  Most of a host's commands are these: the
        iSCSI connection calls this for them straight from the bytes it framed, with no task or
        result objects (target/connection.py, bench/README.md).

        Taken only when none of the checks of :meth:`_execute` could change the outcome: the LU
        exists with its medium, is not sanitizing or software write protected, no unit attention
        is pending for the nexus, no reservation is held (then :func:`reservations.conflicts`
        would be consulted), and no ORDERED task is pending (the task starts at once and, when it
        does not wait, ends before anything else runs, so the task set need not count it).
        """
        lu = self._luns.get(lun)
        if lu is None:
            return None
        volume = lu.nowait_volume
        if (volume is None or not lu.task_set.open or lu.sanitizing or not lu.medium_present or lu.swp
                or lu.pending_ua(nexus) or reservations.held(self, lu)):
            return None
        try:
            answer = sbc.plain_io(lu, cdb, data_out, volume, length)
        except VolumeError:
            return None  # the full path tries again and reports it as a MEDIUM ERROR
        if not isinstance(answer, sbc.Pending):
            return answer
        # Started and waiting: an ORDERED task arriving meanwhile must wait for it (SAM-5 §8.6).
        ts = lu.task_set
        ts.start_now(TaskAttribute.SIMPLE)
        out: asyncio.Future[ScsiResult] = answer.io.get_loop().create_future()
        writes, length = answer.writes, answer.length

        def done(f: asyncio.Future[Any]) -> None:
            ts.stopped()
            if f.cancelled():
                out.cancel()
            elif isinstance(exc := f.exception(), VolumeError):
                asc = Asc.WRITE_ERROR if writes else Asc.UNRECOVERED_READ_ERROR
                out.set_result(self._medium_error(lun, cdb, exc, asc, lu.d_sense, writes))
            elif exc is not None:
                out.set_exception(exc)
            elif writes:
                out.set_result(ScsiResult(transfer_length=length, data_out_direction=True))
            else:
                out.set_result(ScsiResult(data_in=f.result(), transfer_length=length))

        answer.io.add_done_callback(done)
        return out

    async def execute(self, task: ScsiTask) -> ScsiResult:
        """Run one command and return its status, data and sense; it starts when its task attribute
        lets it (scsi/task_set.py).  Called in command order."""
        lu = self._luns.get(task.lun)
        if lu is None:
            return await self._execute(task)
        ts = lu.task_set
        if ts.start_now(task.attr):
            try:
                return await self._execute(task)
            finally:
                ts.stopped()
        async with ts.enabled(task.attr):
            return await self._execute(task)

    async def _execute(self, task: ScsiTask) -> ScsiResult:
        cdb = bytes(task.cdb)
        lu = self._luns.get(task.lun)
        descriptor = bool(lu is not None and lu.d_sense)
        spec: CommandSpec | None = None
        try:
            if not cdb:
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
            row = COMMANDS.get(cdb[0])
            if lu is None and not (row is not None and row.any_lun):
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED)
            check_control(cdb)
            if lu is not None and not (row is not None and row.keeps_ua):
                ua = lu.take_ua(task.nexus)
                if ua is not None:
                    return ScsiResult(status=ScsiStatus.CHECK_CONDITION,
                                      sense=build_sense(SenseKey.UNIT_ATTENTION, ua, descriptor=descriptor))
            spec = lookup(cdb)
            assert spec.handler is not None
            if lu is not None and reservations.conflicts(self, lu, task.nexus, cdb, spec):
                return ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT)
            if lu is not None:
                check_lu_state(spec, lu)
            if not isinstance(task.cdb, bytes):
                task = replace(task, cdb=cdb)
            return await spec.handler(Ctx(self, task, lu))
        except ScsiError as exc:
            return ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=exc.sense(descriptor))
        except VolumeError as exc:
            asc = spec.medium_error if spec is not None else Asc.UNRECOVERED_READ_ERROR
            return self._medium_error(task.lun, task.cdb, exc, asc, descriptor, spec is not None and spec.data_out)

    def _medium_error(self, lun: int, cdb: bytes, exc: VolumeError, asc: Asc, descriptor: bool,
                      data_out: bool) -> ScsiResult:
        """The answer to a command whose volume I/O failed: MEDIUM ERROR with ``asc`` (UNRECOVERED
        READ ERROR, or WRITE ERROR for commands that store data), logged."""
        self.log.error("volume_error", lun=lun, cdb=bytes(cdb[:16]).hex(), error=str(exc))
        return ScsiResult(status=ScsiStatus.CHECK_CONDITION,
                          sense=build_sense(SenseKey.MEDIUM_ERROR, asc, descriptor=descriptor),
                          data_out_direction=data_out)


# Command families in their own modules register themselves (register() above) when imported; the
# import sits here, after CommandSpec and register exist, because those modules import them.
from sanlab.scsi import compare, provisioning, verify  # noqa: E402,F401
from sanlab.scsi import reservations  # noqa: E402
from sanlab.scsi import atomic, copy, medium, mode, rsoc, sanitize  # noqa: E402,F401

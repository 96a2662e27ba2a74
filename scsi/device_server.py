"""The SCSI device server of one target: dispatch, checks, unit attentions (SAM-5, SPC-4).

:meth:`DeviceServer.execute` is the one entry point.  Each logical unit answers with the command
table of its kind (scsi/commands.py, scsi/kinds.py: ``LuConfig.kind`` names it, the device server
knows the kinds by name).  Checks run in this order — tgt's (ARCHITECTURE.md convention 2), except
that the LUN is checked before the CONTROL byte and the command is looked up before the reservation
check, since the conflict rule is the command row's:

1. the LUN exists — else only INQUIRY (qualifier 011b), REPORT LUNS and
   REQUEST SENSE run; anything else is LOGICAL UNIT NOT SUPPORTED (SPC-4 §6.4.2,
   §6.33, §6.39);
2. CDB length and CONTROL byte (NACA=1 → INVALID FIELD IN CDB);
3. unit attention for this I_T nexus (SAM-5 §5.14): reported and cleared by
   every command except INQUIRY, REPORT LUNS and REQUEST SENSE;
4. the command table: unknown opcode → INVALID COMMAND OPERATION CODE, unknown
   service action → INVALID FIELD IN CDB pointing at byte 1;
5. reservation conflict (SPC-4 §5.9.1): RESERVATION CONFLICT status for a command the reservations
   in force do not let this I_T nexus run — the rule is the command's row's
   (``CommandSpec.reservation``), applied by the LU's state (``LogicalUnit.reservations``);
6. the LU's state (sanitize, medium, software write protect: :func:`check_lu_state`).

Handlers raise :class:`~sanlab.scsi.sense.ScsiError`; it becomes CHECK
CONDITION here with sense in the LU's format (D_SENSE).  A
:class:`~sanlab.storage.volume.VolumeError` becomes MEDIUM ERROR.

Reservations made with APTPL survive a restart in the device server's
:class:`~sanlab.scsi.reservation_store.ReservationStore` (``<state_dir>/reservations.sqlite``); an
LU's persisted state is restored before its first command, off the event loop.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable

import structlog

from sanlab.scsi import sbc
from sanlab.scsi.cdb import check_control
from sanlab.scsi.commands import CommandSpec, CommandTable, LuKind
from sanlab.scsi.context import Ctx
from sanlab.scsi.kinds import KINDS, SPC
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.lun import LUN_RANGE, MAX_LUN
from sanlab.scsi.outcome import DECLINE, Outcome, Pending, medium_error, starts_at_once
from sanlab.scsi.reservation_store import STORE_NAME, ReservationStore
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, build_sense
from sanlab.scsi.stats import now_ns
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask, TaskAttribute
from sanlab.storage.volume import VolumeError

log = structlog.get_logger("sanlab.scsi")


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


class DeviceServer:
    """The logical units behind one target and the rules for reaching them."""

    def __init__(self, target_name: str, luns: Mapping[int, LogicalUnit], state_dir: Path | None = None,
                 kinds: Mapping[str, LuKind] = KINDS) -> None:
        self.target_name = target_name
        """iSCSI name of the target this device server belongs to."""
        self.kinds = kinds
        """The kinds of LU this device server knows, by name (``LuConfig.kind`` selects one)."""
        self._luns: dict[int, LogicalUnit] = {}
        self._tables: dict[int, CommandTable] = {}
        """LUN → the command table of its LU's kind."""
        self._plain: dict[int, LogicalUnit] = {}
        """The LUs whose kind lets :meth:`start` answer READ/WRITE without the table."""
        self.state_dir = state_dir
        """Directory for state that survives a restart (APTPL persistent reservations); None: none does."""
        self.reservation_store = None if state_dir is None else ReservationStore(Path(state_dir) / STORE_NAME)
        """Where APTPL reservation state is made durable (opened, off the event loop, on first use)."""
        self.on_abort: Callable[[int, list[Nexus]], Awaitable[None]] | None = None
        """Set by the transport: abort the tasks of these I_T nexuses on this LUN (PREEMPT AND ABORT,
        SPC-4 §5.9.11.5); returns once they have ended."""
        self.log = log.bind(target=target_name)
        for lun in luns:
            self._check_lun(lun)
        for lun, lu in luns.items():
            self._attach(lun, lu)

    @property
    def luns(self) -> dict[int, LogicalUnit]:
        """LUN → logical unit."""
        return self._luns

    def kind_of(self, lu: LogicalUnit) -> LuKind:
        """The kind ``lu``'s configuration names; ValueError when this device server does not know it."""
        kind = self.kinds.get(lu.config.kind)
        if kind is None:
            raise ValueError(f"unknown kind of logical unit {lu.config.kind!r} (known: {', '.join(self.kinds)})")
        return kind

    def table(self, lun: int) -> CommandTable:
        """The command table LUN ``lun`` answers with (the SPC base for a LUN that does not exist)."""
        return self._tables.get(lun, SPC)

    def detaches_on_abort(self, lun: int, cdb: bytes) -> bool:
        """Whether an abort may end this command on ``lun`` without waiting for its work (see
        CommandSpec)."""
        try:
            return self.table(lun).lookup(bytes(cdb)).detach_on_abort
        except ScsiError:
            return False

    def has_lun(self, lun: int) -> bool:
        """A logical unit exists at ``lun``."""
        return lun in self._luns

    def _check_lun(self, lun: int) -> None:
        # One LUN REPORT LUNS cannot encode would make that command fail for every host.
        if not 0 <= lun <= MAX_LUN:
            raise ValueError(f"LUN {lun} of {self.target_name} is outside {LUN_RANGE}")

    def _attach(self, lun: int, lu: LogicalUnit) -> None:
        kind = self.kind_of(lu)
        self._luns[lun] = lu
        self._tables[lun] = kind.table
        if kind.plain_io:
            self._plain[lun] = lu

    def add_lun(self, lun: int, lu: LogicalUnit) -> None:
        """Export another logical unit while running (management command); ValueError for a LUN
        that exists or that the LUN field cannot encode (outside 0..MAX_LUN), or an LU of a kind
        this device server does not know."""
        self._check_lun(lun)
        if lun in self._luns:
            raise ValueError(f"LUN {lun} already exists on {self.target_name}")
        nexuses = {nx for other in self._luns.values() for nx in other.nexuses}
        self._attach(lun, lu)
        for nx in nexuses:
            lu.nexus_added(nx)
        self._luns_changed(exclude=lun)

    def remove_lun(self, lun: int) -> LogicalUnit:
        """Stop exporting ``lun``; returns the logical unit (its volume stays open)."""
        lu = self._luns.pop(lun)
        del self._tables[lun]
        self._plain.pop(lun, None)
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
            lu.reservations.nexus_lost(nexus)

    async def lun_reset_done(self, lun: int, nexus: Nexus) -> None:
        """What must happen after :meth:`lun_reset` before the TMF is answered (``LogicalUnit.reset_hook``);
        its failure is logged, the reset here stands."""
        lu = self._luns.get(lun)
        if lu is None or lu.reset_hook is None:
            return
        try:
            await lu.reset_hook(nexus)
        except Exception as exc:  # noqa: BLE001 - the local reset is done; the hook's failure is reported
            self.log.warning("lun_reset_hook_failed", lun=lun, error=repr(exc))

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
        lu.reservations.reset()
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
            if cold:
                # Only what APTPL persisted survives a power cycle: restored before the next command.
                lu.reservations.power_off()
            else:
                lu.reservations.reset()
            lu.reset()
        self.log.info("target_reset", cold=cold, initiator=nexus.initiator_port)

    async def close(self) -> None:
        """Flush and close every volume; one volume's failure (a peer gone) does not stop the others.
        Then the reservation store, once its commits are done."""
        for lun, lu in self._luns.items():
            try:
                await lu.volume.close()
            except VolumeError as exc:
                self.log.error("volume_close_failed", lun=lun, error=str(exc))
        if self.reservation_store is not None:
            await self.reservation_store.close()

    async def _restore_reservations(self, lu: LogicalUnit) -> None:
        """Give ``lu`` what APTPL persisted (SPC-4 §5.9.4): after power on and after a cold reset,
        before the LU's next command.  The store is read off the event loop."""
        saved = None
        store = self.reservation_store
        if store is not None:
            await store.open()
            saved = store.saved(lu.reservations.lu_id)
        st = lu.reservations
        if st.loaded:
            return  # another command restored it while this one waited
        st.power_on(saved)
        if st.registrations:
            self.log.info("persistent_reservations_restored", lu=st.lu_id, lun=lu.config.lun,
                          registrations=len(st.registrations),
                          reservation=None if st.reservation is None else st.reservation.type.name)

    # --- execution -------------------------------------------------------------------------------------

    def start(self, task: ScsiTask) -> Outcome:
        """Start ``task`` on the spot when it is a plain READ/WRITE that needs none of the general
        path's machinery (scsi/outcome.py): its result, the wait for it (:class:`Pending`), or
        DECLINE — then :meth:`execute` runs it, and it is not offered here again.  Most of a host's
        commands end here, in the turn of the event loop that framed them, with no coroutine.

        Taken only for a SIMPLE task (an ORDERED or HEAD OF QUEUE task must be placed in the task
        set) on an LU whose kind answers READ/WRITE as SBC does (``LuKind.plain_io``) and that
        :func:`~sanlab.scsi.outcome.starts_at_once` admits.  A task that ends at once ends before
        anything else runs, so the task set need not count it; one that waits is counted as
        started until its answer, so an ORDERED task arriving meanwhile waits for it (SAM-5 §8.6).
        """
        lu = self._plain.get(task.lun)
        if lu is None or task.attr is not TaskAttribute.SIMPLE or not starts_at_once(lu, task.nexus):
            return DECLINE
        assert lu.nowait_volume is not None  # starts_at_once
        if lu.write_gate is not None and sbc.plain_write(task.cdb):
            # A pair's S-VOL takes its P array's writes here; a write the gate refuses is left to
            # the general path, which answers it in its order of checks (CONTROL byte first).
            try:
                lu.write_gate(task.nexus)
            except ScsiError:
                return DECLINE
        started = now_ns()
        outcome = sbc.plain_io(lu, task.cdb, task.data_out, lu.nowait_volume)
        if type(outcome) is ScsiResult:
            lu.stats.done(task.cdb, len(task.data_out), outcome, started)
        elif type(outcome) is Pending:
            ts = lu.task_set
            ts.start_now(TaskAttribute.SIMPLE)
            stats, cdb, data_out = lu.stats, task.cdb, len(task.data_out)

            def ended(f: asyncio.Future[ScsiResult]) -> None:
                ts.stopped()
                if not f.cancelled() and f.exception() is None:
                    stats.done(cdb, data_out, f.result(), started)

            outcome.answer.add_done_callback(ended)
        return outcome

    async def execute(self, task: ScsiTask) -> ScsiResult:
        """Run one command and return its status, data and sense; it starts when its task attribute
        lets it (scsi/task_set.py).  Called in command order."""
        lu = self._luns.get(task.lun)
        if lu is None:
            return await self._execute(task)
        started = now_ns()
        ts = lu.task_set
        if ts.start_now(task.attr):
            try:
                result = await self._execute(task)
            finally:
                ts.stopped()
        else:
            async with ts.enabled(task.attr):
                result = await self._execute(task)
        lu.stats.done(task.cdb, len(task.data_out), result, started)
        return result

    async def _execute(self, task: ScsiTask) -> ScsiResult:
        cdb = bytes(task.cdb)
        lu = self._luns.get(task.lun)
        table = self.table(task.lun)
        descriptor = bool(lu is not None and lu.d_sense)
        spec: CommandSpec | None = None
        try:
            if lu is not None and not lu.reservations.loaded:
                await self._restore_reservations(lu)
            if not cdb:
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
            row = table.get(cdb[0])
            if lu is None and not (row is not None and row.any_lun):
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED)
            check_control(cdb)
            if lu is not None and not (row is not None and row.keeps_ua):
                ua = lu.take_ua(task.nexus)
                if ua is not None:
                    return ScsiResult(status=ScsiStatus.CHECK_CONDITION,
                                      sense=build_sense(SenseKey.UNIT_ATTENTION, ua, descriptor=descriptor))
            spec = table.lookup(cdb)
            assert spec.handler is not None
            if lu is not None and lu.reservations.conflicts(spec.reservation, cdb, task.nexus):
                return ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT)
            if lu is not None:
                check_lu_state(spec, lu)
                if spec.writes and lu.write_gate is not None:
                    lu.write_gate(task.nexus)
            if not isinstance(task.cdb, bytes):
                task = replace(task, cdb=cdb)
            return await spec.handler(Ctx(self, task, lu, table))
        except ScsiError as exc:
            return ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=exc.sense(descriptor))
        except VolumeError as exc:
            asc = spec.medium_error if spec is not None else Asc.UNRECOVERED_READ_ERROR
            return medium_error(task.lun, task.cdb, exc, asc, descriptor, spec is not None and spec.data_out, self.log)

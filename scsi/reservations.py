"""The reservation commands: RESERVE/RELEASE (SPC-2 §7.17-§7.22) and PERSISTENT RESERVE IN/OUT
(SPC-4 §6.15, §6.16, §5.9.7-§5.9.11).

The state they change is the logical unit's (scsi/reservation_state.py), their byte layouts are
declared in scsi/reservation_wire.py, and APTPL state is made durable by the device server's store
(scsi/reservation_store.py).  Which other commands a reservation stops is not decided here: each row
of the command table carries its conflict rule (``CommandSpec.reservation``).

A PERSISTENT RESERVE OUT service action changes the state in one event-loop step, right after the
device server's checks (:class:`Prout`: plain, synchronous, and changing nothing when it refuses);
the handler then waits for the store's commit and only then returns GOOD, so a change made with
APTPL is durable before the initiator hears of it (SPC-4 §5.9.4), and commits land in the order
the changes were made.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import structlog

from sanlab.scsi.cdb import Opcode, PersistentReserveIn, PersistentReserveOut
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.reservation_state import (
    ALL_REGISTRANTS, ALLOWED, LU_SCOPE, PR_ALLOWED, REGISTRANTS_ONLY, LuReservations, Registration, Reservation,
)
from sanlab.scsi.reservation_wire import (
    REGISTER_AND_MOVE_PARAMS, TYPE_MASK_BITS, FullStatusDescriptor, PrinCdb, ProutCdb, ProutParameterList, ReadFullStatusData, ReadKeysData,
    ReadReservationData, RegisterAndMoveParameterList, ReportCapabilitiesData, TransportId, check_reserve_cdb,
)
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_parameter
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus

log = structlog.get_logger("sanlab.scsi.reservations")

INVALID_RELEASE_OF_PERSISTENT_RESERVATION = 0x2604
"""ASC/ASCQ 26h/04h (SPC-4 annex D); kept here, next to its only user."""

MAX_REGISTRATIONS = 256
"""Registrations one logical unit holds; beyond that REGISTER fails with INSUFFICIENT REGISTRATION
RESOURCES (SPC-4 §5.9.7)."""

ALLOW_COMMANDS = 0b011
"""TEST UNIT READY passes Write Exclusive and Exclusive Access reservations, and MODE SENSE, READ
BUFFER, RECEIVE COPY RESULTS, RECEIVE DIAGNOSTIC RESULTS, REPORT SUPPORTED OPERATION CODES, REPORT
SUPPORTED TASK MANAGEMENT FUNCTIONS and READ DEFECT DATA pass Write Exclusive ones (they read no
user data that a writer could change under the holder) — SPC-4 §6.15.4, table 200.  The command
table's rows say the same (their ``reservation`` rule)."""


class _Conflict(Exception):
    """The command ends with RESERVATION CONFLICT status (not CHECK CONDITION)."""


CONFLICT = ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT)
"""The answer of a reservation command refused with RESERVATION CONFLICT (no data moved)."""


# --- RESERVE / RELEASE (SPC-2) --------------------------------------------------------------------------


async def reserve(ctx: Ctx) -> ScsiResult:
    """RESERVE(6)/(10) (SPC-2 §7.21, §7.22)."""
    check_reserve_cdb(ctx.cdb)
    return ScsiResult() if ctx.need_lu().reservations.spc2_reserve(ctx.task.nexus) else CONFLICT


async def release(ctx: Ctx) -> ScsiResult:
    """RELEASE(6)/(10) (SPC-2 §7.17, §7.18)."""
    check_reserve_cdb(ctx.cdb)
    return ScsiResult() if ctx.need_lu().reservations.spc2_release(ctx.task.nexus) else CONFLICT


# --- PERSISTENT RESERVE IN (SPC-4 §6.15) ----------------------------------------------------------------


def read_keys(st: LuReservations) -> bytes:
    """READ KEYS parameter data (SPC-4 §6.15.2): one key per registered I_T nexus."""
    return ReadKeysData(st.generation, tuple(r.key for r in st.registrations)).encode()


def read_reservation(st: LuReservations) -> bytes:
    """READ RESERVATION parameter data (SPC-4 §6.15.3); the key is 0 for all-registrants types."""
    res = st.reservation
    if res is None:
        return ReadReservationData(st.generation).encode()
    key = res.holder.key if res.holder is not None else 0
    return ReadReservationData(st.generation, key, LU_SCOPE, res.type).encode()


def report_capabilities(st: LuReservations) -> bytes:
    """REPORT CAPABILITIES parameter data (SPC-4 §6.15.4): CRH, SIP_C, ATP_C, PTPL_C, every type."""
    return ReportCapabilitiesData(crh=True, sip_c=True, atp_c=True, ptpl_c=True, tmv=True,
                                  allow_commands=ALLOW_COMMANDS, ptpl_a=st.aptpl,
                                  types=frozenset(TYPE_MASK_BITS)).encode()


def read_full_status(st: LuReservations) -> bytes:
    """READ FULL STATUS parameter data (SPC-4 §6.15.5): every registration with its TransportID."""
    res = st.reservation
    descs = []
    for reg in st.registrations:
        holder = res is not None and (res.type in ALL_REGISTRANTS or res.holder is reg)
        descs.append(FullStatusDescriptor(
            reg.key, reg.all_tg_pt, holder, LU_SCOPE, res.type if holder and res is not None else 0,
            0 if reg.all_tg_pt else reg.tpgt, TransportId(reg.initiator_name, reg.isid)))
    return ReadFullStatusData(st.generation, tuple(descs)).encode()


PRIN_BUILDERS: dict[int, Callable[[LuReservations], bytes]] = {
    PersistentReserveIn.READ_KEYS: read_keys,
    PersistentReserveIn.READ_RESERVATION: read_reservation,
    PersistentReserveIn.REPORT_CAPABILITIES: report_capabilities,
    PersistentReserveIn.READ_FULL_STATUS: read_full_status,
}
"""PERSISTENT RESERVE IN service action → parameter data builder."""


async def persistent_reserve_in(ctx: Ctx) -> ScsiResult:
    """PERSISTENT RESERVE IN: the service action's parameter data cut to ALLOCATION LENGTH
    (ADDITIONAL LENGTH keeps the full length, SPC-4 §6.15.2)."""
    cdb = PrinCdb.parse(ctx.cdb)
    return data_in(PRIN_BUILDERS[cdb.service_action](ctx.need_lu().reservations), cdb.allocation_length)


# --- PERSISTENT RESERVE OUT (SPC-4 §6.16, §5.9.7-§5.9.11) ---------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What a PERSISTENT RESERVE OUT service action leaves to its asynchronous caller."""

    abort: list[Nexus] = field(default_factory=list)
    """I_T nexuses whose tasks PREEMPT AND ABORT must abort (SPC-4 §5.9.11.5)."""


class Prout:
    """PERSISTENT RESERVE OUT service actions on one logical unit's state (sans-IO).

    Each method raises :class:`ScsiError` for CHECK CONDITION or :class:`_Conflict` for RESERVATION
    CONFLICT, and changes nothing when it does.
    """

    def __init__(self, lu: LogicalUnit, nexus: Nexus) -> None:
        self.st = lu.reservations
        """The state changed."""
        self.lu = lu
        """The logical unit (its I_T nexuses get the unit attentions)."""
        self.nexus = nexus
        """The issuer."""

    # --- helpers ---------------------------------------------------------------------------------

    def _own(self, key: int) -> Registration:
        """The issuer's registration, which ``key`` must name (SPC-4 §5.9.7: else RESERVATION CONFLICT)."""
        reg = self.st.registration(self.nexus)
        if reg is None or reg.key != key:
            raise _Conflict()
        return reg

    def _nexuses(self, regs: list[Registration]) -> list[Nexus]:
        """Known I_T nexuses of ``regs`` other than the issuer (for unit attentions and aborts)."""
        return [nx for nx in self.lu.nexuses if nx != self.nexus and any(r.matches(nx) for r in regs)]

    def _ua(self, asc: int, regs: list[Registration]) -> None:
        targets = self._nexuses(regs)
        if targets:
            self.lu.add_ua(asc, targets)

    def _remove(self, victims: list[Registration]) -> None:
        """Drop registrations; a reservation they held goes with them (SPC-4 §5.9.11.3)."""
        st = self.st
        st.registrations = [r for r in st.registrations if not any(r is v for v in victims)]
        res = st.reservation
        if res is None:
            return
        if res.type in ALL_REGISTRANTS:
            if not st.registrations:
                st.reservation = None
        elif any(res.holder is v for v in victims):
            st.reservation = None
            if res.type in REGISTRANTS_ONLY:
                # Releasing a registrants-only reservation tells the remaining registrants (SPC-4 §5.9.11.2).
                self._ua(Asc.RESERVATIONS_RELEASED, st.registrations)

    def _room(self, more: int) -> None:
        if len(self.st.registrations) + more > MAX_REGISTRATIONS:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INSUFFICIENT_REGISTRATION_RESOURCES)

    # --- service actions --------------------------------------------------------------------------

    def register(self, cdb: ProutCdb, p: ProutParameterList, ignore_key: bool) -> Outcome:
        """REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 §5.9.7, tables 48-49)."""
        st, nexus = self.st, self.nexus
        reg = st.registration(nexus)
        sa_key = p.service_action_reservation_key
        if reg is None:
            if not ignore_key and p.reservation_key != 0:
                raise _Conflict()
            if sa_key == 0:
                return Outcome()  # unregistering an unregistered I_T nexus: GOOD, nothing happens
            new = [Registration(sa_key, nexus.initiator_name, nexus.isid, nexus.tpgt, p.all_tg_pt)]
            for offset, tid in p.each_transport_id():
                other = Registration(sa_key, tid.iscsi_name, tid.isid, nexus.tpgt, p.all_tg_pt)
                # A TransportID naming an I_T nexus already registered (or named twice) is refused.
                if any(other.overlaps(r) for r in st.registrations + new):
                    raise invalid_parameter(offset)
                new.append(other)
            self._room(len(new))
            st.registrations.extend(new)
        else:
            if not ignore_key and p.reservation_key != reg.key:
                raise _Conflict()
            if p.spec_i_pt:
                raise invalid_parameter(20, 3)  # SPEC_I_PT only registers unregistered I_T nexuses
            if sa_key == 0:
                self._remove([reg])
            else:
                reg.key = sa_key
        st.aptpl = p.aptpl
        st.generation += 1
        return Outcome()

    def reserve(self, cdb: ProutCdb, p: ProutParameterList) -> Outcome:
        """RESERVE (SPC-4 §5.9.8): a reservation held by another, or of another type, conflicts."""
        prtype = cdb.reservation_type()
        reg = self._own(p.reservation_key)
        st = self.st
        res = st.reservation
        if res is None:
            st.reservation = Reservation(prtype, None if prtype in ALL_REGISTRANTS else reg)
        elif not st.is_holder(self.nexus) or res.type != prtype:
            raise _Conflict()
        return Outcome()

    def release(self, cdb: ProutCdb, p: ProutParameterList) -> Outcome:
        """RELEASE (SPC-4 §5.9.11.2): only the holder releases; a mismatched TYPE is 26h/04h."""
        self._own(p.reservation_key)
        st = self.st
        res = st.reservation
        if res is None or not st.is_holder(self.nexus):
            return Outcome()
        if cdb.scope != LU_SCOPE or cdb.type != res.type:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, INVALID_RELEASE_OF_PERSISTENT_RESERVATION)
        st.reservation = None
        if res.type in REGISTRANTS_ONLY or res.type in ALL_REGISTRANTS:
            self._ua(Asc.RESERVATIONS_RELEASED, st.registrations)
        return Outcome()

    def clear(self, cdb: ProutCdb, p: ProutParameterList) -> Outcome:
        """CLEAR (SPC-4 §5.9.11.6): every registration and the reservation go; the others learn it."""
        self._own(p.reservation_key)
        st = self.st
        others = st.registrations
        st.registrations = []
        st.reservation = None
        st.generation += 1
        self._ua(Asc.RESERVATIONS_PREEMPTED, others)
        return Outcome()

    def preempt(self, cdb: ProutCdb, p: ProutParameterList, abort: bool) -> Outcome:
        """PREEMPT / PREEMPT AND ABORT (SPC-4 §5.9.11.4, §5.9.11.5)."""
        prtype = cdb.reservation_type()
        own = self._own(p.reservation_key)
        st = self.st
        res = st.reservation
        sa = p.service_action_reservation_key
        victims: list[Registration]
        if res is not None and res.type in ALL_REGISTRANTS and sa == 0:
            # Preempting an all-registrants reservation with key 0: everybody else goes, and the
            # issuer gets a new reservation (SPC-4 §5.9.11.4.3).
            victims = [r for r in st.registrations if r is not own]
            self._remove(victims)
            st.reservation = Reservation(prtype, None if prtype in ALL_REGISTRANTS else own)
        elif res is not None and res.holder is not None and sa == res.holder.key:
            # Preempting the holder: its key's registrations go (the issuer's stays) and the issuer
            # holds a reservation of the new type (SPC-4 §5.9.11.4.2).
            victims = [r for r in st.registrations if r.key == sa and r is not own]
            old_type = res.type
            st.registrations = [r for r in st.registrations if not any(r is v for v in victims)]
            st.reservation = Reservation(prtype, None if prtype in ALL_REGISTRANTS else own)
            if prtype != old_type:
                survivors = [r for r in st.registrations if r is not own]
                self._ua(Asc.RESERVATIONS_RELEASED, survivors)
        else:
            # Only registrations are preempted; the reservation (if any) stays (SPC-4 §5.9.11.4.4).
            if sa == 0:
                raise invalid_parameter(8)
            if not any(r.key == sa for r in st.registrations):
                raise _Conflict()
            victims = [r for r in st.registrations if r.key == sa and r is not own]
            self._remove(victims)
        st.generation += 1
        self._ua(Asc.REGISTRATIONS_PREEMPTED, victims)
        return Outcome(abort=self._nexuses(victims) if abort else [])

    def register_and_move(self, cdb: ProutCdb, data: bytes) -> Outcome:
        """REGISTER AND MOVE (SPC-4 §5.9.9): register another I_T nexus and hand it the reservation."""
        p = RegisterAndMoveParameterList.decode(data, cdb.parameter_list_length)
        st, nexus = self.st, self.nexus
        own = self._own(p.reservation_key)
        res = st.reservation
        if res is None or res.type in ALL_REGISTRANTS or not st.is_holder(nexus):
            raise _Conflict()
        sa_key = p.service_action_reservation_key
        if sa_key == 0:
            raise invalid_parameter(8)
        tid = p.destination()
        rel_port = p.relative_target_port_identifier
        ports = {nx.tpgt for nx in self.lu.nexuses} | {nexus.tpgt}
        if rel_port not in ports:
            raise invalid_parameter(18)
        dest = Registration(sa_key, tid.iscsi_name, tid.isid, rel_port)
        if dest.matches(nexus):
            raise invalid_parameter(REGISTER_AND_MOVE_PARAMS.size)  # moving to itself (SPC-4 §5.9.9)
        existing = next((r for r in st.registrations if r.overlaps(dest)), None)
        if existing is None:
            self._room(1)
            st.registrations.append(dest)
        else:
            existing.key = sa_key
            dest = existing
        st.reservation = Reservation(res.type, dest)
        if p.unreg:
            st.registrations = [r for r in st.registrations if r is not own]
        st.aptpl = p.aptpl
        st.generation += 1
        return Outcome()


def _run_prout(ctx: Ctx, cdb: ProutCdb) -> Outcome:
    """Decode the parameter list and run the service action (synchronously: one event-loop step)."""
    op = Prout(ctx.need_lu(), ctx.task.nexus)
    data = bytes(ctx.task.data_out[:cdb.parameter_list_length])
    sa = cdb.service_action
    if sa == PersistentReserveOut.REGISTER_AND_MOVE:
        return op.register_and_move(cdb, data)
    p = ProutParameterList.decode(sa, data, cdb.parameter_list_length)
    if sa in (PersistentReserveOut.REGISTER, PersistentReserveOut.REGISTER_AND_IGNORE_EXISTING_KEY):
        return op.register(cdb, p, ignore_key=sa == PersistentReserveOut.REGISTER_AND_IGNORE_EXISTING_KEY)
    if sa == PersistentReserveOut.RESERVE:
        return op.reserve(cdb, p)
    if sa == PersistentReserveOut.RELEASE:
        return op.release(cdb, p)
    if sa == PersistentReserveOut.CLEAR:
        return op.clear(cdb, p)
    return op.preempt(cdb, p, abort=sa == PersistentReserveOut.PREEMPT_AND_ABORT)


async def persistent_reserve_out(ctx: Ctx) -> ScsiResult:
    """PERSISTENT RESERVE OUT: run the service action, make it durable (APTPL), abort preempted tasks.

    The state changes before the first ``await``; the store's commit of the new state (or of its
    removal, once APTPL is off) is submitted in the same step and awaited before GOOD (module
    docstring).
    """
    cdb = ProutCdb.parse(ctx.cdb)
    st = ctx.need_lu().reservations
    try:
        outcome = _run_prout(ctx, cdb)
    except _Conflict:
        return ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT, transfer_length=cdb.parameter_list_length,
                          data_out_direction=True)
    store = ctx.server.reservation_store
    if store is not None:
        await store.save(st.lu_id, st.snapshot())
    if outcome.abort and ctx.server.on_abort is not None:
        await ctx.server.on_abort(ctx.task.lun, outcome.abort)
    log.info("persistent_reserve_out", lun=ctx.task.lun, initiator=ctx.task.nexus.initiator_port,
             service_action=PersistentReserveOut(cdb.service_action).name, generation=st.generation,
             registrations=len(st.registrations),
             reservation=None if st.reservation is None else st.reservation.type.name)
    return ScsiResult(transfer_length=cdb.parameter_list_length, data_out_direction=True)


COMMANDS: dict[int, CommandSpec] = {
    # The handlers apply SPC-2 and SPC-4 §5.9.3 themselves.
    Opcode.RESERVE_6: CommandSpec("RESERVE(6)", reserve, reservation=ALLOWED),
    Opcode.RELEASE_6: CommandSpec("RELEASE(6)", release, reservation=ALLOWED),
    Opcode.RESERVE_10: CommandSpec("RESERVE(10)", reserve, reservation=ALLOWED),
    Opcode.RELEASE_10: CommandSpec("RELEASE(10)", release, reservation=ALLOWED),
    # Not against an SPC-2 reservation (SPC-2 annex B); against a persistent one each service action
    # checks its key itself (SPC-4 §5.9.2, table 60).
    Opcode.PERSISTENT_RESERVE_IN: CommandSpec("PERSISTENT RESERVE IN", service_actions={
        sa: CommandSpec(f"PERSISTENT RESERVE IN ({sa.name.replace('_', ' ')})", persistent_reserve_in,
                        reservation=PR_ALLOWED)
        for sa in PersistentReserveIn}),
    Opcode.PERSISTENT_RESERVE_OUT: CommandSpec("PERSISTENT RESERVE OUT", service_actions={
        sa: CommandSpec(f"PERSISTENT RESERVE OUT ({sa.name.replace('_', ' ')})", persistent_reserve_out,
                        data_out=True, reservation=PR_ALLOWED)
        for sa in PersistentReserveOut}),
}
"""Reservation rows of the command table (every kind has them: scsi/kinds.py)."""

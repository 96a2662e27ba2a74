"""Reservations of a logical unit and the commands that manage them (SPC-4 §5.9, §6.15, §6.16).

Two mechanisms share one state per logical unit, :class:`LuReservations`:

* **SPC-2 reservations** — RESERVE(6)/(10) and RELEASE(6)/(10), obsolete since SPC-3 but still
  sent by older cluster software.  One I_T nexus holds the whole logical unit until it releases it,
  a logical unit reset or hard reset happens, or the I_T nexus is lost (SPC-2 §5.5.1).
* **Persistent reservations** — PERSISTENT RESERVE IN/OUT: reservation keys registered per I_T
  nexus and at most one reservation of one of six types (SPC-4 §5.9.5, table 203).  They survive
  I_T nexus loss and resets; with APTPL they also survive a restart: the state is then written to
  SQLite (``<state_dir>/reservations.sqlite``, ARCHITECTURE.md convention 7) before GOOD.

The device server asks :func:`conflicts` before a command's handler runs (after the unit attention
check).  Which command may pass which reservation is one table, :data:`CONFLICTS` (SPC-4 §5.9.1
table 60 for SPC commands, SBC-3 §4.17 table 13 for SBC commands, SPC-2 annex B for RESERVE(6)).

Everything here except the PREEMPT AND ABORT hook is plain, synchronous state manipulation; the
``async`` handlers only decode, call it, persist and build the answer.

An I_T nexus is identified by its SCSI initiator port name (iSCSI name + ISID) and its target port
(target name + TPGT, the relative target port identifier of the Device Identification VPD page).
A registration made through a TransportID without an ISID (iSCSI format 00b) stands for every
initiator port of that iSCSI name; one made with ALL_TG_PT for every target port.
"""
from __future__ import annotations

import json
import sqlite3
import struct
import weakref
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog

from sanlab.scsi.cdb import Opcode, PersistentReserveIn, PersistentReserveOut, service_action
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.device_server import CommandSpec, register
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus

if TYPE_CHECKING:
    from sanlab.scsi.device_server import DeviceServer

log = structlog.get_logger("sanlab.scsi.reservations")

INVALID_RELEASE_OF_PERSISTENT_RESERVATION = 0x2604
"""ASC/ASCQ 26h/04h (SPC-4 annex D); kept here, next to its only user."""

MAX_REGISTRATIONS = 256
"""Registrations one logical unit holds; beyond that REGISTER fails with INSUFFICIENT REGISTRATION
RESOURCES (SPC-4 §5.9.7)."""

STORE_NAME = "reservations.sqlite"
"""File name of the APTPL store inside the state directory."""

PROTOCOL_ISCSI = 0x5
"""PROTOCOL IDENTIFIER of iSCSI TransportIDs (SPC-4 §7.6.1, table 362)."""


class PrType(IntEnum):
    """Persistent reservation TYPE codes (SPC-4 §6.16.2, table 209)."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8


LU_SCOPE = 0x0
"""The only SCOPE (SPC-4 §6.16.2, table 208): the reservation covers the whole logical unit."""

ALL_REGISTRANTS = frozenset({PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS})
"""Types whose holder is every registered I_T nexus (SPC-4 §5.9.10)."""
REGISTRANTS_ONLY = frozenset({PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY})
"""Types under which registered non-holders get the holder's access."""
WRITE_EXCLUSIVE_TYPES = frozenset({PrType.WRITE_EXCLUSIVE, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                                   PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS})
"""Types that leave reads shared; the others are exclusive access."""

TYPE_MASK = struct.Struct(">H")
"""PERSISTENT RESERVATION TYPE MASK bits by type (SPC-4 §6.15.4, table 201)."""
_TYPE_MASK_BITS = {
    PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x8000, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x4000,
    PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x2000, PrType.EXCLUSIVE_ACCESS: 0x0800,
    PrType.WRITE_EXCLUSIVE: 0x0200, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x0001,
}

# --- layouts (declared once) -------------------------------------------------------------------------

PRIN_CDB = struct.Struct(">BB5xHB")
"""PERSISTENT RESERVE IN CDB (SPC-4 §6.15.1, table 193): opcode, SERVICE ACTION, reserved,
ALLOCATION LENGTH, CONTROL."""
PROUT_CDB = struct.Struct(">BBB2xIB")
"""PERSISTENT RESERVE OUT CDB (SPC-4 §6.16.1, table 207): opcode, SERVICE ACTION, SCOPE|TYPE,
reserved, PARAMETER LIST LENGTH, CONTROL."""
PROUT_PARAMS = struct.Struct(">QQ4xBx2x")
"""Basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.16.3, table 210): RESERVATION KEY,
SERVICE ACTION RESERVATION KEY, obsolete, SPEC_I_PT|ALL_TG_PT|APTPL, reserved, obsolete."""
TRANSPORTID_LIST_LENGTH = struct.Struct(">I")
"""TRANSPORTID PARAMETER DATA LENGTH after the basic list when SPEC_I_PT is one (byte 24)."""
REGISTER_AND_MOVE_PARAMS = struct.Struct(">QQxBHI")
"""REGISTER AND MOVE parameter list (SPC-4 §6.16.4, table 212): RESERVATION KEY, SERVICE ACTION
RESERVATION KEY, reserved, UNREG|APTPL, RELATIVE TARGET PORT IDENTIFIER, TRANSPORTID PARAMETER
DATA LENGTH."""
PRIN_HEADER = struct.Struct(">II")
"""PRGENERATION, ADDITIONAL LENGTH: the header of READ KEYS, READ RESERVATION and READ FULL STATUS
parameter data (SPC-4 §6.15.2-§6.15.5)."""
RESERVATION_DESCRIPTOR = struct.Struct(">Q4xxBxx")
"""READ RESERVATION descriptor (SPC-4 §6.15.3, table 198): RESERVATION KEY, obsolete, reserved,
SCOPE|TYPE, obsolete."""
REPORT_CAPABILITIES = struct.Struct(">HBBH2x")
"""REPORT CAPABILITIES parameter data (SPC-4 §6.15.4, table 199): LENGTH, RLR_C|CRH|SIP_C|ATP_C|
PTPL_C, TMV|ALLOW COMMANDS|PTPL_A, PERSISTENT RESERVATION TYPE MASK, reserved."""
FULL_STATUS_DESCRIPTOR = struct.Struct(">Q4xBB4xHI")
"""READ FULL STATUS descriptor (SPC-4 §6.15.5, table 203): RESERVATION KEY, reserved,
ALL_TG_PT|R_HOLDER, SCOPE|TYPE, reserved, RELATIVE TARGET PORT IDENTIFIER, ADDITIONAL DESCRIPTOR
LENGTH; the TransportID follows."""
TRANSPORTID_HEADER = struct.Struct(">BxH")
"""iSCSI TransportID header (SPC-4 §7.6.4.6, tables 375-376): FORMAT CODE|PROTOCOL IDENTIFIER,
reserved, ADDITIONAL LENGTH; the null-terminated, padded iSCSI name follows."""
RESERVE_10_CDB = struct.Struct(">BBBB3xHB")
"""RESERVE(10)/RELEASE(10) CDB (SPC-2 §7.21, §7.17): opcode, 3RDPTY|LONGID|obsolete, obsolete,
THIRD-PARTY DEVICE ID, reserved, PARAMETER LIST LENGTH, CONTROL."""

# REPORT CAPABILITIES flags (SPC-4 §6.15.4).
CRH = 0x10
"""Compatible Reservation Handling: RESERVE/RELEASE follow SPC-4 §5.9.3."""
SIP_C = 0x08
"""Specify Initiator Ports Capable."""
ATP_C = 0x04
"""All Target Ports Capable."""
PTPL_C = 0x01
"""Persist Through Power Loss Capable."""
TMV = 0x80
"""Type Mask Valid."""
ALLOW_COMMANDS = 0b011
"""TEST UNIT READY passes Write Exclusive and Exclusive Access reservations, and MODE SENSE, READ
BUFFER, RECEIVE COPY RESULTS, RECEIVE DIAGNOSTIC RESULTS, REPORT SUPPORTED OPERATION CODES, REPORT
SUPPORTED TASK MANAGEMENT FUNCTIONS and READ DEFECT DATA pass Write Exclusive ones (they read no
user data that a writer could change under the holder) — SPC-4 §6.15.4, table 200."""
PTPL_A = 0x01
"""Persist Through Power Loss Activated."""

SPEC_I_PT = 0x08
ALL_TG_PT = 0x04
APTPL = 0x01
UNREG = 0x02
R_HOLDER = 0x01
ALL_TG_PT_DESC = 0x02


class _Conflict(Exception):
    """The command ends with RESERVATION CONFLICT status (not CHECK CONDITION)."""


def _param_length_error() -> ScsiError:
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)


# --- the state ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Registration:
    """A reservation key registered for an I_T nexus (or, by wildcard, a set of them)."""

    key: int
    """The RESERVATION KEY (nonzero)."""
    initiator_name: str
    """iSCSI name of the initiator port(s)."""
    isid: int | None
    """ISID of the initiator port; None: every port of the name (TransportID format 00b)."""
    tpgt: int
    """Target port (TPGT = relative target port identifier) the registration was made through."""
    all_tg_pt: bool = False
    """Registered through every target port (ALL_TG_PT)."""

    def matches(self, nexus: Nexus) -> bool:
        """This registration is the I_T nexus's (iSCSI names compare case-insensitively, RFC 3722)."""
        return (self.initiator_name.casefold() == nexus.initiator_name.casefold()
                and (self.isid is None or self.isid == nexus.isid)
                and (self.all_tg_pt or self.tpgt == nexus.tpgt))

    def overlaps(self, other: Registration) -> bool:
        """Both could stand for the same I_T nexus (so both may not exist)."""
        return (self.initiator_name.casefold() == other.initiator_name.casefold()
                and (self.isid is None or other.isid is None or self.isid == other.isid)
                and (self.all_tg_pt or other.all_tg_pt or self.tpgt == other.tpgt))

    def transport_id(self) -> bytes:
        """The iSCSI TransportID (SPC-4 §7.6.4.6): format 01b with the ISID, 00b without."""
        if self.isid is None:
            fmt, name = 0x00, self.initiator_name
        else:
            fmt, name = 0x40, f"{self.initiator_name},i,0x{self.isid:012x}"
        body = name.encode() + b"\0"
        body += bytes(-len(body) % 4)
        if len(body) < 20:  # ADDITIONAL LENGTH is at least 20 (SPC-4 §7.6.4.6)
            body += bytes(20 - len(body))
        return TRANSPORTID_HEADER.pack(fmt | PROTOCOL_ISCSI, len(body)) + body

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "initiator": self.initiator_name, "isid": self.isid, "tpgt": self.tpgt,
                "all_tg_pt": self.all_tg_pt}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Registration:
        return cls(int(d["key"]), str(d["initiator"]), None if d["isid"] is None else int(d["isid"]),
                   int(d["tpgt"]), bool(d["all_tg_pt"]))


@dataclass(slots=True)
class Reservation:
    """The persistent reservation of a logical unit."""

    type: PrType
    holder: Registration | None
    """The holder's registration; None for the all-registrants types (every registrant holds it)."""


@dataclass(slots=True)
class LuReservations:
    """Reservation state of one logical unit: the SPC-2 holder, registrations, the reservation."""

    lu_id: str
    """Stable identity of the logical unit in the store (its NAA name in hex)."""
    store: ReservationStore | None = None
    """Where APTPL state is written; None: nothing survives a restart."""
    spc2_holder: Nexus | None = None
    """The I_T nexus holding an SPC-2 reservation (RESERVE(6)/(10))."""
    registrations: list[Registration] = field(default_factory=list)
    reservation: Reservation | None = None
    generation: int = 0
    """PRgeneration (SPC-4 §6.15.2): counts successful PROUT service actions other than RESERVE/RELEASE."""
    aptpl: bool = False
    """The last APTPL bit received with a REGISTER-type service action (SPC-4 §5.9.4)."""

    # --- queries ----------------------------------------------------------------------------------

    def registration(self, nexus: Nexus) -> Registration | None:
        """The registration of ``nexus``, if any."""
        for reg in self.registrations:
            if reg.matches(nexus):
                return reg
        return None

    def is_holder(self, nexus: Nexus) -> bool:
        """``nexus`` holds the persistent reservation (SPC-4 §5.9.10)."""
        res = self.reservation
        if res is None:
            return False
        if res.type in ALL_REGISTRANTS:
            return self.registration(nexus) is not None
        return res.holder is not None and res.holder.matches(nexus)

    def allowed(self, access: Access, nexus: Nexus) -> bool:
        """A command of class ``access`` from ``nexus`` passes the reservations in force."""
        if self.spc2_holder is not None and self.spc2_holder != nexus:
            return access.spc2
        res = self.reservation
        if res is None or self.is_holder(nexus):
            return True
        # Registered I_T nexuses pass registrants-only reservations (the "registered" column of
        # SPC-4 table 60 is Allowed throughout); everybody else is treated as under WE or EA.
        if res.type in REGISTRANTS_ONLY and self.registration(nexus) is not None:
            return True
        return access.write_exclusive if res.type in WRITE_EXCLUSIVE_TYPES else access.exclusive_access

    def crh_exempt(self, nexus: Nexus) -> bool:
        """RESERVE/RELEASE from ``nexus`` complete GOOD without effect (SPC-4 §5.9.3, CRH=1)."""
        res = self.reservation
        if res is None:
            return False
        if self.is_holder(nexus):
            return True
        return res.type in REGISTRANTS_ONLY and self.registration(nexus) is not None

    # --- persistence --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The state that APTPL keeps (registrations and the reservation; SPC-2 ones never survive)."""
        res = self.reservation
        holder = None
        if res is not None and res.holder is not None:
            holder = next(i for i, r in enumerate(self.registrations) if r is res.holder)
        return {"aptpl": self.aptpl, "registrations": [r.to_json() for r in self.registrations],
                "reservation": None if res is None else {"type": int(res.type), "holder": holder}}

    def load_json(self, d: dict[str, Any]) -> None:
        """Restore what :meth:`to_json` saved (PRgeneration starts again at zero after power on)."""
        self.aptpl = bool(d["aptpl"])
        self.registrations = [Registration.from_json(r) for r in d["registrations"]]
        res = d.get("reservation")
        self.reservation = None
        if res is not None:
            holder = None if res["holder"] is None else self.registrations[int(res["holder"])]
            self.reservation = Reservation(PrType(int(res["type"])), holder)
        self.generation = 0

    def persist(self) -> None:
        """Write the state if APTPL is active, forget the stored one otherwise (SPC-4 §5.9.4)."""
        if self.store is None:
            return
        if self.aptpl:
            self.store.save(self.lu_id, self.to_json())
        else:
            self.store.delete(self.lu_id)

    def power_on(self) -> None:
        """Power on (or a cold reset): only what APTPL persisted is left (SPC-4 §5.9.4)."""
        self.spc2_holder = None
        self.registrations = []
        self.reservation = None
        self.generation = 0
        self.aptpl = False
        saved = self.store.load(self.lu_id) if self.store is not None else None
        if saved is not None:
            self.load_json(saved)


class ReservationStore:
    """APTPL state of the logical units of one array, in SQLite (WAL, one transaction per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """The database file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path))
        self._db.execute("PRAGMA journal_mode=WAL")
        # GOOD for an APTPL change means it survives power loss (SPC-4 §5.9.4): sync every commit.
        self._db.execute("PRAGMA synchronous=FULL")
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS persistent_reservations "
                             "(lu TEXT PRIMARY KEY, state TEXT NOT NULL)")

    def load(self, lu_id: str) -> dict[str, Any] | None:
        """The saved state of ``lu_id`` or None."""
        row = self._db.execute("SELECT state FROM persistent_reservations WHERE lu = ?", (lu_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save(self, lu_id: str, state: dict[str, Any]) -> None:
        """Replace the saved state of ``lu_id`` (one transaction, synced before return)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO persistent_reservations (lu, state) VALUES (?, ?)",
                             (lu_id, json.dumps(state)))

    def delete(self, lu_id: str) -> None:
        """Forget the saved state of ``lu_id``."""
        with self._db:
            self._db.execute("DELETE FROM persistent_reservations WHERE lu = ?", (lu_id,))

    def close(self) -> None:
        """Close the database."""
        self._db.close()


_STATES: weakref.WeakKeyDictionary[LogicalUnit, LuReservations] = weakref.WeakKeyDictionary()
_STORES: weakref.WeakKeyDictionary[DeviceServer, ReservationStore] = weakref.WeakKeyDictionary()


def store_for(server: DeviceServer) -> ReservationStore | None:
    """The device server's APTPL store (opened on first use), None without a state directory."""
    if server.state_dir is None:
        return None
    store = _STORES.get(server)
    if store is None:
        store = _STORES[server] = ReservationStore(Path(server.state_dir) / STORE_NAME)
    return store


def state(server: DeviceServer, lu: LogicalUnit) -> LuReservations:
    """The reservation state of ``lu``; the first call loads what APTPL persisted."""
    st = _STATES.get(lu)
    if st is None:
        st = LuReservations(lu.config.naa.hex(), store_for(server))
        st.power_on()
        _STATES[lu] = st
        lu.reservations = st
        if st.registrations:
            log.info("persistent_reservations_restored", lu=st.lu_id, target=lu.config.target_name,
                     lun=lu.config.lun, registrations=len(st.registrations),
                     reservation=None if st.reservation is None else st.reservation.type.name)
    return st


# --- events from the device server ------------------------------------------------------------------


def nexus_lost(lu: LogicalUnit, nexus: Nexus) -> None:
    """I_T nexus loss releases that nexus's SPC-2 reservation; persistent ones stay (SPC-4 §5.9.4)."""
    st = _STATES.get(lu)
    if st is not None and st.spc2_holder == nexus:
        st.spc2_holder = None


def reset(lu: LogicalUnit, power_on: bool = False) -> None:
    """A logical unit reset or hard reset releases the SPC-2 reservation and keeps persistent ones;
    a power on (TARGET COLD RESET) keeps only what APTPL persisted (SPC-4 §5.9.4)."""
    st = _STATES.get(lu)
    if st is None:
        return
    if power_on:
        st.power_on()
    else:
        st.spc2_holder = None


# --- the conflict table -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """Whether a command from an I_T nexus that does not hold the reservation may run.

    SPC-4 table 60 and SBC-3 table 13 have columns for Write Exclusive, Exclusive Access, the
    registrants-only/all-registrants types from a registered I_T nexus (always Allowed) and from an
    unregistered one (identical to the WE resp. EA column), so two booleans carry them; SPC-2 annex B
    adds the column for a logical unit reserved by RESERVE(6)/(10).
    """

    spc2: bool
    """Allowed while another I_T nexus holds an SPC-2 reservation."""
    write_exclusive: bool
    """Allowed under a write-exclusive type reservation held by another I_T nexus."""
    exclusive_access: bool
    """Allowed under an exclusive-access type reservation held by another I_T nexus."""


ALLOWED = Access(True, True, True)
"""Reports about the device and the nexus: never conflicts."""
PR_ALLOWED = Access(False, True, True)
"""Allowed under every persistent reservation but not against an SPC-2 one (TEST UNIT READY,
PERSISTENT RESERVE IN/OUT: SPC-2 annex B)."""
READ = Access(False, True, False)
"""Reads: shared under write-exclusive reservations."""
EXCLUSIVE = Access(False, False, False)
"""Writes and everything that changes the device: only the holder (and registrants where allowed)."""


def _prevent_allow(cdb: bytes) -> Access:
    # PREVENT=0 (allow removal) may come from anyone (SBC-3 table 13, SPC-2 annex B).
    return ALLOWED if len(cdb) > 4 and not cdb[4] & 0x03 else EXCLUSIVE


def _start_stop(cdb: bytes) -> Access:
    # START=1 with POWER CONDITION=0 only spins the unit up (SBC-3 table 13).
    return ALLOWED if len(cdb) > 4 and cdb[4] & 0x01 and not cdb[4] & 0xF0 else EXCLUSIVE


Rule = Access | Callable[[bytes], Access]
CONFLICTS: dict[int | tuple[int, int], Rule] = {
    # SPC-4 table 60
    Opcode.INQUIRY: ALLOWED,
    Opcode.REPORT_LUNS: ALLOWED,
    Opcode.REQUEST_SENSE: ALLOWED,
    Opcode.LOG_SENSE: ALLOWED,
    Opcode.TEST_UNIT_READY: PR_ALLOWED,
    Opcode.PERSISTENT_RESERVE_IN: PR_ALLOWED,
    Opcode.PERSISTENT_RESERVE_OUT: PR_ALLOWED,  # each service action checks its key (SPC-4 §5.9.2)
    Opcode.RESERVE_6: ALLOWED,  # the handlers apply SPC-2 and SPC-4 §5.9.3 themselves
    Opcode.RESERVE_10: ALLOWED,
    Opcode.RELEASE_6: ALLOWED,
    Opcode.RELEASE_10: ALLOWED,
    Opcode.MODE_SENSE_6: READ,  # ALLOW COMMANDS 011b
    Opcode.MODE_SENSE_10: READ,
    Opcode.READ_BUFFER: READ,
    Opcode.RECEIVE_DIAGNOSTIC_RESULTS: READ,
    Opcode.RECEIVE_COPY_RESULTS: READ,
    Opcode.MODE_SELECT_6: EXCLUSIVE,
    Opcode.MODE_SELECT_10: EXCLUSIVE,
    Opcode.LOG_SELECT: EXCLUSIVE,
    Opcode.WRITE_BUFFER: EXCLUSIVE,
    Opcode.SEND_DIAGNOSTIC: EXCLUSIVE,
    Opcode.EXTENDED_COPY: EXCLUSIVE,
    Opcode.SECURITY_PROTOCOL_IN: EXCLUSIVE,
    Opcode.SECURITY_PROTOCOL_OUT: EXCLUSIVE,
    Opcode.MAINTENANCE_OUT: EXCLUSIVE,
    (Opcode.MAINTENANCE_IN, 0x05): ALLOWED,  # REPORT IDENTIFYING INFORMATION
    (Opcode.MAINTENANCE_IN, 0x0A): ALLOWED,  # REPORT TARGET PORT GROUPS
    (Opcode.MAINTENANCE_IN, 0x0C): READ,  # REPORT SUPPORTED OPERATION CODES (ALLOW COMMANDS 011b)
    (Opcode.MAINTENANCE_IN, 0x0D): READ,  # REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (idem)
    (Opcode.MAINTENANCE_IN, 0x0F): ALLOWED,  # REPORT TIMESTAMP
    # SBC-3 table 13
    Opcode.READ_CAPACITY_10: ALLOWED,
    (Opcode.SERVICE_ACTION_IN_16, 0x10): ALLOWED,  # READ CAPACITY(16)
    (Opcode.SERVICE_ACTION_IN_16, 0x12): READ,  # GET LBA STATUS
    Opcode.READ_6: READ,
    Opcode.READ_10: READ,
    Opcode.READ_12: READ,
    Opcode.READ_16: READ,
    Opcode.VERIFY_10: READ,
    Opcode.VERIFY_12: READ,
    Opcode.VERIFY_16: READ,
    Opcode.PRE_FETCH_10: READ,
    Opcode.PRE_FETCH_16: READ,
    Opcode.READ_DEFECT_DATA_10: READ,  # ALLOW COMMANDS 011b
    Opcode.READ_DEFECT_DATA_12: READ,
    Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL: _prevent_allow,
    Opcode.START_STOP_UNIT: _start_stop,
    Opcode.WRITE_6: EXCLUSIVE,
    Opcode.WRITE_10: EXCLUSIVE,
    Opcode.WRITE_12: EXCLUSIVE,
    Opcode.WRITE_16: EXCLUSIVE,
    Opcode.WRITE_AND_VERIFY_10: EXCLUSIVE,
    Opcode.WRITE_AND_VERIFY_12: EXCLUSIVE,
    Opcode.WRITE_AND_VERIFY_16: EXCLUSIVE,
    Opcode.WRITE_SAME_10: EXCLUSIVE,
    Opcode.WRITE_SAME_16: EXCLUSIVE,
    Opcode.WRITE_ATOMIC_16: EXCLUSIVE,
    Opcode.UNMAP: EXCLUSIVE,
    Opcode.COMPARE_AND_WRITE: EXCLUSIVE,
    Opcode.ORWRITE_16: EXCLUSIVE,
    Opcode.SYNCHRONIZE_CACHE_10: EXCLUSIVE,
    Opcode.SYNCHRONIZE_CACHE_16: EXCLUSIVE,
    Opcode.FORMAT_UNIT: EXCLUSIVE,
    Opcode.SANITIZE: EXCLUSIVE,
}
"""Opcode, or (opcode, service action), → who may run it past a reservation held by someone else.
Commands not listed follow their :attr:`CommandSpec.conflicts_with_reservation` (True: EXCLUSIVE)."""

_SA_OPCODES = frozenset(k[0] for k in CONFLICTS if isinstance(k, tuple))


def access_of(cdb: bytes, spec: CommandSpec) -> Access:
    """The conflict class of ``cdb`` (see :data:`CONFLICTS`)."""
    rule: Rule | None = None
    if cdb[0] in _SA_OPCODES:
        rule = CONFLICTS.get((cdb[0], service_action(cdb)))
    if rule is None:
        rule = CONFLICTS.get(cdb[0])
    if rule is None:
        return EXCLUSIVE if spec.conflicts_with_reservation else ALLOWED
    return rule if isinstance(rule, Access) else rule(cdb)


def held(server: DeviceServer, lu: LogicalUnit) -> bool:
    """Some reservation (SPC-2 or persistent) is held on ``lu``: commands must be checked against it.
    Asked for every READ/WRITE on the fast path, so the state is cached on the LU itself."""
    st = lu.reservations
    if st is None:
        st = state(server, lu)
    assert isinstance(st, LuReservations)
    return st.spc2_holder is not None or st.reservation is not None


def conflicts(server: DeviceServer, lu: LogicalUnit, nexus: Nexus, cdb: bytes, spec: CommandSpec) -> bool:
    """The command must end with RESERVATION CONFLICT (SPC-4 §5.9.1; SAM-5 §5.3.1 status 18h)."""
    st = state(server, lu)
    if st.spc2_holder is None and st.reservation is None:
        return False
    return not st.allowed(access_of(cdb, spec), nexus)


# --- RESERVE / RELEASE (SPC-2) --------------------------------------------------------------------------


def _check_spc2_cdb(cdb: bytes) -> None:
    """RESERVE(10)/RELEASE(10): third-party reservations are not offered (SPC-2 §7.21.1)."""
    if cdb[0] in (Opcode.RESERVE_10, Opcode.RELEASE_10):
        _, flags, _, _, _, _ = RESERVE_10_CDB.unpack_from(cdb)
        if flags & 0x10:
            raise invalid_field(1, 4)  # 3RDPTY
        if flags & 0x02:
            raise invalid_field(1, 1)  # LONGID
    # RESERVE(6)/RELEASE(6) bytes 1-4 are obsolete (extents, third party): ignored.


def spc2_reserve(st: LuReservations, nexus: Nexus) -> bool:
    """RESERVE: False for RESERVATION CONFLICT.

    While registrations exist RESERVE conflicts, except that the persistent reservation holder (or
    a registrant under a registrants-only type) gets GOOD and nothing changes (SPC-4 §5.9.3).
    Otherwise a reservation held by another I_T nexus conflicts; the holder may reserve again.
    """
    if st.registrations:
        return st.crh_exempt(nexus)
    if st.spc2_holder is not None and st.spc2_holder != nexus:
        return False
    st.spc2_holder = nexus
    return True


def spc2_release(st: LuReservations, nexus: Nexus) -> bool:
    """RELEASE: False for RESERVATION CONFLICT; a RELEASE from a non-holder is GOOD without effect."""
    if st.registrations:
        return st.crh_exempt(nexus)
    if st.spc2_holder == nexus:
        st.spc2_holder = None
    return True


async def reserve(ctx: Ctx) -> ScsiResult:
    """RESERVE(6)/(10) (SPC-2 §7.21, §7.22)."""
    _check_spc2_cdb(ctx.cdb)
    ok = spc2_reserve(state(ctx.server, ctx.need_lu()), ctx.task.nexus)
    return ScsiResult() if ok else ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT)


async def release(ctx: Ctx) -> ScsiResult:
    """RELEASE(6)/(10) (SPC-2 §7.17, §7.18)."""
    _check_spc2_cdb(ctx.cdb)
    ok = spc2_release(state(ctx.server, ctx.need_lu()), ctx.task.nexus)
    return ScsiResult() if ok else ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT)


# --- PERSISTENT RESERVE IN (SPC-4 §6.15) ----------------------------------------------------------------


def read_keys(st: LuReservations) -> bytes:
    """READ KEYS parameter data (SPC-4 §6.15.2): one key per registered I_T nexus."""
    keys = b"".join(r.key.to_bytes(8, "big") for r in st.registrations)
    return PRIN_HEADER.pack(st.generation, len(keys)) + keys


def read_reservation(st: LuReservations) -> bytes:
    """READ RESERVATION parameter data (SPC-4 §6.15.3); the key is 0 for all-registrants types."""
    res = st.reservation
    if res is None:
        return PRIN_HEADER.pack(st.generation, 0)
    key = res.holder.key if res.holder is not None else 0
    return PRIN_HEADER.pack(st.generation, RESERVATION_DESCRIPTOR.size) + RESERVATION_DESCRIPTOR.pack(
        key, (LU_SCOPE << 4) | res.type)


def report_capabilities(st: LuReservations) -> bytes:
    """REPORT CAPABILITIES parameter data (SPC-4 §6.15.4)."""
    mask = 0
    for bit in _TYPE_MASK_BITS.values():
        mask |= bit
    return REPORT_CAPABILITIES.pack(REPORT_CAPABILITIES.size, CRH | SIP_C | ATP_C | PTPL_C,
                                    TMV | (ALLOW_COMMANDS << 4) | (PTPL_A if st.aptpl else 0), mask)


def read_full_status(st: LuReservations) -> bytes:
    """READ FULL STATUS parameter data (SPC-4 §6.15.5): every registration with its TransportID."""
    descs = bytearray()
    res = st.reservation
    for reg in st.registrations:
        holder = res is not None and (res.type in ALL_REGISTRANTS or res.holder is reg)
        tid = reg.transport_id()
        descs += FULL_STATUS_DESCRIPTOR.pack(
            reg.key, (ALL_TG_PT_DESC if reg.all_tg_pt else 0) | (R_HOLDER if holder else 0),
            ((LU_SCOPE << 4) | res.type) if holder and res is not None else 0,
            0 if reg.all_tg_pt else reg.tpgt, len(tid))
        descs += tid
    return PRIN_HEADER.pack(st.generation, len(descs)) + bytes(descs)


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
    _, sa, alloc, _ = PRIN_CDB.unpack_from(ctx.cdb)
    st = state(ctx.server, ctx.need_lu())
    return data_in(PRIN_BUILDERS[sa & 0x1F](st), alloc)


# --- PERSISTENT RESERVE OUT (SPC-4 §6.16, §5.9.7-§5.9.11) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ProutCdb:
    """PERSISTENT RESERVE OUT CDB fields."""

    service_action: int
    scope: int
    type: int
    parameter_list_length: int

    @classmethod
    def parse(cls, cdb: bytes) -> ProutCdb:
        _, sa, scope_type, pll, _ = PROUT_CDB.unpack_from(cdb)
        return cls(sa & 0x1F, scope_type >> 4, scope_type & 0x0F, pll)

    def reservation_type(self) -> PrType:
        """SCOPE and TYPE of RESERVE, RELEASE and the PREEMPTs: LU_SCOPE and a supported type."""
        if self.scope != LU_SCOPE:
            raise invalid_field(2, 7)
        try:
            return PrType(self.type)
        except ValueError:
            raise invalid_field(2, 3) from None


@dataclass(frozen=True, slots=True)
class ProutParams:
    """The basic parameter list, plus TransportIDs when SPEC_I_PT is one."""

    key: int
    sa_key: int
    spec_i_pt: bool
    all_tg_pt: bool
    aptpl: bool
    data: bytes = b""
    """The whole parameter list (TransportIDs are parsed from it so field pointers count from byte 0)."""
    tid_end: int = 0
    """End of the TransportIDs (they start at byte 28); 0 without SPEC_I_PT."""

    @classmethod
    def parse(cls, service_action: int, data: bytes, pll: int) -> ProutParams:
        """Check PARAMETER LIST LENGTH and the flags valid for ``service_action`` (SPC-4 §6.16.3)."""
        if pll < PROUT_PARAMS.size or len(data) < PROUT_PARAMS.size:
            raise _param_length_error()
        key, sa_key, flags = PROUT_PARAMS.unpack_from(data)
        spec_i_pt = bool(flags & SPEC_I_PT)
        tid_end = 0
        if spec_i_pt:
            if service_action != PersistentReserveOut.REGISTER:
                raise invalid_parameter(20, 3)
            if pll < PROUT_PARAMS.size + TRANSPORTID_LIST_LENGTH.size or len(data) < pll:
                raise _param_length_error()
            (tid_len,) = TRANSPORTID_LIST_LENGTH.unpack_from(data, PROUT_PARAMS.size)
            if PROUT_PARAMS.size + TRANSPORTID_LIST_LENGTH.size + tid_len != pll:
                raise _param_length_error()
            tid_end = pll
        elif pll != PROUT_PARAMS.size:
            raise _param_length_error()
        return cls(key, sa_key, spec_i_pt, bool(flags & ALL_TG_PT), bool(flags & APTPL), data[:pll], tid_end)


def parse_transport_id(data: bytes, offset: int) -> tuple[str, int | None, int]:
    """One iSCSI TransportID at ``data[offset:]``: (name, ISID or None, its length).

    Format 00b carries the iSCSI name, 01b "name,i,0xISID" (SPC-4 §7.6.4.6); anything else, another
    protocol, or a malformed one is INVALID FIELD IN PARAMETER LIST pointing at the TransportID.
    """
    if len(data) - offset < TRANSPORTID_HEADER.size:
        raise _param_length_error()
    b0, add_len = TRANSPORTID_HEADER.unpack_from(data, offset)
    fmt = b0 >> 6
    if b0 & 0x0F != PROTOCOL_ISCSI or fmt not in (0, 1) or b0 & 0x30:
        raise invalid_parameter(offset, 3 if b0 & 0x0F != PROTOCOL_ISCSI else 7)
    end = offset + TRANSPORTID_HEADER.size + add_len
    if add_len < 20 or add_len % 4 or end > len(data):
        raise invalid_parameter(offset + 2)
    raw = data[offset + TRANSPORTID_HEADER.size:end].split(b"\0", 1)[0]
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise invalid_parameter(offset + 4) from None
    isid: int | None = None
    if fmt == 1:
        name, sep, isid_hex = text.rpartition(",")
        if not sep or not name.lower().endswith(",i") or not isid_hex.lower().startswith("0x"):
            raise invalid_parameter(offset + 4)
        name = name[:-2]
        try:
            isid = int(isid_hex[2:], 16)
        except ValueError:
            raise invalid_parameter(offset + 4) from None
        if isid >> 48:
            raise invalid_parameter(offset + 4)
        text = name
    if not text or "," in text:
        raise invalid_parameter(offset + 4)
    return text, isid, end - offset


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

    def __init__(self, st: LuReservations, lu: LogicalUnit, nexus: Nexus) -> None:
        self.st = st
        self.lu = lu
        self.nexus = nexus

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

    def register(self, cdb: ProutCdb, p: ProutParams, ignore_key: bool) -> Outcome:
        """REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 §5.9.7, tables 48-49)."""
        st, nexus = self.st, self.nexus
        reg = st.registration(nexus)
        if reg is None:
            if not ignore_key and p.key != 0:
                raise _Conflict()
            if p.sa_key == 0:
                return Outcome()  # unregistering an unregistered I_T nexus: GOOD, nothing happens
            new = [Registration(p.sa_key, nexus.initiator_name, nexus.isid, nexus.tpgt, p.all_tg_pt)]
            offset = PROUT_PARAMS.size + TRANSPORTID_LIST_LENGTH.size
            while offset < p.tid_end:
                name, isid, length = parse_transport_id(p.data[:p.tid_end], offset)
                other = Registration(p.sa_key, name, isid, nexus.tpgt, p.all_tg_pt)
                # A TransportID naming an I_T nexus already registered (or named twice) is refused.
                if any(other.overlaps(r) for r in st.registrations + new):
                    raise invalid_parameter(offset)
                new.append(other)
                offset += length
            self._room(len(new))
            st.registrations.extend(new)
        else:
            if not ignore_key and p.key != reg.key:
                raise _Conflict()
            if p.spec_i_pt:
                raise invalid_parameter(20, 3)  # SPEC_I_PT only registers unregistered I_T nexuses
            if p.sa_key == 0:
                self._remove([reg])
            else:
                reg.key = p.sa_key
        st.aptpl = p.aptpl
        st.generation += 1
        return Outcome()

    def reserve(self, cdb: ProutCdb, p: ProutParams) -> Outcome:
        """RESERVE (SPC-4 §5.9.8): a reservation held by another, or of another type, conflicts."""
        prtype = cdb.reservation_type()
        reg = self._own(p.key)
        st = self.st
        res = st.reservation
        if res is None:
            st.reservation = Reservation(prtype, None if prtype in ALL_REGISTRANTS else reg)
        elif not st.is_holder(self.nexus) or res.type != prtype:
            raise _Conflict()
        return Outcome()

    def release(self, cdb: ProutCdb, p: ProutParams) -> Outcome:
        """RELEASE (SPC-4 §5.9.11.2): only the holder releases; a mismatched TYPE is 26h/04h."""
        self._own(p.key)
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

    def clear(self, cdb: ProutCdb, p: ProutParams) -> Outcome:
        """CLEAR (SPC-4 §5.9.11.6): every registration and the reservation go; the others learn it."""
        self._own(p.key)
        st = self.st
        others = st.registrations
        st.registrations = []
        st.reservation = None
        st.generation += 1
        self._ua(Asc.RESERVATIONS_PREEMPTED, others)
        return Outcome()

    def preempt(self, cdb: ProutCdb, p: ProutParams, abort: bool) -> Outcome:
        """PREEMPT / PREEMPT AND ABORT (SPC-4 §5.9.11.4, §5.9.11.5)."""
        prtype = cdb.reservation_type()
        own = self._own(p.key)
        st = self.st
        res = st.reservation
        sa = p.sa_key
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
        pll = cdb.parameter_list_length
        if pll < REGISTER_AND_MOVE_PARAMS.size or len(data) < REGISTER_AND_MOVE_PARAMS.size:
            raise _param_length_error()
        key, sa_key, flags, rel_port, tid_len = REGISTER_AND_MOVE_PARAMS.unpack_from(data)
        if REGISTER_AND_MOVE_PARAMS.size + tid_len > pll or len(data) < pll:
            raise _param_length_error()
        st, nexus = self.st, self.nexus
        own = self._own(key)
        res = st.reservation
        if res is None or res.type in ALL_REGISTRANTS or not st.is_holder(nexus):
            raise _Conflict()
        if sa_key == 0:
            raise invalid_parameter(8)
        name, isid, _ = parse_transport_id(data[:REGISTER_AND_MOVE_PARAMS.size + tid_len],
                                           REGISTER_AND_MOVE_PARAMS.size)
        ports = {nx.tpgt for nx in self.lu.nexuses} | {nexus.tpgt}
        if rel_port not in ports:
            raise invalid_parameter(18)
        dest = Registration(sa_key, name, isid, rel_port)
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
        if flags & UNREG:
            st.registrations = [r for r in st.registrations if r is not own]
        st.aptpl = bool(flags & APTPL)
        st.generation += 1
        return Outcome()


def _run_prout(ctx: Ctx) -> tuple[LuReservations, Outcome]:
    cdb = ProutCdb.parse(ctx.cdb)
    lu = ctx.need_lu()
    st = state(ctx.server, lu)
    data = bytes(ctx.task.data_out[:cdb.parameter_list_length])
    op = Prout(st, lu, ctx.task.nexus)
    sa = cdb.service_action
    if sa == PersistentReserveOut.REGISTER_AND_MOVE:
        return st, op.register_and_move(cdb, data)
    p = ProutParams.parse(sa, data, cdb.parameter_list_length)
    if sa in (PersistentReserveOut.REGISTER, PersistentReserveOut.REGISTER_AND_IGNORE_EXISTING_KEY):
        return st, op.register(cdb, p, ignore_key=sa == PersistentReserveOut.REGISTER_AND_IGNORE_EXISTING_KEY)
    if sa == PersistentReserveOut.RESERVE:
        return st, op.reserve(cdb, p)
    if sa == PersistentReserveOut.RELEASE:
        return st, op.release(cdb, p)
    if sa == PersistentReserveOut.CLEAR:
        return st, op.clear(cdb, p)
    return st, op.preempt(cdb, p, abort=sa == PersistentReserveOut.PREEMPT_AND_ABORT)


async def persistent_reserve_out(ctx: Ctx) -> ScsiResult:
    """PERSISTENT RESERVE OUT: run the service action, persist (APTPL), abort preempted tasks."""
    pll = PROUT_CDB.unpack_from(ctx.cdb)[3]
    try:
        st, outcome = _run_prout(ctx)
    except _Conflict:
        return ScsiResult(status=ScsiStatus.RESERVATION_CONFLICT, transfer_length=pll, data_out_direction=True)
    st.persist()
    if outcome.abort and ctx.server.on_abort is not None:
        await ctx.server.on_abort(ctx.task.lun, outcome.abort)
    log.info("persistent_reserve_out", lun=ctx.task.lun, initiator=ctx.task.nexus.initiator_port,
             service_action=PersistentReserveOut(service_action(ctx.cdb)).name, generation=st.generation,
             registrations=len(st.registrations),
             reservation=None if st.reservation is None else st.reservation.type.name)
    return ScsiResult(transfer_length=pll, data_out_direction=True)


COMMANDS: dict[int, CommandSpec] = {
    Opcode.RESERVE_6: CommandSpec("RESERVE(6)", reserve, conflicts_with_reservation=False),
    Opcode.RELEASE_6: CommandSpec("RELEASE(6)", release, conflicts_with_reservation=False),
    Opcode.RESERVE_10: CommandSpec("RESERVE(10)", reserve, conflicts_with_reservation=False),
    Opcode.RELEASE_10: CommandSpec("RELEASE(10)", release, conflicts_with_reservation=False),
    Opcode.PERSISTENT_RESERVE_IN: CommandSpec("PERSISTENT RESERVE IN", service_actions={
        sa: CommandSpec(f"PERSISTENT RESERVE IN ({sa.name.replace('_', ' ')})", persistent_reserve_in,
                        conflicts_with_reservation=False)
        for sa in PersistentReserveIn}),
    Opcode.PERSISTENT_RESERVE_OUT: CommandSpec("PERSISTENT RESERVE OUT", service_actions={
        sa: CommandSpec(f"PERSISTENT RESERVE OUT ({sa.name.replace('_', ' ')})", persistent_reserve_out,
                        data_out=True, conflicts_with_reservation=False)
        for sa in PersistentReserveOut}),
}
"""Reservation commands of the command table."""

register(COMMANDS)

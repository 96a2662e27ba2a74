"""The reservation state of one logical unit and who may pass it (SPC-2 §5.5.1, SPC-4 §5.9).

Two mechanisms share one state per logical unit, :class:`LuReservations`, which the logical unit
owns (``LogicalUnit.reservations``):

* **SPC-2 reservations** — RESERVE(6)/(10) and RELEASE(6)/(10), obsolete since SPC-3 but still
  sent by older cluster software.  One I_T nexus holds the whole logical unit until it releases it,
  a logical unit reset or hard reset happens, or the I_T nexus is lost (SPC-2 §5.5.1).
* **Persistent reservations** — reservation keys registered per I_T nexus and at most one
  reservation of one of six types (SPC-4 §5.9.5).  They survive I_T nexus loss and resets; with
  APTPL they also survive a power loss: :meth:`LuReservations.snapshot` is what the store keeps
  (scsi/reservation_store.py) and :meth:`LuReservations.power_on` what comes back.

Who may run a command past a reservation held by someone else is a property of the command: each
row of the command table carries an :data:`Access` class (or a :data:`Rule` that derives it from
the CDB), SPC-4 §5.9.1 table 60 and SBC-3 §4.17 table 13, and SPC-2 annex B for RESERVE(6).
:meth:`LuReservations.conflicts` applies it.

Everything here is plain state: no I/O, no event loop.  An I_T nexus is identified by its SCSI
initiator port name (iSCSI name + ISID) and its target port (target name + TPGT, the relative
target port identifier of the Device Identification VPD page).  A registration made through a
TransportID without an ISID (iSCSI format 00b) stands for every initiator port of that iSCSI name;
one made with ALL_TG_PT for every target port.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

from sanlab.scsi.task import Nexus


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


# --- who may pass a reservation (the column of the command table) ------------------------------------


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
"""Writes and everything that changes the device: only the holder (and registrants where allowed).
The class of every command the standards' tables do not list as allowed."""

Rule = Access | Callable[[bytes], Access]
"""A command's conflict class, or a function of its CDB for the commands whose class depends on a
field (START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL: SBC-3 table 13)."""


def access_of(rule: Rule, cdb: bytes) -> Access:
    """The conflict class ``rule`` gives ``cdb``."""
    return rule if isinstance(rule, Access) else rule(cdb)


# --- registrations and the reservation ----------------------------------------------------------------


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

    def to_json(self) -> dict[str, Any]:
        """The registration as the APTPL store keeps it."""
        return {"key": self.key, "initiator": self.initiator_name, "isid": self.isid, "tpgt": self.tpgt,
                "all_tg_pt": self.all_tg_pt}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Registration:
        """A registration :meth:`to_json` saved."""
        return cls(int(d["key"]), str(d["initiator"]), None if d["isid"] is None else int(d["isid"]),
                   int(d["tpgt"]), bool(d["all_tg_pt"]))


@dataclass(slots=True)
class Reservation:
    """The persistent reservation of a logical unit."""

    type: PrType
    """Its TYPE (SPC-4 table 209); the SCOPE is always :data:`LU_SCOPE`."""
    holder: Registration | None
    """The holder's registration; None for the all-registrants types (every registrant holds it)."""


@dataclass(slots=True)
class LuReservations:
    """Reservation state of one logical unit: the SPC-2 holder, registrations, the reservation."""

    lu_id: str
    """Stable identity of the logical unit in the APTPL store (its NAA name in hex)."""
    loaded: bool = False
    """What APTPL persisted has been restored (the device server does it before the LU's first
    command after power on, off the event loop); until then nothing may skip the conflict check."""
    spc2_holder: Nexus | None = None
    """The I_T nexus holding an SPC-2 reservation (RESERVE(6)/(10))."""
    registrations: list[Registration] = field(default_factory=list)
    """Registered reservation keys, oldest first (READ KEYS reports them in this order)."""
    reservation: Reservation | None = None
    """The persistent reservation, if any."""
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

    def free(self) -> bool:
        """No reservation of either kind is held and the persisted state is loaded: no command can
        conflict.  Asked for every READ/WRITE on the device server's fast path, which skips
        :meth:`conflicts` only when this holds."""
        return self.loaded and self.spc2_holder is None and self.reservation is None

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

    def conflicts(self, rule: Rule, cdb: bytes, nexus: Nexus) -> bool:
        """The command must end with RESERVATION CONFLICT (SPC-4 §5.9.1; SAM-5 §5.3.1 status 18h)."""
        if self.spc2_holder is None and self.reservation is None:
            return False
        return not self.allowed(access_of(rule, cdb), nexus)

    def crh_exempt(self, nexus: Nexus) -> bool:
        """RESERVE/RELEASE from ``nexus`` complete GOOD without effect (SPC-4 §5.9.3, CRH=1)."""
        res = self.reservation
        if res is None:
            return False
        if self.is_holder(nexus):
            return True
        return res.type in REGISTRANTS_ONLY and self.registration(nexus) is not None

    # --- SPC-2 reservations (SPC-2 §5.5.1, SPC-4 §5.9.3) ------------------------------------------------

    def spc2_reserve(self, nexus: Nexus) -> bool:
        """RESERVE: False for RESERVATION CONFLICT.

        While registrations exist RESERVE conflicts, except that the persistent reservation holder (or
        a registrant under a registrants-only type) gets GOOD and nothing changes (SPC-4 §5.9.3).
        Otherwise a reservation held by another I_T nexus conflicts; the holder may reserve again.
        """
        if self.registrations:
            return self.crh_exempt(nexus)
        if self.spc2_holder is not None and self.spc2_holder != nexus:
            return False
        self.spc2_holder = nexus
        return True

    def spc2_release(self, nexus: Nexus) -> bool:
        """RELEASE: False for RESERVATION CONFLICT; a RELEASE from a non-holder is GOOD without effect."""
        if self.registrations:
            return self.crh_exempt(nexus)
        if self.spc2_holder == nexus:
            self.spc2_holder = None
        return True

    # --- events ------------------------------------------------------------------------------------

    def nexus_lost(self, nexus: Nexus) -> None:
        """I_T nexus loss releases that nexus's SPC-2 reservation; persistent ones stay (SPC-4 §5.9.4)."""
        if self.spc2_holder == nexus:
            self.spc2_holder = None

    def reset(self) -> None:
        """A logical unit reset or hard reset releases the SPC-2 reservation and keeps persistent ones
        (SPC-4 §5.9.4)."""
        self.spc2_holder = None

    def power_off(self) -> None:
        """Power loss (a TARGET COLD RESET): everything is forgotten until :meth:`power_on` restores what
        APTPL persisted."""
        self.spc2_holder = None
        self.registrations = []
        self.reservation = None
        self.generation = 0
        self.aptpl = False
        self.loaded = False

    def power_on(self, saved: dict[str, Any] | None) -> None:
        """Power on: only what APTPL persisted (``saved``, a :meth:`snapshot`) is left (SPC-4 §5.9.4);
        PRgeneration starts again at zero."""
        self.power_off()
        if saved is not None:
            self.aptpl = bool(saved["aptpl"])
            self.registrations = [Registration.from_json(r) for r in saved["registrations"]]
            res = saved.get("reservation")
            if res is not None:
                holder = None if res["holder"] is None else self.registrations[int(res["holder"])]
                self.reservation = Reservation(PrType(int(res["type"])), holder)
        self.loaded = True

    def snapshot(self) -> dict[str, Any] | None:
        """What must survive a power loss: the registrations and the reservation while APTPL is active
        (SPC-2 reservations never survive), None when it is not (SPC-4 §5.9.4)."""
        if not self.aptpl:
            return None
        res = self.reservation
        holder = None
        if res is not None and res.holder is not None:
            holder = next(i for i, r in enumerate(self.registrations) if r is res.holder)
        return {"aptpl": self.aptpl, "registrations": [r.to_json() for r in self.registrations],
                "reservation": None if res is None else {"type": int(res.type), "holder": holder}}

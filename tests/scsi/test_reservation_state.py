"""The reservation state model (scsi/reservation_state.py), without a device server."""
from __future__ import annotations

from sanlab.scsi.reservation_state import (
    ALLOWED, EXCLUSIVE, PR_ALLOWED, READ, Access, LuReservations, PrType, Registration, Reservation,
)
from tests.scsi.helpers import NX, NX2


def test_snapshot_survives_power_cycle_with_its_holder() -> None:
    st = LuReservations("lu", loaded=True)
    a = Registration(0xA, NX.initiator_name, NX.isid, 1)
    b = Registration(0xB, NX2.initiator_name, None, 1, all_tg_pt=True)
    st.registrations = [a, b]
    st.reservation = Reservation(PrType.EXCLUSIVE_ACCESS, b)
    st.generation = 7
    assert st.snapshot() is None  # APTPL off: nothing survives
    st.aptpl = True
    saved = st.snapshot()
    st.spc2_holder = NX
    st.power_off()
    assert not st.loaded and not st.registrations and st.spc2_holder is None and not st.free()
    st.power_on(saved)
    assert st.loaded and st.registrations == [a, b] and st.generation == 0
    assert st.reservation is not None and st.reservation.holder is st.registrations[1]
    assert st.is_holder(NX2) and not st.is_holder(NX)


def test_conflicts_applies_the_row_rule() -> None:
    st = LuReservations("lu", loaded=True)
    assert st.free() and not st.conflicts(EXCLUSIVE, b"", NX2)
    st.registrations = [Registration(0xA, NX.initiator_name, NX.isid, 1)]
    st.reservation = Reservation(PrType.WRITE_EXCLUSIVE, st.registrations[0])
    assert not st.free()
    assert st.conflicts(EXCLUSIVE, b"", NX2) and not st.conflicts(READ, b"", NX2)
    assert not st.conflicts(EXCLUSIVE, b"", NX)  # the holder
    by_cdb = (lambda cdb: ALLOWED if cdb[:1] == b"\x01" else EXCLUSIVE)
    assert not st.conflicts(by_cdb, b"\x01", NX2) and st.conflicts(by_cdb, b"\x00", NX2)
    st.reservation = None
    assert st.spc2_reserve(NX2) is False  # registrations exist and NX2 holds nothing (SPC-4 §5.9.3)
    st.registrations = []
    assert st.spc2_reserve(NX) and st.conflicts(PR_ALLOWED, b"", NX2) and not st.conflicts(ALLOWED, b"", NX2)
    st.nexus_lost(NX)
    assert st.free()


def test_access_columns() -> None:
    assert (PR_ALLOWED.spc2, PR_ALLOWED.write_exclusive, PR_ALLOWED.exclusive_access) == (False, True, True)
    assert READ == Access(False, True, False) and EXCLUSIVE == Access(False, False, False)

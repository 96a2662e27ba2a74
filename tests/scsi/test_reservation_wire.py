"""Reservation byte layouts (scsi/reservation_wire.py): decode and encode round-trip, and any
parameter list is either decoded or refused with the SCSI answer — never anything else."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sanlab.scsi.cdb import PersistentReserveOut
from sanlab.scsi.reservation_state import PrType
from sanlab.scsi.reservation_wire import (
    FullStatusDescriptor, PrinCdb, ProutCdb, ProutParameterList, ReadFullStatusData, ReadKeysData,
    ReadReservationData, RegisterAndMoveParameterList, ReportCapabilitiesData, TransportId,
)
from sanlab.scsi.sense import FieldPointer, ScsiError, parse_sense

u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
u16 = st.integers(0, 0xFFFF)
names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.-:"), min_size=1, max_size=80)
transport_ids = st.builds(TransportId, names, st.none() | st.integers(0, (1 << 48) - 1))


@given(transport_ids)
def test_transport_id_round_trip(tid: TransportId) -> None:
    raw = tid.encode()
    assert len(raw) % 4 == 0 and len(raw) >= 24
    assert TransportId.decode(raw) == (tid, len(raw))
    assert TransportId.decode(b"xx" + raw, 2, 26) == (tid, len(raw))


def test_transport_id_bytes() -> None:
    """SPC-4 §7.6.4.6: format 01b "name,i,0xISID", NUL-terminated, padded, ADDITIONAL LENGTH >= 20."""
    raw = TransportId("iqn.x", 0x023D00000001).encode()
    assert raw[:4] == bytes([0x45, 0, 0, 24]) and raw[4:] == b"iqn.x,i,0x023d00000001\0\0"
    assert TransportId("iqn.x", None).encode() == bytes([0x05, 0, 0, 20]) + b"iqn.x" + bytes(15)


def refused(raw: bytes, origin: int = 0) -> tuple[int, int, FieldPointer | None]:
    try:
        TransportId.decode(raw, 0, origin)
    except ScsiError as exc:
        s = parse_sense(exc.sense(False))
        return s.key, s.asc_ascq, s.field_pointer
    raise AssertionError("decoded")


def test_transport_id_refusals_point_into_the_parameter_list() -> None:
    good = TransportId("iqn.x", 1).encode()
    assert refused(bytes([0x41]) + good[1:], 28) == (5, 0x2600, FieldPointer(28, 3, in_cdb=False))  # FC
    assert refused(bytes([0x85]) + good[1:], 28) == (5, 0x2600, FieldPointer(28, 7, in_cdb=False))  # format 10b
    assert refused(good[:3] + bytes([good[3] - 1]) + good[4:], 24)[2] == FieldPointer(26, None, in_cdb=False)
    no_isid = TransportId("iqn.x", None).encode()
    assert refused(bytes([0x45]) + no_isid[1:], 0)[2] == FieldPointer(4, None, in_cdb=False)
    assert refused(good[:2], 0)[:2] == (5, 0x1A00)


@given(st.sampled_from(list(PersistentReserveOut)), st.integers(0, 15), st.integers(0, 15), u32)
def test_prout_cdb_round_trip(sa: int, scope: int, prtype: int, pll: int) -> None:
    cdb = ProutCdb(sa, scope, prtype, pll)
    assert ProutCdb.parse(cdb.encode()) == cdb


@given(st.integers(0, 3), u16)
def test_prin_cdb_round_trip(sa: int, alloc: int) -> None:
    assert PrinCdb.parse(PrinCdb(sa, alloc).encode()) == PrinCdb(sa, alloc)


@given(u64, u64, st.booleans(), st.lists(transport_ids, max_size=4), st.booleans())
def test_prout_parameter_list_round_trip(key: int, sa_key: int, all_tg_pt: bool, tids: list[TransportId],
                                         aptpl: bool) -> None:
    raw_tids = b"".join(t.encode() for t in tids)
    spec_i_pt = bool(tids)
    p = ProutParameterList(key, sa_key, spec_i_pt, all_tg_pt, aptpl, raw_tids)
    raw = p.encode()
    assert ProutParameterList.decode(PersistentReserveOut.REGISTER, raw, len(raw)) == p
    assert [t for _, t in p.each_transport_id()] == tids
    assert [o for o, _ in p.each_transport_id()][:1] == ([28] if tids else [])


@given(st.binary(max_size=120), st.integers(0, 130), st.sampled_from(list(PersistentReserveOut)))
def test_any_parameter_list_is_decoded_or_refused(data: bytes, pll: int, sa: int) -> None:
    try:
        if sa == PersistentReserveOut.REGISTER_AND_MOVE:
            RegisterAndMoveParameterList.decode(data, pll).destination()
        else:
            list(ProutParameterList.decode(sa, data, pll).each_transport_id())
    except ScsiError as exc:
        assert parse_sense(exc.sense(False)).key == 0x5


@given(u64, u64, st.booleans(), st.booleans(), u16, transport_ids)
def test_register_and_move_round_trip(key: int, sa_key: int, unreg: bool, aptpl: bool, port: int,
                                      tid: TransportId) -> None:
    p = RegisterAndMoveParameterList(key, sa_key, unreg, aptpl, port, tid.encode())
    raw = p.encode()
    assert RegisterAndMoveParameterList.decode(raw, len(raw)) == p
    assert p.destination() == tid


@given(u32, st.lists(u64, max_size=8))
def test_read_keys_round_trip(gen: int, keys: list[int]) -> None:
    data = ReadKeysData(gen, tuple(keys))
    assert ReadKeysData.decode(data.encode()) == data


@given(u32, st.none() | u64, st.integers(0, 15), st.integers(0, 15))
def test_read_reservation_round_trip(gen: int, key: int | None, scope: int, prtype: int) -> None:
    data = ReadReservationData(gen) if key is None else ReadReservationData(gen, key, scope, prtype)
    assert ReadReservationData.decode(data.encode()) == data


@given(st.builds(ReportCapabilitiesData, st.booleans(), st.booleans(), st.booleans(), st.booleans(),
                 st.booleans(), st.booleans(), st.integers(0, 7), st.booleans(),
                 st.frozensets(st.sampled_from(list(PrType)))))
def test_report_capabilities_round_trip(data: ReportCapabilitiesData) -> None:
    raw = data.encode()
    assert len(raw) == 8 and ReportCapabilitiesData.decode(raw) == data


descriptors = st.builds(FullStatusDescriptor, u64, st.booleans(), st.booleans(), st.integers(0, 15),
                        st.integers(0, 15), u16, transport_ids)


@given(u32, st.lists(descriptors, max_size=4))
def test_read_full_status_round_trip(gen: int, descs: list[FullStatusDescriptor]) -> None:
    data = ReadFullStatusData(gen, tuple(descs))
    assert ReadFullStatusData.decode(data.encode()) == data

"""RESERVE/RELEASE and PERSISTENT RESERVE IN/OUT through DeviceServer.execute (SPC-2, SPC-4 §5.9)."""
from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sanlab.scsi import reservations
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import FieldPointer, parse_sense
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask
from tests.scsi.helpers import NX, NX2, TARGET, cdb10, inquiry, make_lu

GOOD = ScsiStatus.GOOD
CONFLICT = ScsiStatus.RESERVATION_CONFLICT
NX3 = Nexus(NX.initiator_name, 0x023D00000003, TARGET, 1)
"""Another initiator port of host-a (another ISID)."""

WE, EA, WE_RO, EA_RO, WE_AR, EA_AR = 1, 3, 5, 6, 7, 8
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_AND_ABORT, REGISTER_IGNORE, REGISTER_AND_MOVE = range(8)
READ_KEYS, READ_RESERVATION, REPORT_CAPABILITIES, READ_FULL_STATUS = range(4)


def prout_params(key: int = 0, sa_key: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">QQ4xBx2x", key, sa_key, flags)


def prout(sa: int, params: bytes, prtype: int = 0, scope: int = 0, pll: int | None = None) -> bytes:
    return struct.pack(">BBB2xIB", 0x5F, sa, (scope << 4) | prtype, len(params) if pll is None else pll, 0)


def prin(sa: int, alloc: int = 8192) -> bytes:
    return struct.pack(">BB5xHB", 0x5E, sa, alloc, 0)


def tid(name: str, isid: int | None = None) -> bytes:
    """An iSCSI TransportID, format 01b with an ISID, else 00b."""
    text = name if isid is None else f"{name},i,0x{isid:012x}"
    body = text.encode() + b"\0"
    body += bytes(-len(body) % 4)
    body += bytes(max(0, 20 - len(body)))
    return struct.pack(">BxH", (0x40 if isid is not None else 0) | 0x05, len(body)) + body


class Lu:
    """Drives one device server as several initiators."""

    def __init__(self, server: DeviceServer) -> None:
        self.server = server

    async def run(self, nexus: Nexus, cdb: bytes, data: bytes = b"", lun: int = 0) -> ScsiResult:
        return await self.server.execute(ScsiTask(nexus, lun, cdb, data_out=data, write_edtl=len(data)))

    async def out(self, nexus: Nexus, sa: int, key: int = 0, sa_key: int = 0, prtype: int = 0, flags: int = 0,
                  extra: bytes = b"") -> ScsiResult:
        params = prout_params(key, sa_key, flags) + extra
        return await self.run(nexus, prout(sa, params, prtype), params)

    async def keys(self, nexus: Nexus = NX) -> tuple[int, list[int]]:
        r = await self.run(nexus, prin(READ_KEYS))
        assert r.status == GOOD
        gen, n = struct.unpack_from(">II", r.data_in)
        return gen, [int.from_bytes(r.data_in[8 + i:16 + i], "big") for i in range(0, n, 8)]

    async def reservation(self, nexus: Nexus = NX) -> tuple[int, int] | None:
        r = await self.run(nexus, prin(READ_RESERVATION))
        assert r.status == GOOD
        _, n = struct.unpack_from(">II", r.data_in)
        if n == 0:
            return None
        key, scope_type = struct.unpack_from(">Q4xxBxx", r.data_in, 8)
        return key, scope_type

    async def read(self, nexus: Nexus) -> ScsiStatus:
        return (await self.run(nexus, cdb10(0x28, 1, 1))).status

    async def write(self, nexus: Nexus) -> ScsiStatus:
        return (await self.run(nexus, cdb10(0x2A, 1, 1), bytes(512))).status

    async def ua(self, nexus: Nexus) -> int | None:
        """The pending unit attention ASC/ASCQ reported to a TEST UNIT READY, if any."""
        r = await self.run(nexus, bytes(6))
        if r.status != ScsiStatus.CHECK_CONDITION:
            return None
        s = parse_sense(r.sense)
        assert s.key == 0x6
        return s.asc_ascq


def check(r: ScsiResult, key: int, asc_ascq: int, fp: FieldPointer | None = None) -> None:
    assert r.status == ScsiStatus.CHECK_CONDITION, r
    s = parse_sense(r.sense)
    assert (s.key, s.asc_ascq) == (key, asc_ascq)
    if fp is not None:
        assert s.field_pointer == fp


@pytest.fixture
async def t(tmp_path: Path) -> AsyncIterator[Lu]:
    lu = make_lu(tmp_path)
    server = await ready({0: lu}, tmp_path / "state", NX, NX2, NX3)
    yield Lu(server)
    await server.close()


# --- SPC-2 RESERVE / RELEASE ------------------------------------------------------------------------


async def test_reserve6_conflicts_for_other_nexus(t: Lu) -> None:
    assert (await t.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))).status == GOOD
    assert (await t.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))).status == GOOD  # the holder may reserve again
    assert (await t.run(NX2, bytes([0x16, 0, 0, 0, 0, 0]))).status == CONFLICT
    assert (await t.run(NX3, bytes([0x16, 0, 0, 0, 0, 0]))).status == CONFLICT  # another ISID is another nexus
    assert (await t.run(NX2, bytes([0x17, 0, 0, 0, 0, 0]))).status == GOOD  # RELEASE by a non-holder: no effect
    assert await t.read(NX2) == CONFLICT
    assert await t.write(NX2) == CONFLICT
    assert (await t.run(NX2, bytes([0x1A, 0, 0x3F, 0, 255, 0]))).status == CONFLICT  # MODE SENSE(6)
    assert (await t.run(NX2, bytes(6))).status == CONFLICT  # TEST UNIT READY (SPC-2 annex B)
    assert (await t.run(NX2, prin(READ_KEYS))).status == CONFLICT
    assert (await t.run(NX2, inquiry())).status == GOOD
    assert (await t.run(NX2, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))).status == GOOD  # REPORT LUNS
    assert (await t.run(NX2, bytes([0x03, 0, 0, 0, 252, 0]))).status == GOOD  # REQUEST SENSE
    assert (await t.run(NX2, cdb10(0x25))).status == GOOD  # READ CAPACITY(10)
    assert (await t.run(NX2, bytes([0x1E, 0, 0, 0, 0, 0]))).status == GOOD  # PREVENT ALLOW, PREVENT=0
    assert (await t.run(NX2, bytes([0x1E, 0, 0, 0, 1, 0]))).status == CONFLICT
    assert await t.read(NX) == GOOD and await t.write(NX) == GOOD
    assert (await t.run(NX, bytes([0x17, 0, 0, 0, 0, 0]))).status == GOOD
    assert await t.write(NX2) == GOOD
    assert (await t.run(NX2, bytes([0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).status == GOOD  # RESERVE(10)
    assert (await t.run(NX, bytes([0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).status == CONFLICT
    assert (await t.run(NX2, bytes([0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).status == GOOD  # RELEASE(10)
    assert await t.write(NX) == GOOD


async def test_reserve10_third_party_is_invalid(t: Lu) -> None:
    check(await t.run(NX, bytes([0x56, 0x10, 0, 5, 0, 0, 0, 0, 0, 0])), 0x5, 0x2400, FieldPointer(1, 4))
    check(await t.run(NX, bytes([0x57, 0x02, 0, 0, 0, 0, 0, 0, 0, 0])), 0x5, 0x2400, FieldPointer(1, 1))


async def test_reserve6_ends_with_lun_reset_and_nexus_loss(t: Lu) -> None:
    await t.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))
    assert t.server.lun_reset(0, NX2)
    assert (await t.ua(NX2)) == 0x2903
    assert await t.write(NX2) == GOOD
    await t.run(NX2, bytes([0x16, 0, 0, 0, 0, 0]))
    assert await t.ua(NX) == 0x2903
    assert await t.write(NX) == CONFLICT
    t.server.nexus_removed(NX2)
    assert await t.write(NX) == GOOD


async def test_reserve_and_release_with_registrations(t: Lu) -> None:
    """SPC-4 §5.9.3: RESERVE/RELEASE conflict while registrations exist, except for the PR holder."""
    assert (await t.out(NX, REGISTER, sa_key=0xA)).status == GOOD
    assert (await t.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))).status == CONFLICT  # registered, no reservation
    assert (await t.run(NX2, bytes([0x16, 0, 0, 0, 0, 0]))).status == CONFLICT
    assert (await t.out(NX, RESERVE, key=0xA, prtype=WE)).status == GOOD
    assert (await t.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))).status == GOOD  # holder: GOOD, nothing changes
    assert (await t.run(NX, bytes([0x17, 0, 0, 0, 0, 0]))).status == GOOD
    assert await t.reservation() == (0xA, WE)
    assert (await t.run(NX2, bytes([0x17, 0, 0, 0, 0, 0]))).status == CONFLICT
    assert await t.read(NX2) == GOOD  # the SPC-2 RESERVE by the holder established nothing


async def test_prout_conflicts_with_spc2_reservation(t: Lu) -> None:
    await t.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))
    assert (await t.out(NX2, REGISTER, sa_key=1)).status == CONFLICT
    assert (await t.out(NX, REGISTER, sa_key=1)).status == GOOD


# --- REGISTER, READ KEYS ----------------------------------------------------------------------------


async def test_register_read_keys_and_generation(t: Lu) -> None:
    assert await t.keys() == (0, [])
    assert (await t.out(NX, REGISTER, key=5, sa_key=1)).status == CONFLICT  # unregistered: key must be 0
    assert (await t.out(NX, REGISTER, sa_key=0)).status == GOOD  # unregistering nothing
    assert await t.keys() == (0, [])
    assert (await t.out(NX, REGISTER, sa_key=0x1111)).status == GOOD
    assert (await t.out(NX2, REGISTER_IGNORE, key=0x9999, sa_key=0x2222)).status == GOOD
    assert await t.keys() == (2, [0x1111, 0x2222])
    assert (await t.out(NX, REGISTER, key=0x1112, sa_key=0x3333)).status == CONFLICT  # wrong key
    assert (await t.out(NX, REGISTER, key=0x1111, sa_key=0x3333)).status == GOOD  # change the key
    assert (await t.out(NX2, REGISTER_IGNORE, sa_key=0x4444)).status == GOOD
    assert await t.keys(NX3) == (4, [0x3333, 0x4444])
    assert (await t.out(NX, REGISTER, key=0x3333, sa_key=0)).status == GOOD  # unregister
    assert await t.keys() == (5, [0x4444])


async def test_read_keys_truncated_keeps_additional_length(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=7)
    r = await t.run(NX, prin(READ_KEYS, alloc=8))
    assert r.status == GOOD and bytes(r.data_in) == struct.pack(">II", 1, 8)


async def test_prin_unknown_service_action(t: Lu) -> None:
    check(await t.run(NX, prin(4)), 0x5, 0x2400, FieldPointer(1, 4))
    check(await t.run(NX, prout(8, prout_params())), 0x5, 0x2400, FieldPointer(1, 4))


@pytest.mark.parametrize("pll", [0, 23, 25, 28])
async def test_parameter_list_length_error(t: Lu, pll: int) -> None:
    params = prout_params(sa_key=1) + bytes(8)
    check(await t.run(NX, prout(REGISTER, params, pll=pll), params[:pll]), 0x5, 0x1A00)


async def test_spec_i_pt_only_with_register(t: Lu) -> None:
    params = prout_params(sa_key=1, flags=0x08) + struct.pack(">I", 0)
    check(await t.run(NX, prout(REGISTER_IGNORE, params), params), 0x5, 0x2600, FieldPointer(20, 3, in_cdb=False))


async def test_insufficient_registration_resources(t: Lu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reservations, "MAX_REGISTRATIONS", 2)
    assert (await t.out(NX, REGISTER, sa_key=1)).status == GOOD
    assert (await t.out(NX2, REGISTER, sa_key=2)).status == GOOD
    check(await t.out(NX3, REGISTER, sa_key=3), 0x5, 0x5504)


# --- SPEC_I_PT, ALL_TG_PT, READ FULL STATUS, REPORT CAPABILITIES ----------------------------------------


async def test_spec_i_pt_registers_transport_ids(t: Lu) -> None:
    tids = tid(NX2.initiator_name, NX2.isid)
    r = await t.out(NX, REGISTER, sa_key=0xAB, flags=0x08, extra=struct.pack(">I", len(tids)) + tids)
    assert r.status == GOOD
    assert await t.keys() == (1, [0xAB, 0xAB])
    assert (await t.out(NX2, REGISTER, key=0xAB, sa_key=0xCD)).status == GOOD  # NX2 is registered
    # A TransportID naming an I_T nexus already registered is refused, pointing at it (byte 28).
    tids = tid(NX2.initiator_name, NX2.isid)
    check(await t.out(NX3, REGISTER, sa_key=1, flags=0x08, extra=struct.pack(">I", len(tids)) + tids),
          0x5, 0x2600, FieldPointer(28, None, in_cdb=False))
    # Another protocol's TransportID (Fibre Channel, 0h) is an invalid field.
    bad = bytes(24)
    check(await t.out(NX3, REGISTER, sa_key=1, flags=0x08, extra=struct.pack(">I", len(bad)) + bad),
          0x5, 0x2600, FieldPointer(28, 3, in_cdb=False))
    # Format 00b (a name without ISID) registers every initiator port of that name.
    tids = tid("iqn.1994-05.com.redhat:host-c")
    assert (await t.out(NX3, REGISTER, sa_key=0xEF, flags=0x08,
                        extra=struct.pack(">I", len(tids)) + tids)).status == GOOD
    host_c = Nexus("iqn.1994-05.com.redhat:host-c", 0x77, TARGET, 1)
    assert await t.ua(host_c) == 0x2900
    assert (await t.out(host_c, REGISTER, key=0xEF, sa_key=0xEF)).status == GOOD


async def test_read_full_status(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0x10, flags=0x04)  # ALL_TG_PT
    tids = tid("iqn.1994-05.com.redhat:host-c")
    await t.out(NX2, REGISTER, sa_key=0x20, flags=0x08, extra=struct.pack(">I", len(tids)) + tids)
    await t.out(NX2, RESERVE, key=0x20, prtype=EA)
    r = await t.run(NX, prin(READ_FULL_STATUS))
    assert r.status == GOOD
    data = bytes(r.data_in)
    gen, length = struct.unpack_from(">II", data)
    assert gen == 2 and length == len(data) - 8
    descs = []
    pos = 8
    while pos < len(data):
        key, flags, scope_type, rel, add = struct.unpack_from(">Q4xBB4xHI", data, pos)
        descs.append((key, flags, scope_type, rel, data[pos + 24:pos + 24 + add]))
        pos += 24 + add
    assert descs == [
        (0x10, 0x02, 0, 0, tid(NX.initiator_name, NX.isid)),
        (0x20, 0x01, EA, 1, tid(NX2.initiator_name, NX2.isid)),
        (0x20, 0x00, 0, 1, tid("iqn.1994-05.com.redhat:host-c")),
    ]
    assert data[8 + 24] == 0x45  # format 01b, iSCSI
    assert data[-len(descs[2][4])] == 0x05  # format 00b, iSCSI


async def test_report_capabilities(t: Lu) -> None:
    r = await t.run(NX, prin(REPORT_CAPABILITIES))
    assert bytes(r.data_in) == bytes([0x00, 0x08, 0x1D, 0xB0, 0xEA, 0x01, 0, 0])
    await t.out(NX, REGISTER, sa_key=1, flags=0x01)  # APTPL
    r = await t.run(NX, prin(REPORT_CAPABILITIES))
    assert bytes(r.data_in)[3] == 0xB1  # PTPL_A


# --- RESERVE, RELEASE, access by type ---------------------------------------------------------------

ACCESS = [  # type, registered other: read, write; unregistered other: read, write (libiscsi's matrix)
    (EA, False, False, False, False),
    (WE, True, False, True, False),
    (EA_RO, True, True, False, False),
    (WE_RO, True, True, True, False),
    (EA_AR, True, True, False, False),
    (WE_AR, True, True, True, False),
]


@pytest.mark.parametrize("prtype,reg_read,reg_write,unreg_read,unreg_write", ACCESS)
async def test_access_by_type(t: Lu, prtype: int, reg_read: bool, reg_write: bool, unreg_read: bool,
                              unreg_write: bool) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    assert (await t.out(NX, RESERVE, key=0xA, prtype=prtype)).status == GOOD
    assert await t.reservation() == (0 if prtype in (EA_AR, WE_AR) else 0xA, prtype)
    assert await t.read(NX) == GOOD and await t.write(NX) == GOOD
    assert (await t.read(NX2) == GOOD) is reg_read
    assert (await t.write(NX2) == GOOD) is reg_write
    assert (await t.read(NX3) == GOOD) is unreg_read  # NX3: never registered
    assert (await t.write(NX3) == GOOD) is unreg_write
    await t.out(NX2, REGISTER, key=0xB)
    assert (await t.read(NX2) == GOOD) is unreg_read
    assert (await t.write(NX2) == GOOD) is unreg_write
    # Always allowed: INQUIRY, READ CAPACITY, PERSISTENT RESERVE IN, TEST UNIT READY.
    for cdb in (inquiry(), cdb10(0x25), prin(READ_KEYS), bytes(6)):
        assert (await t.run(NX3, cdb)).status == GOOD, cdb.hex()
    assert (await t.out(NX, RELEASE, key=0xA, prtype=prtype)).status == GOOD
    assert await t.reservation() is None
    assert await t.write(NX3) == GOOD


async def test_reserve_rules(t: Lu) -> None:
    assert (await t.out(NX, RESERVE, key=0, prtype=WE)).status == CONFLICT  # unregistered
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    check(await t.out(NX, RESERVE, key=0xA, prtype=2), 0x5, 0x2400, FieldPointer(2, 3))
    r = await t.run(NX, prout(RESERVE, prout_params(0xA), WE, scope=1), prout_params(0xA))
    check(r, 0x5, 0x2400, FieldPointer(2, 7))
    assert (await t.out(NX, RESERVE, key=0xB, prtype=WE)).status == CONFLICT  # wrong key
    assert (await t.out(NX, RESERVE, key=0xA, prtype=WE)).status == GOOD
    assert (await t.out(NX, RESERVE, key=0xA, prtype=WE)).status == GOOD  # same again: GOOD
    assert (await t.out(NX, RESERVE, key=0xA, prtype=EA)).status == CONFLICT  # another type
    assert (await t.out(NX2, RESERVE, key=0xB, prtype=WE)).status == CONFLICT  # held by another
    gen, _ = await t.keys()
    assert gen == 2  # RESERVE does not count


async def test_release_rules(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    assert (await t.out(NX, RELEASE, key=0xA, prtype=WE)).status == GOOD  # nothing reserved
    await t.out(NX, RESERVE, key=0xA, prtype=WE_RO)
    assert (await t.out(NX3, RELEASE, key=0, prtype=WE_RO)).status == CONFLICT  # unregistered
    assert (await t.out(NX2, RELEASE, key=0xB, prtype=WE_RO)).status == GOOD  # not the holder: no effect
    assert await t.reservation() == (0xA, WE_RO)
    check(await t.out(NX, RELEASE, key=0xA, prtype=WE), 0x5, 0x2604)
    assert (await t.out(NX, RELEASE, key=0xA, prtype=WE_RO)).status == GOOD
    assert await t.reservation() is None
    assert await t.ua(NX2) == 0x2A04  # RESERVATIONS RELEASED to the other registrant
    assert await t.ua(NX) is None and await t.ua(NX3) is None


async def test_unregistering_the_holder(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    await t.out(NX, RESERVE, key=0xA, prtype=EA_RO)
    await t.out(NX, REGISTER, key=0xA)
    assert await t.reservation() is None
    assert await t.ua(NX2) == 0x2A04
    # An all-registrants reservation stays until the last registrant goes.
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX, RESERVE, key=0xA, prtype=WE_AR)
    await t.out(NX, REGISTER, key=0xA)
    assert await t.reservation() == (0, WE_AR)
    assert (await t.out(NX2, RELEASE, key=0xB, prtype=WE_AR)).status == GOOD
    assert await t.reservation() is None


async def test_clear(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    await t.out(NX, RESERVE, key=0xA, prtype=EA)
    assert (await t.out(NX3, CLEAR, key=0)).status == CONFLICT
    assert (await t.out(NX2, CLEAR, key=0xA)).status == CONFLICT
    assert (await t.out(NX2, CLEAR, key=0xB)).status == GOOD
    assert await t.ua(NX) == 0x2A03
    assert await t.ua(NX2) is None and await t.ua(NX3) is None
    assert await t.keys() == (3, [])
    assert await t.reservation() is None


# --- PREEMPT, PREEMPT AND ABORT, REGISTER AND MOVE ----------------------------------------------------


async def test_preempt_registration_only(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    check(await t.out(NX2, PREEMPT, key=0xB, sa_key=0, prtype=EA), 0x5, 0x2600, FieldPointer(8, None, False))
    assert (await t.out(NX2, PREEMPT, key=0xB, sa_key=0xC, prtype=EA)).status == CONFLICT  # no such key
    assert (await t.out(NX3, PREEMPT, key=0, sa_key=0xA, prtype=EA)).status == CONFLICT  # unregistered
    assert (await t.out(NX2, PREEMPT, key=0xB, sa_key=0xA, prtype=EA)).status == GOOD
    assert await t.ua(NX) == 0x2A05
    assert await t.keys() == (3, [0xB])
    assert await t.reservation() is None


async def test_preempt_holder(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    await t.out(NX3, REGISTER, sa_key=0xC)
    await t.out(NX, RESERVE, key=0xA, prtype=WE_RO)
    assert (await t.out(NX2, PREEMPT, key=0xB, sa_key=0xA, prtype=EA)).status == GOOD
    assert await t.ua(NX) == 0x2A05
    assert await t.ua(NX3) == 0x2A04  # type changed: the remaining registrant's reservation is released
    assert await t.reservation() == (0xB, EA)
    assert await t.keys() == (4, [0xB, 0xC])
    assert await t.write(NX3) == CONFLICT
    # The holder preempting itself changes the type.
    assert (await t.out(NX2, PREEMPT, key=0xB, sa_key=0xB, prtype=WE)).status == GOOD
    assert await t.reservation() == (0xB, WE)


async def test_preempt_all_registrants(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    await t.out(NX3, REGISTER, sa_key=0xC)
    await t.out(NX, RESERVE, key=0xA, prtype=EA_AR)
    assert (await t.out(NX2, PREEMPT, key=0xB, sa_key=0, prtype=EA)).status == GOOD
    assert await t.ua(NX) == 0x2A05 and await t.ua(NX3) == 0x2A05
    assert await t.keys() == (4, [0xB])
    assert await t.reservation() == (0xB, EA)


async def test_preempt_and_abort_calls_the_transport(t: Lu) -> None:
    aborted: list[tuple[int, list[Nexus]]] = []

    async def on_abort(lun: int, nexuses: list[Nexus]) -> None:
        aborted.append((lun, nexuses))

    t.server.on_abort = on_abort
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX3, REGISTER, sa_key=0xA)
    await t.out(NX2, REGISTER, sa_key=0xB)
    await t.out(NX, RESERVE, key=0xA, prtype=EA)
    assert (await t.out(NX2, PREEMPT_AND_ABORT, key=0xB, sa_key=0xA, prtype=EA)).status == GOOD
    assert aborted == [(0, [NX, NX3])]
    assert await t.reservation(NX2) == (0xB, EA)


async def test_register_and_move(t: Lu) -> None:
    def move(key: int, sa_key: int, unreg: bool, rel: int, tids: bytes) -> bytes:
        return struct.pack(">QQxBHI", key, sa_key, 0x02 if unreg else 0, rel, len(tids)) + tids

    await t.out(NX, REGISTER, sa_key=0xA)
    dest = tid(NX2.initiator_name, NX2.isid)
    params = move(0xA, 0xB, True, 1, dest)
    assert (await t.run(NX, prout(REGISTER_AND_MOVE, params, WE), params)).status == CONFLICT  # no reservation
    await t.out(NX, RESERVE, key=0xA, prtype=WE)
    bad = move(0xA, 0, True, 1, dest)
    check(await t.run(NX, prout(REGISTER_AND_MOVE, bad, WE), bad), 0x5, 0x2600, FieldPointer(8, None, False))
    bad = move(0xA, 0xB, True, 9, dest)
    check(await t.run(NX, prout(REGISTER_AND_MOVE, bad, WE), bad), 0x5, 0x2600, FieldPointer(18, None, False))
    own = move(0xA, 0xB, True, 1, tid(NX.initiator_name, NX.isid))
    check(await t.run(NX, prout(REGISTER_AND_MOVE, own, WE), own), 0x5, 0x2600, FieldPointer(24, None, False))
    check(await t.run(NX, prout(REGISTER_AND_MOVE, params, WE, pll=30), params), 0x5, 0x1A00)
    assert (await t.run(NX, prout(REGISTER_AND_MOVE, params, WE), params)).status == GOOD
    assert await t.reservation() == (0xB, WE)
    assert await t.keys() == (2, [0xB])  # REGISTER and REGISTER AND MOVE count, RESERVE does not
    assert await t.write(NX2) == GOOD and await t.write(NX) == CONFLICT


# --- the conflict table -----------------------------------------------------------------------------


@pytest.mark.parametrize("cdb,we,ea", [
    (bytes([0x1A, 0, 0x3F, 0, 255, 0]), True, False),  # MODE SENSE(6): ALLOW COMMANDS 011b
    (bytes([0x15, 0x10, 0, 0, 0, 0]), False, False),  # MODE SELECT(6)
    (cdb10(0x35), False, False),  # SYNCHRONIZE CACHE(10)
    (cdb10(0x2F, 0, 1), True, False),  # VERIFY(10)
    (bytes([0x1B, 0, 0, 0, 1, 0]), True, True),  # START STOP UNIT START=1
    (bytes([0x1B, 0, 0, 0, 0, 0]), False, False),  # START STOP UNIT START=0
    (bytes([0x4D, 0, 0, 0, 0, 0, 0, 0, 255, 0]), True, True),  # LOG SENSE
    (bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2), True, True),  # READ CAPACITY(16)
])
async def test_conflict_table(t: Lu, cdb: bytes, we: bool, ea: bool) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    for prtype, allowed in ((WE, we), (EA, ea)):
        await t.out(NX, RESERVE, key=0xA, prtype=prtype)
        status = (await t.run(NX2, cdb)).status
        assert (status != CONFLICT) is allowed, (prtype, cdb.hex(), status)
        assert (await t.run(NX, cdb)).status != CONFLICT
        await t.out(NX, RELEASE, key=0xA, prtype=prtype)


# --- resets and persistence through power loss (APTPL) -------------------------------------------------


async def test_persistent_reservations_survive_resets_and_nexus_loss(t: Lu) -> None:
    await t.out(NX, REGISTER, sa_key=0xA)
    await t.out(NX, RESERVE, key=0xA, prtype=EA)
    t.server.lun_reset(0, NX)
    t.server.nexus_removed(NX)
    t.server.target_reset(NX2, cold=False)
    assert await t.ua(NX2) == 0x2903
    assert await t.reservation(NX2) == (0xA, EA)
    t.server.target_reset(NX2, cold=True)  # a power cycle: without APTPL nothing is left
    assert await t.ua(NX2) == 0x2901
    assert await t.reservation(NX2) is None
    assert await t.keys(NX2) == (0, [])


async def ready(luns: dict[int, LogicalUnit], state_dir: Path | None, *nexuses: Nexus) -> DeviceServer:
    """A device server on ``state_dir`` whose power-on unit attentions are consumed for ``nexuses``."""
    server = DeviceServer(TARGET, luns, state_dir=state_dir)
    for nx in nexuses:
        server.nexus_added(nx)
        while (await server.execute(ScsiTask(nx, 0, bytes(6)))).status == ScsiStatus.CHECK_CONDITION:
            pass
    return server


async def _restart(tmp_path: Path, state_dir: Path | None) -> tuple[Lu, LogicalUnit]:
    lu = make_lu(tmp_path)  # same file, a new LogicalUnit: as after a restart
    return Lu(await ready({0: lu}, state_dir, NX, NX2)), lu


async def test_aptpl_survives_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    a, _ = await _restart(tmp_path, state_dir)
    assert (await a.out(NX, REGISTER, sa_key=0xA, flags=0x01)).status == GOOD  # APTPL
    await a.out(NX2, REGISTER, sa_key=0xB, flags=0x01)
    await a.out(NX, RESERVE, key=0xA, prtype=WE_RO)
    await a.run(NX, bytes([0x16, 0, 0, 0, 0, 0]))  # SPC-2 reservations never survive (no effect here anyway)
    await a.server.close()

    b, _ = await _restart(tmp_path, state_dir)
    assert (await b.keys())[1] == [0xA, 0xB]
    assert await b.reservation() == (0xA, WE_RO)
    assert await b.write(NX2) == GOOD
    other = Nexus("iqn.1994-05.com.redhat:host-z", 1, TARGET, 1)
    assert await b.ua(other) == 0x2900
    assert await b.write(other) == CONFLICT
    r = await b.run(NX, prin(REPORT_CAPABILITIES))
    assert r.data_in[3] & 0x01  # PTPL_A
    # APTPL=0 in the next REGISTER: the state no longer survives.
    assert (await b.out(NX2, REGISTER, key=0xB, sa_key=0xC)).status == GOOD
    await b.server.close()

    c, _ = await _restart(tmp_path, state_dir)
    assert await c.keys() == (0, [])
    assert await c.ua(other) == 0x2900
    assert await c.write(other) == GOOD
    await c.server.close()


async def test_without_state_dir_nothing_survives(tmp_path: Path) -> None:
    a, _ = await _restart(tmp_path, None)
    await a.out(NX, REGISTER, sa_key=0xA, flags=0x01)
    await a.server.close()
    b, _ = await _restart(tmp_path, None)
    assert await b.keys() == (0, [])
    await b.server.close()

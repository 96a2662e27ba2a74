"""Dispatch order, unit attentions per I_T nexus, resets, errors (SAM-5 §5.14, SPC-4, tgt's order)."""
from __future__ import annotations

from pathlib import Path


from sanlab.scsi.cdb import Opcode
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.kinds import DISK, SPC
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.sense import parse_sense
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask
from tests.scsi.helpers import NX, NX2, TARGET, FakeVolume, cdb10, inquiry, make_lu, ready_server, runner

TUR = bytes(6)


def sense_of(res: ScsiResult) -> tuple[int, int]:
    assert res.status == ScsiStatus.CHECK_CONDITION
    s = parse_sense(res.sense)
    return s.key, s.asc_ascq


async def tur(ds: DeviceServer, nexus: Nexus = NX, lun: int = 0) -> ScsiResult:
    return await ds.execute(ScsiTask(nexus, lun, TUR))


def test_table_rows_are_complete() -> None:
    for op, spec in DISK.table.items():
        assert (spec.handler is None) == bool(spec.service_actions), spec.name
        for sa in spec.service_actions.values():
            assert sa.handler is not None
        assert spec.data_out or not spec.writes, spec.name  # a command that stores data takes Data-Out
    for table in (DISK.table, SPC):
        assert {op for op, s in table.items() if s.any_lun} == {Opcode.INQUIRY, Opcode.REPORT_LUNS,
                                                                Opcode.REQUEST_SENSE}


async def test_ua_on_first_command_then_cleared(tmp_path: Path) -> None:
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path)})
    ds.nexus_added(NX)
    res = await tur(ds)
    assert res.sense == bytes.fromhex("70 00 06 00000000 0a 00000000 29 00 00 000000")
    assert (await tur(ds)).status == ScsiStatus.GOOD


async def test_ua_without_nexus_added(tmp_path: Path) -> None:
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path)})
    assert sense_of(await tur(ds)) == (6, 0x2900)
    assert (await tur(ds)).status == ScsiStatus.GOOD


async def test_ua_is_per_nexus_and_per_lu(tmp_path: Path) -> None:
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path), 1: make_lu(tmp_path, "b", lun=1)})
    ds.nexus_added(NX)
    ds.nexus_added(NX2)
    assert sense_of(await tur(ds, NX)) == (6, 0x2900)
    assert (await tur(ds, NX)).status == ScsiStatus.GOOD
    assert sense_of(await tur(ds, NX2)) == (6, 0x2900)  # NX clearing its UA left NX2's alone
    assert sense_of(await tur(ds, NX, lun=1)) == (6, 0x2900)  # and LU 1's


async def test_inquiry_report_luns_request_sense_do_not_consume_ua(tmp_path: Path) -> None:
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path)})
    ds.nexus_added(NX)
    run = runner(ds)
    assert (await run(inquiry())).status == ScsiStatus.GOOD
    assert (await run(bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]))).status == ScsiStatus.GOOD
    assert sense_of(await run(bytes([0x1A, 0, 0x3F, 0, 255, 0]))) == (6, 0x2900)  # MODE SENSE does


async def test_ua_precedes_unknown_opcode_and_errors(tmp_path: Path) -> None:
    ds = DeviceServer(TARGET, {0: make_lu(tmp_path)})
    ds.nexus_added(NX)
    run = runner(ds)
    assert sense_of(await run(bytes([0xC7]) + bytes(15))) == (6, 0x2900)
    assert sense_of(await run(bytes([0xC7]) + bytes(15))) == (5, 0x2000)


async def test_lun_reset_ua_for_every_nexus(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path), 1: make_lu(tmp_path, "b", lun=1)}, NX, NX2)
    assert ds.lun_reset(0, NX) is True
    assert sense_of(await tur(ds, NX2)) == (6, 0x2903)
    assert (await tur(ds, NX2)).status == ScsiStatus.GOOD
    assert sense_of(await tur(ds, NX)) == (6, 0x2903)  # the issuer too
    assert (await tur(ds, NX, lun=1)).status == ScsiStatus.GOOD  # other LUs untouched
    assert ds.lun_reset(5, NX) is False


async def test_lun_reset_replaces_pending_uas(tmp_path: Path) -> None:
    lu = make_lu(tmp_path)
    ds = DeviceServer(TARGET, {0: lu})
    ds.nexus_added(NX)
    lu.add_ua(0x2A09)
    ds.lun_reset(0, NX2)
    assert sense_of(await tur(ds)) == (6, 0x2903)
    assert (await tur(ds)).status == ScsiStatus.GOOD


async def test_ua_queue_order(tmp_path: Path) -> None:
    lu = make_lu(tmp_path)
    ds = DeviceServer(TARGET, {0: lu})
    ds.nexus_added(NX)
    lu.add_ua(0x2A09)
    lu.add_ua(0x2A09)  # not queued twice
    assert [sense_of(await tur(ds))[1] for _ in range(2)] == [0x2900, 0x2A09]
    assert (await tur(ds)).status == ScsiStatus.GOOD


async def test_target_reset(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path)}, NX, NX2)
    ds.target_reset(NX, cold=False)
    assert sense_of(await tur(ds, NX)) == (6, 0x2903)
    assert sense_of(await tur(ds, NX2)) == (6, 0x2903)
    ds.target_reset(NX, cold=True)
    assert sense_of(await tur(ds, NX2)) == (6, 0x2901)


async def test_nexus_removed_forgets_state(tmp_path: Path) -> None:
    lu = make_lu(tmp_path)
    ds = await ready_server({0: lu}, NX)
    lu.set_sense(NX, b"x" * 18)
    ds.nexus_removed(NX)
    assert lu.nexuses == [] and lu.take_sense(NX) is None
    ds.nexus_added(NX)  # a new login starts over with the power-on UA
    assert sense_of(await tur(ds)) == (6, 0x2900)


async def test_missing_lun(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path)})
    for cdb in (TUR, cdb10(Opcode.READ_10, 0, 1), bytes([0xC7]) + bytes(15)):
        res = await ds.execute(ScsiTask(NX, 3, cdb))
        assert res.sense == bytes.fromhex("70 00 05 00000000 0a 00000000 25 00 00 000000")
    assert sense_of(await ds.execute(ScsiTask(NX, -1, TUR))) == (5, 0x2500)
    assert ds.has_lun(0) and not ds.has_lun(3) and list(ds.luns) == [0]


async def test_unknown_opcode(tmp_path: Path) -> None:
    run = runner(await ready_server({0: make_lu(tmp_path)}))
    for op in (0xC7, 0x02, 0xD0):
        res = await run(bytes([op]) + bytes(15))
        assert sense_of(res) == (5, 0x2000)
        assert parse_sense(res.sense).sks == bytes([0xC0, 0, 0])
    assert sense_of(await run(b"")) == (5, 0x2000)


async def test_naca_rejected(tmp_path: Path) -> None:
    run = runner(await ready_server({0: make_lu(tmp_path)}))
    res = await run(bytes([0, 0, 0, 0, 0, 0x04]))
    assert sense_of(res) == (5, 0x2400)
    assert parse_sense(res.sense).sks == bytes([0xCA, 0, 5])
    assert sense_of(await run(cdb10(Opcode.READ_10, 0, 1, control=0x04))) == (5, 0x2400)


async def test_descriptor_sense_when_d_sense(tmp_path: Path) -> None:
    lu = make_lu(tmp_path)
    ds = DeviceServer(TARGET, {0: lu})
    lu.d_sense = True
    ds.nexus_added(NX)
    res = await tur(ds)
    assert res.sense == bytes.fromhex("72 06 29 00 000000 00")
    res = await runner(ds)(cdb10(Opcode.READ_10, 1 << 20, 1))
    assert res.sense == bytes.fromhex("72 05 21 00 000000 00")


async def test_close_closes_every_volume() -> None:
    vols = [FakeVolume(10), FakeVolume(10)]
    ds = DeviceServer(TARGET, {n: LogicalUnit(v, LuConfig.for_lun(TARGET, n)) for n, v in enumerate(vols)})
    await ds.close()
    assert all(v.closed for v in vols)


async def test_tasks_on_two_luns(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path), 7: make_lu(tmp_path, "seven", lun=7)})
    data = bytes(range(256)) * 2
    w = await ds.execute(ScsiTask(NX, 7, cdb10(Opcode.WRITE_10, 3, 1), data_out=data))
    assert w.status == ScsiStatus.GOOD
    assert (await ds.execute(ScsiTask(NX, 7, cdb10(Opcode.READ_10, 3, 1)))).data_in == data
    assert (await ds.execute(ScsiTask(NX, 0, cdb10(Opcode.READ_10, 3, 1)))).data_in == bytes(512)

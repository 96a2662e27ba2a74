"""START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, READ DEFECT DATA (SBC-3 §5.14, §5.17, §5.18, §5.25)."""
from __future__ import annotations

from pathlib import Path

from sanlab.scsi.task import ScsiStatus
from tests.scsi.helpers import NX, NX2, Run, cdb10, make_lu, ready_server, runner


def fixed(key: int, asc_ascq: int, sks: bytes = bytes(3)) -> bytes:
    return bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc_ascq >> 8, asc_ascq & 0xFF, 0]) + sks


def ssu(loej: bool, start: bool, pc: int = 0) -> bytes:
    return bytes([0x1B, 0, 0, 0, (pc << 4) | (0x02 if loej else 0) | (0x01 if start else 0), 0])


def prevent(on: bool) -> bytes:
    return bytes([0x1E, 0, 0, 0, 1 if on else 0, 0])


async def removable(tmp_path: Path) -> Run:
    return runner(await ready_server({0: make_lu(tmp_path, removable=True)}, NX, NX2))


async def test_eject_and_load(tmp_path: Path) -> None:
    run = await removable(tmp_path)
    assert (await run(ssu(True, False))).status == ScsiStatus.GOOD
    assert (await run(bytes(6))).sense == fixed(0x02, 0x3A00)
    assert (await run(cdb10(0x28, 0, 1))).sense == fixed(0x02, 0x3A00)
    assert (await run(cdb10(0x25))).sense == fixed(0x02, 0x3A00)
    assert (await run(bytes([0x12, 0, 0, 0, 36, 0]))).status == ScsiStatus.GOOD
    assert (await run(ssu(True, True))).status == ScsiStatus.GOOD
    assert (await run(bytes(6))).status == ScsiStatus.GOOD


async def test_power_condition_and_no_loej_keep_medium(tmp_path: Path) -> None:
    run = await removable(tmp_path)
    for cdb in (ssu(False, False), ssu(True, False, pc=3), ssu(False, True)):
        assert (await run(cdb)).status == ScsiStatus.GOOD
        assert (await run(bytes(6))).status == ScsiStatus.GOOD


async def test_prevent_blocks_eject_for_every_nexus(tmp_path: Path) -> None:
    run = await removable(tmp_path)
    assert (await run(prevent(True))).status == ScsiStatus.GOOD
    assert (await run(ssu(True, False))).sense == fixed(0x05, 0x5302)
    assert (await run(ssu(True, False), nexus=NX2)).sense == fixed(0x05, 0x5302)
    assert (await run(prevent(False))).status == ScsiStatus.GOOD
    assert (await run(ssu(True, False))).status == ScsiStatus.GOOD


async def test_lun_reset_and_nexus_loss_end_prevention(tmp_path: Path) -> None:
    lu = make_lu(tmp_path, removable=True)
    server = await ready_server({0: lu}, NX, NX2)
    run = runner(server)
    await run(prevent(True))
    server.lun_reset(0, NX)
    assert not lu.prevent
    await run(prevent(True), nexus=NX2)
    server.nexus_removed(NX2)
    assert not lu.prevent


async def test_fixed_lu_refuses_loej_and_bad_prevent(run: Run) -> None:
    assert (await run(ssu(True, False))).sense == fixed(0x05, 0x2400, bytes([0xC9, 0, 4]))
    assert (await run(bytes([0x1E, 0, 0, 0, 2, 0]))).sense == fixed(0x05, 0x2400, bytes([0xC9, 0, 4]))


async def test_read_defect_data(run: Run) -> None:
    res = await run(bytes([0x37, 0, 0x18 | 0x03, 0, 0, 0, 0, 0, 32, 0]))
    assert res.data_in == bytes([0, 0x1B, 0, 0])
    res = await run(bytes([0xB7, 0x08 | 0x04, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]))
    assert res.data_in == bytes([0, 0x0C, 0, 0, 0, 0, 0, 0])
    assert (await run(bytes([0x37, 0, 0x01, 0, 0, 0, 0, 0, 32, 0]))).sense == fixed(0x05, 0x2400,
                                                                                   bytes([0xCA, 0, 2]))

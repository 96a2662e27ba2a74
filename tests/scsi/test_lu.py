"""Capacity change of a logical unit: CAPACITY DATA HAS CHANGED for every I_T nexus (SBC-3 §4.5, SAM-5 §5.14)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask
from sanlab.storage.volume import VolumeError
from tests.scsi.helpers import BLOCKS, NX, NX2, TARGET, FakeVolume, cdb16, make_lu, ready_server

TUR = bytes(6)
RC10 = bytes([0x25]) + bytes(9)
RC16 = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)
CAPACITY_CHANGED_FIXED = bytes.fromhex("70 00 06 00000000 0a 00000000 2a 09 00 000000")
"""Fixed format (70h), sense key 6 UNIT ATTENTION, additional length 10, ASC 2Ah ASCQ 09h."""
NX3 = Nexus("iqn.1994-05.com.redhat:host-c", 0x023D00000003, TARGET, 1)


async def do(ds: DeviceServer, cdb: bytes, nexus: Nexus = NX, lun: int = 0, data_out: bytes = b"") -> ScsiResult:
    return await ds.execute(ScsiTask(nexus, lun, cdb, data_out=data_out, write_edtl=len(data_out)))


def last_lba_16(res: ScsiResult) -> int:
    assert res.status == ScsiStatus.GOOD, res
    return int(struct.unpack_from(">Q", res.data_in)[0])


async def test_grow_sets_capacity_data_has_changed_for_every_nexus(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path), 1: make_lu(tmp_path, "other", lun=1)}, NX, NX2)
    before = os.urandom(512)
    assert (await do(ds, cdb16(Opcode.WRITE_16, BLOCKS - 1, 1), data_out=before)).status == ScsiStatus.GOOD

    assert await ds.resize_lun(0, 4 * BLOCKS) is True

    # NX's next command, whatever it is, reports the unit attention — in exactly these bytes.
    res = await do(ds, TUR)
    assert res.status == ScsiStatus.CHECK_CONDITION and res.sense == CAPACITY_CHANGED_FIXED
    assert (await do(ds, TUR)).status == ScsiStatus.GOOD  # reported once, then cleared
    rc10 = await do(ds, RC10)
    assert rc10.status == ScsiStatus.GOOD and rc10.data_in == struct.pack(">II", 4 * BLOCKS - 1, 512)
    assert last_lba_16(await do(ds, RC16)) == 4 * BLOCKS - 1
    # NX2 gets its own: here its first command is READ CAPACITY itself, which the UA preempts.
    res = await do(ds, RC16, NX2)
    assert res.sense == CAPACITY_CHANGED_FIXED and res.data_in == b""
    assert last_lba_16(await do(ds, RC16, NX2)) == 4 * BLOCKS - 1
    # The other LU's capacity did not change: no unit attention there.
    assert (await do(ds, TUR, NX, lun=1)).status == ScsiStatus.GOOD
    assert (await do(ds, TUR, NX2, lun=1)).status == ScsiStatus.GOOD
    # Old data is intact; the new last LBA can be written and read back.
    assert (await do(ds, cdb16(Opcode.READ_16, BLOCKS - 1, 1))).data_in == before
    assert (await do(ds, cdb16(Opcode.READ_16, BLOCKS, 8))).data_in == bytes(8 * 512)
    after = os.urandom(512)
    assert (await do(ds, cdb16(Opcode.WRITE_16, 4 * BLOCKS - 1, 1), data_out=after)).status == ScsiStatus.GOOD
    assert (await do(ds, cdb16(Opcode.READ_16, 4 * BLOCKS - 1, 1))).data_in == after
    res = await do(ds, cdb16(Opcode.READ_16, 4 * BLOCKS, 1))
    assert res.status == ScsiStatus.CHECK_CONDITION and res.sense is not None
    assert res.sense[2] == 0x05 and res.sense[12:14] == b"\x21\x00"  # LBA OUT OF RANGE past the new end
    await ds.close()


async def test_nexus_that_logs_in_after_the_grow_sees_only_power_on(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path)}, NX)
    await ds.resize_lun(0, 2 * BLOCKS)
    ds.nexus_added(NX3)  # never saw the old capacity: nothing changed for it
    res = await do(ds, TUR, NX3)
    assert res.sense is not None and res.sense[12:14] == b"\x29\x00"
    assert (await do(ds, TUR, NX3)).status == ScsiStatus.GOOD
    await ds.close()


async def test_capacity_ua_in_descriptor_format_when_d_sense(tmp_path: Path) -> None:
    lu = make_lu(tmp_path)
    ds = await ready_server({0: lu}, NX)
    lu.d_sense = True  # Control mode page D_SENSE (SPC-4 §7.5.8)
    await ds.resize_lun(0, 2 * BLOCKS)
    assert (await do(ds, TUR)).sense == bytes.fromhex("72 06 2a 09 000000 00")
    await ds.close()


async def test_refused_resizes_change_nothing(tmp_path: Path) -> None:
    ds = await ready_server({0: make_lu(tmp_path)}, NX)
    with pytest.raises(ValueError, match="only grows"):
        await ds.resize_lun(0, BLOCKS - 1)  # shrinking
    assert await ds.resize_lun(0, BLOCKS) is False  # the same size: no change, no unit attention
    with pytest.raises(KeyError, match="no LUN 3"):
        await ds.resize_lun(3, 2 * BLOCKS)
    assert (await do(ds, TUR)).status == ScsiStatus.GOOD
    assert last_lba_16(await do(ds, RC16)) == BLOCKS - 1
    await ds.close()


async def test_volume_that_cannot_grow_refuses_without_unit_attention() -> None:
    vol = FakeVolume(100)
    lu = LogicalUnit(vol, LuConfig.for_lun(TARGET, 0))
    ds = await ready_server({0: lu}, NX)
    with pytest.raises(VolumeError, match="cannot change its capacity"):
        await ds.resize_lun(0, 200)
    assert lu.num_blocks == 100 and not lu.pending_ua(NX)

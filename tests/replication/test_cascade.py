"""A relay's virtual volumes (replication/cascade.py) and the MARK / READ JOURNAL POSITION codec."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sanlab.replication import protocol as proto
from sanlab.replication.cascade import RECEIVING_VVOL, Relay, RelayFan
from sanlab.scsi.sense import ScsiError
from sanlab.storage.file_volume import FileVolume


def test_relay_maps_receiving_and_sending_virtual_volumes_over_one_real_volume(tmp_path: Path) -> None:
    async def go() -> None:
        real = FileVolume(str(tmp_path / "r.img"), 1 << 20)
        relay = Relay(None, "iqn.x:b/0", real)  # type: ignore[arg-type]
        out1, out2 = relay.sending_volume("bc"), relay.sending_volume("bd")
        assert relay.sending == {"bc": 2, "bd": 3}
        rows = sorted(relay.tables.vr.values(), key=lambda r: r.vvol)
        assert [(r.vvol, r.real, r.real_start, r.size) for r in rows] == [
            (1, "iqn.x:b/0", 0, 2048), (2, "iqn.x:b/0", 0, 2048), (3, "iqn.x:b/0", 0, 2048)]
        assert relay.tables.sharing_vvols(RECEIVING_VVOL) == [2, 3]
        fan = RelayFan(relay.tables.virtual_volume(RECEIVING_VVOL), lambda: [out1, out2])
        await fan.write(10, b"\x5a" * 1024)
        assert await real.read(10, 2) == b"\x5a" * 1024  # through the sending volumes to R
        assert await fan.read(10, 2) == await out2.read(10, 2) == b"\x5a" * 1024
        relay.drop_sender("bc")
        assert sorted(relay.tables.vr) == [1, 3] and relay.sending == {"bd": 3}
        assert relay.sending_volume("bx") is not None and relay.sending["bx"] == 4  # numbers are not reused
        lone = RelayFan(relay.tables.virtual_volume(RECEIVING_VVOL), lambda: [])
        await lone.write(0, b"\x01" * 512)  # no sender: the receiving volume writes R itself
        assert await real.read(0, 1) == b"\x01" * 512
        await real.close()
    asyncio.run(go())


def test_mark_and_journal_position_round_trip() -> None:
    cdb = proto.MarkCdb(0x1122334455667788).encode()
    assert len(cdb) == 16 and cdb[0] == 0xC8
    assert proto.MarkCdb.decode(cdb) == proto.MarkCdb(0x1122334455667788)
    assert proto.decode_marker(proto.encode_marker(1764770000123)) == 1764770000123
    with pytest.raises(ScsiError):
        proto.decode_marker(b"\0" * 7)
    bad = bytearray(cdb)
    bad[13] = 9  # PARAMETER LIST LENGTH not 8
    with pytest.raises(ScsiError):
        proto.MarkCdb.decode(bytes(bad))
    pos = proto.ReadJournalPositionCdb(42).encode()
    assert pos[0] == 0xC9 and proto.ReadJournalPositionCdb.decode(pos) == proto.ReadJournalPositionCdb(42, 16)
    assert proto.decode_position(proto.encode_position(7, 99)) == (7, 99)
    with pytest.raises(proto.MalformedReply):
        proto.decode_position(b"\0" * 15)

"""Online rearrangement under concurrent I/O, and the automatic policy."""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from sanlab.storage.ldev import LdevAllocator, LogicalVolume
from sanlab.storage.raid import Drive, RaidGroup
from sanlab.storage.tiering import GroupInfo, LdevLoad, plan_moves
from sanlab.tools.admin import Admin

LDEV = 64 * 1024


async def test_rearrangement_under_concurrent_io_loses_nothing(tmp_path: Path) -> None:
    groups = {"rg5": RaidGroup(5, [Drive(str(tmp_path / f"a{i}.img"), 256 * 1024) for i in range(3)], 4096),
              "rg1": RaidGroup(1, [Drive(str(tmp_path / f"b{i}.img"), 256 * 1024) for i in range(2)], 4096)}
    alloc = LdevAllocator(LDEV)
    for n, g in groups.items():
        alloc.add_group(n, g.capacity)
    ldevs = alloc.allocate(4 * LDEV, ["rg5"])
    vol = LogicalVolume(ldevs, groups, 512)  # type: ignore[arg-type]
    model = bytearray(os.urandom(vol.num_blocks * 512))
    await vol.write(0, model)
    stop = False
    errors: list[str] = []

    async def host(seed: int) -> None:
        rng = random.Random(seed)
        while not stop:
            lba = rng.randrange(vol.num_blocks - 16)
            n = rng.randint(1, 16)
            if rng.random() < 0.6:
                data = os.urandom(n * 512)
                await vol.write(lba, data)
                model[lba * 512:(lba + n) * 512] = data
            else:
                got = await vol.read(lba, n)
                if got != bytes(model[lba * 512:(lba + n) * 512]):
                    errors.append(f"read {lba}+{n} differs")
            await asyncio.sleep(0)

    hosts = [asyncio.create_task(host(s)) for s in range(4)]
    dest = alloc.allocate(LDEV, ["rg1"])[0]
    seen: list[float] = []
    old = await vol.rearrange(1, dest, step=4096, progress=seen.append)
    stop = True
    await asyncio.gather(*hosts)
    assert not errors, errors[:5]
    assert seen[-1] == 1.0 and len(seen) == LDEV // 4096
    assert vol.ldevs[1] == dest and old.group == "rg5" and not vol.moving
    assert await vol.read(0, vol.num_blocks) == bytes(model)
    # The moved range now really lives on the mirrored group.
    assert await groups["rg1"].read(dest.offset, LDEV) == bytes(model[LDEV:2 * LDEV])
    for g in groups.values():
        await g.close()


def test_policy_moves_hot_random_ldevs_to_mirrors() -> None:
    groups = [GroupInfo("r5", 5, 10), GroupInfo("r10", 10, 3)]
    loads = [LdevLoad("v", 0, "r5", 500.0, 0.0, 0.3), LdevLoad("v", 1, "r5", 5.0, 300.0, 0.3),
             LdevLoad("v", 2, "r5", 400.0, 0.0, 0.2)]
    moves = plan_moves(loads, groups)
    assert [(m.volume, m.index, m.dest) for m in moves][:1] == [("v", 0, "r10")]
    assert all(m.index != 1 for m in moves)  # sequential work stays on parity


def test_policy_levels_utilization_and_respects_free_space() -> None:
    groups = [GroupInfo("a", 5, 5), GroupInfo("b", 5, 5)]
    loads = [LdevLoad("v", 0, "a", 1.0, 10.0, 0.5), LdevLoad("v", 1, "a", 1.0, 10.0, 0.3),
             LdevLoad("w", 0, "b", 1.0, 1.0, 0.05)]
    (m,) = plan_moves(loads, groups)
    assert (m.source, m.dest) == ("a", "b") and m.index in (0, 1)
    assert plan_moves(loads, [GroupInfo("a", 5, 5), GroupInfo("b", 5, 0)]) == []
    calm = [LdevLoad("v", 0, "a", 1.0, 1.0, 0.1), LdevLoad("w", 0, "b", 1.0, 1.0, 0.05)]
    assert plan_moves(calm, groups) == []


async def test_admin_tiering_round_moves_and_persists(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    await admin.raid_ops.create_raid_group("p", 5, ["p0.img", "p1.img", "p2.img"], 1 << 20, 4096, ldev_size=128 * 1024)
    await admin.raid_ops.create_raid_group("m", 1, ["m0.img", "m1.img"], 1 << 20, 4096)
    await admin.volume_ops.create_volume("v", 512 * 1024, groups=["p"])
    vol = admin.volumes["v"]
    admin.tiering_ops.ldev_loads(1.0)
    rng = random.Random(1)
    for _ in range(200):  # random 4 KiB writes on LDEV 0
        await vol.write(rng.randrange(0, 256 - 8), os.urandom(4096))
    result = await admin.tiering_ops.tiering_round(1.0)
    assert [(m["volume"], m["index"]) for m in result["moves"]][:1] == [("v", 0)]
    assert vol.ldevs[0].group == "m"
    await admin.close()
    again = Admin(tmp_path)
    await again.load()
    assert again.volumes["v"].ldevs[0].group == "m"
    await again.close()

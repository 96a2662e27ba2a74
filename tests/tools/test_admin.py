"""Management operations: catalog transactions, restart, the socket and the CLI on a running array."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from structlog.testing import capture_logs

from sanlab.storage.file_volume import FileVolume
from sanlab.tools.admin import Admin, AdminError
from tests.conftest import TARGET, SanlabProcess, need, run

MiB = 1 << 20


async def _build(admin: Admin) -> None:
    (admin.data_dir / "d").mkdir(exist_ok=True)  # create-raid-group makes no directories
    await admin.raid_ops.create_raid_group("rg5", 5, ["d/a.img", "d/b.img", "d/c.img"], 16 * MiB, 64 * 1024,
                                  ldev_size=4 * MiB)
    await admin.raid_ops.create_raid_group("rg1", 1, ["d/m0.img", "d/m1.img"], 16 * MiB, 64 * 1024)
    await admin.volume_ops.create_volume("vol0", 24 * MiB)
    await admin.volume_ops.create_vvol(1, "vol0", 0, 30000)
    await admin.volume_ops.create_vvol(2, "vol0", 20000, 10000, multiple_virtualization=True)  # overlaps #1, on purpose
    await admin.volume_ops.create_lu("lu-a", 1, 100, 20000)


async def test_tables_persist_and_changes_are_all_or_nothing(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    await _build(admin)
    view = admin.show()
    assert [g["name"] for g in view["raid_groups"]] == ["rg1", "rg5"]
    (vol,) = view["volumes"]
    assert len(vol["ldevs"]) == 6 and {l.split(":")[0] for l in vol["ldevs"]} == {"rg1", "rg5"}
    assert [r["multiple_virtualization"] for r in view["vr_table"]] == [True, True]
    free_before = {g["name"]: g["ldevs_free"] for g in view["raid_groups"]}
    with pytest.raises(AdminError):
        await admin.volume_ops.create_volume("vol0", 4 * MiB)  # exists: nothing allocated
    with pytest.raises(AdminError):
        await admin.volume_ops.create_volume("vol1", 400 * MiB)  # too big: nothing allocated
    with pytest.raises(AdminError):
        await admin.volume_ops.create_vvol(3, "vol0", 49100, 100)  # past the end
    with pytest.raises(AdminError):
        await admin.volume_ops.delete_volume("vol0")  # carries virtual volumes
    assert {g["name"]: g["ldevs_free"] for g in admin.show()["raid_groups"]} == free_before
    lu = admin.tables.lu_volume("lu-a")
    await lu.write(5, b"\x5a" * 512)
    await admin.close()

    again = Admin(tmp_path)
    await again.load()
    now = again.show()
    for key in ("ldev_size", "volumes", "vr_table", "luv_table", "exports"):
        assert now[key] == view[key], key
    assert [(g["name"], g["ldevs_free"]) for g in now["raid_groups"]] == \
        [(g["name"], g["ldevs_free"]) for g in view["raid_groups"]]
    assert await again.tables.lu_volume("lu-a").read(5, 1) == b"\x5a" * 512
    await again.close()


async def test_resize_lun_through_the_management_socket_and_its_refusals(tmp_path: Path) -> None:
    from sanlab.scsi.device_server import DeviceServer
    from sanlab.scsi.lu import LogicalUnit, LuConfig
    from sanlab.storage.file_volume import FileVolume
    from sanlab.tools.mgmt import MgmtServer

    img = tmp_path / "lun0.img"
    ds = DeviceServer(TARGET, {0: LogicalUnit(FileVolume(str(img), 4 * MiB, 512), LuConfig.for_lun(TARGET, 0))})
    admin = Admin(tmp_path / "data", {TARGET: ds})
    mgmt = MgmtServer(admin, tmp_path / "data" / "sanlab.sock")

    async def resize(**args: object) -> dict[str, object]:
        return await mgmt.handle(json.dumps({"op": "resize_lun", "args": args}).encode())

    assert await resize(target=TARGET, lun=0, size=8 * MiB) == {"ok": True, "result": {
        "target": TARGET, "lun": 0, "old_size": 4 * MiB, "size": 8 * MiB, "blocks": 16384, "changed": True}}
    assert img.stat().st_size == 8 * MiB and ds.luns[0].num_blocks == 16384
    assert (await resize(target=TARGET, lun=0, size=8 * MiB))["result"]["changed"] is False  # type: ignore[index]
    refusals = {
        "only grows": dict(target=TARGET, lun=0, size=4 * MiB),  # shrinking
        "not a whole number of 512-byte blocks": dict(target=TARGET, lun=0, size=16 * MiB + 100),
        f"{TARGET} has no LUN 7": dict(target=TARGET, lun=7, size=16 * MiB),
        "no target iqn.2026-11.org.sanlab:nope": dict(target="iqn.2026-11.org.sanlab:nope", lun=0, size=16 * MiB),
    }
    for why, args in refusals.items():
        reply = await resize(**args)
        assert reply["ok"] is False and why in str(reply["error"]), (why, reply)
    assert img.stat().st_size == 8 * MiB and ds.luns[0].num_blocks == 16384  # no refusal changed anything
    error = str((await resize(target=TARGET, lun=0, size=4 * MiB))["error"])
    assert error.startswith(f"cannot resize {TARGET} LUN 0 from {8 * MiB} to {4 * MiB} bytes: "), error

    # A catalog LU is a window on a virtual volume: it is not grown (it would show blocks it does not own).
    await _build(admin)
    await admin.volume_ops.export("lu-a", TARGET, 1)
    reply = await resize(target=TARGET, lun=1, size=16 * MiB)
    assert reply["ok"] is False and "catalog LU lu-a" in str(reply["error"]) and "#1" in str(reply["error"])
    assert ds.luns[1].num_blocks == 20000
    await ds.close()
    await admin.close()


@pytest.mark.integration
def test_cli_on_a_running_array(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    sp = sanlab_factory(f'[[targets]]\nname = "{TARGET}"\n')
    dd = str(sp.data_dir)

    def admin(*words: str, ok: bool = True) -> dict[str, object]:
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "admin", *words, "--data-dir", dd, "--json"],
                            capture_output=True, text=True, timeout=120)
        assert (cp.returncode == 0) == ok, cp.stdout + cp.stderr
        return json.loads(cp.stdout) if ok else {"stderr": cp.stderr}

    sock = sp.data_dir / "sanlab.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    (sp.data_dir / "drives").mkdir()  # create-raid-group makes no directories
    admin("create-raid-group", "name=rg0", "level=5", "drives=drives/d0.img,drives/d1.img,drives/d2.img,drives/d3.img",
          "drive_size=16MiB", "stripe_size=16KiB", "ldev_size=4MiB")
    admin("create-volume", "name=v0", "size=32MiB")
    admin("create-vvol", "vvol=1", "real=v0", "real_start=0", f"size={32 * MiB // 512}")
    admin("create-lu", "name=lu0", "vvol=1", "vstart=2048", f"size={16 * MiB // 512}")
    admin("export", "lu=lu0", f"target={TARGET}", "lun=0")
    err = admin("create-vvol", "vvol=1", "real=v0", "real_start=0", "size=1", ok=False)
    assert "already mapped" in str(err["stderr"])

    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(16 * MiB))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url()], timeout=300)

    shown = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "show", "--data-dir", dd],
                           capture_output=True, text=True, timeout=60).stdout
    assert "V/R table" in shown and "LU/V table" in shown and "lu0" in shown and "rg0" in shown

    # Lose a drive, then rebuild onto a new one while the LU stays online.
    admin("fail-drive", "group=rg0", "index=2")
    admin("replace-drive", "group=rg0", "index=2", "path=drives/new2.img")
    out1 = tmp_path / "during.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=16", f"if={sp.url()}", f"of={out1}"])
    assert out1.read_bytes() == src.read_bytes()
    assert admin("wait-rebuild", "group=rg0")["degraded"] is False
    view = admin("show")
    assert [d["state"] for d in view["raid_groups"][0]["drives"]] == ["online"] * 4  # type: ignore[index]

    # The catalog brings everything back after a restart; the old drive file is no longer needed.
    assert sp.stop() == 0
    os.unlink(sp.data_dir / "drives" / "d2.img")
    sp2 = sanlab_factory(f'[[targets]]\nname = "{TARGET}"\n', port=sp.port, extra=["--data-dir", dd])
    out2 = tmp_path / "after.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=16", f"if={sp2.url()}", f"of={out2}"])
    assert out2.read_bytes() == src.read_bytes()


async def test_auto_tiering_leaves_a_running_migration_alone(tmp_path: Path) -> None:
    # Turning tiering on or off is about LDEV placement: a migration started before it must go on
    # copying (it used to be stopped, and run-time external volumes closed, as at shutdown).
    admin = Admin(tmp_path)
    await admin.raid_ops.create_raid_group("rg1", 1, ["m0.img", "m1.img"], 32 * MiB, 64 * 1024, ldev_size=4 * MiB)
    await admin.volume_ops.create_volume("src", 8 * MiB)
    await admin.volume_ops.create_volume("dst", 8 * MiB)
    data = os.urandom(8 * MiB)
    await admin.volumes["src"].write(0, data)
    await admin.migration_ops.migrate_start("src", "dst", chunk=256)
    await admin.tiering_ops.auto_tiering(enable=True, interval=3600)
    await admin.tiering_ops.auto_tiering(enable=False)
    for _ in range(400):
        (status,) = await admin.migration_ops.migrate_status()
        if status["state"] == "simplex":
            break
        await asyncio.sleep(0.05)
    assert status["state"] == "simplex", status
    assert await admin.volumes["dst"].read(0, 8 * MiB // 512) == data
    await admin.close()


class SlowPeer(FileVolume):
    """A migration source that answers like a peer array some way off (20 ms a read)."""

    async def read(self, lba: int, nblocks: int) -> bytes:
        await asyncio.sleep(0.02)
        return await super().read(lba, nblocks)


async def test_background_work_is_supervised_shown_and_stopped_in_order(tmp_path: Path) -> None:
    """Seam 4: rebuilds, migrations and tiering run under the supervisor; a failure is logged with its
    group and shown; close() stops tiering, then migrations, then rebuilds (watermark recorded)."""
    peer = SlowPeer(str(tmp_path / "peer.img"), 8 * MiB)
    data = os.urandom(8 * MiB)
    peer.write_sync(0, data)
    dd = tmp_path / "data"
    admin = Admin(dd, externals={"peer": peer})
    await admin.raid_ops.create_raid_group("rg5", 5, ["a.img", "b.img", "c.img"], 16 * MiB, 64 * 1024,
                                           ldev_size=4 * MiB)
    await admin.raid_ops.create_raid_group("rg1", 1, ["m0.img", "m1.img"], 16 * MiB, 64 * 1024)
    await admin.volume_ops.create_volume("dst", 8 * MiB, groups=["rg5"])
    await admin.migration_ops.migrate_start("peer", "dst", chunk=64)  # 256 chunks of 20 ms: seconds
    await admin.raid_ops.fail_drive("rg5", 1)
    await admin.raid_ops.replace_drive("rg5", 1, "b-new.img", rate="64KiB")  # a stripe a second
    await admin.tiering_ops.auto_tiering(enable=True, interval=0.05)

    # A rebuild whose replacement cannot be written: the drive's descriptor is now a read-only one.
    await admin.raid_ops.fail_drive("rg1", 1)
    with capture_logs() as logs:
        await admin.raid_ops.replace_drive("rg1", 1, "m1-new.img")
        replacement = admin.groups["rg1"].drives[1]
        readonly = os.open(replacement.path, os.O_RDONLY)
        os.dup2(readonly, replacement._fd)  # type: ignore[arg-type]  # before the rebuild's first write
        os.close(readonly)
        with pytest.raises(AdminError, match="rebuild of drive 1 stopped at stripe 0"):
            await admin.raid_ops.wait_rebuild("rg1")
    (failed,) = [e for e in logs if e["event"] == "background_task_failed"]
    assert (failed["kind"], failed["task"], failed["group"], failed["drive"]) == ("rebuild", "rg1", "rg1", 1)
    assert "Bad file descriptor" in failed["error"], failed
    await asyncio.sleep(0.2)
    shown = {(t["kind"], t["name"]): t for t in admin.show()["background_tasks"]}
    assert {k: t["state"] for k, t in shown.items()} == {
        ("tiering", "auto"): "running", ("migration", "dst"): "running", ("rebuild", "rg1"): "failed",
        ("rebuild", "rg5"): "running"}
    assert shown[("rebuild", "rg1")]["error"].startswith("VolumeError: rebuild of drive 1 stopped at stripe 0")
    assert shown[("rebuild", "rg1")]["context"] == {"group": "rg1", "drive": 1}
    assert shown[("migration", "dst")]["context"] == {"volume": "dst", "source": "peer"}

    with capture_logs() as logs:
        await admin.close()
    stopping = [e["kind"] for e in logs if e["event"] == "background_tasks_stopping"]
    stopped = [(e["kind"], e["task"]) for e in logs if e["event"] == "background_task_stopped"]
    assert stopping == ["tiering", "migration", "rebuild"]
    assert stopped == [("tiering", "auto"), ("migration", "dst"), ("rebuild", "rg5")]
    copied = admin.migrations["dst"].copied.count()
    assert 0 < copied < 256

    again = Admin(dd, externals={"peer": peer})  # both resume where they were stopped
    with capture_logs() as logs:
        await again.load()
    (resumed,) = [e for e in logs if e["event"] == "rebuild_resumed"]
    assert resumed["group"] == "rg5" and resumed["progress"] > 0
    assert again.migrations["dst"].copied.count() >= copied
    await again.close()
    await peer.close()


async def test_rearrange_onto_a_group_created_after_the_volume(tmp_path: Path) -> None:
    """Issue 12 item 8: the volume sees the array's live RAID groups, not the ones of its creation."""
    admin = Admin(tmp_path)
    await admin.raid_ops.create_raid_group("rg0", 5, ["a.img", "b.img", "c.img"], 8 * MiB, 64 * 1024, ldev_size=4 * MiB)
    await admin.volume_ops.create_volume("vol0", 8 * MiB)
    vol = admin.volumes["vol0"]
    data = os.urandom(8 * MiB)
    await vol.write(0, data)
    await admin.raid_ops.create_raid_group("rg1", 1, ["m0.img", "m1.img"], 8 * MiB, 64 * 1024)  # after the volume
    moved = await admin.tiering_ops.rearrange("vol0", 1, group="rg1")
    assert moved["from"] == "rg0:1" and str(moved["to"]).startswith("rg1:")
    assert await vol.read(0, vol.num_blocks) == data
    dest = vol.ldevs[1]
    assert await admin.groups["rg1"].read(dest.offset, 4 * MiB) == data[4 * MiB:]  # the bytes moved to rg1
    await admin.close()


async def test_a_detached_migration_is_listed_once(tmp_path: Path) -> None:
    """Issue 12 item 9: after migrate-detach, `migrate status` shows the volume once, as detached."""
    admin = Admin(tmp_path)
    await admin.raid_ops.create_raid_group("rg0", 1, ["m0.img", "m1.img"], 16 * MiB, 64 * 1024, ldev_size=4 * MiB)
    await admin.volume_ops.create_volume("src", 4 * MiB)
    await admin.volume_ops.create_volume("dst", 4 * MiB)
    data = os.urandom(4 * MiB)
    await admin.volumes["src"].write(0, data)
    await admin.migration_ops.migrate_start("src", "dst", chunk=1024)
    for _ in range(500):
        if admin.migrations["dst"].simplex:
            break
        await asyncio.sleep(0.01)
    assert [(r["volume"], r["state"]) for r in await admin.migration_ops.migrate_status()] == [("dst", "simplex")]
    await admin.migration_ops.migrate_detach("dst")
    assert await admin.migration_ops.migrate_status() == [{"volume": "dst", "source": "src", "state": "detached", "progress": 1.0}]
    assert await admin.volumes["dst"].read(0, 8192) == data
    await admin.close()

    again = Admin(tmp_path)  # and after a restart, the same single row
    await again.load()
    assert [(r["volume"], r["state"]) for r in await again.migration_ops.migrate_status()] == [("dst", "detached")]
    await again.close()


def _admin_cli(data_dir: Path, *words: str) -> subprocess.CompletedProcess[str]:
    """``sanlab admin WORDS`` against the array serving ``data_dir`` (a real process and socket)."""
    return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "admin", *words, "--data-dir", str(data_dir),
                           "--json"], capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_export_refuses_luns_report_luns_cannot_encode(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    """Issue 12 item 4: `export lun=-1` (or past 16383) is refused with the range, REPORT LUNS keeps working."""
    sp = sanlab_factory(f'[[targets]]\nname = "{TARGET}"\n[[targets.luns]]\nlun = 0\nsize = "4MiB"\n')
    for words in (["create-raid-group", "name=rg0", "level=1", "drives=m0.img,m1.img", "drive_size=8MiB",
                   "ldev_size=4MiB"],
                  ["create-volume", "name=v0", "size=4MiB"],
                  ["create-vvol", "vvol=1", "real=v0", "real_start=0", "size=8192"],
                  ["create-lu", "name=lu0", "vvol=1", "vstart=0", "size=8192"]):
        cp = _admin_cli(sp.data_dir, *words)
        assert cp.returncode == 0, cp.stdout + cp.stderr
    for lun in ("-1", "16384", "99999"):
        cp = _admin_cli(sp.data_dir, "export", "lu=lu0", f"target={TARGET}", f"lun={lun}")
        assert cp.returncode == 1, cp.stdout + cp.stderr
        assert f"LUN {lun} is out of range: LUNs are 0..16383" in cp.stderr, cp.stderr
        # Every host still gets its LUN list: discovery, REPORT LUNS and INQUIRY of each LUN.
        listing = run([need("iscsi-ls"), "-s", f"iscsi://{sp.portal}"]).stdout
        assert "Lun:0" in listing and "Lun:-1" not in listing, listing
    assert json.loads(_admin_cli(sp.data_dir, "show").stdout)["exports"] == []  # nothing reached the catalog
    cp = _admin_cli(sp.data_dir, "export", "lu=lu0", f"target={TARGET}", "lun=16383")  # the last one that fits
    assert cp.returncode == 0, cp.stdout + cp.stderr
    listing = run([need("iscsi-ls"), "-s", f"iscsi://{sp.portal}"]).stdout
    # libiscsi prints the first two bytes of the LUN field as they are: flat space addressing's
    # method bits (01b) and 16383 make 0x7fff.
    assert "Lun:0 " in listing and f"Lun:{0x4000 | 16383} " in listing, listing


async def test_an_out_of_range_export_left_in_the_catalog_is_not_served(tmp_path: Path) -> None:
    """A catalog written before export checked LUNs: the array starts, serves the rest, and unexport clears it."""
    from sanlab.scsi.device_server import DeviceServer

    ds = DeviceServer(TARGET, {})
    admin = Admin(tmp_path, {TARGET: ds})
    await _build(admin)
    with pytest.raises(AdminError, match=r"LUN -1 is out of range: LUNs are 0\.\.16383"):
        await admin.volume_ops.export("lu-a", TARGET, -1)
    await admin.volume_ops.export("lu-a", TARGET, 2)
    await admin.close()
    await ds.close()
    db = sqlite3.connect(tmp_path / "catalog.db")  # what the old code let through
    db.execute("INSERT INTO exports VALUES (?, ?, ?)", (TARGET, -1, "lu-a"))
    db.commit()
    db.close()

    ds = DeviceServer(TARGET, {})
    again = Admin(tmp_path, {TARGET: ds})
    await again.load()
    assert sorted(ds.luns) == [2]
    await again.volume_ops.unexport(TARGET, -1)
    assert [e["lun"] for e in again.catalog.exports()] == [2]
    await again.close()
    await ds.close()


async def test_a_drive_is_one_file_of_one_group_whatever_its_spelling(tmp_path: Path) -> None:
    """Issue 12 item 2: the same file twice in a group, or a file another group or a config LUN
    uses, is refused however it is spelled (./x, symlinks, hard links), before anything is made."""
    from sanlab.tools.assemble import open_raid_groups
    from sanlab.tools.config import parse_config

    dd = tmp_path / "data"
    cfg = parse_config({"raid_groups": [{"name": "crg", "level": 1, "drives": ["cfg/c0.img", "cfg/c1.img"],
                                         "drive_size": "1MiB"}],
                        "targets": [{"name": TARGET, "luns": [{"lun": 0, "size": "1MiB", "file": "lun0.img"}]}]},
                       "test.toml", dd)
    for g in open_raid_groups(cfg).values():  # the config's drives exist, as under `sanlab serve`
        await g.close()
    (dd / "lun0.img").write_bytes(bytes(512))
    admin = Admin(dd, config=cfg)
    await admin.raid_ops.create_raid_group("rg0", 5, ["a.img", "b.img", "c.img"], 4 * MiB, 64 * 1024, ldev_size=1 * MiB)
    os.link(dd / "a.img", dd / "hard.img")
    os.symlink(dd / "b.img", dd / "soft.img")
    os.symlink(dd, tmp_path / "alias")
    before = sorted(p.name for p in dd.rglob("*"))
    refusals = {
        ("q0.img", "q0.img", "q1.img"): "drive 1 (q0.img) is the same file as drive 0 (q0.img): a drive appears twice",
        ("q0.img", "./q0.img", "q1.img"): "drive 1 (./q0.img) is the same file as drive 0",
        ("q0.img", "q1.img", str(tmp_path / "alias" / "q0.img")): "is the same file as drive 0 (q0.img)",
        ("q0.img", "q1.img", "./a.img"): "already drive 0 of RAID group rg0",
        ("q0.img", "q1.img", "hard.img"): "already drive 0 of RAID group rg0",  # a hard link: same inode
        ("soft.img", "q0.img", "q1.img"): "already drive 1 of RAID group rg0",  # a symlink
        ("q0.img", "q1.img", "cfg/c1.img"): "already drive 1 of RAID group crg of the configuration",
        ("q0.img", "lun0.img", "q1.img"): f"already the file of LUN 0 of {TARGET} in the configuration",
        ("q0.img", "q1.img", "raid-rg9.json"): "a name the array uses for its own files",
    }
    for drives, why in refusals.items():
        with pytest.raises(AdminError) as exc:
            await admin.raid_ops.create_raid_group("rg9", 5, list(drives), 4 * MiB, 64 * 1024)
        assert why in str(exc.value), (drives, str(exc.value))
        assert sorted(p.name for p in dd.rglob("*")) == before, drives  # nothing made
    assert [r.name for r in admin.catalog.groups()] == ["rg0"]
    with pytest.raises(AdminError, match="declared in the configuration"):
        await admin.raid_ops.create_raid_group("crg", 1, ["q0.img", "q1.img"], 4 * MiB, 64 * 1024)

    # The helper replace-drive uses: a failed member's own path may be reused, another member's not.
    os.unlink(dd / "c.img")  # drive 2 of rg0 is gone (a failed member): its path is still rg0's
    with pytest.raises(AdminError, match="already drive 2 of RAID group rg0"):
        admin.raid_ops.check_drive_paths(["c.img"])
    admin.raid_ops.check_drive_paths(["c.img"], exclude_group="rg0", exclude_index=2)
    with pytest.raises(AdminError, match="already drive 0 of RAID group rg0"):
        admin.raid_ops.check_drive_paths(["a.img"], exclude_group="rg0", exclude_index=2)
    admin.raid_ops.check_drive_paths(["a.img", "b.img"], exclude_group="rg0")
    await admin.raid_ops.create_raid_group("rg1", 1, ["q0.img", "q1.img"], 4 * MiB, 64 * 1024)
    await admin.close()


async def test_the_catalog_refuses_to_start_on_a_file_the_configuration_also_uses(tmp_path: Path) -> None:
    """A config edited after a run-time group was made must not open that group's drive a second time."""
    from sanlab.storage.volume import VolumeError
    from sanlab.tools.config import parse_config

    dd = tmp_path / "data"
    admin = Admin(dd)
    await admin.raid_ops.create_raid_group("rg0", 1, ["m0.img", "m1.img"], 4 * MiB, 64 * 1024, ldev_size=1 * MiB)
    await admin.close()
    cfg = parse_config({"targets": [{"name": TARGET, "luns": [{"lun": 0, "size": "1MiB", "file": "m1.img"}]}]},
                       "test.toml", dd)
    again = Admin(dd, config=cfg)
    with pytest.raises(VolumeError, match=r"drive 1 of RAID group rg0 \(catalog\).*is also the file of LUN 0"):
        await again.load()
    await again.close()


async def test_a_failed_create_raid_group_leaves_nothing_and_can_be_retried(tmp_path: Path) -> None:
    """Issue 12 item 7: every check comes before any file; what a late failure made is removed."""
    dd = tmp_path / "data"
    admin = Admin(dd)

    def made() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                      if not p.name.startswith("catalog.db"))

    before = made()
    refusals = [
        (dict(level=5, drives=["x0.img", "x1.img"]), "RAID 5 needs at least 3 drives"),
        (dict(level=4, drives=["x0.img", "x1.img", "x2.img"]), "RAID level 4 is not one of 0, 1, 5, 6, 10"),
        (dict(level=5, drives=["x0.img", "x1.img", "x2.img"], stripe_size=100), "positive multiple of 512"),
        (dict(level=5, drives=["x0.img", "x1.img", "x2.img"], drive_size=1000), "would hold 0 bytes"),
        (dict(level=5, drives=["x0.img", "x1.img", "x2.img"], drive_size=2 * MiB, ldev_size=8 * MiB),
         "less than one LDEV of 8388608 bytes"),
        (dict(level=5, drives=["x0.img", "x1.img", "x2.img"], ldev_size=1000), "multiple of 4096"),
        (dict(level=5, drives=["x0.img", "x1.img", "sub/x2.img"]),
         f"directory {dd / 'sub'} does not exist (relative paths are relative to the data directory"),
        (dict(level=5, drives=["x0.img", "x1.img", str(tmp_path / "elsewhere" / "deep" / "x2.img")]),
         "elsewhere/deep does not exist"),
        (dict(name="../evil", level=5, drives=["x0.img", "x1.img", "x2.img"]), "RAID group name '../evil'"),
        (dict(name="a:b", level=5, drives=["x0.img", "x1.img", "x2.img"]), "RAID group name 'a:b'"),
    ]
    for args, why in refusals:
        kw: dict[str, object] = dict(name="rg0", drive_size=4 * MiB, stripe_size=64 * 1024) | args
        with pytest.raises(AdminError) as exc:
            await admin.raid_ops.create_raid_group(**kw)  # type: ignore[arg-type]
        assert why in str(exc.value), (args, str(exc.value))
        assert made() == before, args
    assert admin.catalog.groups() == [] and admin.groups == {}
    # A failure after the drive files exist (the bitmap's place is taken): undone, catalog included.
    (dd / "raid-rg0.bitmap").mkdir()
    with pytest.raises(AdminError, match="cannot build RAID group rg0"):
        await admin.raid_ops.create_raid_group("rg0", 5, ["x0.img", "x1.img", "x2.img"], 4 * MiB, 64 * 1024)
    (dd / "raid-rg0.bitmap").rmdir()
    assert made() == before and admin.catalog.groups() == [] and admin.catalog.get_meta("ldev_size") is None
    # The retry of the request as first typed, with a third drive, is not told "drive files already exist".
    out = await admin.raid_ops.create_raid_group("rg0", 5, ["x0.img", "x1.img", "x2.img"], 4 * MiB, 64 * 1024,
                                        ldev_size=1 * MiB)
    assert out == {"name": "rg0", "capacity": 8 * MiB, "ldevs": 8}
    # Deleting a group removes its description and bitmap: the name can be used again.
    await admin.raid_ops.delete_raid_group("rg0")
    assert not (dd / "raid-rg0.json").exists() and not (dd / "raid-rg0.bitmap").exists()
    await admin.raid_ops.create_raid_group("rg0", 1, ["y0.img", "y1.img"], 4 * MiB, 64 * 1024)
    await admin.close()


@pytest.mark.integration
def test_cli_refuses_a_drive_twice_or_in_use(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    """Issue 12 item 2 through `sanlab admin` on a running array: message, exit status 1, nothing made."""
    sp = sanlab_factory(f'[[targets]]\nname = "{TARGET}"\n[[targets.luns]]\nlun = 0\nsize = "4MiB"\n'
                        'file = "lun0.img"\n')
    dd = sp.data_dir
    cp = _admin_cli(dd, "create-raid-group", "name=rg0", "level=5", "drives=q0.img,q0.img,q1.img",
                    "drive_size=8MiB")
    assert cp.returncode == 1 and "drive 1 (q0.img) is the same file as drive 0 (q0.img)" in cp.stderr, cp.stderr
    assert not (dd / "q0.img").exists() and not (dd / "q1.img").exists()
    cp = _admin_cli(dd, "create-raid-group", "name=rg0", "level=5", "drives=q0.img,q1.img,q2.img", "drive_size=8MiB")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    os.symlink(dd / "q1.img", dd / "other-name.img")
    for drives, why in (("r0.img,./q1.img", "already drive 1 of RAID group rg0"),
                        ("r0.img,other-name.img", "already drive 1 of RAID group rg0"),
                        ("r0.img,lun0.img", f"already the file of LUN 0 of {TARGET} in the configuration")):
        cp = _admin_cli(dd, "create-raid-group", "name=rg1", "level=1", f"drives={drives}", "drive_size=8MiB")
        assert cp.returncode == 1 and why in cp.stderr, (drives, cp.stderr)
        assert not (dd / "r0.img").exists()
    # Host writes read back and scrub finds parity right: each member is a file of its own.
    for words in (["create-volume", "name=v0", "size=8MiB"],
                  ["create-vvol", "vvol=1", "real=v0", "real_start=0", f"size={8 * MiB // 512}"],
                  ["create-lu", "name=lu0", "vvol=1", "vstart=0", f"size={8 * MiB // 512}"],
                  ["export", "lu=lu0", f"target={TARGET}", "lun=1"]):
        cp = _admin_cli(dd, *words)
        assert cp.returncode == 0, cp.stdout + cp.stderr
    src, back = dd.parent / "src.img", dd.parent / "back.img"
    src.write_bytes(os.urandom(8 * MiB))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url(1)])
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=8", f"if={sp.url(1)}", f"of={back}"])
    assert back.read_bytes() == src.read_bytes()
    cp = _admin_cli(dd, "scrub", "group=rg0")
    assert cp.returncode == 0 and json.loads(cp.stdout)["repaired_stripes"] == 0, cp.stdout + cp.stderr


@pytest.mark.integration
def test_cli_failed_create_raid_group_can_be_retried(sanlab_factory: Callable[..., SanlabProcess],
                                                     tmp_path: Path) -> None:
    """Issue 12 item 7 through `sanlab admin`: refused before anything is made, retried as typed."""
    sp = sanlab_factory(f'[[targets]]\nname = "{TARGET}"\n')
    dd = sp.data_dir
    three = "drives=x0.img,x1.img,x2.img"
    for words, why in ((["level=5", "drives=x0.img,x1.img", "drive_size=8MiB"], "RAID 5 needs at least 3 drives"),
                       (["level=5", three, "drive_size=8MiB", "stripe_size=100"], "positive multiple of 512"),
                       (["level=5", three, "drive_size=1000"], "would hold 0 bytes"),
                       (["level=5", f"drives=x0.img,x1.img,{tmp_path}/nowhere/x2.img", "drive_size=8MiB"],
                        f"directory {tmp_path}/nowhere does not exist")):
        cp = _admin_cli(dd, "create-raid-group", "name=rg0", *words)
        assert cp.returncode == 1 and why in cp.stderr, (words, cp.stderr)
        assert not list(dd.glob("x*.img")) and not list(dd.glob("raid-*")) and not (tmp_path / "nowhere").exists()
    cp = _admin_cli(dd, "create-raid-group", "name=rg0", "level=5", three, "drive_size=8MiB")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert json.loads(cp.stdout)["capacity"] == 16 * MiB


async def _ask(mgmt: object, op: str, **args: object) -> dict[str, object]:
    from sanlab.tools.mgmt import MgmtServer
    assert isinstance(mgmt, MgmtServer)
    return await mgmt.handle(json.dumps({"op": op, "args": args}).encode())


async def test_sizes_with_a_unit_are_bytes_in_whole_blocks_of_the_volume_underneath(tmp_path: Path) -> None:
    """Issue 12: ``size=1MiB`` became 1048576 *blocks* (a 512 MiB window onto another LU's data)."""
    from sanlab.tools.mgmt import MgmtServer
    admin = Admin(tmp_path)
    mgmt = MgmtServer(admin, tmp_path / "sanlab.sock")
    ok = {"ok": True}
    assert (await _ask(mgmt, "create_raid_group", name="rg", level=1, drives=["m0.img", "m1.img"],
                       drive_size="32MiB", stripe_size="16KiB", ldev_size="4MiB")).items() >= ok.items()
    assert admin.groups["rg"].layout.chunk == 16 * 1024 and admin.allocator.ldev_size == 4 * MiB
    assert (await _ask(mgmt, "create_volume", name="v512", size="8MiB"))["ok"] is True
    assert (await _ask(mgmt, "create_volume", name="v4k", size=8 * MiB, block_size="4KiB"))["ok"] is True
    assert (admin.volumes["v512"].num_blocks, admin.volumes["v4k"].num_blocks) == (16384, 2048)

    # create-vvol / create-lu: a unit is bytes in blocks of the real volume; a bare number is blocks.
    r = await _ask(mgmt, "create_vvol", vvol=1, real="v512", real_start="1MiB", size="4MiB")
    assert r["result"] == {"vvol": 1, "real_start": 2048, "size": 8192, "block_size": 512,
                           "multiple_virtualization": False, "shares_with": []}
    r = await _ask(mgmt, "create_vvol", vvol=2, real="v4k", real_start=256, size="4MiB")
    assert r["result"]["real_start"] == 256 and r["result"]["size"] == 1024  # type: ignore[index]
    r = await _ask(mgmt, "create_lu", name="a", vvol=1, vstart="512KiB", size="1MiB")
    assert r["result"] == {"lu": "a", "vstart": 1024, "size": 2048, "block_size": 512, "shares_with": []}
    r = await _ask(mgmt, "create_lu", name="b", vvol=2, vstart=0, size="1MiB")
    assert r["result"]["size"] == 256  # type: ignore[index]
    r = await _ask(mgmt, "create_lu", name="c", vvol=1, vstart=4096, size=2048)  # bare numbers: blocks
    assert r["result"]["size"] == 2048  # type: ignore[index]
    assert admin.tables.resolve("a", 0) == ("v512", 2048 + 1024)
    assert admin.tables.lu_volume("a").num_blocks * 512 == MiB

    refusals = {
        "size=1000B (1000 bytes) is not a whole number of 512-byte blocks":
            ("create_lu", dict(name="x", vvol=1, vstart=0, size="1000B")),
        "vstart=2KiB (2048 bytes) is not a whole number of 4096-byte blocks":
            ("create_lu", dict(name="x", vvol=2, vstart="2KiB", size=1)),
        "real_start=100B (100 bytes) is not a whole number of 512-byte blocks":
            ("create_vvol", dict(vvol=9, real="v512", real_start="100B", size=1)),
        "outside v512 (16384 blocks)": ("create_vvol", dict(vvol=9, real="v512", real_start=0, size="9MiB")),
        "outside #1 (8192 blocks)": ("create_lu", dict(name="x", vvol=1, vstart="2MiB", size="3MiB")),
        "size=1000 bytes is not a positive whole number of 512-byte blocks":
            ("create_volume", dict(name="x", size=1000)),
        "block_size=1000 is not a power of two": ("create_volume", dict(name="x", size="1MiB", block_size=1000)),
        "no virtual volume #7": ("create_lu", dict(name="x", vvol=7, vstart=0, size=1)),
    }
    for why, (op, args) in refusals.items():
        reply = await _ask(mgmt, op, **args)
        assert reply["ok"] is False and why in str(reply["error"]), (why, reply)
    assert "x" not in admin.tables.luv and 9 not in admin.tables.vr and "x" not in admin.volumes
    assert [r["name"] for r in admin.catalog.lus()] == ["a", "b", "c"]

    # replace-drive rate= is bytes per second, with a unit as written on the command line.
    await admin.raid_ops.fail_drive("rg", 1)
    reply = await _ask(mgmt, "replace_drive", group="rg", index=1, path="m1-new.img", rate="lots")
    assert reply["ok"] is False and "rate=lots is not a size" in str(reply["error"])
    assert (await _ask(mgmt, "replace_drive", group="rg", index=1, path="m1-new.img", rate="64KiB"))["ok"] is True
    job = admin.groups["rg"].rebuild_job  # the pace the RAID group was given
    assert job is not None and job.record.rate == 64 * 1024
    await admin.close()


async def test_overlapping_mappings_need_multiple_virtualization_and_keep_it(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    await admin.raid_ops.create_raid_group("rg", 1, ["m0.img", "m1.img"], 16 * MiB, ldev_size=4 * MiB)
    await admin.volume_ops.create_volume("v", "8MiB")
    await admin.volume_ops.create_vvol(1, "v", 0, "4MiB")
    await admin.volume_ops.create_lu("a", 1, 0, "2MiB")
    with pytest.raises(AdminError, match=r"#2: blocks 4096-12287 of v are already mapped by virtual volume #1 and "
                                         r"multiple virtualization was not asked for \(add multiple_virtualization=yes"):
        await admin.volume_ops.create_vvol(2, "v", "2MiB", "4MiB")
    with pytest.raises(AdminError, match=r"LU b: blocks 4095-4095 of virtual volume #1 are already mapped by LU a .*"
                                         r"multiple_virtualization=yes"):
        await admin.volume_ops.create_lu("b", 1, 4095, 1)
    assert admin.catalog.virtual_volumes() == [{"vvol": 1, "real": "v", "real_start": 0, "size": 8192,
                                                "multiple_virtualization": 0}]
    assert [r["name"] for r in admin.catalog.lus()] == ["a"]
    await admin.volume_ops.create_vvol(3, "v", "4MiB", "4MiB")  # the blocks after #1 are free
    await admin.volume_ops.create_lu("b", 1, 4096, 4096)  # and so are those after LU a
    assert (await admin.volume_ops.create_vvol(2, "v", "2MiB", "4MiB", multiple_virtualization=True))["shares_with"] == [1, 3]
    assert (await admin.volume_ops.create_lu("c", 1, 0, 1, multiple_virtualization=True))["shares_with"] == ["a"]
    await admin.tables.lu_volume("a").write(0, b"\x11" * 512)
    assert await admin.tables.lu_volume("c").read(0, 1) == b"\x11" * 512  # what sharing means
    view = admin.show()
    await admin.close()

    again = Admin(tmp_path)
    await again.load()
    shown = again.show()
    assert shown["vr_table"] == view["vr_table"] and shown["luv_table"] == view["luv_table"]
    vr = {r["vvol"]: (r["multiple_virtualization"], r["multiple_virtualization_asked"], r["shares_with"])
          for r in shown["vr_table"]}
    assert vr == {1: (True, False, [2]), 2: (True, True, [1, 3]), 3: (True, False, [2])}
    luv = {r["lu"]: (r["multiple_virtualization_asked"], r["shares_with"]) for r in shown["luv_table"]}
    assert luv == {"a": (False, ["c"]), "b": (False, []), "c": (True, ["a"])}
    with pytest.raises(AdminError, match="already mapped by virtual volume #1, #2, #3"):
        await again.volume_ops.create_vvol(4, "v", 0, 16384)  # asking once is not asking for every later mapping
    await again.close()


async def test_an_older_catalog_loads_with_its_overlaps_marked(tmp_path: Path) -> None:
    """Mappings made before overlaps had to be asked for still load after the catalog gains the column."""
    admin = Admin(tmp_path)
    await _build(admin)
    await admin.volume_ops.create_lu("lu-b", 1, 20000, 100, multiple_virtualization=True)
    await admin.close()
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.execute("ALTER TABLE lus DROP COLUMN multiple_virtualization")  # back to the layout before the flag
    db.execute("ALTER TABLE virtual_volumes DROP COLUMN multiple_virtualization")
    db.commit()
    db.close()

    again = Admin(tmp_path)
    await again.load()
    view = again.show()
    assert [(r["vvol"], r["multiple_virtualization_asked"]) for r in view["vr_table"]] == [(1, True), (2, True)]
    assert [(r["lu"], r["multiple_virtualization_asked"]) for r in view["luv_table"]] == \
        [("lu-a", True), ("lu-b", True)]
    await again.close()

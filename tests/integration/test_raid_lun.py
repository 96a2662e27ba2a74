"""A LUN on a RAID-5 group of drive files, driven by qemu-img: degraded restart and kill -9 mid-write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import TARGET, SanlabProcess, need, run

pytestmark = pytest.mark.integration

CONFIG = f"""
[[raid_groups]]
name = "rg0"
level = 5
stripe_size = "16KiB"
drive_size = "16MiB"
drives = ["drives/d0.img", "drives/d1.img", "drives/d2.img", "drives/d3.img"]

[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
raid_group = "rg0"
"""


def _restart(factory: Callable[..., SanlabProcess], sp: SanlabProcess) -> SanlabProcess:
    """A new `sanlab serve` on the same data directory and port."""
    return factory(CONFIG, port=sp.port, extra=["--data-dir", str(sp.data_dir)])


def test_raid5_lun_survives_a_lost_drive(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    sp = sanlab_factory(CONFIG)
    cp = run([need("iscsi-readcapacity16"), sp.url()])
    assert "Totalsize:50331648" in cp.stdout.replace(" ", ""), cp.stdout  # 3 data drives x 16 MiB
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(24 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url()], timeout=300)
    assert sp.stop() == 0
    os.unlink(sp.data_dir / "drives" / "d1.img")
    sp2 = _restart(sanlab_factory, sp)
    assert '"degraded": true' in sp2.log()
    out = tmp_path / "out.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=24", f"if={sp2.url()}", f"of={out}"],
        timeout=300)
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("when", ["stopped", "serving"])
def test_a_truncated_drive_file_is_taken_out_not_read_as_zeros(sanlab_factory: Callable[..., SanlabProcess],
                                                               tmp_path: Path, when: str) -> None:
    """A member file cut short (truncated to 4 KiB: a lost or overwritten drive) is a failed member:
    at start (stopped) or at the first read that comes back short (serving), never blocks of zeros;
    the LUN's bytes come from the other members and parity."""
    sp = sanlab_factory(CONFIG)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(24 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url()], timeout=300)
    drive = sp.data_dir / "drives" / "d2.img"
    if when == "stopped":
        assert sp.stop() == 0
        os.truncate(drive, 4096)
        sp = _restart(sanlab_factory, sp)
        assert '"degraded": true' in sp.log() and "shorter than the drive's" in sp.log(), sp.log()[-3000:]
    else:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:  # reads go to the files, not a cache above them
            f.write("1\n")
        os.truncate(drive, 4096)
    out = tmp_path / "out.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=24", f"if={sp.url()}", f"of={out}"],
        timeout=300)
    assert out.read_bytes() == src.read_bytes()
    if when == "serving":
        assert '"drive_failed"' in sp.log() and "the drive file shrank" in sp.log(), sp.log()[-3000:]


def test_a_configuration_groups_lost_drive_is_replaced_in_its_slot(sanlab_factory: Callable[..., SanlabProcess],
                                                                    tmp_path: Path) -> None:
    """A drive of a group the TOML declares dies while serving: `admin replace-drive` (no path: the
    configuration names the slot) rebuilds onto a new file at the configured path, the dead file
    moved aside; after a restart on the same configuration the group is whole and the bytes are the
    host's."""
    sp = sanlab_factory(CONFIG)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(24 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url()], timeout=300)
    drive = sp.data_dir / "drives" / "d2.img"
    os.truncate(drive, 4096)  # the disk died under the running array
    admin = [sys.executable, "-m", "sanlab.tools.cli", "admin"]
    show = [sys.executable, "-m", "sanlab.tools.cli", "show", "--json", "--data-dir", str(sp.data_dir)]
    group = json.loads(run(show).stdout)["raid_groups"][0]
    assert group["name"] == "rg0" and group["config"] is True and group["ldevs"] == 0, group
    if group["drives"][2]["state"] != "failed":  # no read has reached it yet: the administrator says so
        run(admin + ["fail-drive", "group=rg0", "index=2", "--data-dir", str(sp.data_dir)])
    cp = run(admin + ["replace-drive", "group=rg0", "index=2", "path=drives/other.img", "--data-dir",
                      str(sp.data_dir)], check=False)
    assert cp.returncode != 0 and "configured path" in cp.stderr, cp.stderr  # not another slot
    run(admin + ["replace-drive", "group=rg0", "index=2", "--data-dir", str(sp.data_dir)])
    run(admin + ["wait-rebuild", "group=rg0", "--data-dir", str(sp.data_dir)], timeout=300)
    aside = [p.name for p in drive.parent.iterdir() if p.name.startswith("d2.img.failed-")]
    assert len(aside) == 1 and os.path.getsize(drive) == 16 << 20, (aside, os.path.getsize(drive))
    group = json.loads(run(show).stdout)["raid_groups"][0]
    assert not group["degraded"] and {d["state"] for d in group["drives"]} == {"online"}, group
    data_dir, port = sp.data_dir, sp.port
    assert sp.stop() == 0
    sp = sanlab_factory(CONFIG, port=port, extra=["--data-dir", str(data_dir)])
    assert '"degraded": false' in sp.log(), sp.log()[-3000:]
    os.unlink(drive.parent / "d0.img")  # the rebuilt member now carries its share
    assert sp.stop() == 0
    sp = sanlab_factory(CONFIG, port=port, extra=["--data-dir", str(data_dir)])
    assert '"degraded": true' in sp.log(), sp.log()[-3000:]
    out = tmp_path / "out.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=24", f"if={sp.url()}", f"of={out}"],
        timeout=300)
    assert out.read_bytes() == src.read_bytes()


BIG = CONFIG.replace('drive_size = "16MiB"', 'drive_size = "64MiB"')


def test_raid5_lun_after_kill_9_mid_write(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    sp = sanlab_factory(BIG)
    first = tmp_path / "first.img"
    first.write_bytes(os.urandom(192 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(first), sp.url()], timeout=300)
    # Start a second large write and kill the array in the middle of it.
    second = tmp_path / "second.img"
    second.write_bytes(os.urandom(160 << 20))
    writer = subprocess.Popen([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", "-W", str(second),
                               sp.url()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once the write-intent bitmap shows stripes being written (not on a timer: CI load varies).
    bitmap = sp.data_dir / "raid-rg0.bitmap"
    deadline = time.monotonic() + 60
    while not any(bitmap.read_bytes()):
        assert writer.poll() is None, "the write finished before it was seen in progress; make it bigger"
        assert time.monotonic() < deadline, "no write in progress after 60 s"
        time.sleep(0.01)
    sp.stop(signal.SIGKILL)
    writer.kill()  # QEMU would retry the dead portal forever
    writer.wait(60)
    sp2 = sanlab_factory(BIG, port=sp.port, extra=["--data-dir", str(sp.data_dir)])
    # The write was cut short, and the write-intent bitmap told the restart what to resynchronise.
    assert "raid_parity_resynced" in sp2.log()
    # Whatever the interrupted write left, the data is readable and parity is consistent:
    # lose a drive now and the bytes read back must not change.
    before = tmp_path / "before.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=192", f"if={sp2.url()}",
         f"of={before}"], timeout=300)
    # Bytes acknowledged before the crash and not touched by the interrupted write are intact.
    assert before.read_bytes()[160 << 20:] == first.read_bytes()[160 << 20:]
    assert sp2.stop() == 0
    os.unlink(sp.data_dir / "drives" / "d2.img")
    sp3 = sanlab_factory(BIG, port=sp.port, extra=["--data-dir", str(sp.data_dir)])
    after = tmp_path / "after.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=192", f"if={sp3.url()}",
         f"of={after}"], timeout=300)
    assert after.read_bytes() == before.read_bytes()

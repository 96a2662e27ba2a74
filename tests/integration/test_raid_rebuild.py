"""A rebuild that a restart interrupts, with real `sanlab serve` processes (issue 12 items 1 and 6).

The array is stopped (SIGTERM, the README's clean shutdown) and killed (kill -9) at several points
of a RAID 5 rebuild while a host writes through iSCSI; after each restart the half-rebuilt drive
must come back as rebuilding, every acknowledged byte must read back, and the rebuild must go on
from where it stopped.  A replacement on a full filesystem must fail visibly.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiError, IscsiSession
from sanlab.tools.mgmt import request
from tests.conftest import TARGET, SanlabProcess

pytestmark = pytest.mark.integration

MiB = 1 << 20
BS = 512
LU_BYTES = 48 * MiB
CONFIG = f'[[targets]]\nname = "{TARGET}"\n'


def _admin(sp: SanlabProcess, op: str, **args: Any) -> Any:
    reply = request(sp.data_dir, op, args, timeout=120)
    assert reply.get("ok"), (op, reply)
    return reply["result"]


def _cli(sp: SanlabProcess, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "admin", *words, "--data-dir", str(sp.data_dir)],
                          capture_output=True, text=True, timeout=120)


def _group(sp: SanlabProcess) -> dict[str, Any]:
    view = _admin(sp, "show")
    group: dict[str, Any] = view["raid_groups"][0]
    return group


def _build(sp: SanlabProcess) -> None:
    """RAID 5 over four 32 MiB drives (64 KiB chunks: 512 stripes), a 48 MiB LU on it as LUN 0."""
    (sp.data_dir / "drives").mkdir(exist_ok=True)  # create-raid-group makes no directories
    _admin(sp, "create_raid_group", name="rg0", level=5, drives=[f"drives/d{i}.img" for i in range(4)],
           drive_size=32 * MiB, stripe_size=64 * 1024, ldev_size=4 * MiB)
    _admin(sp, "create_volume", name="v0", size=LU_BYTES)
    _admin(sp, "create_vvol", vvol=1, real="v0", real_start=0, size=LU_BYTES // BS)
    _admin(sp, "create_lu", name="lu0", vvol=1, vstart=0, size=LU_BYTES // BS)
    _admin(sp, "export", lu="lu0", target=TARGET, lun=0)


def _session(sp: SanlabProcess) -> IscsiSession:
    cfg = InitiatorConfig(initiator_name="iqn.2026-12.org.sanlab:rebuild-host", nop_interval=0, reconnect=False,
                          command_timeout=30, login_timeout=10)
    return IscsiSession(sp.host, sp.port, TARGET, cfg)


@dataclass
class Host:
    """What the host wrote and had acknowledged; the write in flight when the array died may
    have landed in part (each block old or new), never anything else."""

    model: bytearray
    in_flight: tuple[int, bytes] | None = None
    acknowledged: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(1212))

    async def write_until_lost(self, s: IscsiSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            blocks = self.rng.choice([8, 64, 256])
            lba = self.rng.randrange(LU_BYTES // BS - blocks)
            data = os.urandom(blocks * BS)
            self.in_flight = (lba * BS, data)
            try:
                await s.write16(0, lba, data, BS)
            except (IscsiError, OSError):
                return  # the array went away with this write unacknowledged
            self.model[lba * BS:lba * BS + len(data)] = data
            self.in_flight = None
            self.acknowledged += 1
            await asyncio.sleep(0.01)

    async def verify(self, s: IscsiSession) -> None:
        got = bytearray()
        for off in range(0, LU_BYTES, MiB):
            got += await s.read16(0, off // BS, MiB // BS, BS)
        if self.in_flight is not None:
            off, data = self.in_flight
            for b in range(0, len(data), BS):
                blk = bytes(got[off + b:off + b + BS])
                assert blk in (bytes(self.model[off + b:off + b + BS]), data[b:b + BS]), f"block at {off + b}"
                self.model[off + b:off + b + BS] = blk  # whichever it is, it is what the disk now holds
            self.in_flight = None
        bad = [i for i in range(0, LU_BYTES, 64 * 1024) if got[i:i + 64 * 1024] != self.model[i:i + 64 * 1024]]
        assert not bad, f"{len(bad)} 64-KiB chunks differ, first at {bad[0]}"


async def _progress(sp: SanlabProcess) -> float:
    g = await asyncio.to_thread(_group, sp)
    return float(g["rebuild_progress"] or 0.0)


async def test_restart_and_kill_9_mid_rebuild_under_host_writes(
        sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    _build(sp)
    host = Host(bytearray(os.urandom(LU_BYTES)))
    s = _session(sp)
    await s.connect()
    await s.clear_unit_attentions(0)
    for off in range(0, LU_BYTES, MiB):
        await s.write16(0, off // BS, host.model[off:off + MiB], BS)
    _admin(sp, "fail_drive", group="rg0", index=2)
    # Paced at 2 MiB/s (16 s for the 32 MiB drive) so the stops fall where the test says.
    started = _admin(sp, "replace_drive", group="rg0", index=2, path="drives/new2.img", rate=2 * MiB)
    assert started["state"] == "rebuilding"
    points = [(0.0, signal.SIGKILL), (0.25, signal.SIGTERM), (0.5, signal.SIGKILL), (0.75, signal.SIGKILL)]
    for point, sig in points:
        stop = asyncio.Event()
        writer = asyncio.create_task(host.write_until_lost(s, stop))
        while await _progress(sp) < point:
            await asyncio.sleep(0.05)
        before = host.acknowledged
        await asyncio.sleep(0.2)  # writes are going on when the array stops
        seen = await _progress(sp)
        await asyncio.to_thread(sp.stop, sig)
        stop.set()
        await writer
        assert host.acknowledged > before
        await s.close()

        data_dir = sp.data_dir
        sp = sanlab_factory(CONFIG, port=sp.port, extra=["--data-dir", str(data_dir)])
        sp.data_dir = data_dir
        g = _group(sp)
        assert g["drives"][2]["state"] == "rebuilding", g  # not "online" with half its data
        assert g["drives"][2]["path"].endswith("new2.img") and g["degraded"] is True
        # The watermark on disk is never ahead of what was rebuilt; a clean stop records all of it.
        resumed = float(g["rebuild_progress"])
        assert resumed <= seen + 0.05 or sig == signal.SIGTERM
        if sig == signal.SIGTERM:
            assert resumed >= seen
        assert '"rebuild_resumed"' in sp.log()
        s = _session(sp)
        await s.connect()
        await s.clear_unit_attentions(0)
        await host.verify(s)  # reads below and above the watermark: every acknowledged byte

    done = await asyncio.to_thread(_admin, sp, "wait_rebuild", group="rg0")
    assert done["degraded"] is False
    await host.verify(s)
    assert _admin(sp, "scrub", group="rg0")["repaired_stripes"] == 0
    # The rebuilt member holds the data: lose another one and read everything again.
    _admin(sp, "fail_drive", group="rg0", index=0)
    await host.verify(s)
    await s.close()


def test_replace_drive_refuses_a_path_it_cannot_use(sanlab_factory: Callable[..., SanlabProcess],
                                                    tmp_path: Path) -> None:
    sp = sanlab_factory(CONFIG)
    _build(sp)
    _admin(sp, "fail_drive", group="rg0", index=1)
    cp = _cli(sp, "replace-drive", "group=rg0", "index=1", "path=/nonexistent/dir/new1.img")
    assert cp.returncode != 0 and "/nonexistent/dir" in cp.stderr and "does not exist" in cp.stderr, cp.stderr
    cp = _cli(sp, "replace-drive", "group=rg0", "index=1", "path=drives/d0.img")  # another member
    assert cp.returncode != 0 and "d0.img" in cp.stderr, cp.stderr
    cp = _cli(sp, "replace-drive", "group=rg0", "index=1", "path=catalog.db")  # the array's own file
    assert cp.returncode != 0 and "catalog.db" in cp.stderr, cp.stderr
    cp = _cli(sp, "replace-drive", "group=rg0", "index=1", "path=drives/d1.img")  # the failed member's old file
    assert cp.returncode != 0 and "exists" in cp.stderr, cp.stderr
    g = _group(sp)
    assert g["drives"][1]["state"] == "failed" and g["rebuild_progress"] is None and g["rebuild_error"] is None
    assert _cli(sp, "wait-rebuild", "group=rg0").returncode == 0  # nothing running, nothing failed


def test_a_rebuild_onto_a_full_filesystem_fails_visibly(sanlab_factory: Callable[..., SanlabProcess],
                                                        tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        sp = sanlab_factory(CONFIG)
        _build(sp)
        _admin(sp, "fail_drive", group="rg0", index=3)
        # The 32 MiB replacement is created sparse, so the answer is "rebuilding"; ENOSPC comes later.
        cp = _cli(sp, "replace-drive", "group=rg0", "index=3", f"path={small}/new3.img")
        assert cp.returncode == 0, cp.stderr
        cp = _cli(sp, "wait-rebuild", "group=rg0")
        assert cp.returncode == 1 and "rebuild of drive 3" in cp.stderr and "No space left" in cp.stderr, cp.stderr
        g = _group(sp)
        assert g["drives"][3]["state"] == "failed" and g["degraded"] is True
        assert "No space left" in g["rebuild_error"]
        shown = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "show", "--data-dir", str(sp.data_dir)],
                               capture_output=True, text=True, timeout=60).stdout
        assert "No space left" in shown, shown
        assert sp.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)

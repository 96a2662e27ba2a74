"""Auto-tiering switched on while a migration copies and a host reads a run-time external volume (issue 13).

Turning tiering on used to stop every migration's copy and close every external volume added at
run time, which stayed in the mapping tables: LUs on them then read through closed sessions and
migrations never reached simplex.  Two real arrays: B (127.0.0.2) serves a LUN; A adds it with
``sanlab admin add-external``, serves an LU straight on it, takes it over into a volume of its own
with a migration, and has auto-tiering enabled halfway through the copy while a host reads both.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from sanlab.replication.delta import MARKER_TASK
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, need, run

pytestmark = pytest.mark.integration

MiB = 1 << 20
BS = 512
SIZE = 32 * MiB
BLOCKS = SIZE // BS
B_TARGET = "iqn.2026-11.org.sanlab:array-b"
A_TARGET = "iqn.2026-11.org.sanlab:array-a"
EXTERNAL_LUN, MIGRATED_LUN = 3, 4


def _sanlab(a: SanlabProcess, *words: str) -> Any:
    """``sanlab WORDS --json`` against array A; the parsed answer (the command must succeed)."""
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(a.data_dir), "--json"],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return json.loads(cp.stdout)


async def _host_reads(a: SanlabProcess, expected: bytes, stop: asyncio.Event) -> dict[int, int]:
    """Read random ranges of both LUs until ``stop``, checking every byte; reads per LUN."""
    cfg = InitiatorConfig(initiator_name="iqn.2026-12.test:tiering-host", nop_interval=0, reconnect=False,
                          command_timeout=30)
    rng = random.Random(13)
    reads = {EXTERNAL_LUN: 0, MIGRATED_LUN: 0}
    async with IscsiSession(a.host, a.port, A_TARGET, cfg) as s:
        for lun in reads:
            await s.clear_unit_attentions(lun)
        while not stop.is_set():
            lun = rng.choice(list(reads))
            blocks = rng.choice([8, 64, 256])
            lba = rng.randrange(BLOCKS - blocks)
            got = await s.read16(lun, lba, blocks, BS)
            assert got == expected[lba * BS:(lba + blocks) * BS], (lun, lba, blocks)
            reads[lun] += 1
    return reads


async def test_auto_tiering_leaves_a_migration_and_a_run_time_external_volume_working(
        sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    b = sanlab_factory(f'[[targets]]\nname = "{B_TARGET}"\n[[targets.luns]]\nlun = 0\nsize = "32MiB"\n',
                       host="127.0.0.2")
    old = tmp_path / "old.img"
    old.write_bytes(os.urandom(SIZE))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(old), b.url(target=B_TARGET)])
    expected = old.read_bytes()
    a = sanlab_factory(f'initiator_name = "{A_TARGET}"\n[[targets]]\nname = "{A_TARGET}"\n', host="127.0.0.1")

    def admin(*words: str) -> Any:
        return _sanlab(a, "admin", *words)

    admin("add-external", "name=bx", f"portal={b.portal}", f"target={B_TARGET}", "lun=0", "timeout=5")
    admin("create-vvol", "vvol=5", "real=bx", "real_start=0", f"size={BLOCKS}")
    admin("create-lu", "name=lux", "vvol=5", "vstart=0", f"size={BLOCKS}")
    admin("export", "lu=lux", f"target={A_TARGET}", f"lun={EXTERNAL_LUN}")
    # The destination on a parity group, a mirrored group beside it: tiering has somewhere to move LDEVs.
    admin("create-raid-group", "name=rg5", "level=5", "drives=d0.img,d1.img,d2.img", "drive_size=24MiB",
          "ldev_size=4MiB")
    admin("create-raid-group", "name=rg1", "level=1", "drives=m0.img,m1.img", "drive_size=48MiB")
    admin("create-volume", "name=v", "size=32MiB", "groups=rg5")
    admin("migrate-start", "source=bx", "dest=v", "chunk=4KiB")  # 8192 small chunks: a copy of some seconds
    admin("create-vvol", "vvol=6", "real=v", "real_start=0", f"size={BLOCKS}")
    admin("create-lu", "name=luv", "vvol=6", "vstart=0", f"size={BLOCKS}")
    admin("export", "lu=luv", f"target={A_TARGET}", f"lun={MIGRATED_LUN}")

    stop = asyncio.Event()
    reader = asyncio.create_task(_host_reads(a, expected, stop))
    await asyncio.sleep(0.3)
    enabled = await asyncio.to_thread(admin, "auto-tiering", "enable=yes", "interval=1")
    assert enabled == {"auto_tiering": True, "interval": 1.0}
    (during,) = await asyncio.to_thread(_sanlab, a, "migrate", "status")
    assert during["state"] == "copying", during  # tiering came on in the middle of the copy
    for _ in range(600):
        (status,) = await asyncio.to_thread(_sanlab, a, "migrate", "status")
        if status["state"] == "simplex" or reader.done():
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # at least one tiering round with the host still reading
    stop.set()
    reads = await reader  # every byte the host read was right, through both LUs
    assert status["state"] == "simplex" and status["progress"] == 1.0, status
    assert min(reads.values()) > 20, reads

    # The migrated volume holds B's bytes, and the LU on the run-time external volume still reads them.
    for lun in (MIGRATED_LUN, EXTERNAL_LUN):
        got = tmp_path / f"lun{lun}.img"
        run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", f"count={SIZE // MiB}",
             f"if={a.url(lun, target=A_TARGET)}", f"of={got}"])
        assert got.read_bytes() == expected, lun
    view = admin("show")
    assert [e["name"] for e in view["external_volumes"]] == ["bx"]
    # (every array also runs the journals' marker task, replication/delta.py: not this test's)
    tasks = {(t["kind"], t["name"]): t["state"] for t in view["background_tasks"] if t["name"] != MARKER_TASK}
    assert tasks == {("tiering", "auto"): "running", ("migration", "v"): "done"}, view["background_tasks"]
    assert '"background_task_failed"' not in a.log() and '"tiering_round_failed"' not in a.log()
    admin("migrate-detach", "dest=v")

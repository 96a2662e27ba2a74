"""Growing a LUN of a running array while a host is logged in (sanlab admin resize-lun; SBC-3 §4.5)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Callable

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import TARGET, SanlabProcess, need, run

pytestmark = pytest.mark.integration

MiB = 1 << 20
CONFIG = f"""
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
size = "8MiB"
"""
HOST = InitiatorConfig(initiator_name="iqn.2026-11.test:resize-host", nop_interval=0, reconnect=False)


async def sanlab_admin(sp: SanlabProcess, *words: str) -> subprocess.CompletedProcess[str]:
    """`sanlab admin ...` against the running array, off the event loop (the session stays served)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "sanlab.tools.cli", "admin", *words, "--data-dir", str(sp.data_dir)],
        capture_output=True, text=True, timeout=120)


async def test_resize_lun_under_a_logged_in_host(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    first, last = os.urandom(4096), os.urandom(512)
    grown = os.urandom(512)
    async with IscsiSession(sp.host, sp.port, TARGET, HOST) as host:
        await host.clear_unit_attentions(0)
        assert await host.read_capacity16(0) == (8 * MiB // 512, 512)
        await host.write16(0, 0, first, 512)
        await host.write16(0, 8 * MiB // 512 - 1, last, 512, fua=True)

        cp = await sanlab_admin(sp, "resize-lun", f"target={TARGET}", "lun=0", "size=16MiB")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert '"changed": true' in cp.stdout

        # The logged-in session's next command: CHECK CONDITION, UNIT ATTENTION, CAPACITY DATA HAS CHANGED
        # (fixed-format current sense, 70h).
        r = await host.test_unit_ready(0)
        assert r.status == 0x02 and r.sense is not None, r
        assert (r.sense.key, r.sense.asc, r.sense.ascq) == (0x6, 0x2A, 0x09), r.sense
        assert not r.sense.descriptor and not r.sense.deferred
        assert (await host.test_unit_ready(0)).status == 0  # reported once
        assert await host.read_capacity16(0) == (16 * MiB // 512, 512)  # last LBA 32767
        # Data written before is intact; the new area reads zeros and takes writes up to the new last LBA.
        assert await host.read16(0, 0, 8, 512) == first
        assert await host.read16(0, 8 * MiB // 512 - 1, 1, 512) == last
        assert await host.read16(0, 8 * MiB // 512, 8, 512) == bytes(4096)
        await host.write16(0, 16 * MiB // 512 - 1, grown, 512, fua=True)
        assert await host.read16(0, 16 * MiB // 512 - 1, 1, 512) == grown

    # A second client (libiscsi) sees the new size too.
    cp = run([need("iscsi-readcapacity16"), sp.url()])
    assert f"Totalsize:{16 * MiB}" in cp.stdout.replace(" ", ""), cp.stdout
    # The config still says 8MiB: the grown file wins after a restart, nothing is cut off.
    assert sp.stop() == 0
    assert (sp.data_dir / "array0-lun0.img").stat().st_size == 16 * MiB
    sp2 = sanlab_factory(CONFIG, port=sp.port, extra=["--data-dir", str(sp.data_dir)])
    async with IscsiSession(sp2.host, sp2.port, TARGET, HOST) as host:
        await host.clear_unit_attentions(0)
        assert await host.read_capacity16(0) == (16 * MiB // 512, 512)
        assert await host.read16(0, 0, 8, 512) == first
        assert await host.read16(0, 16 * MiB // 512 - 1, 1, 512) == grown


async def test_resize_lun_refuses_to_shrink(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    async with IscsiSession(sp.host, sp.port, TARGET, HOST) as host:
        await host.clear_unit_attentions(0)
        cp = await sanlab_admin(sp, "resize-lun", f"target={TARGET}", "lun=0", "size=4MiB")
        assert cp.returncode == 1, cp.stdout + cp.stderr
        assert f"cannot resize {TARGET} LUN 0 from {8 * MiB} to {4 * MiB} bytes" in cp.stderr, cp.stderr
        assert "only grows" in cp.stderr, cp.stderr
        cp = await sanlab_admin(sp, "resize-lun", f"target={TARGET}", "lun=0", "size=1000")
        assert cp.returncode == 1 and "not a whole number of 512-byte blocks" in cp.stderr, cp.stderr
        # Nothing changed: no unit attention, the same capacity, the same file.
        assert (await host.test_unit_ready(0)).status == 0
        assert await host.read_capacity16(0) == (8 * MiB // 512, 512)
    assert (sp.data_dir / "array0-lun0.img").stat().st_size == 8 * MiB

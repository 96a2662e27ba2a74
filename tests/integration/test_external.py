"""Two real arrays: A serves B's LUN as an external volume (SPEC §3, seeds 000/002)."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, need, run

pytestmark = pytest.mark.integration

B_TARGET = "iqn.2026-11.org.sanlab:array-b"
A_TARGET = "iqn.2026-11.org.sanlab:array-a"
B_CONFIG = f"""
[[targets]]
name = "{B_TARGET}"
[[targets.luns]]
lun = 0
size = "32MiB"
"""


def a_config(b: SanlabProcess, lock: str = "off", timeout: int = 3, lun: int = 0) -> str:
    """Array A serving B's LUN ``lun`` as its LUN 0, through external volume "b0"."""
    return f"""
initiator_name = "iqn.2026-11.org.sanlab:array-a"
[[external_volumes]]
name = "b0"
portal = "{b.portal}"
target = "{B_TARGET}"
lun = {lun}
lock = "{lock}"
timeout = {timeout}
[[targets]]
name = "{A_TARGET}"
[[targets.luns]]
lun = 0
external = "b0"
"""


def test_reads_and_writes_pass_through(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    b = sanlab_factory(B_CONFIG, host="127.0.0.2")
    a = sanlab_factory(a_config(b), host="127.0.0.1")
    # A reports its own identity, not B's.
    inq_a = run([need("iscsi-inq"), "-e", "1", "-c", "131", a.url(target=A_TARGET)]).stdout
    inq_b = run([need("iscsi-inq"), "-e", "1", "-c", "131", b.url(target=B_TARGET)]).stdout
    assert inq_a != inq_b
    src = tmp_path / "via-a.img"
    src.write_bytes(os.urandom(8 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), a.url(target=A_TARGET)])
    out = tmp_path / "from-b.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=8", f"if={b.url(target=B_TARGET)}",
         f"of={out}"])
    assert out.read_bytes() == src.read_bytes()
    # And the other way round.
    src2 = tmp_path / "via-b.img"
    src2.write_bytes(os.urandom(4 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src2), b.url(target=B_TARGET)])
    out2 = tmp_path / "from-a.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=4", f"if={a.url(target=A_TARGET)}",
         f"of={out2}"])
    assert out2.read_bytes() == src2.read_bytes()


async def test_peer_loss_fails_in_bounded_time_and_service_resumes(
        sanlab_factory: Callable[..., SanlabProcess]) -> None:
    b = sanlab_factory(B_CONFIG, host="127.0.0.2")
    a = sanlab_factory(a_config(b, timeout=2), host="127.0.0.1")
    cfg = InitiatorConfig(initiator_name="iqn.2026-11.test:host", nop_interval=0, reconnect=False,
                          command_timeout=60)
    async with IscsiSession(a.host, a.port, A_TARGET, cfg) as host:
        await host.clear_unit_attentions(0)
        await host.write16(0, 100, b"\x33" * 4096, 512)
        b.stop(signal.SIGKILL)
        t0 = time.monotonic()
        r = await host.execute(0, bytes([0x88, 0]) + (100).to_bytes(8, "big") + (8).to_bytes(4, "big") + b"\0\0",
                               read_length=4096)
        waited = time.monotonic() - t0
        assert r.status == 2 and r.sense is not None, r  # CHECK CONDITION, not a hang
        assert waited < 30, waited
        sanlab_factory(B_CONFIG, host="127.0.0.2", port=b.port, extra=["--data-dir", str(b.data_dir)])
        for _ in range(100):
            r = await host.execute(0, bytes([0x88, 0]) + (100).to_bytes(8, "big") + (8).to_bytes(4, "big")
                                   + b"\0\0", read_length=4096)
            if r.status == 0:
                break
            await asyncio.sleep(0.2)
        assert r.status == 0 and r.data == b"\x33" * 4096


def test_migratory_copy_under_host_writes(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    b = sanlab_factory(B_CONFIG, host="127.0.0.2")
    old = tmp_path / "old.img"
    old.write_bytes(os.urandom(32 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(old), b.url(target=B_TARGET)])
    a_cfg = a_config(b).split("[[targets.luns]]")[0]  # A's target starts without LUNs
    a = sanlab_factory(a_cfg, host="127.0.0.1")
    dd = str(a.data_dir)

    def sanlab(*words: str) -> str:
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", dd],
                            capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout

    sanlab("admin", "create-raid-group", "name=rg", "level=1", "drives=m0.img,m1.img", "drive_size=40MiB",
           "ldev_size=8MiB")
    sanlab("admin", "create-volume", "name=v", "size=32MiB")
    sanlab("migrate", "start", "b0", "v")
    sanlab("admin", "create-vvol", "vvol=1", "real=v", "real_start=0", f"size={(32 << 20) // 512}")
    sanlab("admin", "create-lu", "name=lu", "vvol=1", "vstart=0", f"size={(32 << 20) // 512}")
    sanlab("admin", "export", "lu=lu", f"target={A_TARGET}", "lun=0")
    # The new LU is online at once: the host writes its first 4 MiB while the copy runs.
    new = tmp_path / "new.img"
    new.write_bytes(os.urandom(4 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(new), a.url(target=A_TARGET)])
    out = sanlab("migrate", "status", "--watch")
    assert "simplex" in out and "100.0%" in out
    status = json.loads(sanlab("migrate", "status", "--json"))
    assert status[0]["state"] == "simplex"
    expected = new.read_bytes() + old.read_bytes()[4 << 20:]
    got = tmp_path / "got.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=32", f"if={a.url(target=A_TARGET)}",
         f"of={got}"])
    assert got.read_bytes() == expected
    # The old array was never written: the host's writes landed on the new one.
    from_b = tmp_path / "b.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=32", f"if={b.url(target=B_TARGET)}",
         f"of={from_b}"])
    assert from_b.read_bytes() == old.read_bytes()
    sanlab("admin", "migrate-detach", "dest=v")


def test_external_volume_added_at_run_time(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    import subprocess
    import sys

    b = sanlab_factory(B_CONFIG, host="127.0.0.2")
    a = sanlab_factory(f'initiator_name = "iqn.2026-11.org.sanlab:array-a"\n[[targets]]\nname = "{A_TARGET}"\n',
                       host="127.0.0.1")
    dd = str(a.data_dir)

    def admin(*words: str) -> str:
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "admin", *words, "--data-dir", dd, "--json"],
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout

    admin("add-external", "name=bx", f"portal={b.portal}", f"target={B_TARGET}", "lun=0", "timeout=5")
    blocks = (32 << 20) // 512
    admin("create-vvol", "vvol=5", "real=bx", "real_start=0", f"size={blocks}")
    admin("create-lu", "name=lux", "vvol=5", "vstart=0", f"size={blocks}")
    admin("export", "lu=lux", f"target={A_TARGET}", "lun=3")
    src = tmp_path / "x.img"
    src.write_bytes(os.urandom(2 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), a.url(3, target=A_TARGET)])
    out = tmp_path / "b.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=2", f"if={b.url(target=B_TARGET)}",
         f"of={out}"])
    assert out.read_bytes() == src.read_bytes()
    # After a restart the catalog logs in to the peer again and the LU is back.
    assert a.stop() == 0
    a2 = sanlab_factory(f'initiator_name = "iqn.2026-11.org.sanlab:array-a"\n[[targets]]\nname = "{A_TARGET}"\n',
                        host="127.0.0.1", port=a.port, extra=["--data-dir", dd])
    out2 = tmp_path / "a.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=2", f"if={a2.url(3, target=A_TARGET)}",
         f"of={out2}"])
    assert out2.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("lock", ["held", "per-request"])
async def test_reserve_based_locking(sanlab_factory: Callable[..., SanlabProcess], lock: str) -> None:
    b = sanlab_factory(B_CONFIG, host="127.0.0.2")
    a = sanlab_factory(a_config(b, lock=lock), host="127.0.0.1")
    other_cfg = InitiatorConfig(initiator_name="iqn.2026-11.test:second-host", nop_interval=0, reconnect=False)
    host_cfg = InitiatorConfig(initiator_name="iqn.2026-11.test:host", nop_interval=0, reconnect=False)
    async with IscsiSession(b.host, b.port, B_TARGET, other_cfg) as other, \
            IscsiSession(a.host, a.port, A_TARGET, host_cfg) as host:
        await other.clear_unit_attentions(0)
        await host.clear_unit_attentions(0)
        write = bytes([0x8A, 0]) + (7).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"\0\0"
        if lock == "held":
            # While A has the external volume mapped, B refuses a second host (seed 000, claim 14).
            r = await other.execute(0, write, data_out=b"\x01" * 512)
            assert r.status == 0x18, r  # RESERVATION CONFLICT
            r = await other.execute(0, bytes([0x88, 0]) + (7).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"\0\0",
                                    read_length=512)
            assert r.status == 0x18, r  # an SPC-2 reservation keeps readers out too
            await host.write16(0, 7, b"\x02" * 512, 512)
            assert await host.read16(0, 7, 1, 512) == b"\x02" * 512
        else:
            # Per request: A holds the reservation only while it serves a request.
            await host.write16(0, 7, b"\x02" * 512, 512)
            r = await other.execute(0, write, data_out=b"\x01" * 512)
            assert r.status == 0, r
            assert await other.read16(0, 7, 1, 512) == b"\x01" * 512
    # A's shutdown releases the lock: no stale reservation on B.
    assert a.stop() == 0
    async with IscsiSession(b.host, b.port, B_TARGET, other_cfg) as other:
        await other.clear_unit_attentions(0)
        r = await other.execute(0, bytes([0x8A, 0]) + (8).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"\0\0",
                                data_out=b"\x03" * 512)
        assert r.status == 0, r


async def test_no_stale_lock_after_kill_9(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    b = sanlab_factory(B_CONFIG, host="127.0.0.2")
    a = sanlab_factory(a_config(b, lock="held"), host="127.0.0.1")
    cfg = InitiatorConfig(initiator_name="iqn.2026-11.test:second-host", nop_interval=0, reconnect=False)
    write = bytes([0x8A, 0]) + (9).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"\0\0"
    async with IscsiSession(b.host, b.port, B_TARGET, cfg) as other:
        await other.clear_unit_attentions(0)
        assert (await other.execute(0, write, data_out=bytes(512))).status == 0x18
        a.stop(signal.SIGKILL)  # A dies holding the reservation
        # B sees the I_T nexus go (connection loss) and the SPC-2 reservation with it.
        for _ in range(50):
            r = await other.execute(0, write, data_out=bytes(512))
            if r.status == 0:
                break
            await asyncio.sleep(0.1)
        assert r.status == 0, r
    # A restarted takes the lock again under the same I_T nexus (stable ISID).
    a2 = sanlab_factory(a_config(b, lock="held"), host="127.0.0.1", port=a.port, extra=["--data-dir", str(a.data_dir)])
    async with IscsiSession(b.host, b.port, B_TARGET, cfg) as other:
        await other.clear_unit_attentions(0)
        assert (await other.execute(0, write, data_out=bytes(512))).status == 0x18
    assert a2.stop() == 0


async def test_initiator_scsi_helpers_against_sanlab(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    b = sanlab_factory(B_CONFIG + "\n[server]\nnop_interval = 1\nnop_timeout = 2\n", host="127.0.0.2")
    cfg = InitiatorConfig(initiator_name="iqn.2026-11.test:helpers", nop_interval=0, reconnect=False)
    async with IscsiSession(b.host, b.port, B_TARGET, cfg) as s:
        await s.clear_unit_attentions(0)
        await asyncio.sleep(3.5)  # idle past nop_timeout: the target pinged and we answered
        assert (await s.test_unit_ready(0)).status == 0
        # PERSISTENT RESERVE OUT REGISTER, then IN READ KEYS.
        (await s.persistent_reserve_out(0, 0x00, 0, key=0, sa_key=0xABCDEF)).check()
        keys = (await s.persistent_reserve_in(0, 0x00)).check().data
        assert int.from_bytes(keys[4:8], "big") == 8 and keys[8:16] == (0xABCDEF).to_bytes(8, "big")
        await s.write16(0, 50, b"\x11" * 512, 512)
        r = await s.compare_and_write(0, 50, b"\x11" * 512, b"\x22" * 512, 512)
        assert r.status == 0 and await s.read16(0, 50, 1, 512) == b"\x22" * 512
        r = await s.compare_and_write(0, 50, b"\x11" * 512, b"\x33" * 512, 512)
        assert r.status == 2 and r.sense is not None and r.sense.key == 0xE  # MISCOMPARE
        assert (await s.unmap(0, [(50, 1)])).status == 0
        assert await s.read16(0, 50, 1, 512) == bytes(512)
        assert (await s.reserve6(0)).status == 0x18  # RESERVE(6) while registrations exist (SPC-4 §5.9.3)

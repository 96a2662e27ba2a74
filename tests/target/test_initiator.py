"""sanlab's iSCSI initiator against real targets: `sanlab serve` and Debian's tgtd, on loopback."""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from sanlab.target.chap import ChapCredentials
from sanlab.target.initiator import (
    CommandTimeout, ConnectionLost, InitiatorConfig, IscsiSession, LoginFailed, ScsiCommandError, discover,
)
from tests.conftest import TARGET, SanlabProcess, free_port

pytestmark = pytest.mark.integration

CONFIG = f"""
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
size = "32MiB"
[[targets.luns]]
lun = 1
size = "8MiB"
block_size = 4096
"""

CHAP_CONFIG = CONFIG + """
[targets.chap]
username = "alice"
secret = "alice-secret-123"
[targets.mutual_chap]
username = "array0"
secret = "array0-secret-456"
"""


def cfg(**kw: object) -> InitiatorConfig:
    c = InitiatorConfig(initiator_name="iqn.2026-11.org.sanlab:test-initiator", nop_interval=0,
                        reconnect=False)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@pytest.fixture
def sanlab_target(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    return sanlab_factory(CONFIG)


class Tgtd:
    def __init__(self, tmp: Path) -> None:
        if shutil.which("tgtd") is None:
            pytest.fail("tgtd is not installed (apt-get install tgt)")
        self.port = free_port()
        # tgtd's control "port" names a local management socket; tgtadm takes small numbers only.
        self.ctl = random.randint(1000, 9999)
        self.img = tmp / "tgt.img"
        with open(self.img, "wb") as f:
            f.truncate(32 << 20)
        self.log = open(tmp / "tgtd.log", "wb")
        self.proc = subprocess.Popen(["tgtd", "-f", "-C", str(self.ctl), "--iscsi", f"portal=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.target = "iqn.2026-11.org.sanlab:tgtd-peer"
        deadline = time.monotonic() + 10
        while True:
            cp = subprocess.run(["tgtadm", "-C", str(self.ctl), "--lld", "iscsi", "--op", "new", "--mode", "target",
                                 "--tid", "1", "-T", self.target], capture_output=True, text=True)
            if cp.returncode == 0:
                break
            assert time.monotonic() < deadline, cp.stderr
            time.sleep(0.1)
        for args in (["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", str(self.img)],
                     ["--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"]):
            subprocess.run(["tgtadm", "-C", str(self.ctl), "--lld", "iscsi", *args], check=True, capture_output=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def tgtd(tmp_path: Path) -> Iterator[Tgtd]:
    t = Tgtd(tmp_path)
    yield t
    t.stop()


# --- against sanlab serve ------------------------------------------------------------------


async def test_discovery_and_login(sanlab_target: SanlabProcess) -> None:
    found = await discover(sanlab_target.host, sanlab_target.port, cfg())
    assert [n for n, _ in found] == [TARGET]
    assert any(a.startswith(f"127.0.0.1:{sanlab_target.port},") for a in found[0][1])
    async with IscsiSession(sanlab_target.host, sanlab_target.port, TARGET, cfg()) as s:
        assert s.tsih != 0
        assert await s.report_luns() == [0, 1]
        inq = await s.inquiry(0)
        assert inq[8:14] == b"SANLAB"
        await s.clear_unit_attentions(1)
        assert await s.read_capacity16(1) == (2048, 4096)


async def test_read_write_many_in_flight(sanlab_target: SanlabProcess) -> None:
    async with IscsiSession(sanlab_target.host, sanlab_target.port, TARGET, cfg()) as s:
        # The power-on unit attention of the new nexus comes first.
        with pytest.raises(ScsiCommandError) as exc:
            (await s.test_unit_ready(0)).check()
        assert exc.value.sense is not None and exc.value.sense.key == 6
        blobs = {lba: os.urandom(64 * 1024) for lba in range(0, 64 * 128 * 8, 128 * 8)}  # 64 writes of 64 KiB
        await asyncio.gather(*(s.write16(0, lba, data, 512) for lba, data in blobs.items()))
        got = await asyncio.gather(*(s.read16(0, lba, 128, 512) for lba in blobs))
        assert got == list(blobs.values())
        big = os.urandom(3 << 20)  # bigger than MaxBurstLength: several R2T sequences
        await s.write16(0, 20000, big, 512, fua=True)
        assert await s.read16(0, 20000, len(big) // 512, 512) == big
        await s.synchronize_cache16(0)
    with open(sanlab_target.data_dir / "array0-lun0.img", "rb") as f:
        f.seek(20000 * 512)
        assert f.read(len(big)) == big


async def test_scsi_errors_carry_sense(sanlab_target: SanlabProcess) -> None:
    async with IscsiSession(sanlab_target.host, sanlab_target.port, TARGET, cfg()) as s:
        await s.clear_unit_attentions(0)
        with pytest.raises(ScsiCommandError) as exc:
            await s.read16(0, 1 << 40, 1, 512)
        assert exc.value.status == 2 and exc.value.sense is not None
        assert (exc.value.sense.key, exc.value.sense.asc, exc.value.sense.ascq) == (5, 0x21, 0)


@pytest.mark.parametrize("keys", [{"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"},
                                  {"ImmediateData": "No", "InitialR2T": "Yes", "MaxBurstLength": "16384"},
                                  {"MaxRecvDataSegmentLength": "4096"}])
async def test_negotiated_variants(sanlab_target: SanlabProcess, keys: dict[str, str]) -> None:
    c = cfg()
    c.keys = dict(c.keys, **keys)
    async with IscsiSession(sanlab_target.host, sanlab_target.port, TARGET, c) as s:
        if "HeaderDigest" in keys:
            assert s.params.header_digest and s.params.data_digest
        await s.clear_unit_attentions(0)
        data = os.urandom(200 * 1024)
        await s.write16(0, 100, data, 512)
        assert await s.read16(0, 100, len(data) // 512, 512) == data


async def test_chap_mutual_and_wrong_secret(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CHAP_CONFIG)
    good = cfg(chap=ChapCredentials("alice", b"alice-secret-123"),
               target_chap=ChapCredentials("array0", b"array0-secret-456"))
    async with IscsiSession(sp.host, sp.port, TARGET, good) as s:
        assert await s.report_luns() == [0, 1]
    with pytest.raises(LoginFailed) as exc:
        await IscsiSession(sp.host, sp.port, TARGET, cfg(chap=ChapCredentials("alice", b"wrong-secret-000"))).connect()
    assert exc.value.login_status == 0x0201
    fake = cfg(chap=ChapCredentials("alice", b"alice-secret-123"),
               target_chap=ChapCredentials("array0", b"not-the-target-secret"))
    with pytest.raises(LoginFailed) as exc:
        await IscsiSession(sp.host, sp.port, TARGET, fake).connect()
    assert exc.value.login_status == 0x0201  # the target failed to prove itself


async def test_connection_loss_fails_commands_and_reconnects(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    c = cfg(reconnect=True, reconnect_backoff=(0.2,))
    s = IscsiSession(sp.host, sp.port, TARGET, c)
    await s.connect()
    await s.test_unit_ready(0)
    port = sp.port
    sp.stop(signal.SIGKILL)
    with pytest.raises((ConnectionLost, CommandTimeout)):
        await s.execute(0, bytes(6), timeout=3)
    sp2 = sanlab_factory(CONFIG, port=port)
    assert sp2.port == port
    for _ in range(50):
        await asyncio.sleep(0.1)
        if s._connected.is_set():
            break
    assert (await s.test_unit_ready(0)).status in (0, 2)  # reinstated; maybe a power-on UA first
    await s.logout()


async def test_fail_when_refused_decides_at_once_and_reconnects_to_a_peer_back(
        sanlab_factory: Callable[..., SanlabProcess]) -> None:
    """A sync pair's mirror session: a command made while the target is down fails as soon as a
    reconnect attempt is refused, not after its timeout; once the target is back, a command has a
    reconnect made at once rather than after the rest of a long backoff."""
    sp = sanlab_factory(CONFIG)
    port = sp.port
    c = cfg(reconnect=True, reconnect_backoff=(0.05, 30.0), fail_when_refused=True)
    s = IscsiSession(sp.host, sp.port, TARGET, c)
    await s.connect()
    await s.clear_unit_attentions(0)
    sp.stop(signal.SIGKILL)
    for _ in range(100):  # the session sees the loss (a command sent before would fail with it)
        if not s._connected.is_set():
            break
        await asyncio.sleep(0.05)
    began = time.monotonic()
    with pytest.raises(ConnectionLost, match="reconnect refused"):
        await s.execute(0, bytes(6), timeout=20)
    assert time.monotonic() - began < 10  # refused: not the 20 s timeout (nor the 30 s backoff)
    sp2 = sanlab_factory(CONFIG, port=port)
    assert sp2.port == port
    # The loop's next attempt is 30 s away: this command's own attempt logs in again.
    began = time.monotonic()
    assert (await s.execute(0, bytes(6), timeout=20)).status in (0, 2)
    assert time.monotonic() - began < 10
    await s.logout()
    # Without the option a command waits for the session to return (here: its timeout).
    s2 = IscsiSession(sp2.host, sp2.port, TARGET, cfg(reconnect=True, reconnect_backoff=(0.05,)))
    await s2.connect()
    sp2.stop(signal.SIGKILL)
    for _ in range(100):
        if not s2._connected.is_set():
            break
        await asyncio.sleep(0.05)
    began = time.monotonic()
    with pytest.raises(ConnectionLost):
        await s2.execute(0, bytes(6), timeout=1.5)
    assert time.monotonic() - began >= 1.4
    await s2.close()


async def test_command_timeout_aborts(sanlab_target: SanlabProcess) -> None:
    async with IscsiSession(sanlab_target.host, sanlab_target.port, TARGET, cfg()) as s:
        await s.clear_unit_attentions(0)
        # A huge read on a tiny timeout: the command is aborted, the session stays usable.
        with pytest.raises(CommandTimeout):
            await s.execute(0, bytes([0x88, 0]) + (0).to_bytes(8, "big") + (65535).to_bytes(4, "big") + b"\0\0",
                            read_length=65535 * 512, timeout=0.0001)
        assert (await s.test_unit_ready(0)).status == 0


# --- against tgtd --------------------------------------------------------------------------


async def test_interop_with_tgtd(tgtd: Tgtd) -> None:
    found = await discover("127.0.0.1", tgtd.port, cfg())
    assert tgtd.target in [n for n, _ in found]
    async with IscsiSession("127.0.0.1", tgtd.port, tgtd.target, cfg()) as s:
        assert 1 in await s.report_luns()
        await s.clear_unit_attentions(1)
        n, bs = await s.read_capacity16(1)
        assert n * bs == 32 << 20
        data = os.urandom(1 << 20)
        await asyncio.gather(*(s.write16(1, i * 256, data[i * 131072:(i + 1) * 131072], 512) for i in range(8)))
        assert await s.read16(1, 0, 2048, 512) == data
    assert tgtd.img.read_bytes()[:1 << 20] == data


async def test_keepalive_notices_a_frozen_target(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    c = cfg(nop_interval=0.5, nop_timeout=1.0)
    s = IscsiSession(sp.host, sp.port, TARGET, c)
    await s.connect()
    await s.clear_unit_attentions(0)
    await asyncio.sleep(1.5)  # idle: our NOP-Out pings are answered, the session stays up
    assert s._connected.is_set()
    sp.proc.send_signal(signal.SIGSTOP)  # the target stops answering but the TCP connection stays open
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            if not s._connected.is_set():
                break
        assert not s._connected.is_set(), "a silent target must be detected by the NOP-Out keepalive"
        with pytest.raises((ConnectionLost, CommandTimeout)):
            await s.execute(0, bytes(6), timeout=1)
    finally:
        sp.proc.send_signal(signal.SIGCONT)
        await s.close()

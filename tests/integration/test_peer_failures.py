"""A refused peer vs an unreachable one, with real `sanlab serve` peers (issue 13, seam 2).

The external volume and the initiator run here, in the test's event loop; the peer is a real array.
Refused: the peer answers (a read-only LUN, a reservation another initiator holds, an LBA beyond the
LUN): PeerRefused with the peer's status and sense.  Unreachable: the peer is frozen or cut off by a
TCP proxy the test controls, or killed with SIGKILL: PeerUnreachable within the configured timeouts.
"""
from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from sanlab.scsi.sense import Asc, SenseKey
from sanlab.scsi.task import ScsiStatus
from sanlab.storage.external import ExternalVolume
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable
from sanlab.storage.volume import VolumeError
from sanlab.target.errors import ScsiCommandError
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess
from tests.integration.test_external import A_TARGET, B_CONFIG, B_TARGET, a_config

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
"""The external volume's command timeout, and the ABORT TASK's."""


@pytest.fixture
def peer(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> SanlabProcess:
    """Array B: test_external's LUN 0, and LUN 1 read-only."""
    ro = tmp_path / "readonly.img"
    ro.write_bytes(b"\x5a" * (8 << 20))  # a read-only LUN is never created (lab/examples/readonly.toml)
    return sanlab_factory(B_CONFIG + f'[[targets.luns]]\nlun = 1\nsize = "8MiB"\nfile = "{ro}"\nreadonly = true\n',
                          host="127.0.0.2")


def array_config(name: str = "iqn.2026-11.org.sanlab:array-a") -> InitiatorConfig:
    return InitiatorConfig(initiator_name=name, command_timeout=TIMEOUT, abort_timeout=TIMEOUT,
                           login_timeout=TIMEOUT, nop_interval=0, reconnect=True, reconnect_backoff=(0.1,))


async def open_external(host: str, port: int, lun: int, config: InitiatorConfig | None = None) -> ExternalVolume:
    vol = ExternalVolume(f"b{lun}", IscsiSession(host, port, B_TARGET, config or array_config()), lun)
    await vol.open()
    return vol


# --- refused: the peer answered ------------------------------------------------------------------


async def test_write_to_a_read_only_peer_lun_is_refused_with_the_peers_sense(peer: SanlabProcess) -> None:
    vol = await open_external(peer.host, peer.port, 1)
    try:
        assert await vol.read(0, 1) == b"\x5a" * 512
        with pytest.raises(PeerRefused) as exc:
            await vol.write(0, bytes(512))
        assert type(exc.value) is PeerRefused and "external volume b1" in str(exc.value)
        assert exc.value.status == ScsiStatus.CHECK_CONDITION and exc.value.sense is not None
        assert (exc.value.sense.key, exc.value.sense.asc_ascq) == (SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
    finally:
        await vol.close()


async def test_reservation_held_by_another_initiator_is_refused(peer: SanlabProcess) -> None:
    other = IscsiSession(peer.host, peer.port, B_TARGET, array_config("iqn.2026-11.test:other-host"))
    await other.connect()
    vol = await open_external(peer.host, peer.port, 0)
    try:
        await other.clear_unit_attentions(0)
        assert (await other.reserve6(0)).status == ScsiStatus.GOOD
        with pytest.raises(PeerRefused) as exc:
            await vol.write(8, b"\x01" * 512)
        assert exc.value.reservation_conflict and exc.value.sense is None
        assert (await other.release6(0)).status == ScsiStatus.GOOD
        await vol.write(8, b"\x01" * 512)  # the peer takes it once the reservation is gone
        assert await vol.read(8, 1) == b"\x01" * 512
    finally:
        await vol.close()
        await other.logout()


async def test_lba_beyond_the_peer_lun_is_refused_by_the_peer(peer: SanlabProcess) -> None:
    async with IscsiSession(peer.host, peer.port, B_TARGET, array_config()) as s:
        await s.clear_unit_attentions(0)
        blocks, bs = await s.read_capacity16(0)
        with pytest.raises(ScsiCommandError) as exc:
            await s.write16(0, blocks, bytes(bs), bs)
        assert isinstance(exc.value, PeerRefused) and exc.value.sense is not None
        assert (exc.value.sense.key, exc.value.sense.asc_ascq) == (SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
    # The external volume checks its range itself: that failure never reached the peer.
    vol = await open_external(peer.host, peer.port, 0)
    try:
        with pytest.raises(VolumeError) as local:
            await vol.write(vol.num_blocks, bytes(512))
        assert not isinstance(local.value, PeerFailure)
    finally:
        await vol.close()


async def test_host_sees_a_medium_error_for_a_refused_peer(sanlab_factory: Callable[..., SanlabProcess],
                                                          peer: SanlabProcess) -> None:
    """Host-visible behaviour is unchanged: MEDIUM ERROR / WRITE ERROR, not the peer's sense (storage/peer.py)."""
    a = sanlab_factory(a_config(peer, lun=1), host="127.0.0.1")
    host = InitiatorConfig(initiator_name="iqn.2026-11.test:host", nop_interval=0, reconnect=False)
    async with IscsiSession(a.host, a.port, A_TARGET, host) as s:
        await s.clear_unit_attentions(0)
        r = await s.execute(0, bytes([0x8A, 0]) + (0).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"\0\0",
                            data_out=bytes(512))
        assert r.status == ScsiStatus.CHECK_CONDITION and r.sense is not None
        assert (r.sense.key, r.sense.asc_ascq) == (SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR)
        assert await s.read16(0, 0, 1, 512) == b"\x5a" * 512
    assert "sense 7/27/00" in a.log()  # the peer's answer is in A's log


# --- unreachable: no answer ------------------------------------------------------------------------


class Proxy:
    """A TCP forwarder the test controls: :meth:`freeze` stops every byte (connections stay open),
    :meth:`cut` closes them and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.refusing = False
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(1 << 16):
                await self.flowing.wait()  # frozen: hold it, the connection stays open
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.close()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        self.refusing = True
        for w in self.writers:
            w.close()

    async def stop(self) -> None:
        self.cut()
        self.thaw()
        for task in list(self.pipes):
            task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_frozen_peer_is_unreachable_within_the_timeouts_then_service_resumes(peer: SanlabProcess) -> None:
    proxy = Proxy(peer.host, peer.port)
    vol = await open_external("127.0.0.1", await proxy.start(), 0)
    try:
        await vol.write(16, b"\x07" * 512)
        proxy.freeze()
        t0 = time.monotonic()
        with pytest.raises(PeerUnreachable) as exc:
            await vol.write(16, b"\x08" * 512)
        waited = time.monotonic() - t0
        # The command's timeout, then an unanswered ABORT TASK's: the connection is given up.
        assert TIMEOUT <= waited < 2 * TIMEOUT + 1.0, waited
        assert type(exc.value) is PeerUnreachable and "external volume b0" in str(exc.value)
        proxy.thaw()
        # A new session (reinstatement) through the thawed proxy; the write whose outcome was unknown is redone.
        for _ in range(50):
            try:
                await vol.write(16, b"\x08" * 512)
                break
            except PeerUnreachable:
                await asyncio.sleep(0.1)
        assert await vol.read(16, 1) == b"\x08" * 512
    finally:
        await vol.close()
        await proxy.stop()


async def test_cut_connection_is_unreachable_and_so_is_a_failed_reconnect(peer: SanlabProcess) -> None:
    proxy = Proxy(peer.host, peer.port)
    vol = await open_external("127.0.0.1", await proxy.start(), 0)
    try:
        assert len(await vol.read(0, 8)) == 4096
        proxy.cut()
        t0 = time.monotonic()
        with pytest.raises(PeerUnreachable):
            # Outstanding when the connection went, or sent while the session reconnects in vain.
            await vol.read(0, 8)
        with pytest.raises(PeerUnreachable) as exc:
            await vol.read(0, 8)
        assert time.monotonic() - t0 < 2 * TIMEOUT + 1.0
        assert "reconnecting" in str(exc.value)
    finally:
        await vol.close()
        await proxy.stop()


async def test_killed_peer_is_unreachable(peer: SanlabProcess) -> None:
    vol = await open_external(peer.host, peer.port, 0)
    try:
        await vol.write(24, b"\x09" * 512)
        peer.stop(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(PeerUnreachable):
            await vol.write(24, b"\x0a" * 512)
        assert time.monotonic() - t0 < TIMEOUT + 1.0
    finally:
        await vol.close()

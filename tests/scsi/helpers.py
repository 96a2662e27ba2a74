"""Helpers for the device server tests: CDB builders, a fake volume, ready device servers."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Awaitable, Protocol

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus, ScsiTask
from sanlab.storage.volume import SpaceExhausted, VolumeError
from sanlab.storage.file_volume import FileVolume

TARGET = "iqn.2026-11.org.sanlab:test"
NX = Nexus("iqn.1994-05.com.redhat:host-a", 0x023D00000001, TARGET, 1)
NX2 = Nexus("iqn.1994-05.com.redhat:host-b", 0x023D00000002, TARGET, 1)
BLOCKS = 2048
"""Capacity of the default test LU (512-byte blocks: 1 MiB)."""


def cdb10(op: int, lba: int = 0, blocks: int = 0, flags: int = 0, control: int = 0) -> bytes:
    """A 10-byte READ/WRITE-style CDB."""
    return struct.pack(">BBIBHB", op, flags, lba, 0, blocks, control)


def cdb12(op: int, lba: int = 0, blocks: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba, blocks, 0, 0)


def cdb16(op: int, lba: int = 0, blocks: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba, blocks, 0, 0)


def cdb6(op: int, lba: int = 0, blocks: int = 0) -> bytes:
    return bytes([op, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, blocks, 0])


def inquiry(evpd: bool = False, page: int = 0, alloc: int = 255, flags: int = 0) -> bytes:
    return struct.pack(">BBBHB", 0x12, flags | int(evpd), page, alloc, 0)


class Run(Protocol):
    def __call__(self, cdb: bytes, *, lun: int = 0, nexus: Nexus = NX,
                 data_out: bytes = b"") -> Awaitable[ScsiResult]: ...


def make_lu(tmp_path: Path, name: str = "lu0", blocks: int = BLOCKS, block_size: int = 512, lun: int = 0,
            **cfg: bool) -> LogicalUnit:
    vol = FileVolume(str(tmp_path / f"{name}.img"), blocks * block_size, block_size)
    return LogicalUnit(vol, LuConfig.for_lun(TARGET, lun, **cfg))


def runner(server: DeviceServer) -> Run:
    async def run(cdb: bytes, *, lun: int = 0, nexus: Nexus = NX, data_out: bytes = b"") -> ScsiResult:
        return await server.execute(ScsiTask(nexus, lun, cdb, data_out=data_out,
                                             write_edtl=len(data_out)))
    return run


class FakeVolume:
    """An in-memory Volume of any capacity that records calls and can fail on demand."""

    def __init__(self, num_blocks: int, block_size: int = 512) -> None:
        self._num_blocks = num_blocks
        self._block_size = block_size
        self.blocks: dict[int, bytes] = {}
        self.calls: list[tuple[str, int, int, bool]] = []
        self.fail: str | None = None
        self.closed = False

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    async def read(self, lba: int, nblocks: int) -> bytes:
        self.calls.append(("read", lba, nblocks, False))
        if self.fail == "read":
            raise VolumeError("injected read failure")
        return b"".join(self.blocks.get(lba + i, bytes(self._block_size)) for i in range(nblocks))

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        n = len(data) // self._block_size
        self.calls.append(("write", lba, n, fua))
        if self.fail == "write":
            raise VolumeError("injected write failure")
        if self.fail == "full":
            raise SpaceExhausted("injected: no space left on device")
        for i in range(n):
            self.blocks[lba + i] = bytes(data[i * self._block_size:(i + 1) * self._block_size])

    async def flush(self) -> None:
        self.calls.append(("flush", 0, 0, False))
        if self.fail == "flush":
            raise VolumeError("injected flush failure")

    async def close(self) -> None:
        self.closed = True


async def ready_server(luns: dict[int, LogicalUnit], *nexuses: Nexus) -> DeviceServer:
    """A device server whose power-on unit attentions are already consumed for ``nexuses``."""
    server = DeviceServer(TARGET, luns)
    for nx in nexuses or (NX,):
        server.nexus_added(nx)
        for lun in luns:
            while (await server.execute(ScsiTask(nx, lun, bytes(6)))).status != ScsiStatus.GOOD:
                pass
    return server

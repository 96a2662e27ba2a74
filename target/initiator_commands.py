"""The typed SCSI commands of the array's initiator: TEST UNIT READY, INQUIRY, REPORT LUNS,
READ CAPACITY(16), READ(16)/WRITE(16), SYNCHRONIZE CACHE(16), RESERVE/RELEASE(6), PERSISTENT
RESERVE IN/OUT, COMPARE AND WRITE and UNMAP, each a CDB (and parameter list) built here and sent
through the session's :meth:`~sanlab.target.initiator.IscsiSession.execute` (the result whatever
its status), :meth:`~sanlab.target.initiator.IscsiSession.run` (retried, GOOD or a typed failure)
or :meth:`~sanlab.target.initiator.IscsiSession.start`.

:class:`ScsiCommands` is a mixin that :class:`~sanlab.target.initiator.IscsiSession` inherits, so
callers keep writing ``session.read16(...)``; it knows nothing of sockets, timers or the
connection: those are ``initiator.py``'s.
"""
from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

from sanlab.scsi.sense import SenseKey
from sanlab.scsi.task import ScsiStatus
from sanlab.target.errors import ScsiCommandError
from sanlab.target.outcome import CommandResult


def _write16_cdb(lba: int, blocks: int, fua: bool) -> bytes:
    """WRITE(16) (SBC-3 §5.40): FUA in byte 1 bit 3."""
    return bytes([0x8A, 0x08 if fua else 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"


class ScsiCommands:
    """SCSI helpers over a session's ``execute``, ``run`` and ``start`` (the class that inherits
    this one provides them: :class:`~sanlab.target.initiator.IscsiSession`)."""

    if TYPE_CHECKING:
        async def execute(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
                          read_length: int = 0, timeout: float | None = None) -> CommandResult:
            """One SCSI command; its result whatever the status."""

        async def run(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
                      read_length: int = 0, timeout: float | None = None, *,
                      first: CommandResult | None = None) -> CommandResult:
            """One SCSI command, retried; GOOD or a typed failure."""

        def start(self, lun: int, cdb: bytes, data_out: bytes | bytearray | memoryview = b"",
                  read_length: int = 0) -> asyncio.Future[CommandResult] | None:
            """:meth:`run` begun without a coroutine; None when not connected now."""

    async def test_unit_ready(self, lun: int) -> CommandResult:
        """TEST UNIT READY, its result whatever the status."""
        return await self.execute(lun, bytes(6))

    async def clear_unit_attentions(self, lun: int, limit: int = 10) -> None:
        """TEST UNIT READY until no unit attention is pending (a fresh nexus starts with one)."""
        for _ in range(limit):
            r = await self.test_unit_ready(lun)
            if r.status == ScsiStatus.RESERVATION_CONFLICT:
                return  # UAs are reported before conflicts (SAM-5), so none is left; another holds the LU
            if r.status != ScsiStatus.CHECK_CONDITION or r.sense is None or r.sense.key != SenseKey.UNIT_ATTENTION:
                r.check()
                return
        raise ScsiCommandError(r.status, r.sense, f"more than {limit} unit attentions on LUN {lun}")

    async def inquiry(self, lun: int, page: int | None = None, alloc: int = 255) -> bytes:
        """Standard INQUIRY data, or the VPD ``page`` (SPC-4 §6.4)."""
        cdb = bytes([0x12, 0 if page is None else 1, page or 0]) + alloc.to_bytes(2, "big") + b"\0"
        return (await self.run(lun, cdb, read_length=alloc)).data

    async def report_luns(self) -> list[int]:
        """The target's LUNs (REPORT LUNS, SPC-4 §6.33)."""
        from sanlab.scsi.lun import decode_lun
        alloc = 16 + 8 * 1024
        cdb = bytes([0xA0, 0, 0, 0, 0, 0]) + alloc.to_bytes(4, "big") + b"\0\0"
        data = (await self.run(0, cdb, read_length=alloc)).data
        n = int.from_bytes(data[:4], "big") // 8
        return [decode_lun(data[8 + 8 * i:16 + 8 * i]) for i in range(n)]

    async def read_capacity16(self, lun: int) -> tuple[int, int]:
        """(number of blocks, block size)."""
        cdb = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + b"\0\0"
        data = (await self.run(lun, cdb, read_length=32)).data
        last, bs = struct.unpack_from(">QI", data)
        return last + 1, bs

    async def read16(self, lun: int, lba: int, blocks: int, block_size: int) -> bytes:
        """READ(16) of ``blocks`` blocks at ``lba``."""
        cdb = bytes([0x88, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"
        return (await self.run(lun, cdb, read_length=blocks * block_size)).data

    async def write16(self, lun: int, lba: int, data: bytes | bytearray | memoryview, block_size: int,
                      fua: bool = False) -> None:
        """WRITE(16) of ``data`` (whole blocks) at ``lba``, FUA when asked."""
        blocks = len(data) // block_size
        await self.run(lun, _write16_cdb(lba, blocks, fua), data_out=data)

    def write16_started(self, lun: int, lba: int, data: bytes | bytearray | memoryview, block_size: int,
                        fua: bool = False) -> asyncio.Future[CommandResult] | None:
        """:meth:`write16` begun without a coroutine (:meth:`start`); None when not connected now."""
        return self.start(lun, _write16_cdb(lba, len(data) // block_size, fua), data)

    async def synchronize_cache16(self, lun: int) -> None:
        """SYNCHRONIZE CACHE(16) of the whole LUN."""
        await self.run(lun, bytes([0x91]) + bytes(15))

    async def reserve6(self, lun: int) -> CommandResult:
        """SPC-2 RESERVE(6) of the whole LU; its result whatever the status (RESERVATION CONFLICT...)."""
        return await self.execute(lun, bytes([0x16, 0, 0, 0, 0, 0]))

    async def release6(self, lun: int) -> CommandResult:
        """SPC-2 RELEASE(6); its result whatever the status."""
        return await self.execute(lun, bytes([0x17, 0, 0, 0, 0, 0]))

    async def persistent_reserve_in(self, lun: int, service_action: int, alloc: int = 8192) -> CommandResult:
        """PERSISTENT RESERVE IN; its result whatever the status."""
        cdb = bytes([0x5E, service_action & 0x1F]) + bytes(5) + alloc.to_bytes(2, "big") + b"\0"
        return await self.execute(lun, cdb, read_length=alloc)

    async def persistent_reserve_out(self, lun: int, service_action: int, pr_type: int, key: int,
                                     sa_key: int = 0, flags: int = 0) -> CommandResult:
        """PERSISTENT RESERVE OUT with a basic parameter list; its result whatever the status."""
        params = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(4) + bytes([flags, 0, 0, 0])
        cdb = bytes([0x5F, service_action & 0x1F, pr_type & 0x0F, 0, 0]) + len(params).to_bytes(4, "big") + b"\0"
        return await self.execute(lun, cdb, data_out=params)

    async def compare_and_write(self, lun: int, lba: int, verify: bytes, write: bytes, block_size: int) -> CommandResult:
        """COMPARE AND WRITE; MISCOMPARE comes back as its result."""
        blocks = len(verify) // block_size
        cdb = bytes([0x89, 0]) + lba.to_bytes(8, "big") + bytes(3) + bytes([blocks, 0, 0])
        return await self.execute(lun, cdb, data_out=verify + write)

    async def unmap(self, lun: int, ranges: list[tuple[int, int]]) -> CommandResult:
        """UNMAP of (LBA, blocks) ranges (SBC-3 §5.28); its result whatever the status."""
        descs = b"".join(lba.to_bytes(8, "big") + n.to_bytes(4, "big") + bytes(4) for lba, n in ranges)
        params = (len(descs) + 6).to_bytes(2, "big") + len(descs).to_bytes(2, "big") + bytes(4) + descs
        cdb = bytes([0x42, 0]) + bytes(5) + len(params).to_bytes(2, "big") + b"\0"
        return await self.execute(lun, cdb, data_out=params)

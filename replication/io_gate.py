"""Holding and draining the I/O that runs through a wrapping volume, for a change at one point of
its I/O stream (a local copy pair's state change, a snapshot's creation or restore); the write
entry points and the whole-track range lock such a volume shares; putting the wrapped volume back
in its LU's slot."""
from __future__ import annotations

import asyncio
import contextlib
from contextlib import _AsyncGeneratorContextManager
from typing import AsyncIterator, Iterable

import structlog

from sanlab.replication.pair import TRACK_BYTES
from sanlab.scsi.lu import LogicalUnit
from sanlab.storage.emulated import EmulatedBlockOps
from sanlab.storage.range_lock import Holder, RangeLock
from sanlab.storage.volume import Volume

log = structlog.get_logger("sanlab.replication.io_gate")


class IoGate:
    """Mixin: :meth:`_op` around every I/O; :meth:`hold` stops new host I/O, :meth:`drain` waits for the rest."""

    def _init_gate(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._ops = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def hold(self) -> None:
        """New host I/O waits until :meth:`release` (a change at one point of the I/O stream)."""
        self._open.clear()

    def release(self) -> None:
        """Let held host I/O go on under the state it now finds."""
        self._open.set()

    async def drain(self) -> None:
        """Wait until no I/O runs through this volume."""
        await self._idle.wait()

    def _op_started(self) -> None:
        """An I/O begins (callers that cannot wait check :attr:`_open` first)."""
        self._ops += 1
        self._idle.clear()

    def _op_ended(self) -> None:
        self._ops -= 1
        if not self._ops:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def _op(self, gated: bool = True) -> AsyncIterator[None]:
        if gated and not self._open.is_set():
            await self._open.wait()
        self._op_started()
        try:
            yield
        finally:
            self._op_ended()


@contextlib.asynccontextmanager
async def held(gates: Iterable[IoGate]) -> AsyncIterator[None]:
    """Hold new host I/O on every one of ``gates``, wait until the I/O running through each has
    drained, run the body at that one point of their I/O streams, release them all (also on errors)."""
    gs = list(gates)
    for g in gs:
        g.hold()
    try:
        for g in gs:
            await g.drain()
        yield
    finally:
        for g in gs:
            g.release()


class GatedBlockOps(IoGate, EmulatedBlockOps):
    """Mixin of a wrapping volume whose host writes go through its I/O gate and its own write rules
    (``_raw_write``, the caller holding the range exclusively): WRITE, UNMAP, WRITE SAME and COMPARE
    AND WRITE (emulated on those rules, storage/emulated.py)."""

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """A host write under the volume's rules; returns when every rule is met."""
        async with self._op(), self.range_lock.hold(lba, len(data) // self.block_size):
            await self._raw_write(lba, data, fua)

    async def unmap(self, lba: int, nblocks: int) -> None:
        """UNMAP (zeros), through the write rules."""
        async with self._op():
            await super().unmap(lba, nblocks)

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """WRITE SAME, through the write rules."""
        async with self._op():
            await super().write_same(lba, nblocks, block, unmap=unmap, fua=fua)

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """COMPARE AND WRITE, atomic under the range lock, through the write rules."""
        async with self._op():
            return await super().compare_and_write(lba, verify, data, fua=fua)


class TrackRangeLock(RangeLock):
    """A range lock whose every range is widened to whole tracks: the rules work per track (a
    copy-on-write copies a whole track), so two writes to one track must not overlap in time."""

    def __init__(self, track_blocks: int) -> None:
        super().__init__()
        self.track_blocks = track_blocks

    def _align(self, lba: int, nblocks: int) -> tuple[int, int]:
        tb = self.track_blocks
        first = lba - lba % tb
        end = lba + max(nblocks, 1)
        end += -end % tb
        return first, end - first

    def hold(self, lba: int, nblocks: int, *, exclusive: bool = True) -> _AsyncGeneratorContextManager[None, None]:
        """:meth:`RangeLock.hold` of the whole tracks ``[lba, lba + nblocks)`` touches."""
        first, n = self._align(lba, nblocks)
        return super().hold(first, n, exclusive=exclusive)

    def would_wait(self, lba: int, nblocks: int, *, exclusive: bool = True) -> bool:
        """:meth:`RangeLock.would_wait` on whole tracks."""
        if not self._holders:
            return False
        first, n = self._align(lba, nblocks)
        return super().would_wait(first, n, exclusive=exclusive)

    def take(self, lba: int, nblocks: int, *, exclusive: bool = True) -> Holder:
        """:meth:`RangeLock.take` on whole tracks."""
        first, n = self._align(lba, nblocks)
        return super().take(first, n, exclusive=exclusive)


class TrackVolume(GatedBlockOps):
    """A gated wrapper of an LU's volume whose rules work per track (:data:`TRACK_BYTES`): local copy
    volumes and snapshot origins.  Its range lock holds whole tracks."""

    def __init__(self, local: Volume, label: str) -> None:
        self.local = local
        """The wrapped volume."""
        self.label = label
        """``TARGET/LUN`` of the LU, for messages."""
        self.track_blocks = max(1, TRACK_BYTES // local.block_size)
        self._range_lock = TrackRangeLock(self.track_blocks)
        self._init_gate()

    @property
    def thin(self) -> bool:
        """The wrapped volume's (as :attr:`sanlab.replication.pair.PairVolume.thin` says why)."""
        return self.local.thin

    @property
    def block_size(self) -> int:
        """The wrapped volume's."""
        return self.local.block_size

    @property
    def num_blocks(self) -> int:
        """The wrapped volume's."""
        return self.local.num_blocks


async def unwrap_lu(lu: LogicalUnit, wrapper: Volume, local: Volume, replaced_event: str, label: str) -> None:
    """Put ``local`` back in ``lu``'s volume slot, where ``wrapper`` (wrapping it) was put; if something
    else holds the slot by now, leave it and log ``replaced_event``."""
    if lu.volume is wrapper:
        await lu.swap_volume(lambda _old: local)
    else:
        log.error(replaced_event, lu=label)

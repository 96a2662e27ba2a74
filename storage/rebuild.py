"""Rebuilding a RAID member onto a replacement drive, online and restartable.

A :class:`Rebuild` walks the stripes in order behind a **watermark** (stripes below it are valid
on the replacement) and keeps an **ahead-map** (:class:`~sanlab.storage.bitmap.PersistentBitmap`,
a bit per stripe) of stripes a host write made it rebuild early.  Both survive a restart (the
watermark in the group's state file, the ahead-map in ``raid-<name>.rebuilt``), with the flush
order of storage/raid.py's module docstring: the replacement's data is fdatasync'd before the
watermark or a bit vouches for it.

The group's stripe math (which member, which parity) stays in
:class:`~sanlab.storage.raid.RaidGroup` (``_rebuild_stripe``); this module owns the progress,
pacing, checkpoints and the stop/finish/fail transitions.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable

import structlog

from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.drive import DriveState
from sanlab.storage.raid_state import RebuildRecord
from sanlab.storage.volume import VolumeError

if TYPE_CHECKING:
    from sanlab.storage.raid import RaidGroup

log = structlog.get_logger("sanlab.storage.rebuild")


class Rebuild:
    """One member being rebuilt (new, or resumed after a restart from its record)."""

    CHECKPOINT_STRIPES = 256
    """The watermark is recorded at least every this many stripes ..."""
    CHECKPOINT_SECONDS = 1.0
    """... and at least this often, so a restart redoes little."""

    def __init__(self, group: RaidGroup, record: RebuildRecord, ahead: PersistentBitmap) -> None:
        self.group = group
        self.record = record
        """What the state file holds: its ``stripes_done`` is the watermark last made durable."""
        self.ahead = ahead
        self.index = record.index
        self.drive = group.drives[record.index]
        self.drive.state = DriveState.REBUILDING
        self.drive.rebuilt_to = record.stripes_done * group.layout.chunk
        stripes = group.layout.stripes
        self.progress: float = record.stripes_done / stripes if stripes else 1.0
        """Fraction of the replacement rebuilt (in memory; the durable one is the record's)."""
        self.rate: float | None = None
        """Bytes of the replacement rebuilt per second since the rebuild (re)started."""
        self.eta: float | None = None
        """Seconds left at that rate."""
        self._running = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = False

    def holds(self, stripe: int) -> bool:
        """The replacement holds valid data for ``stripe``."""
        return (stripe + 1) * self.group.layout.chunk <= self.drive.rebuilt_to or self.ahead.has(stripe)

    async def run(self, progress: Callable[[float], None] | None = None) -> bool:
        """Rebuild from the watermark to the end; True when the member is ONLINE.

        Returns False, the watermark recorded, when :meth:`stop` asks it to.  On a failure the
        replacement is taken out (FAILED, durably), the group's ``rebuild_error`` says why and a
        VolumeError is raised.
        """
        if self._running:
            raise VolumeError(f"drive {self.index} is already being rebuilt")
        self._running = True
        self._idle.clear()
        g, lay = self.group, self.group.layout
        stripe = first = durable = self.record.stripes_done
        started = last = time.monotonic()
        try:
            while stripe < lay.stripes and not self._stop:
                async with g._lock(stripe):
                    if not self.ahead.has(stripe):  # else a host write rebuilt it already
                        await g._run(g._rebuild_stripe, stripe, self.index)
                    self.drive.rebuilt_to = (stripe + 1) * lay.chunk
                stripe += 1
                now = time.monotonic()
                self.progress = stripe / lay.stripes
                if now > started:
                    self.rate = (stripe - first) * lay.chunk / (now - started)
                    self.eta = (lay.stripes - stripe) * lay.chunk / self.rate if self.rate else None
                if progress is not None:
                    progress(self.progress)
                if self.record.rate:
                    early = (stripe - first) * lay.chunk / self.record.rate - (now - started)
                    if early > 0:
                        await asyncio.sleep(min(early, self.CHECKPOINT_SECONDS))
                if stripe < lay.stripes and (stripe - durable >= self.CHECKPOINT_STRIPES
                                             or now - last >= self.CHECKPOINT_SECONDS):
                    await g._run(self.checkpoint, stripe)
                    durable, last = stripe, now
            if stripe < lay.stripes:  # asked to stop: keep what is done for the next start
                await g._run(self.checkpoint, stripe)
                return False
            await g._run(self.drive.sync)
            self.drive.state = DriveState.ONLINE
            g.rebuild_job = None
            await g._run(g._save_state)
            self.ahead.remove()
            log.info("rebuild_finished", drive=self.drive.path, index=self.index)
            return True
        except Exception as exc:
            g.rebuild_error = f"rebuild of drive {self.index} stopped at stripe {stripe} of {lay.stripes}: {exc}"
            log.error("rebuild_failed", drive=self.drive.path, index=self.index, stripe=stripe, error=str(exc))
            self.drive.fail()
            g.rebuild_job = None
            try:
                await g._run(g._save_state)
                self.ahead.remove()
            except OSError:
                pass  # the failure is in memory; the record on disk still says REBUILDING (safe)
            raise VolumeError(g.rebuild_error) from exc
        finally:
            self._running = False
            self._idle.set()

    def checkpoint(self, stripes_done: int) -> None:
        """Sync the replacement, then move the durable watermark (blocking; in the I/O pool)."""
        self.drive.sync()
        self.record = RebuildRecord(self.index, self.record.path, stripes_done, self.record.rate)
        self.group._save_state()

    def ahead_of_write(self, stripe: int) -> None:
        """Rebuild ``stripe`` now, before a host write changes it (blocking; under its stripe lock).

        A write to a stripe missing a member is the write hole: a crash between its data and its
        parity leaves the missing chunk unrecoverable.  Rebuilding the stripe first makes the write
        an ordinary one on a whole stripe, which the write-intent bitmap covers; the cost is paid
        once per stripe, only while a rebuild runs.  The replacement's chunk is synced before its
        bit is set (the same rule as the watermark's).
        """
        if self.drive.state is not DriveState.REBUILDING or self.holds(stripe):
            return
        try:
            self.group._rebuild_stripe(stripe, self.index)
            self.drive.sync()
        except OSError as exc:
            self.group._member_failed(self.drive, exc, "rebuild")  # the write goes on degraded
            return
        self.ahead.set(stripe)

    async def stop(self) -> None:
        """Stop a running rebuild after the stripe in hand, its watermark recorded."""
        self._stop = True
        await self._idle.wait()

    def close(self) -> None:
        """Close the ahead-map's file (kept for the next start)."""
        self.ahead.close()

"""Rebuilding a RAID member onto a replacement drive, online and restartable.

A :class:`Rebuild` walks the stripes in order behind a **watermark** (stripes below it are valid
on the replacement) and keeps an **ahead-map** (:class:`~sanlab.storage.bitmap.PersistentBitmap`,
a bit per stripe) of stripes a host write made it rebuild early.  Both survive a restart (the
watermark in the group's state file, the ahead-map in ``raid-<name>.rebuilt``), with the flush
order of storage/raid.py's module docstring: the replacement's data is fdatasync'd before the
watermark or a bit vouches for it.

:class:`~sanlab.storage.raid.RaidGroup` keeps the rebuild's public face (``begin_rebuild``,
``run_rebuild``, ``stop_rebuild``, ``rebuild_progress`` ...) and the solving of a stripe from the
members it has (``_reconstruct``, shared with degraded reads and writes).  This module owns the
rest: starting a rebuild (:func:`begin_rebuild`) or taking it up after a restart
(:func:`resume_rebuild`), what the replacement gets for each stripe, progress, pacing, checkpoints
and the stop/finish/fail transitions.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable

import structlog

from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.drive import Drive, DriveState
from sanlab.storage.gf256 import syndromes
from sanlab.storage.raid_layout import RaidLevel
from sanlab.storage.raid_state import RebuildRecord
from sanlab.storage.volume import VolumeError

if TYPE_CHECKING:
    from sanlab.storage.raid import RaidGroup

log = structlog.get_logger("sanlab.storage.rebuild")


async def begin_rebuild(group: RaidGroup, index: int, replacement: Drive, rate: int) -> None:
    """Put ``replacement`` in as member ``index`` of ``group``, REBUILDING from stripe 0, and make
    that durable (:meth:`RaidGroup.begin_rebuild <sanlab.storage.raid.RaidGroup.begin_rebuild>`).

    A refusal, or an I/O error before the record is durable, leaves the old member in place and
    raises VolumeError.
    """
    if group.redundancy == 0:
        raise VolumeError("RAID 0 cannot rebuild")
    if group.rebuild_job is not None:
        raise VolumeError(f"drive {group.rebuild_job.index} is being rebuilt")
    if not 0 <= index < len(group.drives):
        raise VolumeError(f"no drive {index}")
    if replacement.state is DriveState.FAILED:
        raise VolumeError(f"replacement drive unusable: {replacement.error or replacement.path}")
    if not _has_source(group, index):
        raise VolumeError(f"too many other members are out: nothing to rebuild drive {index} from")
    old = group.drives[index]
    try:
        await group._run(replacement.sync)
        # A fresh (empty) ahead-map before the record that makes it count.
        ahead = await group._run(PersistentBitmap, group._ahead_path, group.layout.stripes, True)
    except OSError as exc:
        raise VolumeError(f"cannot prepare the rebuild of drive {index}: {exc}") from None
    group.drives[index] = replacement
    group.rebuild_job = Rebuild(group, RebuildRecord(index, replacement.path, 0, max(0, rate)), ahead)
    group.rebuild_error = None
    try:
        await group._run(group._save_state)
    except OSError as exc:
        group.drives[index] = old
        group.rebuild_job = None
        ahead.remove()
        raise VolumeError(f"cannot record the rebuild of drive {index}: {exc}") from None
    old.close()
    log.warning("rebuild_started", drive=replacement.path, index=index, rate=rate)


def resume_rebuild(group: RaidGroup, record: RebuildRecord) -> None:
    """Take up the rebuild ``group``'s state file records (at open, before any I/O).

    The group's ``rebuild_job`` is then that rebuild, paused at its watermark until
    :meth:`~sanlab.storage.raid.RaidGroup.run_rebuild`; a replacement that could not be opened is a
    failed member instead (``rebuild_error`` says so).  A record naming another file than the group
    has as that member is a VolumeError (:func:`~sanlab.storage.raid_files.open_group` has already
    made the drive list follow the record, flush order rule 2).
    """
    if not 0 <= record.index < len(group.drives):
        return
    drive = group.drives[record.index]
    if drive.path != record.path:
        raise VolumeError(f"RAID state file names {record.path} as drive {record.index} being rebuilt, the "
                          f"group has {drive.path}")
    if drive.state is DriveState.FAILED:  # the replacement itself is gone: it is a failed member now
        group.rebuild_error = f"replacement {drive.path} could not be opened ({drive.error})"
        return
    done = min(record.stripes_done, group.layout.stripes)
    group.rebuild_job = Rebuild(group, RebuildRecord(record.index, record.path, done, record.rate),
                                PersistentBitmap(group._ahead_path, group.layout.stripes))


def _has_source(group: RaidGroup, index: int) -> bool:
    """Enough of the other members are readable to rebuild member ``index`` from."""
    others = [i for i, d in enumerate(group.drives) if i != index and not d.readable]
    if group.level is RaidLevel.RAID1:
        return len(others) < len(group.drives) - 1
    if group.level is RaidLevel.RAID10:
        return (index ^ 1) not in others  # its mirror is its only source
    return len(others) < group.redundancy


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
                        await g._run(self._rebuild_stripe, stripe)
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
            self._rebuild_stripe(stripe)
            self.drive.sync()
        except OSError as exc:
            self.group._member_failed(self.drive, exc, "rebuild")  # the write goes on degraded
            return
        self.ahead.set(stripe)

    def _rebuild_stripe(self, stripe: int) -> None:
        """Write the replacement's chunk of ``stripe`` from the other members (blocking; under the
        stripe's lock)."""
        g, lay, index = self.group, self.group.layout, self.index
        base = stripe * lay.chunk
        if g.level in (RaidLevel.RAID1, RaidLevel.RAID10):
            for i in range(lay.data_chunks):
                ds = lay.data_drives(stripe, i)
                if index in ds:
                    src = next(d for d in ds if d != index and g.drives[d].readable)
                    self.drive.pwrite(g.drives[src].pread(lay.chunk, base), base)
            return
        # Parity levels: treat the member as missing, solve the stripe, write its chunk.
        chunks = g._reconstruct(stripe, 0, lay.chunk)
        par = lay.parity_drives(stripe)
        if index in par:
            p, q = syndromes(chunks, len(par) > 1)
            self.drive.pwrite((p if index == par[0] or q is None else q).tobytes(), base)
        else:
            i = next(i for i in range(lay.data_chunks) if lay.data_drives(stripe, i)[0] == index)
            self.drive.pwrite(chunks[i].tobytes(), base)

    async def stop(self) -> None:
        """Stop a running rebuild after the stripe in hand, its watermark recorded."""
        self._stop = True
        await self._idle.wait()

    def close(self) -> None:
        """Close the ahead-map's file (kept for the next start)."""
        self.ahead.close()

"""Backup and restore of divided copies, run in the array (``sanlab backup ...``; docs/backup.md).

The seed's 11th embodiment has a backup host read the divided copy volume through the controller.
Here the array reads it itself: the copy's point-in-time image is what :class:`CopyVolume.read`
returns (not yet copied tracks come from the original, under its range lock), the original keeps
serving hosts, and the operation is one of the registry's — so a command device can start a
backup as well (process numbers 0A07h-0A09h).  A backup or restore is a job under the supervisor;
``backup_status`` says how far it is, which is what the command line prints as progress and rate.

``file`` is a path on the array's host (the command line makes it absolute before sending it).
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import structlog

from sanlab.replication.backup import BackupError, Manifest, Progress, restore_image, write_image
from sanlab.replication.local_copy import CopyPair
from sanlab.replication.local_copy_states import PairState
from sanlab.scsi.sense import ScsiError
from sanlab.storage.supervisor import SupervisorError
from sanlab.storage.volume import VolumeError
from sanlab.tools.array import AdminError, ArrayState
from sanlab.tools.copy_ops import CopyOps, lu_key, parse_extent

log = structlog.get_logger("sanlab.tools.backup_ops")

JOB_KIND = "backup"
"""The supervisor's kind for backup and restore jobs (first in tools/array.py's shutdown order:
they read through the copy volumes the local copy movers write)."""
KEEP_JOBS = 32
"""Finished jobs kept for ``backup_status``."""


@dataclass(slots=True)
class Job:
    """One backup or restore."""

    id: int
    kind: str
    file: str
    progress: Progress
    error: str | None = None
    manifest: Manifest | None = None
    ended: float | None = None
    about: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        """``backup status``'s answer."""
        out: dict[str, Any] = {"job": self.id, "kind": self.kind, "file": self.file, **self.about,
                               **self.progress.as_dict(), "done": self.ended is not None, "error": self.error}
        m = self.manifest
        if m is not None and self.ended is not None and self.error is None:
            out.update(pair=m.pair, volume=m.volume, extent=list(m.extent), block_size=m.block_size,
                       split_time=m.split_time, chunks=len(m.chunks), stored_bytes=m.stored_bytes,
                       zero_bytes=m.zero_bytes)
        return out


class BackupOps:
    """The backup operations of tools/operations.py (``Domain.BACKUP``)."""

    def __init__(self, array: ArrayState, copies: CopyOps) -> None:
        self.array = array
        self.copies = copies
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)

    def _start(self, kind: str, file: str, total: int, body: Callable[[Job], Awaitable[Manifest]],
               about: dict[str, Any]) -> dict[str, Any]:
        job = Job(next(self._ids), kind, file, Progress(total), about=about)

        async def run() -> None:
            try:
                job.manifest = await body(job)
            except (BackupError, ScsiError, VolumeError, OSError) as exc:
                job.error = str(exc) or repr(exc)
                log.error("backup_job_failed", job=job.id, kind=kind, file=file, error=job.error)
            else:
                log.info("backup_job_done", job=job.id, kind=kind, file=file, **job.progress.as_dict())
            finally:
                job.ended = time.time()

        try:
            self.array.supervisor.start(JOB_KIND, str(job.id), run(), job=job.id)
        except SupervisorError as exc:
            raise AdminError(f"backup {kind}: {exc}") from None
        self.jobs[job.id] = job
        for old in sorted(j for j, v in self.jobs.items() if v.ended is not None)[:-KEEP_JOBS]:
            del self.jobs[old]
        return job.status()

    @staticmethod
    def _file(file: str) -> str:
        if not file or not os.path.isabs(file):
            raise AdminError(f"file {file!r}: an absolute path on the array's host")
        return file

    async def backup_create(self, copy: str, file: str, extent: str = "") -> dict[str, Any]:
        """Write the divided copy COPY (or its extent) to the backup image FILE while the original serves."""
        path = self._file(file)
        p = self.copies.manager.pairs.get(copy)
        if p is None:
            raise AdminError(f"backup create: no copy pair called {copy}")
        area = parse_extent(extent) or (p.area_start, p.area_blocks)
        lo, n = area
        if lo < p.area_start or lo + n > p.area_start + p.area_blocks:
            raise AdminError(f"backup create {copy}: extent {lo}:{n} is outside the pair's area "
                             f"{p.area_start}:{p.area_blocks}")
        tracks = p.tracks(lo, n)
        if any(p.mode(t) is not PairState.PSUS for t in tracks):
            raise AdminError(f"backup create {copy}: the copy is {p.state.name}"
                             f"{'' if p.extent_state is None else f' ({p.extent_state.name} in its extent)'}, "
                             "not divided (PSUS) there: split it first")
        if not os.path.isdir(os.path.dirname(path)):
            raise AdminError(f"backup create: no directory {os.path.dirname(path)}")
        split_time = p.split_time
        rec = self.copies.manager.records[copy]
        m = Manifest(volume=f"{rec.svol_target}/{rec.svol_lun}", pair=copy, original=f"{rec.pvol_target}/{rec.pvol_lun}",
                     extent=(lo, n), block_size=p.target.block_size, volume_blocks=p.target.num_blocks,
                     split_time=split_time, started=time.time())

        def divided() -> bool:
            # Per track only when an extent of the pair is in another state than the rest (run
            # after every chunk read: 4,096 track checks for each MiB cost more than the read).
            if p.extent_state is None or p.extent_state is p.state:
                return p.state is PairState.PSUS
            return all(p.mode(t) is PairState.PSUS for t in tracks)

        def still_the_instant() -> None:
            # A resync, restore or new division between two reads would mix two instants.
            if p.split_time != split_time or not divided() or self.copies.manager.pairs.get(copy) is not p:
                raise BackupError(f"copy {copy} left its divided state during the backup; image discarded")

        async def body(job: Job) -> Manifest:
            return await write_image(_reader(p), m, path, job.progress, still_the_instant)

        return self._start("create", path, n * p.target.block_size, body, {"pair": copy})

    async def backup_restore(self, file: str, to: str) -> dict[str, Any]:
        """Check the backup image FILE and write it into volume TO at its LBAs (zeros where sparse)."""
        path = self._file(file)
        if not os.path.isfile(path):
            raise AdminError(f"backup restore: no file {path}")
        key = lu_key(self.array, to, "to")
        lu = self.copies.find_lu(*key)
        if lu is None:
            raise AdminError(f"backup restore: no LU {key[0]}/{key[1]} on this array")

        async def write(lba: int, data: bytes) -> None:
            await lu.volume.write(lba, data)

        async def body(job: Job) -> Manifest:
            m = await restore_image(path, write, lu.volume.block_size, lu.volume.num_blocks, job.progress)
            await lu.volume.flush()
            return m

        return self._start("restore", path, os.path.getsize(path), body, {"to": f"{key[0]}/{key[1]}"})

    def backup_status(self, job: int) -> dict[str, Any]:
        """How far backup or restore JOB is: phase, bytes, progress, rate; its error or its manifest's summary."""
        j = self.jobs.get(job)
        if j is None:
            raise AdminError(f"backup status: no job {job} (jobs are kept until the array stops)")
        return j.status()


def _reader(p: CopyPair) -> Callable[[int, int], Awaitable[bytes]]:
    async def read(lba: int, n: int) -> bytes:
        # What a host reading the divided copy gets: its point-in-time image.
        return await p.target.read(lba, n)
    return read

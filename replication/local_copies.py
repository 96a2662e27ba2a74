"""The local copy pairs of this array (seed 004 FIG. 13-22, 31-40): records, volumes, movers, operations.

One :class:`LocalCopyManager` per array (built by tools/copy_ops.py).  A pair is a row of the
catalog's ``local_copies`` table (the whole :class:`CopyRecord` as JSON, committed at every state
change) and four bitmap files ``<data-dir>/local-copies/<name>.{gen,pdiff,sdiff,active}``
(replication/local_copy.py states what each means and the flush order).  At start every record is
loaded again, the LUs are wrapped again, the activity log is merged into ``gen`` and the movers
resume.

Every state change stops the pair's mover, holds new host I/O on both volumes and drains what is
running (for a consistency group: on every volume of the group at once, so the group changes at
one point of the write stream), changes the state, commits it, releases the I/O and starts the
mover again.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import structlog

from sanlab.replication.io_gate import held, unwrap_lu
from sanlab.replication.local_copy import MAX_COPIES, CopyPair, CopyVolume, run_mover
from sanlab.replication.local_copy_states import CopyEvent, CopyTransitionError, PairState, detail, local_step
from sanlab.replication.pair import TRACK_BYTES
from sanlab.scsi.lu import LogicalUnit
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.catalog import Catalog
from sanlab.storage.supervisor import Supervisor, SupervisorError
from sanlab.storage.volume import VolumeError

log = structlog.get_logger("sanlab.replication.local_copies")

MOVER_KIND = "local-copy"
"""The supervisor's kind for local copy movers (tools/array.py puts it in the shutdown order)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
BITMAPS = ("gen", "pdiff", "sdiff", "active")

LuKey = tuple[str, int]


class CopyError(Exception):
    """An instruction refused, with the reason for the user."""


@dataclass(slots=True)
class CopyRecord:
    """A local copy pair as the catalog keeps it."""

    name: str
    pvol_target: str
    pvol_lun: int
    svol_target: str
    svol_lun: int
    state: str
    group: str = ""
    area_start: int = 0
    area_blocks: int = 0
    """The pair's area (``copy create --extent``); 0 blocks: the whole volume."""
    extent_start: int = 0
    extent_blocks: int = 0
    extent_state: str = ""
    """The extent whose state differs (seed 004 9th embodiment), or "" for none."""
    copied_bytes: int = 0
    cow_bytes: int = 0
    split_time: float = 0.0
    created: float = 0.0


class LocalCopyManager:
    """Every local copy pair of this array (module docstring)."""

    def __init__(self, data_dir: Path, catalog: Catalog, supervisor: Supervisor,
                 find_lu: Callable[[str, int], LogicalUnit | None]) -> None:
        self.dir = Path(data_dir) / "local-copies"
        self.catalog = catalog
        self.supervisor = supervisor
        self.find_lu = find_lu
        self.pairs: dict[str, CopyPair] = {}
        self.records: dict[str, CopyRecord] = {}
        self.volumes: dict[LuKey, CopyVolume] = {}
        self._lus: dict[LuKey, LogicalUnit] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()

    # --- volumes ---------------------------------------------------------------------------------------

    async def _wrap(self, key: LuKey) -> CopyVolume:
        vol = self.volumes.get(key)
        if vol is not None:
            return vol
        lu = self.find_lu(*key)
        if lu is None:
            raise CopyError(f"no LU {key[0]}/{key[1]} on this array")
        vol = CopyVolume(lu.volume, f"{key[0]}/{key[1]}")
        await lu.swap_volume(lambda _old: vol)
        self.volumes[key], self._lus[key] = vol, lu
        return vol

    async def _unwrap_unused(self) -> None:
        for key, vol in list(self.volumes.items()):
            if vol.in_use:
                continue
            lu = self._lus.pop(key)
            del self.volumes[key]
            await unwrap_lu(lu, vol, vol.local, "local_copy_volume_replaced", vol.label)

    def _bitmaps(self, name: str, units: int, fresh: bool) -> list[PersistentBitmap]:
        self.dir.mkdir(parents=True, exist_ok=True)
        made: list[PersistentBitmap] = []
        try:
            for kind in BITMAPS:
                made.append(PersistentBitmap(str(self.dir / f"{name}.{kind}"), units, fresh=fresh))
        except OSError:
            for bm in made:
                with contextlib.suppress(OSError):
                    bm.close()
            if fresh:  # a new pair's files that could not all be made (a full file system): none kept
                for kind in BITMAPS:
                    (self.dir / f"{name}.{kind}").unlink(missing_ok=True)
            raise
        return made

    # --- records ---------------------------------------------------------------------------------------

    def _sync(self, p: CopyPair) -> CopyRecord:
        r = self.records[p.name]
        r.state = p.state.name
        r.extent_start, r.extent_blocks = p.extent or (0, 0)
        r.extent_state = p.extent_state.name if p.extent_state is not None else ""
        r.copied_bytes, r.cow_bytes, r.split_time = p.copied_bytes, p.cow_bytes, p.split_time
        return r

    async def _save(self, *pairs: CopyPair) -> None:
        async with self.catalog.change() as c:
            for p in pairs:
                r = self._sync(p)
                c.put_local_copy(r.name, r.state, asdict(r))

    # --- movers ----------------------------------------------------------------------------------------

    def _start_mover(self, p: CopyPair) -> None:
        stop = asyncio.Event()
        self._stops[p.name] = stop
        try:
            self.supervisor.start(MOVER_KIND, p.name, self._move(p, stop), stop=stop, pair=p.name)
        except SupervisorError as exc:
            log.warning("local_copy_mover_not_started", pair=p.name, reason=str(exc))

    async def _stop_mover(self, p: CopyPair) -> None:
        await self.supervisor.stop(MOVER_KIND, p.name)

    async def _move(self, p: CopyPair, stop: asyncio.Event) -> None:
        try:
            done = await run_mover(p, stop)
        except (VolumeError, OSError) as exc:
            log.error("local_copy_failed", pair=p.name, error=str(exc))
            p.extent, p.extent_state = None, None
            p.state = local_step(p.state, CopyEvent.FAILED)
            await self._save(p)
            return
        if not done or p.name not in self.pairs:
            return
        # Nothing left: COPY and RCPY areas are in PAIR now (FIG. 20 step 2007); writes need no
        # drain for it, the rules of PAIR and of a COPY with nothing marked are the same.
        if p.extent_state in (PairState.COPY, PairState.RCPY):
            p.apply(CopyEvent.COPY_DONE, extent=True)
        if p.state in (PairState.COPY, PairState.RCPY):
            p.apply(CopyEvent.COPY_DONE)
        await self._save(p)
        log.info("local_copy_in_step", pair=p.name, state=p.state.name, copied_bytes=p.copied_bytes)

    async def _quiesced_change(self, pairs: list[CopyPair], change: Callable[[CopyPair], None]) -> None:
        """Stop the movers, hold and drain host I/O on every volume of ``pairs``, ``change`` each pair,
        commit, release, restart the movers (module docstring)."""
        try:
            async with self._quiesced(pairs):
                for p in pairs:
                    change(p)
                # The record first, then the bitmaps.  A restart that finds the old state must find
                # that state's bitmaps: a divided pair's ``gen`` says which tracks of its image are
                # still on the original, so a resync's marks on disk under a PSUS record would send
                # the copy's reads (and the division copy) to the original over the copy's own data.
                # One that finds the new state makes up for bitmaps not flushed yet (:meth:`_install`).
                await self._save(*pairs)
                for p in pairs:
                    for bm in (p.gen, p.pdiff, p.sdiff):
                        await asyncio.to_thread(bm.flush)
        finally:
            for p in pairs:
                if p.name in self.pairs:
                    self._start_mover(p)

    @contextlib.asynccontextmanager
    async def _quiesced(self, pairs: list[CopyPair]) -> AsyncIterator[None]:
        """The movers of ``pairs`` stopped and host I/O held and drained on all their volumes at once
        (one point of the write stream for a group) for the body."""
        for p in pairs:
            await self._stop_mover(p)
        async with held({id(v): v for p in pairs for v in (p.source, p.target)}.values()):
            yield

    # --- loading ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Every pair of the catalog again (wrapped, activity log merged, movers started)."""
        for body in self.catalog.local_copies():
            try:
                rec = CopyRecord(**body)
                await self._install(rec, fresh=False)
            except (TypeError, KeyError, CopyError, VolumeError) as exc:
                log.error("local_copy_not_loaded", pair=body.get("name"), error=str(exc))

    async def _install(self, rec: CopyRecord, fresh: bool) -> CopyPair:
        pkey, skey = (rec.pvol_target, rec.pvol_lun), (rec.svol_target, rec.svol_lun)
        pv, sv = await self._wrap(pkey), await self._wrap(skey)
        area_blocks = rec.area_blocks or pv.num_blocks - rec.area_start
        units = (area_blocks + pv.track_blocks - 1) // pv.track_blocks
        gen, pdiff, sdiff, active = self._bitmaps(rec.name, units, fresh)
        p = CopyPair(rec.name, pv, sv, rec.area_start, area_blocks, gen, pdiff, sdiff, active, PairState[rec.state],
                     (rec.extent_start, rec.extent_blocks) if rec.extent_state else None,
                     PairState[rec.extent_state] if rec.extent_state else None, rec.group, rec.copied_bytes,
                     rec.cow_bytes, rec.split_time)
        if fresh:
            gen.mark_all()  # FIG. 16 step 1600: every under-generation bit "1"
            gen.flush()
        else:
            # Mirrored writes maybe half done at the crash: copy those tracks again.
            for u in active.set_units():
                if p.mode(u + p.first_track) in (PairState.COPY, PairState.PAIR, PairState.RCPY):
                    gen.mark(u)
            # A resync whose COPY record was committed may have died before its bitmaps were flushed
            # (_quiesced_change: the record first): the differences still in pdiff/sdiff go to gen.
            # In COPY they have no other use, so for a completed flush this changes nothing.
            stale = [(bm, u) for bm in (pdiff, sdiff) for u in bm.set_units()
                     if p.mode(u + p.first_track) is PairState.COPY]
            for bm, u in stale:
                gen.mark(u)
            gen.flush()
            for bm, u in stale:
                bm.clear(u)
            pdiff.flush()
            sdiff.flush()
            for u in active.set_units():
                active.clear(u)
            active.flush()
        async with held((pv, sv)):
            pv.sources.append(p)
            sv.target = p
        self.pairs[rec.name], self.records[rec.name] = p, rec
        log.info("local_copy_installed", pair=rec.name, state=rec.state, marked=gen.count(), fresh=fresh)
        self._start_mover(p)
        return p

    async def close(self) -> None:
        """Flush and close the bitmaps (the supervisor stopped the movers first)."""
        for p in self.pairs.values():
            await self._save(p)
            for bm in p.bitmaps():
                await asyncio.to_thread(bm.close)

    # --- operations ------------------------------------------------------------------------------------

    async def create(self, name: str, pvol: LuKey, svol: LuKey, extent: tuple[int, int] | None = None,
                     group: str = "") -> dict[str, Any]:
        """Form pair ``name`` and start its generation (FIG. 16)."""
        async with self._lock:
            if not NAME_RE.match(name):
                raise CopyError(f"copy name {name!r}: 1-32 letters, digits, . _ - (starting with a letter or digit)")
            if name in self.pairs:
                raise CopyError(f"a copy pair called {name} exists")
            if pvol == svol:
                raise CopyError("the P-VOL and the S-VOL are the same LU")
            plu, slu = self.find_lu(*pvol), self.find_lu(*svol)
            if plu is None:
                raise CopyError(f"no LU {pvol[0]}/{pvol[1]} on this array")
            if slu is None:
                raise CopyError(f"no LU {svol[0]}/{svol[1]} on this array")
            if (plu.block_size, plu.num_blocks) != (slu.block_size, slu.num_blocks):
                raise CopyError(f"the S-VOL ({slu.num_blocks} blocks of {slu.block_size} B) must have the P-VOL's "
                                f"geometry ({plu.num_blocks} blocks of {plu.block_size} B)")
            pv, sv = self.volumes.get(pvol), self.volumes.get(svol)
            if sv is not None and sv.in_use:
                raise CopyError(f"{svol[0]}/{svol[1]} is already in a copy pair (an S-VOL must be simplex)")
            if pv is not None:
                if len(pv.sources) >= MAX_COPIES:
                    raise CopyError(f"{pvol[0]}/{pvol[1]} has {MAX_COPIES} copies already")
                if pv.target is not None and pv.target.source.target is not None:
                    raise CopyError("a copy of a copy of a copy: one level of cascade only")
            track = max(1, TRACK_BYTES // plu.block_size)
            start, count = extent or (0, 0)
            if extent is not None:
                self._check_extent(extent, plu.num_blocks, track, "the P-VOL")
            rec = CopyRecord(name, pvol[0], pvol[1], svol[0], svol[1], PairState.COPY.name, group, start, count,
                             created=time.time())
            try:
                p = await self._install(rec, fresh=True)
            except OSError:
                await self._unwrap_unused()  # the LUs as they were: no wrapper without a pair
                raise
            try:
                await self._save(p)
            except Exception:
                # Not in the catalog (a full file system): not a pair, or it would vanish at a restart.
                await self._drop([p])
                raise
            log.info("local_copy_created", pair=name, pvol=f"{pvol[0]}/{pvol[1]}", svol=f"{svol[0]}/{svol[1]}")
            return self.describe(p)

    @staticmethod
    def _check_extent(extent: tuple[int, int], blocks: int, track: int, what: str) -> None:
        start, count = extent
        if start < 0 or count <= 0 or start + count > blocks:
            raise CopyError(f"extent {start}:{count} does not fit {what} ({blocks} blocks)")
        if start % track or (count % track and start + count != blocks):
            raise CopyError(f"extent {start}:{count}: start and count must be multiples of the track "
                            f"({track} blocks, {TRACK_BYTES // 1024} KiB)")

    def _targets(self, name: str, group: str) -> list[CopyPair]:
        if bool(name) == bool(group):
            raise CopyError("give a copy NAME or a group (--group G), not both or neither")
        if name:
            p = self.pairs.get(name)
            if p is None:
                raise CopyError(f"no copy pair called {name}")
            return [p]
        pairs = [p for n, p in sorted(self.pairs.items()) if p.group == group]
        if not pairs:
            raise CopyError(f"no copy pair of group {group}")
        return pairs

    def _plan(self, p: CopyPair, event: CopyEvent, extent: tuple[int, int] | None) -> bool:
        """Check ``event`` on ``p`` (whole or ``extent``); True when it acts on the extent."""
        try:
            if extent is None:
                if p.extent_state in (PairState.COPY, PairState.RCPY):
                    raise CopyError(f"copy {p.name}: its extent is still copying ({p.extent_state.name})")
                local_step(p.state, event)
                return False
            self._check_extent(extent, p.area_start + p.area_blocks, p.track_blocks, f"copy {p.name}'s area")
            if extent[0] < p.area_start:
                raise CopyError(f"extent {extent[0]}:{extent[1]} starts before copy {p.name}'s area")
            if p.extent is not None and p.extent != extent:
                raise CopyError(f"copy {p.name} has extent {p.extent[0]}:{p.extent[1]} in "
                                f"{p.extent_state.name if p.extent_state else '?'}: one extent at a time")
            local_step(p.extent_state or p.state, event)
            return True
        except CopyTransitionError as exc:
            raise CopyError(f"copy {p.name}: {exc}") from None

    async def _operate(self, name: str, group: str, event: CopyEvent, extent: tuple[int, int] | None) -> Any:
        async with self._lock:
            pairs = self._targets(name, group)
            on_extent = {p.name: self._plan(p, event, extent) for p in pairs}
            if event is CopyEvent.RESTORE:
                for p in pairs:
                    others = [q.name for q in p.source.sources if q is not p and PairState.RCPY in (q.state, q.extent_state)]
                    if others:
                        raise CopyError(f"copy {p.name}: the P-VOL is being restored from {others[0]} already")

            def change(p: CopyPair) -> None:
                ext = on_extent[p.name]
                if ext:
                    if p.extent is None:
                        p.extent, p.extent_state = extent, p.state
                    region = p.extent_units()
                else:
                    p.extent, p.extent_state = None, None
                    region = range(p.units)
                old = p.extent_state if ext else p.state
                if event is CopyEvent.RESYNC:
                    p.copied_bytes = 0
                    for u in region:
                        if old is PairState.PSUE or p.pdiff.has(u) or p.sdiff.has(u):
                            p.gen.mark(u)  # FIG. 18: the extent update copies the differing tracks only
                    if old is PairState.PSUE:
                        # Nothing recorded the differences while suspended, so a restart under the COPY
                        # record could not make up for these marks: durable before it.  (A suspended
                        # pair's ``gen`` guides no read or write, so they may be on disk before.)
                        p.gen.flush()
                    for u in region:
                        p.pdiff.clear(u)
                        p.sdiff.clear(u)
                elif event is CopyEvent.RESTORE:
                    p.copied_bytes = 0
                elif event is CopyEvent.SPLIT:
                    p.cow_bytes = 0
                    p.split_time = time.time()
                p.apply(event, extent=ext)
                log.info("local_copy_state", pair=p.name, cause=event.value, extent=list(extent) if ext and extent else None,
                         state=p.state.name, extent_state=p.extent_state.name if p.extent_state else None)

            await self._quiesced_change(pairs, change)
            rows = [self.describe(p) for p in pairs]
            return rows if group else rows[0]

    async def split(self, name: str = "", extent: tuple[int, int] | None = None, group: str = "") -> Any:
        """Divide (FIG. 17): the copy is a point-in-time image at once; ``extent``: that area only (FIG. 33)."""
        return await self._operate(name, group, CopyEvent.SPLIT, extent)

    async def resync(self, name: str = "", extent: tuple[int, int] | None = None, group: str = "") -> Any:
        """Copy the tracks that differ to the copy and go back to PAIR (FIG. 18 extent update, FIG. 36 couple)."""
        return await self._operate(name, group, CopyEvent.RESYNC, extent)

    async def restore(self, name: str = "", extent: tuple[int, int] | None = None, group: str = "") -> Any:
        """Reverse resync: copy the differing tracks from the copy back over the original, online."""
        return await self._operate(name, group, CopyEvent.RESTORE, extent)

    async def delete(self, name: str = "", group: str = "") -> Any:
        """Dissolve the pair(s): both volumes keep their data and become simplex."""
        async with self._lock:
            pairs = self._targets(name, group)
            async with self.catalog.change() as c:
                for p in pairs:
                    c.delete_local_copy(p.name)
            await self._drop(pairs)
            log.info("local_copy_deleted", pairs=[p.name for p in pairs])
            rows = [{"name": p.name, "state": "SMPL"} for p in pairs]
            return rows if group else rows[0]

    async def _drop(self, pairs: list[CopyPair]) -> None:
        """Take ``pairs`` out of the running array: movers stopped, volumes let go of (unwrapped when
        no pair is left on them), bitmap files removed."""
        async with self._quiesced(pairs):
            for p in pairs:
                p.source.sources.remove(p)
                p.target.target = None
                del self.pairs[p.name]
                del self.records[p.name]
        for p in pairs:
            for bm in p.bitmaps():
                await asyncio.to_thread(bm.remove)
        await self._unwrap_unused()

    # --- display ---------------------------------------------------------------------------------------

    def describe(self, p: CopyPair) -> dict[str, Any]:
        """``copy display --json``'s row."""
        r = self._sync(p)
        bs = p.source.block_size
        track_bytes = p.track_blocks * bs
        area_bytes = p.area_blocks * bs
        work = sum(1 for u in range(p.units) if p.gen.has(u) or p.restoring(u))
        progress = 100 if p.units == 0 else max(0, min(100, 100 * (p.units - work) // p.units))
        ext_units = p.extent_units()
        return {
            "name": p.name, "pvol": f"{r.pvol_target}/{r.pvol_lun}", "svol": f"{r.svol_target}/{r.svol_lun}",
            "state": p.state.name,
            "detail": detail(p.state, p.extent_state, p.division_pending(), p.division_pending(ext_units)),
            "progress": progress, "copied_bytes": p.copied_bytes,
            "pending_bytes": min(area_bytes, p.pending_units() * track_bytes),
            "group": p.group or None,
            "area": [p.area_start, p.area_blocks],
            "extent": list(p.extent) if p.extent else None,
            "extent_state": p.extent_state.name if p.extent_state else None,
            "cow_bytes": p.cow_bytes, "split_time": p.split_time or None,
            "copying": self.supervisor.running(MOVER_KIND, p.name),
        }

    def display(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every local copy pair (or ``name``)."""
        if name:
            p = self.pairs.get(name)
            if p is None:
                raise CopyError(f"no copy pair called {name}")
            return [self.describe(p)]
        return [self.describe(p) for _, p in sorted(self.pairs.items())]

    def pair_paths(self, name: str) -> list[str]:
        """The bitmap files of pair ``name`` (for tests and diagnostics)."""
        return [os.path.join(self.dir, f"{name}.{kind}") for kind in BITMAPS]

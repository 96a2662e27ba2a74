"""The pairs of this array, both halves: records, volumes, the session to the peer, the copy mover.

One :class:`PairManager` per array (built by tools/, which also gives it the logical units and the
remotes).  The P side of a pair runs the show: ``create`` checks the instruction, logs in to the S
array's target through the array's own initiator, registers the pair there (REGISTER PAIR,
docs/replication-protocol.md), swaps the P-VOL's LU volume for a
:class:`~sanlab.replication.pair.PairVolume` and starts the copy mover; split, resync and delete
change both sides with SET PAIR STATE / DELETE PAIR.  The S side answers those commands
(:mod:`sanlab.replication.control` routes them here): it wraps its LU's volume the same way and
sets the LU's write gate, so only the P array writes an S-VOL in COPY/PAIR.

A pair half is a row of the array's catalog (``pairs``: role, state and the whole record,
committed off the event loop at every state change) and its difference bitmap
(``<data-dir>/pairs/<name>.bitmap``, replication/pair.py states the flush order).  At start every
record is loaded again: the LU is wrapped again and a P side in COPY or PAIR resends what its
bitmap marks (``Event.RESTARTED``) once the S array answers.

The code is in four layers, each a module: the shared state, records, sessions and copy mover
(pairs_core.py); takeover, swap and reverse resync (failover.py); the answers to the other array's
commands (answers.py); and here, the user's operations at the P side (create, split, resync,
delete), which is what tools/ calls.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
from typing import Any

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.delta import DeltaResync
from sanlab.replication.pair_record import COPY_KIND, NAME_RE, Pair, PairError, PairRecord, PairSettings
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.states import Event, InvalidTransition, SyncVerdict, compare_generations, step
from sanlab.storage.peer import PeerFailure

log = structlog.get_logger("sanlab.replication")

__all__ = ["COPY_KIND", "NAME_RE", "Pair", "PairError", "PairManager", "PairRecord", "PairSettings"]


class PairManager(DeltaResync):
    """Every pair half of this array (module docstring): the user's operations at the P side, on
    top of the answers to the other array (answers.py), takeover and swap (failover.py) and the
    shared state (pairs_core.py)."""

    async def create(self, name: str, pvol: tuple[str, int], remote: str, svol: tuple[str, int], *,
                     fence: str = "data", group: str = "", extent: tuple[int, int] | None = None,
                     no_copy: bool = False, bidirectional: bool = False, pace: float = 0.0, mode: str = "sync",
                     journal: str = "", remote_journal: str = "", delta: bool = False) -> dict[str, Any]:
        """Form pair ``name`` (checks first; a failure while forming leaves nothing half-made).

        ``delta`` (async): resume the S-VOL from the standby journal of the P-VOL, sending only what
        the S-VOL's journal lacks since its last consistency point (replication/delta.py)."""
        async with self._lock:
            if not NAME_RE.match(name):
                raise PairError(f"pair name {name!r}: 1-32 letters, digits, . _ - (starting with a letter or digit)")
            if name in self.pairs:
                raise PairError(f"a pair called {name} exists")
            try:
                fence_level = FenceLevel[fence.upper()]
            except KeyError:
                raise PairError(f"fence {fence!r}: data, status or never") from None
            if mode not in ("sync", "async"):
                raise PairError(f"mode {mode!r}: sync or async")
            if mode == "async":
                # The host is answered from the local volume and journal: the S side's loss (even
                # during the initial copy or a resync) suspends the pair into its bitmap and never
                # fails a host write (README), which is fence never whatever --fence said.
                fence_level = FenceLevel.NEVER
            standby = None
            if delta:
                if mode != "async":
                    raise PairError("--delta resumes an async pair (--mode async) from a standby journal")
                standby = self._standby_of(f"{pvol[0]}/{pvol[1]}", journal)
                journal, no_copy = standby.name, True
            group_j = self._check_async(journal, remote_journal, extent, bidirectional) if mode == "async" else None
            if mode == "sync" and (journal or remote_journal):
                raise PairError("journals are for async pairs (--mode async)")
            if self.find_remote(remote) is None:
                raise PairError(f"no remote called {remote}")
            lu = self.find_lu(*pvol)
            if lu is None:
                raise PairError(f"no LU {pvol[0]}/{pvol[1]} on this array")
            shared = self.join_refusal(lu, mode, PairRole.P_VOL, journal)
            if shared is not None:
                raise PairError(f"{pvol[0]}/{pvol[1]} {shared}")
            start, count = extent or (0, 0)
            if start < 0 or count < 0 or start + (count or 1) > lu.num_blocks or (count == 0 and start):
                raise PairError(f"extent {start}:{count} does not fit the P-VOL ({lu.num_blocks} blocks)")
            pair_id = standby.record.standby_pair_id if standby is not None else random.getrandbits(63) or 1
            rec = PairRecord(name, pair_id, "P-VOL", "SMPL", fence_level.name.lower(), pvol[0],
                             pvol[1], remote, svol[0], svol[1], group=group, extent_start=start, extent_blocks=count,
                             generation=random.getrandbits(63))
            if bidirectional and count:
                raise PairError("a bidirectional pair mirrors the whole volume (no --extent)")
            rec.bidirectional = bidirectional
            if pace < 0:
                raise PairError(f"pace {pace:g}: MiB/s, 0 for no limit")
            rec.pace = pace
            flags = proto.PairFlags.NO_COPY if no_copy else proto.PairFlags(0)
            if bidirectional:
                flags |= proto.PairFlags.BIDIRECTIONAL
            # Local resources first: a full file system refuses the pair before the S side hears of it.
            os.makedirs(self.dir, exist_ok=True)
            bitmap = self._bitmap(name, lu, start, count, fresh=True)
            try:
                session, mirror = await self._open_session(rec)
            except BaseException:
                await asyncio.to_thread(bitmap.remove)
                raise
            try:
                need = count or lu.num_blocks
                if mirror.block_size != lu.block_size:
                    raise PairError(f"S-VOL blocks are {mirror.block_size} bytes, the P-VOL's {lu.block_size}")
                if mirror.num_blocks < need:
                    raise PairError(f"S-VOL has {mirror.num_blocks} blocks, the {'extent' if count else 'P-VOL'} "
                                    f"{need}: the S-VOL must be at least as large")
                reg = proto.PairRegistration(name, svol[1], lu.num_blocks, lu.block_size, self.initiator_name[:64],
                                             rec.generation, start, count, fence_level, flags, group,
                                             pvol[1], pvol[0])
                tmp = Pair(rec, None, lu, session)  # type: ignore[arg-type]
                await self._control(tmp, proto.RegisterPairCdb(rec.pair_id).encode(),
                                    reg.encode())
                if group_j is not None:
                    rec.mode, rec.journal, rec.remote_journal = "async", journal, remote_journal
                    try:
                        await self._attach_remote(tmp, group_j, remote_journal)
                        first = await self._delta_position(tmp, group_j) if standby is not None else 0
                    except (PairError, PeerFailure):
                        # Not half-formed: the S side forgets the pair it registered.
                        await self._control(tmp, proto.DeletePairCdb(rec.pair_id, force=True).encode())
                        raise
            except (PairError, PeerFailure) as exc:
                await session.close()
                await asyncio.to_thread(bitmap.remove)
                raise PairError(str(exc)) from None
            except BaseException:
                await session.close()
                await asyncio.to_thread(bitmap.remove)
                raise
            if standby is not None:
                await self._activate_standby(lu, standby, first)
            vol = self._wrap(rec, lu, bitmap)
            vol.mirror = mirror
            p = Pair(rec, vol, lu, session)
            self.pairs[name] = p
            self._by_id[rec.pair_id] = p
            try:
                await vol.apply(Event.CREATE_NO_COPY if no_copy else Event.CREATE)
                if not no_copy:
                    vol.mark_all()
                else:
                    rec.sync_generation = rec.generation
                await self._save(p)
            except Exception:
                # Not in the catalog (its file system full): not a pair on either side, or it would
                # vanish from this array at a restart and stay half-formed at the S side.
                del self.pairs[name]
                del self._by_id[rec.pair_id]
                with contextlib.suppress(PairError, PeerFailure):
                    await self._control(p, proto.DeletePairCdb(rec.pair_id, force=True).encode())
                await session.close()
                await asyncio.to_thread(bitmap.remove)
                raise
            await self._install(p)
            if group_j is not None:
                await self._joined(p, group_j)
        log.info("pair_created", pair=name, pvol=f"{pvol[0]}/{pvol[1]}", remote=remote, svol=f"{svol[0]}/{svol[1]}",
                 fence=rec.fence, no_copy=no_copy, extent=[start, count], mode=mode, journal=journal or None,
                 delta=delta)
        if not no_copy:
            self._spawn_connect(p)
        return self.describe(p)

    async def split(self, name: str, rw: bool = False) -> dict[str, Any]:
        """Split at a consistent point: writes in flight drain, then both sides stop mirroring."""
        event = Event.SPLIT_RW if rw else Event.SPLIT
        p = self._checked(name, PairRole.P_VOL, event,  # refused before anything moves
                          f"split pair {name} from its P-VOL array (this array holds the S-VOL)")
        await self.supervisor.stop(COPY_KIND, name)
        if p.record.mode == "async":
            await self._split_async(p, rw)
            return self.describe(p)
        await p.volume.drain()
        await p.volume.apply(event, "split by the user")
        try:
            # SSUS with TAKEOVER tells the S side it is split --rw (docs/replication-protocol.md).
            reason = proto.StateReason.TAKEOVER if rw else proto.StateReason.OPERATOR
            await self._send_state(p, PairState.SSUS, reason)
        except (PairError, PeerFailure) as exc:
            log.warning("pair_split_peer_not_told", pair=name, error=str(exc))
        return self.describe(p)

    async def split_group(self, group: str, rw: bool = False) -> list[dict[str, Any]]:
        """Split every pair of ``group`` at one point of the write stream: new writes to any of them
        wait, those in flight drain, all split, then the writes go on (recorded, not mirrored), so
        no S-VOL of the group holds a write acknowledged after an earlier one missing from another."""
        pairs = self.group(group)
        event = Event.SPLIT_RW if rw else Event.SPLIT
        for p in pairs:
            try:
                step(p.half.role, p.half.state, event)
            except InvalidTransition as exc:
                raise PairError(f"group {group}: pair {p.record.name}: {exc}") from None
        for p in pairs:
            await self.supervisor.stop(COPY_KIND, p.record.name)
        for p in pairs:
            p.volume.hold()
        try:
            for p in pairs:
                await p.volume.drain()
            for p in pairs:
                await p.volume.apply(event, f"group {group} split by the user")
        finally:
            for p in pairs:
                p.volume.release()
        for p in pairs:
            try:
                reason = proto.StateReason.TAKEOVER if rw else proto.StateReason.GROUP
                await self._send_state(p, PairState.SSUS, reason)
            except (PairError, PeerFailure) as exc:
                log.warning("pair_split_peer_not_told", pair=p.record.name, error=str(exc))
        log.info("pair_group_split", group=group, pairs=[p.record.name for p in pairs])
        return [self.describe(p) for p in pairs]

    async def resync(self, name: str) -> dict[str, Any]:
        """Copy what differs (the union of both sides' bitmaps) and return to PAIR."""
        p = self._checked(name, PairRole.P_VOL, Event.RESYNC,
                          f"resync pair {name} from its P-VOL array (this array holds the S-VOL)")
        if p.session is None:
            try:
                p.session, p.volume.mirror = await self._open_session(p.record)
            except PairError as exc:
                raise PairError(f"resync {name}: {exc}") from None
        peer = await self._peer_status(p)
        if peer.state is PairState.SSWS:
            verdict = compare_generations(p.record.generation, p.record.sync_generation, peer.generation_id,
                                          peer.sync_generation_id)
            both = (" Both arrays took writes on their own (split brain): "
                    if verdict is SyncVerdict.SPLIT_BRAIN else " ")
            raise PairError(f"the S-VOL was taken over (SSWS) and serves its own writes.{both}A resync would "
                            f"overwrite them: `pair resync {name} --reverse` here or `pair swap {name}` there "
                            "makes its data win; `pair delete` and create again makes this side's win")
        # The S side's differences (writes after split --rw) join ours: those tracks are resent.
        merged = await self._merge_peer_bitmap(p, peer)
        await self._send_state(p, PairState.COPY, proto.StateReason.OPERATOR)
        h = p.half
        h.fence_released = h.peer_marked = False
        p.volume.copied_bytes = 0
        await p.volume.apply(Event.RESYNC, "resync by the user")
        log.info("pair_resync", pair=name, peer_tracks=merged, pending_bytes=p.volume.pending_bytes)
        self._spawn_connect(p)
        return self.describe(p)

    async def delete(self, name: str, force: bool = False) -> dict[str, Any]:
        """Both sides back to SMPL; ``force`` deletes this side alone when the peer is gone."""
        p = self._get(name)
        if p.half.role is PairRole.P_VOL:
            await self.supervisor.stop(COPY_KIND, name)
            try:
                if p.session is None:
                    p.session, p.volume.mirror = await self._open_session(p.record)
                await self._control(p, proto.DeletePairCdb(p.record.pair_id, force=False).encode())
            except (PairError, PeerFailure) as exc:
                if not force:
                    raise PairError(f"delete {name}: the S array could not be told ({exc}); "
                                    "`--force` deletes this side alone") from None
                log.warning("pair_deleted_alone", pair=name, error=str(exc))
        elif not force:
            raise PairError(f"delete pair {name} from its P-VOL array, or with --force here")
        await self._forget(p)
        return {"name": name, "state": "SMPL"}

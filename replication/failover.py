"""Serving a pair from the other array: takeover (CCI horctakeover's table), swap and reverse resync.

No full copy on the way there or back: the array that is to serve takes over (S-VOL takeover) or
swaps roles, and the old primary catches up by the union of both difference bitmaps; a swap after
both arrays took writes on their own (a split brain, told by the generation ids) is refused until
the user says which side wins.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.pair import TRACK_BYTES
from sanlab.replication.pair_record import COPY_KIND, Pair, PairError, tracks_text
from sanlab.replication.pair_state import PairRole, PairState
from sanlab.replication.pairs_core import PairsCore
from sanlab.replication.refusals import Refusal, refuse
from sanlab.replication.states import (
    Event, InvalidTransition, SyncVerdict, TakeoverKind, compare_generations, step
)
from sanlab.replication.states import takeover as takeover_decision
from sanlab.scsi.task import Nexus
from sanlab.storage.peer import PeerFailure
from sanlab.target.initiator import IscsiError, IscsiSession

log = structlog.get_logger("sanlab.replication")


class Failover(PairsCore):
    """Takeover, swap and reverse resync (module docstring)."""

    async def _peer_reachable(self, p: Pair) -> bool:
        """Whether the other array answers now (a takeover's first question)."""
        if p.half.role is PairRole.P_VOL:
            if p.session is None:
                try:
                    p.session, p.volume.mirror = await self._open_session(p.record)
                except PairError:
                    return False
            try:
                await self._peer_status(p)
                return True
            except (PairError, PeerFailure):
                return False
        remote = self.find_primary(p.record.peer_initiator)
        if remote is None:
            return False
        cfg = self._initiator_config(remote, f"takeover:{p.record.name}", reconnect=False)
        for host, port in remote.portals:
            try:
                async with IscsiSession(host, port, remote.target, cfg) as s:
                    await s.ping()
                    return True
            except (IscsiError, OSError, PeerFailure, asyncio.TimeoutError):
                continue
        return False

    async def takeover(self, name: str) -> dict[str, Any]:
        """Serve pair ``name`` from this array, as CCI's horctakeover decides (replication/states.py):
        nop, S-VOL takeover (SSWS) or P-VOL takeover (the fence lifted); the result's ``exit_code``
        is horctakeover's (0 nop, 1 swap, 2 S-VOL, 3 P-VOL)."""
        p = self._get(name)
        h = p.half
        reachable = await self._peer_reachable(p)
        try:
            decision = takeover_decision(h.role, h.state, h.fence, reachable)
        except InvalidTransition as exc:
            raise PairError(str(exc)) from None
        if decision.kind is TakeoverKind.SWAP:
            return dict(await self.swap(name), takeover="swap", exit_code=int(decision.kind))
        if decision.event is not None:
            await p.volume.drain()
            if decision.kind is TakeoverKind.PVOL:
                h.fence_released = True
                await self.supervisor.stop(COPY_KIND, name)
            else:
                await self._before_takeover(p)
            # From here this side takes writes the other does not see: a new generation.
            p.record.generation = random.getrandbits(63)
            await p.volume.apply(decision.event, f"{decision.kind.name.lower()} takeover by the user"
                                 + ("" if reachable else ", the other array unreachable"))
        log.info("pair_takeover", pair=name, kind=decision.kind.name, peer_reachable=reachable)
        return dict(self.describe(p), takeover=decision.kind.name.lower(), exit_code=int(decision.kind))

    async def swap(self, name: str, force: bool = False) -> dict[str, Any]:
        """At the S side: exchange the roles, so this array's volume becomes the P-VOL and the old
        P-VOL is brought up to date from it by bitmap only (this side's writes since a takeover,
        and whatever the old P side took alone); the pair then mirrors the other way.

        When both sides took writes on their own (a takeover here while the P side kept writing:
        a split brain, told by the generation ids), the swap would overwrite the P side's writes:
        it is refused, naming the tracks that would be given up, unless ``force`` says this side
        wins."""
        p = self._checked(name, PairRole.S_VOL, Event.SWAP,
                          f"swap pair {name} from its S-VOL array (this array holds the P-VOL)")
        h, rec = p.half, p.record
        remote = self.find_primary(rec.peer_initiator)
        if remote is None:
            raise PairError(f"no remote here reaches the P array {rec.peer_initiator}: add one "
                            "(`sanlab remote add`) and swap again")
        if not rec.peer_target:
            raise PairError("the P array did not say where its P-VOL is (pair made by an older sanlab)")
        await self._before_swap(p)
        old_remote = rec.remote
        rec.remote = remote.name  # this side is about to be the P side: its peer is that remote
        try:
            session, mirror = await self._open_session(rec)
        except PairError:
            rec.remote = old_remote
            await self._swap_failed(p)
            raise
        p.session, p.volume.mirror = session, mirror
        await p.volume.drain()
        try:
            peer = await self._peer_status(p)
            verdict = compare_generations(rec.generation, rec.sync_generation, peer.generation_id,
                                          peer.sync_generation_id)
            if verdict is SyncVerdict.SPLIT_BRAIN and not force:
                lost = await self._peer_tracks(p, peer.bitmap_units)
                raise PairError(
                    f"split brain: both arrays took writes on their own since they were last in step. The swap "
                    f"would overwrite {len(lost)} track(s) of {TRACK_BYTES // 1024} KiB the P array "
                    f"({rec.peer_initiator}) wrote alone: {tracks_text(lost)}. Copy what is needed off the P-VOL "
                    f"first; `sanlab pair swap {name} --force` makes this array's data win")
            if verdict is SyncVerdict.SPLIT_BRAIN:
                log.warning("pair_split_brain_resolved", pair=name, winner="this array (swap --force)")
            await self._send_state(p, PairState.COPY, proto.StateReason.SWAP)
            merged = await self._merge_peer_bitmap(p, peer)
        except (PairError, PeerFailure) as exc:
            rec.remote = old_remote
            p.session, p.volume.mirror = None, None
            await session.close()
            await self._swap_failed(p)
            raise PairError(str(exc) if isinstance(exc, PairError) else f"the P array did not answer: {exc}") from None
        rec.generation = random.getrandbits(63)
        h.s_writable = h.fence_released = h.peer_marked = False
        h.peer_initiator = rec.peer_initiator = ""
        p.volume.copied_bytes = 0
        await p.volume.apply(Event.SWAP, "swap by the user")
        self.set_gate(p)
        await self._after_swap(p)
        log.info("pair_swapped", pair=name, role=h.role.label, peer_tracks=merged,
                 pending_bytes=p.volume.pending_bytes)
        self._spawn_connect(p)
        return self.describe(p)

    async def resync_reverse(self, name: str, wait: float = 30.0) -> dict[str, Any]:
        """At the P side: copy S-VOL to P-VOL (the S-VOL's data wins).  The S side is asked to
        swap (SET PAIR STATE SSWS, reason SWAP): it becomes the P-VOL and sends this side what
        differs, by bitmap only.  Returns once the roles have changed here (or after ``wait`` s)."""
        p = self._checked(name, PairRole.P_VOL, Event.RESYNC_REVERSE,
                          f"resync --reverse pair {name} from its P-VOL array, or swap it at this (S-VOL) array")
        h = p.half
        await self.supervisor.stop(COPY_KIND, name)
        if p.session is None:
            p.session, p.volume.mirror = await self._open_session(p.record)
        await self._send_state(p, PairState.SSWS, proto.StateReason.SWAP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while h.role is PairRole.P_VOL and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if h.role is PairRole.P_VOL:
            raise PairError(f"the S array took the request but has not swapped within {wait:g} s: "
                            "see its log and `pair display` there")
        return self.describe(p)

    async def _swap_asked(self, name: str) -> None:
        """The P side asked for a reverse resync: swap from here, its data giving way to ours."""
        try:
            await self.swap(name, force=True)
        except PairError as exc:
            log.error("pair_reverse_resync_failed", pair=name, error=str(exc))

    async def _swapped_by_peer(self, p: Pair, nexus: Nexus | None) -> None:
        """At the old P side: the S side swapped; this half becomes the S-VOL, in COPY, written by
        the new P array's initiator only.

        Asked again by the same array after this half turned (a fault cut that array's swap short
        before it turned too: both halves S-VOL, no host may write either), it is answered as
        done, so `pair swap` asked again there finishes the exchange."""
        h = p.half
        if (nexus is not None and h.role is PairRole.S_VOL and h.state is PairState.COPY
                and h.peer_initiator == nexus.initiator_name):
            log.warning("pair_swap_asked_again", pair=p.record.name, by=nexus.initiator_name,
                        reason="this half turned S-VOL for that array already; its own turn was cut short")
            return
        try:
            step(h.role, h.state, Event.SWAP)
        except InvalidTransition:
            raise refuse(Refusal.WRONG_STATE) from None
        if nexus is None:
            raise refuse(Refusal.NOT_READY)
        await self.supervisor.stop(COPY_KIND, p.record.name)
        # New host writes wait until this half is the S-VOL, then meet its rule (refused): one let
        # in after the drain would find no session to mirror on, be written here only and
        # acknowledged, and the new P side's copy back by bitmap would overwrite it (found by the
        # fault matrix's takeover drill, a swap under the host's writes).
        p.volume.hold()
        try:
            # An async P-VOL leaves journal mode before the drain: a write waiting for journal space
            # (inflow control, the secondary no longer reading) would otherwise hold the drain until
            # the journal's full time-out, past the new P side's command time-out (found by the fault
            # matrix's async takeover over a slow link).
            await self._before_swapped_by_peer(p)
            await p.volume.drain()
            session, p.session, p.volume.mirror = p.session, None, None
            if session is not None:
                self._beside(session.close(), p.record.name)
            h.peer_initiator = p.record.peer_initiator = nexus.initiator_name
            h.fence_released = h.peer_marked = False
            p.record.remote = nexus.initiator_name
            p.volume.copied_bytes = 0
            await p.volume.apply(Event.SWAP, "swapped by the peer")
            self.set_gate(p)
            await self._after_swap(p)
        finally:
            p.volume.release()

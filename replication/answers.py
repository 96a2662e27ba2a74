"""The S side (and, for swaps, either side): answers to the other array's pair-control commands.

replication/control.py decodes REGISTER PAIR, SET PAIR STATE, GET PAIR STATUS, READ DIFFERENCE
BITMAP and DELETE PAIR and calls these; a refusal is a ScsiError naming the reason
(replication/refusals.py), so the sending array can tell the user why.
"""
from __future__ import annotations

import asyncio
import os

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.failover import Failover
from sanlab.replication.pair_record import Pair, PairRecord
from sanlab.replication.pair_state import PairRole, PairState
from sanlab.replication.refusals import Refusal, refuse
from sanlab.replication.states import Event, InvalidTransition, step
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import Nexus

log = structlog.get_logger("sanlab.replication")


class PeerAnswers(Failover):
    """What this array does when the other array of a pair tells or asks it something."""

    async def register(self, lu: LogicalUnit, target: str, lun: int, nexus: Nexus, pair_id: int,
                       reg: proto.PairRegistration) -> None:
        """REGISTER PAIR at the S side: accept the pair on this LU or refuse it with the reason."""
        async with self._lock:
            if pair_id in self._by_id:
                raise refuse(Refusal.PAIR_ID_IN_USE)
            if reg.name in self.pairs:
                raise refuse(Refusal.PAIR_NAME_IN_USE)
            if reg.svol_lun != lun:
                raise refuse(Refusal.NO_SUCH_LUN)
            if self.join_refusal(lu, "sync", PairRole.S_VOL) is not None:
                raise refuse(Refusal.SVOL_IN_PAIR)
            if reg.block_size != lu.block_size:
                raise refuse(Refusal.BLOCK_SIZE_MISMATCH)
            if lu.num_blocks < (reg.extent_blocks or reg.pvol_blocks):
                raise refuse(Refusal.SVOL_TOO_SMALL)
            no_copy = bool(reg.flags & proto.PairFlags.NO_COPY)
            bidirectional = bool(reg.flags & proto.PairFlags.BIDIRECTIONAL)
            if bidirectional and (not reg.pvol_target or reg.extent_blocks):
                raise refuse(Refusal.WRONG_STATE)
            rec = PairRecord(reg.name, pair_id, "S-VOL", "SMPL", reg.fence.name.lower(), target, lun, reg.array_name,
                             peer_target=reg.pvol_target, peer_lun=reg.pvol_lun,
                             peer_initiator=nexus.initiator_name, group=reg.group,
                             generation=reg.generation_id, sync_generation=reg.generation_id if no_copy else 0,
                             bidirectional=bidirectional,
                             own_identity=[lu.config.naa.hex(), lu.config.serial] if bidirectional else None)
            try:
                os.makedirs(self.dir, exist_ok=True)
                # The S side's bitmap covers its whole LU: the S-VOL holds the extent from block 0.
                bitmap = self._bitmap(reg.name, lu, 0, reg.extent_blocks or reg.pvol_blocks, fresh=True)
            except OSError:
                raise refuse(Refusal.INTERNAL_FAILURE) from None
            vol = self._wrap(rec, lu, bitmap)
            vol.half.extent_blocks = reg.extent_blocks or reg.pvol_blocks
            p = Pair(rec, vol, lu)
            await vol.apply(Event.CREATE_NO_COPY if no_copy else Event.CREATE)
            self.pairs[reg.name] = p
            self._by_id[pair_id] = p
            await self._save(p)
            # The gate now (so no host write slips in); the volume swap waits for this command's end
            # (the swap quiesces the task set, this command included), so it runs beside it.
            lu.write_gate = lambda n: vol.may_write(n.initiator_name)
            self._beside(self._install(p), reg.name)
        log.info("pair_registered", pair=reg.name, svol=f"{target}/{lun}", primary=reg.array_name,
                 fence=rec.fence, no_copy=no_copy)

    async def peer_state(self, pair_id: int, state: PairState, reason: proto.StateReason, generation: int,
                         nexus: Nexus | None = None) -> None:
        """SET PAIR STATE at either side: the peer tells us its new state."""
        p = self._by_pair_id(pair_id)
        h = p.half
        if state is PairState.COPY and reason is proto.StateReason.SWAP:
            await self._swapped_by_peer(p, nexus)
            return
        if state is PairState.SSWS and reason is proto.StateReason.SWAP:
            # A reverse resync asked by the P side: answered now, the swap runs beside (it sends
            # this array's own commands to the P side).
            if h.role is not PairRole.S_VOL:
                raise refuse(Refusal.WRONG_STATE)
            try:
                step(h.role, h.state, Event.SWAP)
            except InvalidTransition:
                raise refuse(Refusal.WRONG_STATE) from None
            self._beside(self._swap_asked(p.record.name), p.record.name)
            return
        event = {PairState.PAIR: Event.COPY_DONE, PairState.COPY: Event.RESYNC, PairState.PSUE: Event.PEER_SUSPENDED,
                 PairState.SSUS: Event.SPLIT_RW if reason is proto.StateReason.TAKEOVER else Event.SPLIT,
                 PairState.PSUS: Event.SPLIT, PairState.PFUS: Event.JOURNAL_SUSPEND}.get(state)
        if event is None:
            raise refuse(Refusal.WRONG_STATE)
        if event is Event.COPY_DONE and h.state is PairState.PAIR:
            return
        if event is not Event.COPY_DONE:
            await self._before_peer_event(p, event)
        try:
            if event is Event.SPLIT_RW:
                h.s_writable = True
            if event is Event.RESYNC:
                h.s_writable = False
            await p.volume.apply(event, f"told by the peer ({reason.name.lower()})")
        except InvalidTransition:
            raise refuse(Refusal.WRONG_STATE) from None
        if event is Event.COPY_DONE:
            p.record.sync_generation = generation
            # In step: what the S side recorded is now the P side's too; forget it here.
            for t in p.volume.bitmap.set_units():
                p.volume.bitmap.clear(t)
            await asyncio.to_thread(p.volume.bitmap.flush)
            await self._save(p)

    def status(self, pair_id: int) -> proto.PairStatus:
        """GET PAIR STATUS at either side."""
        p = self._by_pair_id(pair_id)
        return proto.PairStatus(pair_id, p.half.state, p.half.role, p.record.generation, p.record.sync_generation,
                                p.volume.bitmap.count(), p.volume.track_blocks, p.volume.bitmap.size)

    def bitmap_bits(self, pair_id: int, start: int, count: int) -> bytes:
        """READ DIFFERENCE BITMAP at either side."""
        p = self._by_pair_id(pair_id)
        bm = p.volume.bitmap
        if start + count > bm.size:
            raise refuse(Refusal.BITMAP_RANGE)
        return proto.encode_bitmap(bytes(bm.bits), bm.size, start, count)

    async def peer_delete(self, pair_id: int, force: bool) -> None:
        """DELETE PAIR at the S side."""
        p = self._by_pair_id(pair_id)
        await self._forget(p, in_command=True)

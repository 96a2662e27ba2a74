"""What every part of the pair manager stands on: the pair halves of this array, their records in
the catalog, their volumes in the LUs' slots, the P side's session to the S array and the copy mover.

replication/manager.py says how the parts fit (core here, takeover and swap in failover.py, the
answers to the other array's commands in answers.py, the user's operations in manager.py).
"""
from __future__ import annotations

import asyncio
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Coroutine

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.link import Remote
from sanlab.replication.pair import TRACK_BYTES, PairHalf, PairVolume
from sanlab.replication.pair_record import COPY_KIND, Pair, PairError, PairRecord, PairSettings
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.refusals import Refusal, refusal_of, refuse
from sanlab.replication.states import Event, InvalidTransition, Transition, step
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.task import Nexus
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.catalog import Catalog
from sanlab.storage.external import ExternalVolume, stable_isid
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable
from sanlab.storage.supervisor import Supervisor, SupervisorError
from sanlab.storage.volume import Volume, VolumeError
from sanlab.target.initiator import InitiatorConfig, IscsiError, IscsiSession
from sanlab.target.pdu import TmfFunction

log = structlog.get_logger("sanlab.replication")


class PairsCore:
    """The pair halves of this array and what every operation on them uses."""

    def __init__(self, data_dir: Path, catalog: Catalog, initiator_name: str, supervisor: Supervisor,
                 find_lu: Callable[[str, int], LogicalUnit | None], find_remote: Callable[[str], Remote | None],
                 settings: PairSettings | None = None,
                 find_primary: Callable[[str], Remote | None] | None = None) -> None:
        self.dir = Path(data_dir) / "pairs"
        self.catalog = catalog
        self.initiator_name = initiator_name
        self.supervisor = supervisor
        self.find_lu = find_lu
        self.find_remote = find_remote
        self.find_primary: Callable[[str], Remote | None] = find_primary or (lambda _name: None)
        """S side: the remote through which the P array (known by its initiator name) is reached."""
        self.settings = settings or PairSettings()
        self.pairs: dict[str, Pair] = {}
        self._by_id: dict[int, Pair] = {}
        self._lock = asyncio.Lock()
        self._forward_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        """S-side volume swaps running beside the command that asked for them (reaped, logged)."""

    def _bitmap_path(self, name: str) -> str:
        return str(self.dir / f"{name}.bitmap")

    def _sync_record(self, p: Pair) -> None:
        r, h = p.record, p.half
        r.role, r.state, r.fence = h.role.label, h.state.name, h.fence.name.lower()
        r.reason, r.s_writable = h.reason, h.s_writable
        r.fence_released, r.peer_marked = h.fence_released, h.peer_marked
        r.copied_bytes = p.volume.copied_bytes

    async def _save(self, p: Pair) -> None:
        self._sync_record(p)
        r = p.record
        async with self.catalog.change() as c:
            c.put_pair(r.name, r.role, r.state, asdict(r))

    def _bitmap(self, name: str, lu: LogicalUnit, extent_start: int, extent_blocks: int,
                fresh: bool) -> PersistentBitmap:
        track = max(1, TRACK_BYTES // lu.block_size)
        area = extent_blocks or lu.num_blocks - extent_start
        return PersistentBitmap(self._bitmap_path(name), (area + track - 1) // track, fresh=fresh)

    def _wrap(self, rec: PairRecord, lu: LogicalUnit, bitmap: PersistentBitmap,
              local: Volume | None = None) -> PairVolume:
        """The pair volume of ``rec`` over ``local`` (default: the LU's volume, not yet wrapped)."""
        half = PairHalf(rec.name, PairRole.P_VOL if rec.role == "P-VOL" else PairRole.S_VOL, PairState[rec.state],
                        FenceLevel.NEVER if rec.mode == "async" else FenceLevel[rec.fence.upper()], rec.extent_start, rec.extent_blocks, rec.s_writable,
                        rec.fence_released, rec.peer_marked, rec.reason, rec.peer_initiator)

        async def saved(_h: PairHalf, t: Transition) -> None:
            p = self.pairs.get(rec.name)
            if p is not None:
                await self._save(p)
                await self._group_suspends(p, t)

        vol = self._volume_class(rec)(half, lu.volume if local is None else local, bitmap, on_transition=saved,
                                      mark_peer=lambda: self._mark_peer(rec.name),
                                      on_diverge=lambda: self._diverged(rec.name))
        vol.copied_bytes = rec.copied_bytes
        half.bidirectional = rec.bidirectional
        if rec.bidirectional and rec.role == "S-VOL":
            vol.forward = lambda: self._forward_volume(rec.name)
            naa, serial = LuConfig.identity(rec.peer_target, rec.peer_lun)
            lu.config.naa, lu.config.serial = naa, serial
        return vol

    def _volume_class(self, rec: PairRecord) -> type[PairVolume]:
        """The pair volume for ``rec`` (asynchronous pairs have their own, replication/asynccopy.py)."""
        return PairVolume

    async def _before_peer_event(self, p: Pair, event: Event) -> None:
        """Called before the peer's SET PAIR STATE moves ``p`` (async pairs finish restoring first)."""

    async def _before_takeover(self, p: Pair) -> None:
        """Called before an S-VOL takeover moves ``p`` to SSWS (async pairs apply what they acquired)."""

    async def _before_swap(self, p: Pair) -> None:
        """S side, before a swap asks the P side to give way (async pairs apply their journal first)."""

    async def _swap_failed(self, p: Pair) -> None:
        """S side: the swap did not happen (async pairs restart their journal movers)."""

    async def _before_swapped_by_peer(self, p: Pair) -> None:
        """P side, told that the S side swaps: async pairs turn their unsent journal into the bitmap."""

    async def _after_swap(self, p: Pair) -> None:
        """Either side, the roles exchanged: async pairs turn their journal's direction."""

    async def _into_journal_mode(self, p: Pair) -> None:
        """Async P side at the end of a copy: writes held, nothing left to copy (the caller
        releases them once the pair is PAIR); the held pass's failure raised, writes released."""

    async def _forget_async(self, p: Pair) -> None:
        """An async pair leaves its journal group."""

    def _describe_async(self, p: Pair, row: dict[str, Any]) -> None:
        """``mode`` and, for async pairs, the lag fields of ``pair display``."""
        row["mode"] = p.record.mode

    async def _forward_volume(self, name: str) -> ExternalVolume:
        """S side of a bidirectional pair: the P-VOL, logged in to on first use (one login at a time)."""
        p = self._get(name)
        async with self._forward_lock:
            if p.forward is None:
                remote = self.find_primary(p.record.peer_initiator)
                if remote is None:
                    raise PeerUnreachable(f"pair {name}: no remote here reaches the P array {p.record.peer_initiator}")
                host, port = remote.portals[0]
                cfg = self._initiator_config(remote, f"forward:{name}")
                session = IscsiSession(host, port, p.record.peer_target, cfg)
                vol = ExternalVolume(f"pair {name} P-VOL", session, p.record.peer_lun, errors=(IscsiError, OSError))
                try:
                    await vol.open()
                except (VolumeError, OSError, IscsiError) as exc:
                    await session.close()
                    raise PeerUnreachable(f"pair {name}: the P-VOL does not answer: {exc}") from exc
                p.forward, p.session = vol, session
            return p.forward

    async def _reset_peer(self, name: str, nexus: Nexus) -> None:
        """A LOGICAL UNIT RESET of a bidirectional pair's LU here resets the other array's half too
        (hosts see one LU through both): sent on the pair's session, unless it came from there."""
        p = self.pairs.get(name)
        if p is None or not p.record.bidirectional or p.half.state is not PairState.PAIR:
            return
        if p.half.role is PairRole.S_VOL:
            if nexus.initiator_name == p.half.peer_initiator:
                return  # the P side's own propagation
            await self._forward_volume(name)  # the session to the P-VOL (p.session), opened if need be
        elif nexus.isid == stable_isid(nexus.initiator_name, f"forward:{name}"):
            return  # the S side's forwarding session: its propagation
        if p.session is not None:
            await p.session.task_management(TmfFunction.LOGICAL_UNIT_RESET, p.record.peer_lun)

    async def _install(self, p: Pair) -> None:
        """Put the pair volume in the LU's slot (quiesced) and the write gate on the LU."""
        vol = p.volume
        name = p.record.name
        self.set_gate(p)
        if p.record.bidirectional:
            p.lu.reset_hook = lambda nexus: self._reset_peer(name, nexus)
        await p.lu.swap_volume(lambda _old: vol)

    def set_gate(self, p: Pair) -> None:
        """The LU's write gate as the half's role needs it: an S-VOL decides per nexus who writes; a
        P-VOL lets everyone through (its rules are the write path's), so it sets none and keeps the
        device server's fast path."""
        vol = p.volume
        p.lu.write_gate = (lambda nexus: vol.may_write(nexus.initiator_name)) if p.half.role is PairRole.S_VOL else None

    async def _uninstall(self, p: Pair) -> None:
        p.lu.write_gate = None
        p.lu.reset_hook = None
        await p.lu.swap_volume(lambda _old: p.volume.local)

    def pair_of_lu(self, lu: LogicalUnit) -> Pair | None:
        """The pair whose half this LU holds, if any."""
        return next((p for p in self.pairs.values() if p.lu is lu), None)

    def join_refusal(self, lu: LogicalUnit, mode: str, role: PairRole, journal: str = "") -> str | None:
        """Why a new ``mode`` pair cannot have its ``role`` half on ``lu`` (None: it can); pairs share
        a volume only as replication/cascade.py allows (relays, multi-target)."""
        holder = self.pair_of_lu(lu)
        return f"is already in pair {holder.record.name}" if holder is not None else None

    async def load(self) -> None:
        """Every pair half of the data directory again, wrapped; P sides in COPY/PAIR resume copying."""
        for body in self.catalog.pairs():
            try:
                rec = PairRecord(**body)
            except TypeError as exc:
                log.error("pair_record_unreadable", pair=body.get("name"), error=str(exc))
                continue
            lu = self.find_lu(rec.target, rec.lun)
            if lu is None:
                log.error("pair_volume_missing", pair=rec.name, target=rec.target, lun=rec.lun)
                continue
            bitmap = self._bitmap(rec.name, lu, rec.extent_start, rec.extent_blocks, fresh=False)
            p = Pair(rec, self._wrap(rec, lu, bitmap), lu)
            self.pairs[rec.name] = p
            self._by_id[rec.pair_id] = p
            await self._install(p)
            log.info("pair_loaded", pair=rec.name, role=rec.role, state=rec.state, marked_tracks=bitmap.count())
            if p.half.role is PairRole.P_VOL:
                # An async P-VOL in PAIR goes on journaling: its journal holds what the S side lacks.
                if p.half.state is PairState.COPY or (p.half.state is PairState.PAIR and p.record.mode != "async"):
                    await p.volume.apply(Event.RESTARTED, "array restarted")
                self._spawn_connect(p)

    def _spawn_connect(self, p: Pair) -> None:
        """Log in to the S array in the background; then copy what is marked (COPY)."""
        try:
            self.supervisor.start(COPY_KIND, p.record.name, self._connect_and_copy(p), pair=p.record.name)
        except SupervisorError as exc:
            log.warning("pair_copy_not_started", pair=p.record.name, reason=str(exc))

    async def close(self) -> None:
        """Log the sessions out and close the bitmaps (the supervisor stopped the movers first)."""
        for p in self.pairs.values():
            if p.session is not None:
                await p.session.close()
            await asyncio.to_thread(p.volume.bitmap.flush)

    def _initiator_config(self, remote: Remote, purpose: str, reconnect: bool = True) -> InitiatorConfig:
        """How this array logs in to ``remote`` for ``purpose`` (``pair:NAME``, ``forward:NAME``, ...):
        the remote's CHAP, the pair timeouts, and an ISID stable per purpose, so a new login
        reinstates the session a killed array left behind and the peer can tell the sessions apart."""
        s = self.settings
        return InitiatorConfig(initiator_name=self.initiator_name, isid=stable_isid(self.initiator_name, purpose),
                               chap=remote.chap, target_chap=remote.mutual_chap, login_timeout=s.login_timeout,
                               command_timeout=s.command_timeout, nop_interval=2.0 if reconnect else 0.0,
                               nop_timeout=s.command_timeout, reconnect=reconnect, fail_when_refused=True)

    async def _open_session(self, rec: PairRecord) -> tuple[IscsiSession, ExternalVolume]:
        remote = self.find_remote(rec.remote)
        if remote is None:
            raise PairError(f"no remote called {rec.remote}")
        last: Exception | None = None
        for host, port in remote.portals:
            session = IscsiSession(host, port, rec.peer_target, self._initiator_config(remote, f"pair:{rec.name}"))
            mirror = ExternalVolume(f"pair {rec.name} S-VOL", session, rec.peer_lun, errors=(IscsiError, OSError),
                                    ordered_by_caller=True)
            try:
                await mirror.open()
                return session, mirror
            except (VolumeError, OSError, IscsiError) as exc:
                last = exc
                await session.close()
        raise PairError(f"remote {rec.remote} ({', '.join(remote.portal_texts())} {rec.peer_target}) "
                        f"is not reachable: {last}")

    async def _control(self, p: Pair, cdb: bytes, data_out: bytes = b"", read_length: int = 0) -> bytes:
        """A pair-control command to the S-VOL's LU; its refusal as PairError naming it."""
        assert p.session is not None
        try:
            result = await p.session.run(p.record.peer_lun, cdb, data_out, read_length)
            result.check()
        except PeerRefused as exc:
            why = refusal_of(exc.sense) if exc.sense is not None else None
            raise PairError(f"the S array refused: {why.name.lower().replace('_', ' ') if why else exc}") from None
        except (PeerFailure, IscsiError, OSError) as exc:
            raise PeerUnreachable(f"the S array did not answer: {exc}") from exc
        return bytes(result.data)

    async def _send_state(self, p: Pair, state: PairState, reason: proto.StateReason) -> None:
        cdb = proto.SetPairStateCdb(p.record.pair_id, state, reason).encode()
        await self._control(p, cdb, proto.encode_state_parameters(p.record.generation))

    async def _diverged(self, name: str) -> None:
        """A write the other half will not see is about to land here: a new generation, once."""
        p = self.pairs.get(name)
        if p is None or p.record.generation != p.record.sync_generation:
            return
        p.record.generation = random.getrandbits(63)
        await self._save(p)
        log.info("pair_diverged", pair=name, role=p.record.role, state=p.half.state.name)

    async def _mark_peer(self, name: str) -> bool:
        """Fence ``status``: tell the S side it is suspended; True if it acknowledged."""
        p = self.pairs.get(name)
        if p is None or p.session is None:
            return False
        try:
            await self._send_state(p, PairState.PSUE, proto.StateReason.FENCE)
            return True
        except (PairError, PeerFailure):
            return False

    async def _connect_and_copy(self, p: Pair) -> None:
        """The P side's mover: (re)connect, copy what the bitmap marks, then PAIR on both sides."""
        rec = p.record
        while p.session is None:
            try:
                p.session, p.volume.mirror = await self._open_session(rec)
            except PairError as exc:
                log.warning("pair_peer_unreachable", pair=rec.name, error=str(exc))
                await asyncio.sleep(2.0)
        if p.half.state is not PairState.COPY:
            return
        p.copying = True
        p.copy_started = (asyncio.get_running_loop().time(), p.volume.copied_bytes)
        try:
            # An async pair chases the writes it records meanwhile for two passes at most; what
            # they leave goes in the last pass, with writes held (:meth:`_into_journal_mode`).
            done = await p.volume.copy(rate=rec.pace * (1 << 20), passes=2 if rec.mode == "async" else 0)
        except (PeerFailure, VolumeError) as exc:
            log.warning("pair_copy_failed", pair=rec.name, error=str(exc))
            if p.half.state is PairState.COPY:
                await p.volume.apply(Event.PEER_LOST, f"copy failed: {exc}")
            return
        finally:
            p.copying = False
        if p.half.state is not PairState.COPY or (not done and rec.mode != "async"):
            return
        if rec.mode == "async":
            # Into journal mode at one point of the write stream: writes held for the last pass,
            # which sends what the writes recorded meanwhile left (a busy track cannot keep the
            # copy from ending: it waits for the pass instead of being sent again and again).
            try:
                await self._into_journal_mode(p)
            except (PeerFailure, VolumeError) as exc:
                await p.volume.apply(Event.PEER_LOST, f"copy failed: {exc}")
                return
        try:
            try:
                await self._send_state(p, PairState.PAIR, proto.StateReason.COPY_COMPLETE)
            except (PairError, PeerFailure) as exc:
                await p.volume.apply(Event.PEER_LOST, f"S array did not take PAIR: {exc}")
                return
            rec.sync_generation = rec.generation
            await p.volume.apply(Event.COPY_DONE)
        finally:
            if rec.mode == "async":
                p.volume.release()
        log.info("pair_in_step", pair=rec.name, copied_bytes=p.volume.copied_bytes)

    def _checked(self, name: str, role: PairRole, event: Event, elsewhere: str) -> Pair:
        """Pair ``name``, held here in ``role`` and in a state that takes ``event``; else PairError
        (``elsewhere`` when this array holds the other half)."""
        p = self._get(name)
        if p.half.role is not role:
            raise PairError(elsewhere)
        try:
            step(p.half.role, p.half.state, event)
        except InvalidTransition as exc:
            raise PairError(str(exc)) from None
        return p

    def _get(self, name: str) -> Pair:
        p = self.pairs.get(name)
        if p is None:
            raise PairError(f"no pair called {name}")
        return p

    def group(self, group: str) -> list[Pair]:
        """The P-side pairs of consistency group ``group`` here (PairError when there are none)."""
        pairs = [p for _, p in sorted(self.pairs.items()) if p.record.group == group and p.half.role is PairRole.P_VOL]
        if not pairs:
            raise PairError(f"no pair of group {group} has its P-VOL on this array")
        return pairs

    async def _group_suspends(self, p: Pair, t: Transition) -> None:
        """One pair of a group suspended by an error: the others suspend too, before the write that
        found the error is answered (the group's S-VOLs stop at one point)."""
        group = p.record.group
        if not group or t.state is not PairState.PSUE or p.half.role is not PairRole.P_VOL:
            return
        for other in self.pairs.values():
            if (other is not p and other.record.group == group and other.half.role is PairRole.P_VOL
                    and other.half.state in (PairState.COPY, PairState.PAIR)):
                await other.volume.apply(Event.PEER_LOST, f"group {group}: pair {p.record.name} suspended")

    async def _peer_status(self, p: Pair) -> proto.PairStatus:
        """The other half's state, generations and bitmap size (GET PAIR STATUS)."""
        raw = await self._control(p, proto.GetPairStatusCdb(p.record.pair_id).encode(), read_length=proto.STATUS_LENGTH)
        return proto.decode_status(raw)

    async def _merge_peer_bitmap(self, p: Pair, peer: proto.PairStatus) -> int:
        """OR the other half's difference bitmap into ours (durably): those tracks are sent too."""
        merged = 0
        for unit in await self._peer_tracks(p, min(peer.bitmap_units, p.volume.bitmap.size)):
            if not p.volume.bitmap.has(unit):
                p.volume.bitmap.mark(unit)
                merged += 1
        await asyncio.to_thread(p.volume.bitmap.flush)
        return merged

    def _beside(self, coro: Coroutine[Any, Any, None], pair: str) -> None:
        """Run ``coro`` beside the command being answered (an LU's volume swap waits for that command)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def reap(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("pair_volume_swap_failed", pair=pair, error=repr(t.exception()))

        task.add_done_callback(reap)

    async def _forget(self, p: Pair, in_command: bool = False) -> None:
        """Unwrap the LU and delete the half's files; ``in_command``: asked by a command on that LU."""
        await p.volume.drain()
        if in_command:
            p.lu.write_gate = None
            self._beside(self._uninstall(p), p.record.name)
        else:
            await self._uninstall(p)
        await p.volume.apply(Event.DELETE, "deleted")
        await self._forget_async(p)
        if p.record.own_identity:
            p.lu.config.naa, p.lu.config.serial = bytes.fromhex(p.record.own_identity[0]), p.record.own_identity[1]
        self.pairs.pop(p.record.name, None)
        self._by_id.pop(p.record.pair_id, None)
        if p.session is not None:
            await p.session.close()
        async with self.catalog.change() as c:
            c.delete_pair(p.record.name)
        p.volume.bitmap.close()
        try:
            os.unlink(self._bitmap_path(p.record.name))
        except FileNotFoundError:
            pass
        log.info("pair_deleted", pair=p.record.name, role=p.record.role)

    async def _peer_tracks(self, p: Pair, units: int) -> list[int]:
        """The tracks the peer's bitmap marks (read with READ DIFFERENCE BITMAP)."""
        out: list[int] = []
        start = 0
        while start < units:
            n = min(units - start, 65535)
            cdb = proto.ReadDifferenceBitmapCdb(p.record.pair_id, start, n)
            bits = proto.decode_bitmap(await self._control(p, cdb.encode(), read_length=cdb.data_in_length), n)
            out += [start + i for i in range(n) if bits[i >> 3] & (1 << (i & 7))]
            start += n
        return out

    def describe(self, p: Pair) -> dict[str, Any]:
        """``pair display --json``'s row."""
        self._sync_record(p)
        r, v = p.record, p.volume
        _, count = v.area
        total = count * v.block_size
        pending = v.pending_bytes
        progress = 100 if total == 0 else max(0, min(100, int(100 * (total - pending) / total)))
        return {"name": r.name, "role": r.role, "state": r.state, "fence": r.fence, "group": r.group or None,
                "remote": r.remote, "progress": progress, "copied_bytes": v.copied_bytes, "pending_bytes": pending,
                "pvol" if r.role == "P-VOL" else "svol": f"{r.target}/{r.lun}",
                "svol" if r.role == "P-VOL" else "pvol": f"{r.peer_target}/{r.peer_lun}" if r.peer_target else None,
                "extent": [r.extent_start, r.extent_blocks] if r.extent_blocks else None, "reason": r.reason or None,
                "copying": p.copying, "bidirectional": r.bidirectional, "pace": r.pace or None,
                "rate_bytes_per_s": self._rate(p), **self._async_fields(p)}

    def _async_fields(self, p: Pair) -> dict[str, Any]:
        row: dict[str, Any] = {}
        self._describe_async(p, row)
        return row

    @staticmethod
    def _rate(p: Pair) -> int | None:
        """Bytes per second the running copy sends (None when no copy runs)."""
        if not p.copying:
            return None
        began, before = p.copy_started
        elapsed = asyncio.get_running_loop().time() - began
        return int((p.volume.copied_bytes - before) / elapsed) if elapsed > 0 else 0

    def display(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every pair half (or ``name``'s) at this array."""
        if name is not None:
            return [self.describe(self._get(name))]
        return [self.describe(p) for _, p in sorted(self.pairs.items())]

    def _by_pair_id(self, pair_id: int) -> Pair:
        p = self._by_id.get(pair_id)
        if p is None:
            raise refuse(Refusal.UNKNOWN_PAIR)
        return p

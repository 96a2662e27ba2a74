"""The pairs of this array, both halves: records, volumes, the session to the peer, the copy mover.

One :class:`PairManager` per array (built by tools/, which also gives it the logical units and the
remotes).  The P side of a pair runs the show: ``create`` checks the instruction, logs in to the S
array's target through the array's own initiator, registers the pair there (REGISTER PAIR,
docs/replication-protocol.md), swaps the P-VOL's LU volume for a
:class:`~sanlab.replication.pair.PairVolume` and starts the copy mover; split, resync and delete
change both sides with SET PAIR STATE / DELETE PAIR.  The S side answers those commands
(:mod:`sanlab.replication.control` routes them here): it wraps its LU's volume the same way and
sets the LU's write gate, so only the P array writes an S-VOL in COPY/PAIR.

A pair half is a row of the array's catalog (``pairs``: role, state and the whole record, committed
off the event loop at every state change) and its difference bitmap (``<data-dir>/pairs/<name>.bitmap``,
replication/pair.py states the flush order).  At start every record is loaded again: the LU is wrapped again and a P side in COPY
or PAIR resends what its bitmap marks (``Event.RESTARTED``) once the S array answers.
"""
from __future__ import annotations

import asyncio
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.link import Remote
from sanlab.replication.pair import TRACK_BYTES, PairHalf, PairVolume
from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.refusals import Refusal, refusal_of, refuse
from sanlab.replication.states import (
    Event, InvalidTransition, SyncVerdict, TakeoverKind, Transition, compare_generations, step,
)
from sanlab.replication.states import takeover as takeover_decision
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.scsi.task import Nexus
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.catalog import Catalog
from sanlab.storage.external import ExternalVolume, stable_isid
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable
from sanlab.storage.supervisor import Supervisor, SupervisorError
from sanlab.storage.volume import VolumeError
from sanlab.target.initiator import InitiatorConfig, IscsiError, IscsiSession
from sanlab.target.pdu import TmfFunction

log = structlog.get_logger("sanlab.replication")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
COPY_KIND = "pair-copy"
"""The supervisor's kind for copy movers (tools/array.py puts it in the shutdown order)."""


class PairError(Exception):
    """An instruction refused, with the reason for the user (CLI: message and exit 1)."""


def _tracks_text(tracks: list[int], most: int = 16) -> str:
    """``3, 40-42, 100`` (at most ``most`` runs, then how many more)."""
    runs: list[tuple[int, int]] = []
    for t in tracks:
        if runs and runs[-1][1] == t - 1:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (f" and {len(runs) - most} more runs" if len(runs) > most else "") if runs else "none"


@dataclass(slots=True)
class PairRecord:
    """A pair half as it is kept on disk (JSON)."""

    name: str
    pair_id: int
    role: str
    """``P-VOL`` or ``S-VOL``."""
    state: str
    fence: str
    target: str
    """This array's target of the local volume's LU."""
    lun: int
    remote: str
    """P side: the remote's name; S side: the P array's name (as it registered)."""
    peer_target: str = ""
    """P side: the S-VOL's target on the remote."""
    peer_lun: int = 0
    peer_initiator: str = ""
    """S side: the P array's initiator name."""
    group: str = ""
    extent_start: int = 0
    extent_blocks: int = 0
    reason: str = ""
    s_writable: bool = False
    fence_released: bool = False
    peer_marked: bool = False
    generation: int = 0
    sync_generation: int = 0
    copied_bytes: int = 0
    bidirectional: bool = False
    pace: float = 0.0
    """P side: the copy's pace in MiB/s (0: as fast as it goes)."""
    own_identity: list[str] | None = None
    """S side of a bidirectional pair: the LU's own NAA designator (hex) and serial, given back at
    delete (while paired it answers with the P-VOL's, so hosts see one LU on both arrays)."""


@dataclass(slots=True)
class Pair:
    """A pair half while the array runs."""

    record: PairRecord
    volume: PairVolume
    lu: LogicalUnit
    session: IscsiSession | None = None
    """P side: the session to the S array's target; S side of a bidirectional pair: to the P-VOL's."""
    copying: bool = False
    forward: ExternalVolume | None = None
    """S side of a bidirectional pair: the P-VOL, where this side's host writes go first."""
    copy_started: tuple[float, int] = (0.0, 0)
    """When the running copy started (loop time) and the bytes sent before it: its rate."""

    @property
    def half(self) -> PairHalf:
        """The volume's view of the half (role, state, fence, flags)."""
        return self.volume.half


@dataclass(frozen=True, slots=True)
class PairSettings:
    """Timeouts of the P side's session to the S array (seconds)."""

    command_timeout: float = 5.0
    """A mirrored write unanswered this long counts as the S side unreachable (fence levels act)."""
    login_timeout: float = 5.0


class PairManager:
    """Every pair half of this array (module docstring)."""

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

    # --- records ------------------------------------------------------------------------------------------

    def _bitmap_path(self, name: str) -> str:
        return str(self.dir / f"{name}.bitmap")

    def _sync_record(self, p: Pair) -> None:
        r, h = p.record, p.half
        r.role, r.state, r.fence = h.role.label, h.state.name, h.fence.name.lower()
        r.reason, r.s_writable, r.fence_released, r.peer_marked = h.reason, h.s_writable, h.fence_released, h.peer_marked
        r.copied_bytes = p.volume.copied_bytes

    async def _save(self, p: Pair) -> None:
        self._sync_record(p)
        r = p.record
        async with self.catalog.change() as c:
            c.put_pair(r.name, r.role, r.state, asdict(r))

    def _bitmap(self, name: str, lu: LogicalUnit, extent_start: int, extent_blocks: int, fresh: bool) -> PersistentBitmap:
        track = max(1, TRACK_BYTES // lu.block_size)
        area = extent_blocks or lu.num_blocks - extent_start
        return PersistentBitmap(self._bitmap_path(name), (area + track - 1) // track, fresh=fresh)

    def _wrap(self, rec: PairRecord, lu: LogicalUnit, bitmap: PersistentBitmap) -> PairVolume:
        half = PairHalf(rec.name, PairRole.P_VOL if rec.role == "P-VOL" else PairRole.S_VOL, PairState[rec.state],
                        FenceLevel[rec.fence.upper()], rec.extent_start, rec.extent_blocks, rec.s_writable,
                        rec.fence_released, rec.peer_marked, rec.reason, rec.peer_initiator)

        async def saved(_h: PairHalf, t: Transition) -> None:
            p = self.pairs.get(rec.name)
            if p is not None:
                await self._save(p)
                await self._group_suspends(p, t)

        vol = PairVolume(half, lu.volume, bitmap, on_transition=saved, mark_peer=lambda: self._mark_peer(rec.name),
                         on_diverge=lambda: self._diverged(rec.name))
        vol.copied_bytes = rec.copied_bytes
        half.bidirectional = rec.bidirectional
        if rec.bidirectional and rec.role == "S-VOL":
            vol.forward = lambda: self._forward_volume(rec.name)
            naa, serial = LuConfig.identity(rec.peer_target, rec.peer_lun)
            lu.config.naa, lu.config.serial = naa, serial
        return vol

    async def _forward_volume(self, name: str) -> ExternalVolume:
        """S side of a bidirectional pair: the P-VOL, logged in to on first use (one login at a time)."""
        p = self._get(name)
        async with self._forward_lock:
            if p.forward is None:
                remote = self.find_primary(p.record.peer_initiator)
                if remote is None:
                    raise PeerUnreachable(f"pair {name}: no remote here reaches the P array {p.record.peer_initiator}")
                host, port = remote.portals[0]
                cfg = InitiatorConfig(initiator_name=self.initiator_name,
                                      isid=stable_isid(self.initiator_name, f"forward:{name}"),
                                      chap=remote.chap, target_chap=remote.mutual_chap,
                                      login_timeout=self.settings.login_timeout,
                                      command_timeout=self.settings.command_timeout, nop_interval=2.0,
                                      nop_timeout=self.settings.command_timeout, reconnect=True)
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
        p.lu.write_gate = lambda nexus: vol.may_write(nexus.initiator_name)
        if p.record.bidirectional:
            p.lu.reset_hook = lambda nexus: self._reset_peer(name, nexus)
        await p.lu.swap_volume(lambda _old: vol)

    async def _uninstall(self, p: Pair) -> None:
        p.lu.write_gate = None
        p.lu.reset_hook = None
        await p.lu.swap_volume(lambda _old: p.volume.local)

    def pair_of_lu(self, lu: LogicalUnit) -> Pair | None:
        """The pair whose half this LU holds, if any."""
        return next((p for p in self.pairs.values() if p.lu is lu), None)

    # --- start and stop -------------------------------------------------------------------------------------

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
                if p.half.state in (PairState.COPY, PairState.PAIR):
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

    # --- the P side's session ---------------------------------------------------------------------------------

    async def _open_session(self, rec: PairRecord) -> tuple[IscsiSession, ExternalVolume]:
        remote = self.find_remote(rec.remote)
        if remote is None:
            raise PairError(f"no remote called {rec.remote}")
        last: Exception | None = None
        for host, port in remote.portals:
            cfg = InitiatorConfig(initiator_name=self.initiator_name,
                                  isid=stable_isid(self.initiator_name, f"pair:{rec.name}"),
                                  chap=remote.chap, target_chap=remote.mutual_chap,
                                  login_timeout=self.settings.login_timeout,
                                  command_timeout=self.settings.command_timeout,
                                  nop_interval=2.0, nop_timeout=self.settings.command_timeout, reconnect=True)
            session = IscsiSession(host, port, rec.peer_target, cfg)
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
            done = await p.volume.copy(rate=rec.pace * (1 << 20))
        except (PeerFailure, VolumeError) as exc:
            log.warning("pair_copy_failed", pair=rec.name, error=str(exc))
            if p.half.state is PairState.COPY:
                await p.volume.apply(Event.PEER_LOST, f"copy failed: {exc}")
            return
        finally:
            p.copying = False
        if done and p.half.state is PairState.COPY:
            try:
                await self._send_state(p, PairState.PAIR, proto.StateReason.COPY_COMPLETE)
            except (PairError, PeerFailure) as exc:
                await p.volume.apply(Event.PEER_LOST, f"S array did not take PAIR: {exc}")
                return
            rec.sync_generation = rec.generation
            await p.volume.apply(Event.COPY_DONE)
            log.info("pair_in_step", pair=rec.name, copied_bytes=p.volume.copied_bytes)

    # --- operations (P side) ------------------------------------------------------------------------------

    async def create(self, name: str, pvol: tuple[str, int], remote: str, svol: tuple[str, int], *,
                     fence: str = "data", group: str = "", extent: tuple[int, int] | None = None,
                     no_copy: bool = False, bidirectional: bool = False, pace: float = 0.0) -> dict[str, Any]:
        """Form pair ``name`` (checks first; a failure while forming leaves nothing half-made)."""
        async with self._lock:
            if not NAME_RE.match(name):
                raise PairError(f"pair name {name!r}: 1-32 letters, digits, . _ - (starting with a letter or digit)")
            if name in self.pairs:
                raise PairError(f"a pair called {name} exists")
            try:
                fence_level = FenceLevel[fence.upper()]
            except KeyError:
                raise PairError(f"fence {fence!r}: data, status or never") from None
            if self.find_remote(remote) is None:
                raise PairError(f"no remote called {remote}")
            lu = self.find_lu(*pvol)
            if lu is None:
                raise PairError(f"no LU {pvol[0]}/{pvol[1]} on this array")
            if self.pair_of_lu(lu) is not None:
                raise PairError(f"{pvol[0]}/{pvol[1]} is already in pair {self.pair_of_lu(lu).record.name}")  # type: ignore[union-attr]
            start, count = extent or (0, 0)
            if start < 0 or count < 0 or start + (count or 1) > lu.num_blocks or (count == 0 and start):
                raise PairError(f"extent {start}:{count} does not fit the P-VOL ({lu.num_blocks} blocks)")
            rec = PairRecord(name, random.getrandbits(63) or 1, "P-VOL", "SMPL", fence_level.name.lower(), pvol[0],
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
            session, mirror = await self._open_session(rec)
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
            except (PairError, PeerFailure) as exc:
                await session.close()
                raise PairError(str(exc)) from None
            os.makedirs(self.dir, exist_ok=True)
            bitmap = self._bitmap(name, lu, start, count, fresh=True)
            vol = self._wrap(rec, lu, bitmap)
            vol.mirror = mirror
            p = Pair(rec, vol, lu, session)
            self.pairs[name] = p
            self._by_id[rec.pair_id] = p
            await vol.apply(Event.CREATE_NO_COPY if no_copy else Event.CREATE)
            if not no_copy:
                vol.mark_all()
            else:
                rec.sync_generation = rec.generation
            await self._save(p)
            await self._install(p)
        log.info("pair_created", pair=name, pvol=f"{pvol[0]}/{pvol[1]}", remote=remote, svol=f"{svol[0]}/{svol[1]}",
                 fence=rec.fence, no_copy=no_copy, extent=[start, count])
        if not no_copy:
            self._spawn_connect(p)
        return self.describe(p)

    def _get(self, name: str) -> Pair:
        p = self.pairs.get(name)
        if p is None:
            raise PairError(f"no pair called {name}")
        return p

    async def split(self, name: str, rw: bool = False) -> dict[str, Any]:
        """Split at a consistent point: writes in flight drain, then both sides stop mirroring."""
        p = self._get(name)
        if p.half.role is not PairRole.P_VOL:
            raise PairError(f"split pair {name} from its P-VOL array (this array holds the S-VOL)")
        try:
            event = Event.SPLIT_RW if rw else Event.SPLIT
            step(p.half.role, p.half.state, event)  # refused before anything moves
        except InvalidTransition as exc:
            raise PairError(str(exc)) from None
        await self.supervisor.stop(COPY_KIND, name)
        await p.volume.drain()
        await p.volume.apply(event, "split by the user")
        try:
            await self._send_state(p, PairState.SSUS, proto.StateReason.OPERATOR if not rw else proto.StateReason.TAKEOVER)
        except (PairError, PeerFailure) as exc:
            log.warning("pair_split_peer_not_told", pair=name, error=str(exc))
        return self.describe(p)

    def group(self, group: str) -> list[Pair]:
        """The P-side pairs of consistency group ``group`` here (PairError when there are none)."""
        pairs = [p for _, p in sorted(self.pairs.items()) if p.record.group == group and p.half.role is PairRole.P_VOL]
        if not pairs:
            raise PairError(f"no pair of group {group} has its P-VOL on this array")
        return pairs

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
                await self._send_state(p, PairState.SSUS, proto.StateReason.GROUP if not rw else proto.StateReason.TAKEOVER)
            except (PairError, PeerFailure) as exc:
                log.warning("pair_split_peer_not_told", pair=p.record.name, error=str(exc))
        log.info("pair_group_split", group=group, pairs=[p.record.name for p in pairs])
        return [self.describe(p) for p in pairs]

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

    async def resync(self, name: str) -> dict[str, Any]:
        """Copy what differs (the union of both sides' bitmaps) and return to PAIR."""
        p = self._get(name)
        if p.half.role is not PairRole.P_VOL:
            raise PairError(f"resync pair {name} from its P-VOL array (this array holds the S-VOL)")
        try:
            step(p.half.role, p.half.state, Event.RESYNC)
        except InvalidTransition as exc:
            raise PairError(str(exc)) from None
        if p.session is None:
            try:
                p.session, p.volume.mirror = await self._open_session(p.record)
            except PairError as exc:
                raise PairError(f"resync {name}: {exc}") from None
        raw = await self._control(p, proto.GetPairStatusCdb(p.record.pair_id).encode(), read_length=proto.STATUS_LENGTH)
        peer = proto.decode_status(raw)
        if peer.state is PairState.SSWS:
            verdict = compare_generations(p.record.generation, p.record.sync_generation, peer.generation_id,
                                          peer.sync_generation_id)
            both = " Both arrays took writes on their own (split brain): " if verdict is SyncVerdict.SPLIT_BRAIN else " "
            raise PairError(f"the S-VOL was taken over (SSWS) and serves its own writes.{both}A resync would "
                            f"overwrite them: `pair resync {name} --reverse` here or `pair swap {name}` there "
                            "makes its data win; `pair delete` and create again makes this side's win")
        # The S side's differences (writes after split --rw) join ours: those tracks are resent.
        merged = await self._merge_peer_bitmap(p)
        await self._send_state(p, PairState.COPY, proto.StateReason.OPERATOR)
        h = p.half
        h.fence_released = h.peer_marked = False
        p.volume.copied_bytes = 0
        await p.volume.apply(Event.RESYNC, "resync by the user")
        log.info("pair_resync", pair=name, peer_tracks=merged, pending_bytes=p.volume.pending_bytes)
        self._spawn_connect(p)
        return self.describe(p)

    async def _merge_peer_bitmap(self, p: Pair) -> int:
        raw = await self._control(p, proto.GetPairStatusCdb(p.record.pair_id, proto.STATUS_LENGTH).encode(),
                                  read_length=proto.STATUS_LENGTH)
        status = proto.decode_status(raw)
        units = min(status.bitmap_units, p.volume.bitmap.size)
        merged = 0
        start = 0
        while start < units:
            n = min(units - start, 65535)
            cdb = proto.ReadDifferenceBitmapCdb(p.record.pair_id, start, n)
            bits = proto.decode_bitmap(await self._control(p, cdb.encode(), read_length=cdb.data_in_length), n)
            for i in range(n):
                if bits[i >> 3] & (1 << (i & 7)) and not p.volume.bitmap.has(start + i):
                    p.volume.bitmap.mark(start + i)
                    merged += 1
            start += n
        await asyncio.to_thread(p.volume.bitmap.flush)
        return merged

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

    async def _peer_reachable(self, p: Pair) -> bool:
        """Whether the other array answers now (a takeover's first question)."""
        if p.half.role is PairRole.P_VOL:
            if p.session is None:
                try:
                    p.session, p.volume.mirror = await self._open_session(p.record)
                except PairError:
                    return False
            try:
                await self._control(p, proto.GetPairStatusCdb(p.record.pair_id).encode(),
                                    read_length=proto.STATUS_LENGTH)
                return True
            except (PairError, PeerFailure):
                return False
        remote = self.find_primary(p.record.peer_initiator)
        if remote is None:
            return False
        for host, port in remote.portals:
            cfg = InitiatorConfig(initiator_name=self.initiator_name,
                                  isid=stable_isid(self.initiator_name, f"takeover:{p.record.name}"),
                                  chap=remote.chap, target_chap=remote.mutual_chap,
                                  login_timeout=self.settings.login_timeout,
                                  command_timeout=self.settings.command_timeout, reconnect=False)
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
        p = self._get(name)
        h, rec = p.half, p.record
        if h.role is not PairRole.S_VOL:
            raise PairError(f"swap pair {name} from its S-VOL array (this array holds the P-VOL)")
        try:
            step(h.role, h.state, Event.SWAP)
        except InvalidTransition as exc:
            raise PairError(str(exc)) from None
        remote = self.find_primary(rec.peer_initiator)
        if remote is None:
            raise PairError(f"no remote here reaches the P array {rec.peer_initiator}: add one "
                            "(`sanlab remote add`) and swap again")
        if not rec.peer_target:
            raise PairError("the P array did not say where its P-VOL is (pair made by an older sanlab)")
        old_remote = rec.remote
        rec.remote = remote.name  # this side is about to be the P side: its peer is that remote
        try:
            session, mirror = await self._open_session(rec)
        except PairError:
            rec.remote = old_remote
            raise
        p.session, p.volume.mirror = session, mirror
        await p.volume.drain()
        try:
            raw = await self._control(p, proto.GetPairStatusCdb(rec.pair_id).encode(), read_length=proto.STATUS_LENGTH)
            peer = proto.decode_status(raw)
            verdict = compare_generations(rec.generation, rec.sync_generation, peer.generation_id,
                                          peer.sync_generation_id)
            if verdict is SyncVerdict.SPLIT_BRAIN and not force:
                lost = await self._peer_tracks(p, peer.bitmap_units)
                raise PairError(
                    f"split brain: both arrays took writes on their own since they were last in step. The swap "
                    f"would overwrite {len(lost)} track(s) of {TRACK_BYTES // 1024} KiB the P array "
                    f"({rec.peer_initiator}) wrote alone: {_tracks_text(lost)}. Copy what is needed off the P-VOL "
                    f"first; `sanlab pair swap {name} --force` makes this array's data win")
            if verdict is SyncVerdict.SPLIT_BRAIN:
                log.warning("pair_split_brain_resolved", pair=name, winner="this array (swap --force)")
            await self._send_state(p, PairState.COPY, proto.StateReason.SWAP)
            merged = await self._merge_peer_bitmap(p)
        except (PairError, PeerFailure) as exc:
            rec.remote = old_remote
            p.session, p.volume.mirror = None, None
            await session.close()
            raise PairError(str(exc) if isinstance(exc, PairError) else f"the P array did not answer: {exc}") from None
        rec.generation = random.getrandbits(63)
        h.s_writable = h.fence_released = h.peer_marked = False
        h.peer_initiator = rec.peer_initiator = ""
        p.volume.copied_bytes = 0
        await p.volume.apply(Event.SWAP, "swap by the user")
        log.info("pair_swapped", pair=name, role=h.role.label, peer_tracks=merged,
                 pending_bytes=p.volume.pending_bytes)
        self._spawn_connect(p)
        return self.describe(p)

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

    async def resync_reverse(self, name: str, wait: float = 30.0) -> dict[str, Any]:
        """At the P side: copy S-VOL to P-VOL (the S-VOL's data wins).  The S side is asked to
        swap (SET PAIR STATE SSWS, reason SWAP): it becomes the P-VOL and sends this side what
        differs, by bitmap only.  Returns once the roles have changed here (or after ``wait`` s)."""
        p = self._get(name)
        h = p.half
        if h.role is not PairRole.P_VOL:
            raise PairError(f"resync --reverse pair {name} from its P-VOL array, or swap it at this (S-VOL) array")
        try:
            step(h.role, h.state, Event.RESYNC_REVERSE)
        except InvalidTransition as exc:
            raise PairError(str(exc)) from None
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
        the new P array's initiator only."""
        h = p.half
        try:
            step(h.role, h.state, Event.SWAP)
        except InvalidTransition:
            raise refuse(Refusal.WRONG_STATE) from None
        if nexus is None:
            raise refuse(Refusal.NOT_READY)
        await self.supervisor.stop(COPY_KIND, p.record.name)
        await p.volume.drain()
        session, p.session, p.volume.mirror = p.session, None, None
        if session is not None:
            self._beside(session.close(), p.record.name)
        h.peer_initiator = p.record.peer_initiator = nexus.initiator_name
        h.fence_released = h.peer_marked = False
        p.record.remote = nexus.initiator_name
        p.volume.copied_bytes = 0
        await p.volume.apply(Event.SWAP, "swapped by the peer")

    # --- views ----------------------------------------------------------------------------------------------

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
                "rate_bytes_per_s": self._rate(p)}

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

    # --- the S side: answers to the P array's commands (replication/control.py) --------------------------

    def _by_pair_id(self, pair_id: int) -> Pair:
        p = self._by_id.get(pair_id)
        if p is None:
            raise refuse(Refusal.UNKNOWN_PAIR)
        return p

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
            if self.pair_of_lu(lu) is not None:
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
                 PairState.PSUS: Event.SPLIT}.get(state)
        if event is None:
            raise refuse(Refusal.WRONG_STATE)
        if event is Event.COPY_DONE and h.state is PairState.PAIR:
            return
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

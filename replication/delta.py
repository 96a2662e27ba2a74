"""Three sites (seed 003 FIG. 23) and delta resync: consistency markers and standby journals.

docs/journal.md ("Cascade and three sites") is the description; in short:

* A **standby journal** (role ``standby``, ``journal create --standby-for TARGET/LUN``) records every
  write that reaches one volume, as a primary journal would, but nobody pulls it: it waits for the day
  the array that feeds the third site is lost.  Its entries carry the pair id the delta-resync pair
  will have (:attr:`JournalRecord.standby_pair_id`).  A :class:`StandbyVolume` under the volume's pair
  volumes (and relay) writes them.
* **Markers** tie the positions of different journals together.  Once a second (``MARKER_SECONDS``),
  the P side of every sync pair in PAIR whose volume feeds a journal holds the pair's writes, drains
  them, puts a marker entry (``MARKER_PAIR_ID``, its number in the LBA field) into every journal its
  volume feeds, sends MARK with the same number to the S side, which does the same with the journals
  its S-VOL feeds, and lets the writes go.  So in every journal of the three sites the entries before
  marker *n* are exactly the writes made before point *n*, whatever each journal numbers them.
* A secondary journal records the last marker it restored (:attr:`JournalRecord.marker`).
* **Delta resync** (``pair create ... --delta``, at the array holding the standby journal): the third
  site's S-VOL is registered without a copy, its journal attached anew, its last marker read (READ
  JOURNAL POSITION); the standby journal drops the entries before that marker, becomes the pair's
  primary journal, and the third site pulls only what follows.  When the marker is no longer held
  (the standby journal was full and let it go) the create is refused, saying a full copy is needed.
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Callable

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.asynccopy import JOURNAL_KIND, MARKER_PAIR_ID, JournalGroup
from sanlab.replication.cascade import Relays
from sanlab.replication.journal import JournalError, JournalFull
from sanlab.replication.pair import PairVolume
from sanlab.replication.pair_record import Pair, PairError
from sanlab.replication.pair_state import PairRole, PairState
from sanlab.replication.refusals import Refusal, refuse
from sanlab.scsi.lu import LogicalUnit
from sanlab.storage.emulated import EmulatedBlockOps
from sanlab.storage.peer import PeerFailure
from sanlab.storage.supervisor import SupervisorError
from sanlab.storage.volume import Volume

log = structlog.get_logger("sanlab.replication.delta")

MARKER_SECONDS = 1.0
"""How often a sync P side puts a consistency point into the journals its pairs feed: a delta resync
sends at most the writes of about this long besides what the survivor lacks."""

MARKER_TASK = "~markers"
"""The marker loop's name under the supervisor (kind ``journal``; never a journal's name)."""


class StandbyVolume(EmulatedBlockOps):
    """A volume whose every write is recorded in a standby journal first (module docstring).

    Flush order as a primary journal's: entry (data, metadata slot) → the volume → answered once every
    entry up to this one is committed; at start the entries are written again to the volume.  The
    journal never stops a write: full, it lets its oldest markers go (:meth:`_room`)."""

    def __init__(self, inner: Volume, group: JournalGroup) -> None:
        self.inner = inner
        self.group = group

    @property
    def thin(self) -> bool:
        """The wrapped volume's (as :attr:`sanlab.replication.pair.PairVolume.thin` says why)."""
        return self.inner.thin

    @property
    def block_size(self) -> int:
        """The inner volume's."""
        return self.inner.block_size

    @property
    def num_blocks(self) -> int:
        """The inner volume's."""
        return self.inner.num_blocks

    async def read(self, lba: int, nblocks: int) -> bytes:
        """The inner volume's blocks."""
        return await self.inner.read(lba, nblocks)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.inner.read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Recorded, then written (class docstring)."""
        async with self.range_lock.hold(lba, len(data) // self.block_size):
            await self._raw_write(lba, data, fua)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        g = self.group
        j = g.journal
        bs = self.block_size
        step = max(1, (256 * 1024) // bs)
        view = memoryview(data)
        last = 0
        for first in range(0, len(data) // bs, step):
            chunk = view[first * bs:(first + step) * bs]
            entry = await self._room(lambda: j.reserve(g.record.standby_pair_id, lba + first, len(chunk) // bs,
                                                       time.time()))
            await j.store(entry, chunk)
            last = entry.sequence
        await self.inner.write(lba, data, fua)
        if last:
            await j.wait_committed(last)

    async def _room(self, reserve: Callable[[], Any]) -> Any:
        """``reserve()``, letting the oldest markers' entries go while the journal is full."""
        while True:
            try:
                return reserve()
            except JournalFull:
                await let_oldest_go(self.group)

    async def flush(self) -> None:
        """The journal, then the inner volume."""
        await self.group.journal.volume.flush()
        await self.inner.flush()

    async def close(self) -> None:
        """Flush; the inner volume belongs to its owner."""
        await self.flush()


async def let_oldest_go(g: JournalGroup) -> None:
    """Free a full standby journal's entries before its second-oldest marker (a delta resync from the
    oldest one is no longer possible); with fewer than two markers, all of it."""
    j = g.journal
    markers = [e.sequence for e in j.entries if e.pair_id == MARKER_PAIR_ID and e.sequence <= j.committed]
    below = markers[1] if len(markers) >= 2 else j.committed + 1
    if below <= j.journal_out:
        await asyncio.sleep(0.01)  # entries still being stored: they commit, then go
        return
    await g.purge(below)
    log.warning("standby_journal_full", journal=g.name, kept_from=below)


async def append_marker(g: JournalGroup, marker: int) -> bool:
    """Put consistency point ``marker`` into journal ``g`` (committed before it returns); False when a
    primary journal has no room (its secondary then keeps an older point)."""
    j = g.journal
    while True:
        try:
            e = j.reserve(MARKER_PAIR_ID, marker, 1, time.time())
            break
        except JournalFull:
            if g.record.role != "standby":
                return False
            await let_oldest_go(g)
    await j.store(e, bytes(j.header.block_size))
    await j.wait_committed(e.sequence)
    return True


def _standby_maker(g: JournalGroup) -> Callable[[Volume], Volume]:
    return lambda r: StandbyVolume(r, g)


class DeltaResync(Relays):
    """Standby journals, markers and delta resync (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_marker = 0

    # --- which journals a volume feeds -----------------------------------------------------------------

    def _fed_journals(self, lu: LogicalUnit, key: str) -> list[JournalGroup]:
        """The journals the writes of ``lu`` (``TARGET/LUN`` ``key``) go into: its standby journal and
        the primary journals of the async P-VOLs on it (a relay's sending ones, a multi-target's)."""
        out = [g for g in self.journals.values() if g.record.role == "standby" and g.record.standby == key]
        for p in self.pairs_of_lu(lu):
            g = self.journals.get(p.record.journal)
            if p.record.mode == "async" and p.half.role is PairRole.P_VOL and g is not None and g not in out:
                out.append(g)
        return out

    # --- markers ---------------------------------------------------------------------------------------

    def _next_marker(self) -> int:
        # Milliseconds since the epoch, kept increasing: numbers grow across restarts too.
        self._last_marker = max(self._last_marker + 1, time.time_ns() // 1_000_000)
        return self._last_marker

    async def mark_once(self) -> int:
        """One consistency point on every sync P-VOL in PAIR whose volume feeds a journal (module
        docstring); the number of pairs marked."""
        done = 0
        for p in list(self.pairs.values()):
            if (p.record.mode == "async" or p.half.role is not PairRole.P_VOL or p.half.state is not PairState.PAIR
                    or p.session is None):
                continue
            here = self._fed_journals(p.lu, f"{p.record.target}/{p.record.lun}")
            if not here:
                continue
            marker = self._next_marker()
            p.volume.hold()
            try:
                await p.volume.drain()
                for g in here:
                    await append_marker(g, marker)
                await self._control(p, proto.MarkCdb(p.record.pair_id).encode(), proto.encode_marker(marker))
                done += 1
            except (PairError, PeerFailure, JournalError) as exc:
                log.info("marker_not_placed", pair=p.record.name, marker=marker, error=str(exc))
            finally:
                p.volume.release()
        return done

    async def mark(self, pair_id: int, marker: int) -> None:
        """MARK at the S side: ``marker`` into every journal the S-VOL's volume feeds."""
        p = self._by_pair_id(pair_id)
        if p.half.role is not PairRole.S_VOL:
            raise refuse(Refusal.WRONG_STATE)
        for g in self._fed_journals(p.lu, f"{p.record.target}/{p.record.lun}"):
            await append_marker(g, marker)

    async def _marker_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.mark_once()
            except Exception as exc:  # noqa: BLE001 - logged; the loop goes on
                log.error("marker_loop_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), MARKER_SECONDS)
            except asyncio.TimeoutError:
                pass

    def journal_position(self, pair_id: int) -> bytes:
        """READ JOURNAL POSITION at the secondary: the pair's journal's last marker and restored."""
        p = self._by_pair_id(pair_id)
        g = self.journals.get(p.record.journal)
        if g is None or g.record.role != "secondary":
            raise refuse(Refusal.NO_SUCH_JOURNAL)
        return proto.encode_position(g.record.marker, g.record.restored)

    # --- standby journals ------------------------------------------------------------------------------

    async def journal_standby(self, name: str, volume: tuple[str, int]) -> dict[str, Any]:
        """Make new journal ``name`` the standby journal of ``volume`` (module docstring)."""
        g = self._journal(name)
        lu = self.find_lu(*volume)
        if lu is None:
            raise PairError(f"no LU {volume[0]}/{volume[1]} on this array")
        key = f"{volume[0]}/{volume[1]}"
        if g.record.role or g.journal.entries:
            raise PairError(f"journal {name} is in use ({g.record.role}): a standby journal starts empty")
        if any(q.record.role == "standby" and q.record.standby == key for q in self.journals.values()):
            raise PairError(f"{key} already has a standby journal")
        g.record.role, g.record.standby = "standby", key
        g.record.standby_pair_id = random.getrandbits(63) or 1
        await g.save()
        await self._set_real(lu, _standby_maker(g))
        self._start_markers()
        log.info("standby_journal_attached", journal=name, volume=key)
        return g.status()

    async def journal_delete(self, name: str) -> dict[str, Any]:
        """A standby journal leaves its volume first (its StandbyVolume is taken away)."""
        g = self._journal(name)
        if g.record.role == "standby" and not g.members:
            t, _, n = g.record.standby.rpartition("/")
            lu = self.find_lu(t, int(n))
            if lu is not None:
                await self._set_real(lu, lambda r: r.inner if isinstance(r, StandbyVolume) and r.group is g else r)
        return await super().journal_delete(name)

    async def _set_real(self, lu: LogicalUnit, make: Callable[[Volume], Volume]) -> None:
        """Put ``make(R)`` in place of R, the volume under the LU's pair volumes and relay (quiesced)."""
        relays = self.relays

        def swap(current: Volume) -> Volume:
            relay = relays.get(id(lu))
            if relay is not None:
                new = make(relay.real)
                relay.tables.replace_real(relay.real_name, new)
                relay.real = new
                return current
            if isinstance(current, PairVolume):
                pv = current
                while isinstance(pv.local, PairVolume):
                    pv = pv.local
                pv.set_local(make(pv.local))
                return current
            return make(current)

        await lu.swap_volume(swap)

    async def _after_load(self) -> None:
        for g in self.journals.values():
            if g.record.role != "standby":
                continue
            t, _, n = g.record.standby.rpartition("/")
            lu = self.find_lu(t, int(n))
            if lu is None:
                log.error("standby_volume_missing", journal=g.name, volume=g.record.standby)
                continue
            inner = self._real_of(lu)
            for e in list(g.journal.entries):  # the flush order's repair, as a primary's replay
                if e.pair_id != MARKER_PAIR_ID:
                    await inner.write(e.lba, await g.journal.read_data(e))
            await inner.flush()
            await self._set_real(lu, _standby_maker(g))
        await super()._after_load()
        self._start_markers()

    def _real_of(self, lu: LogicalUnit) -> Volume:
        relay = self.relays.get(id(lu))
        if relay is not None:
            return relay.real
        vol = lu.volume
        while isinstance(vol, PairVolume):
            vol = vol.local
        return vol

    def _start_markers(self) -> None:
        if self.supervisor.running(JOURNAL_KIND, MARKER_TASK):
            return
        stop = asyncio.Event()
        try:
            self.supervisor.start(JOURNAL_KIND, MARKER_TASK, self._marker_loop(stop), stop=stop)
        except SupervisorError as exc:
            log.warning("marker_loop_not_started", reason=str(exc))

    # --- delta resync ----------------------------------------------------------------------------------

    def _standby_of(self, key: str, journal: str) -> JournalGroup:
        """The standby journal of volume ``key`` (``TARGET/LUN``), which must be ``journal`` if given."""
        g = next((q for q in self.journals.values() if q.record.role == "standby" and q.record.standby == key), None)
        if g is None:
            raise PairError(f"no standby journal records {key} (`journal create --standby-for`): no delta resync")
        if journal and journal != g.name:
            raise PairError(f"the standby journal of {key} is {g.name}, not {journal}")
        return g

    async def _delta_position(self, tmp: Pair, g: JournalGroup) -> int:
        """After ATTACH JOURNAL: the sequence in standby journal ``g`` from which the secondary lacks
        writes (its last marker's entry); PairError when that marker is gone."""
        raw = await self._control(tmp, proto.ReadJournalPositionCdb(tmp.record.pair_id).encode(),
                                  read_length=proto.JOURNAL_POSITION_LENGTH)
        marker, _restored = proto.decode_position(raw)
        held = [e for e in g.journal.entries if e.pair_id == MARKER_PAIR_ID]
        at = next((e.sequence for e in held if e.lba == marker), None)
        if at is None:
            span = f"markers {held[0].lba}..{held[-1].lba}" if held else "no marker"
            raise PairError(f"the secondary's last consistency point (marker {marker}) is not in standby journal "
                            f"{g.name} ({span}): a delta resync cannot tell what it lacks; create the pair "
                            "without --delta (full copy)")
        return at

    async def _activate_standby(self, lu: LogicalUnit, g: JournalGroup, first: int) -> None:
        """Standby journal ``g`` becomes a primary journal holding the entries from ``first``; the
        StandbyVolume leaves the LU (the pair volume journals from now on)."""
        await self._set_real(lu, lambda r: r.inner if isinstance(r, StandbyVolume) else r)
        await g.purge(first)
        g.record.role = ""
        await g.save()
        log.info("standby_journal_activated", journal=g.name, from_sequence=first, entries=len(g.journal.entries),
                 bytes=g.journal.used_bytes)

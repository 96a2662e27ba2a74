"""The journals of this array and what asynchronous pairs add to the pair manager (issue 15).

A layer of the pair manager (replication/manager.py says how the layers fit), between the answers
to the other array (answers.py) and the user's operations: journal create / display / the
host-driven steps of seed 003 FIG. 16 (acquire, restore, purge, status), the ATTACH JOURNAL and
READ JOURNAL answers, the journal movers under the supervisor, and the async pair's hooks into
load, copy completion, split, resync and delete.  The journal format and flush order are in
replication/journal.py, the movers in replication/asynccopy.py.
"""
from __future__ import annotations

import asyncio
import errno
import os
import random
from dataclasses import asdict
from typing import Any, Callable

import structlog

from sanlab.replication import protocol as proto
from sanlab.replication.answers import PeerAnswers
from sanlab.replication.asynccopy import JOURNAL_KIND, JOURNALING, AsyncPairVolume, JournalGroup, JournalRecord, Member
from sanlab.replication.journal import Journal, JournalError
from sanlab.replication.pair import PairVolume
from sanlab.replication.pair_record import NAME_RE, Pair, PairError, PairRecord
from sanlab.replication.pair_state import PairRole, PairState
from sanlab.replication.refusals import Refusal, refuse
from sanlab.replication.states import Event
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import Nexus
from sanlab.storage.bitmap import PersistentBitmap
from sanlab.storage.external import stable_isid
from sanlab.storage.file_volume import FileVolume
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable
from sanlab.storage.supervisor import SupervisorError
from sanlab.storage.volume import Volume, VolumeError
from sanlab.target.initiator import IscsiError, IscsiSession

log = structlog.get_logger("sanlab.replication.journal")

FindVolume = Callable[[str], Volume | None]
"""A catalog volume by name (``journal create --volume``)."""


class AsyncPairs(PeerAnswers):
    """Journals and asynchronous pairs (module docstring)."""

    def __init__(self, *args: Any, find_volume: FindVolume | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journals: dict[str, JournalGroup] = {}
        """This array's journals by name."""
        self.find_volume: FindVolume = find_volume or (lambda _name: None)

    # --- journals ---------------------------------------------------------------------------------------

    def _journal(self, name: str) -> JournalGroup:
        g = self.journals.get(name)
        if g is None:
            raise PairError(f"no journal called {name}")
        return g

    def _journal_volume(self, rec: JournalRecord) -> Volume:
        if rec.volume:
            vol = self.find_volume(rec.volume)
            if vol is None:
                raise PairError(f"journal {rec.name}: no volume called {rec.volume}")
            return vol
        # Allocated in full (not thin): a journal never meets ENOSPC mid-stream, where a host write
        # would fail for want of journal space (PFUS promises it never does), and its writes never
        # wait on the file system allocating blocks.
        return FileVolume(rec.path, rec.size, thin=False)

    async def journal_create(self, name: str, size: int, volume: str = "", threshold: int = 80,
                             full_timeout: float = 60.0, auto: bool = True) -> dict[str, Any]:
        """A new, empty journal on a file of ``size`` bytes in the data directory, or on ``volume``."""
        if not NAME_RE.match(name):
            raise PairError(f"journal name {name!r}: 1-32 letters, digits, . _ - (starting with a letter or digit)")
        if name in self.journals:
            raise PairError(f"a journal called {name} exists")
        if not 1 <= threshold <= 100:
            raise PairError(f"threshold {threshold}: a percentage, 1-100")
        if full_timeout < 0:
            raise PairError(f"full timeout {full_timeout:g}: seconds, at least 0")
        rec = JournalRecord(name, random.getrandbits(63) or 1, size, threshold=threshold, full_timeout=full_timeout,
                            auto=auto)
        if volume:
            rec.volume = volume
            vol = self._journal_volume(rec)
            rec.size = vol.num_blocks * vol.block_size
            if any(p.lu.volume is vol or p.volume.local is vol for p in self.pairs.values()):
                raise PairError(f"volume {volume} is a pair's volume")
        else:
            if size <= 0 or size % 512:
                raise PairError(f"journal size {size}: a positive multiple of 512 bytes")
            jdir = self.dir.parent / "journals"
            os.makedirs(jdir, exist_ok=True)
            rec.path = str(jdir / f"{name}.jnl")
            vol = self._journal_volume(rec)
            short = vol.allocation_error if isinstance(vol, FileVolume) else None
            if short is not None and short.errno == errno.ENOSPC:
                # A sparse journal would meet ENOSPC mid-stream, fail its writes and with them the
                # hosts' (found by the fault matrix's journal cases): refused, nothing left behind.
                await vol.close()
                os.unlink(rec.path)
                raise PairError(f"journal {name}: its file of {size} bytes cannot be allocated in full on "
                                f"{jdir}: no space left on that filesystem")
        try:
            journal = await Journal.format(vol, rec.journal_id, name)
        except (JournalError, VolumeError, OSError) as exc:
            raise PairError(f"journal {name}: {exc}") from None
        g = JournalGroup(rec, journal, self.catalog)
        await g.save()
        self.journals[name] = g
        log.info("journal_created", journal=name, size=rec.size, volume=volume or None,
                 slots=journal.header.meta_slots, data_blocks=journal.header.data_blocks)
        return g.status()

    async def journal_delete(self, name: str) -> dict[str, Any]:
        """Forget a journal no pair uses."""
        g = self._journal(name)
        if g.members:
            raise PairError(f"journal {name} holds pairs {', '.join(sorted(m.name for m in g.members.values()))}")
        await self.supervisor.stop(JOURNAL_KIND, name)
        async with self.catalog.change() as c:
            c.delete_journal(name)
        del self.journals[name]
        if g.record.path:
            await g.journal.volume.close()
            try:
                os.unlink(g.record.path)
            except FileNotFoundError:
                pass
        return {"name": name, "deleted": True}

    async def _load_journals(self) -> None:
        for body in self.catalog.journals():
            try:
                rec = JournalRecord(**body)
                vol = self._journal_volume(rec)
                first = rec.journal_out if rec.role != "secondary" else rec.restored + 1
                journal = await Journal.open(vol, first)
            except (TypeError, PairError, JournalError, VolumeError, OSError) as exc:
                log.error("journal_unreadable", journal=body.get("name"), error=str(exc))
                continue
            g = JournalGroup(rec, journal, self.catalog)
            self.journals[rec.name] = g
            log.info("journal_loaded", journal=rec.name, role=rec.role or None, entries=len(journal.entries),
                     journal_in=journal.journal_in, journal_out=journal.journal_out, restored=rec.restored)

    def _start_movers(self, g: JournalGroup) -> None:
        if self.supervisor.running(JOURNAL_KIND, g.name):
            return
        g.on_suspended = lambda moved: self.journal_suspended(moved)
        stop = asyncio.Event()
        coro = g.run_secondary(stop) if g.record.role == "secondary" else g.run_primary(stop)
        try:
            self.supervisor.start(JOURNAL_KIND, g.name, coro, stop=stop, journal=g.name, role=g.record.role)
        except SupervisorError as exc:
            log.warning("journal_movers_not_started", journal=g.name, reason=str(exc))

    # --- pair volumes -----------------------------------------------------------------------------------

    def _volume_class(self, rec: PairRecord) -> type[PairVolume]:
        return AsyncPairVolume if rec.mode == "async" else PairVolume

    def _wrap(self, rec: PairRecord, lu: LogicalUnit, bitmap: PersistentBitmap,
              local: Volume | None = None) -> PairVolume:
        vol = super()._wrap(rec, lu, bitmap, local)
        if isinstance(vol, AsyncPairVolume):
            vol.pair_id = rec.pair_id
            g = self.journals.get(rec.journal)
            if g is not None:
                vol.group = g
                g.members[rec.pair_id] = Member(rec.pair_id, rec.name, vol)
                if rec.role == "S-VOL":
                    self._set_reader(g, self._reader(rec.name))
        return vol

    def _reader(self, pair: str) -> JournalReader:
        """Secondary: READ JOURNAL to the P-VOL's LU of ``pair`` at its array, on a session of its own."""
        return JournalReader(self, pair)

    def _set_reader(self, g: JournalGroup, reader: JournalReader | None) -> None:
        """Give ``g`` its reader, logging the one it replaces out: a forgotten reader's session
        would log in again by itself, and, sharing the new one's ISID, each login would reinstate
        (close) the other's session, over and over."""
        old, g.reader = g.reader, reader
        if isinstance(old, JournalReader) and old is not reader:
            self._beside(old.close(), g.name)

    # --- hooks of the sync pair code -----------------------------------------------------------------

    async def _before_peer_event(self, p: Pair, event: Event) -> None:
        """S side: before a resync or swap copies over the S-VOL, every acquired entry is applied."""
        g = self.journals.get(p.record.journal) if p.record.mode == "async" else None
        if g is not None and event in (Event.RESYNC, Event.SWAP, Event.RESYNC_REVERSE, Event.SPLIT, Event.SPLIT_RW):
            await g.drain_restore()

    async def _before_takeover(self, p: Pair) -> None:
        """S-VOL takeover of an async pair: every entry acquired so far is applied first, so the
        S-VOL serves the newest consistent point it can reach (a prefix of the primary's write
        sequence, seed 003 FIG. 15's *restored* = *read-completed*); nothing is applied after."""
        g = self.journals.get(p.record.journal) if p.record.mode == "async" else None
        if g is not None and g.record.role == "secondary":
            await g.drain_restore()
            log.info("journal_restored_for_takeover", pair=p.record.name, journal=g.name,
                     restored=g.record.restored)

    # --- swap of an async pair (seed 003 FIG. 17-21) ------------------------------------------------------

    def _group_of(self, p: Pair) -> JournalGroup | None:
        return self.journals.get(p.record.journal) if p.record.mode == "async" else None

    async def _before_swap(self, p: Pair) -> None:
        """S side: the movers stop and every entry this journal holds is applied first, so the S-VOL
        about to become the P-VOL is a consistent point of the old primary's sequence.  A planned
        swap (the pair still in PAIR, the primary answering) first pulls what the primary journal
        holds now; host writes the primary takes after that are given up there (stop them first)."""
        g = self._group_of(p)
        if g is None or g.record.role != "secondary":
            return
        await self.supervisor.stop(JOURNAL_KIND, g.name)
        if p.half.state is PairState.PAIR and g.reader is not None:
            try:
                got = await g.acquire()
                until = g.peer.journal_in
                while got and g.journal.journal_in < until:
                    got = await g.acquire()
            except (PeerFailure, JournalError, proto.MalformedReply) as exc:
                log.warning("journal_swap_catch_up_failed", pair=p.record.name, journal=g.name, error=str(exc))
        await g.drain_restore()
        log.info("journal_restored_for_swap", pair=p.record.name, journal=g.name, restored=g.record.restored)

    async def _swap_failed(self, p: Pair) -> None:
        g = self._group_of(p)
        if g is not None and g.record.role:
            self._start_movers(g)

    async def _before_swapped_by_peer(self, p: Pair) -> None:
        """P side, the S side swaps: the journal leaves journal mode at one point of the write
        stream; every entry not yet purged (the secondary may lack it) marks its tracks in its
        pair's bitmap, which the new P side merges and copies back over, so the old P-VOL ends
        equal to the new one (an async takeover gives up the unsent tail, seed 003 FIG. 17).
        Other pairs of the journal suspend (PFUS): a journal group swaps as a whole."""
        g = self._group_of(p)
        if g is None or g.record.role != "primary":
            return
        entries = len(g.journal.entries)
        if g.journaling():
            await g.to_bitmap(Event.JOURNAL_SUSPEND, f"pair {p.record.name} swapped by the peer")
        log.info("journal_tail_to_bitmap_for_swap", pair=p.record.name, journal=g.name, entries=entries)

    async def _after_swap(self, p: Pair) -> None:
        """Either side, roles exchanged: the journal turns round (primary where the P-VOL now is,
        secondary at the old P side, which pulls from the new primary), both empty and numbered
        afresh (:meth:`JournalGroup.start_afresh`)."""
        g = self._group_of(p)
        if g is None:
            return
        role = "primary" if p.half.role is PairRole.P_VOL else "secondary"
        if g.record.role != role:
            await self.supervisor.stop(JOURNAL_KIND, g.name)
            await g.start_afresh(role, p.record.remote_journal)
        self._set_reader(g, self._reader(p.record.name) if role == "secondary" else None)
        g.members[p.record.pair_id] = Member(p.record.pair_id, p.record.name, p.volume)
        self._start_movers(g)

    async def _finish_turn(self, g: JournalGroup) -> None:
        """At start: a swap commits the pair's new role before its journal turns round
        (:meth:`_after_swap`), so a crash in between finds the journal still in its old role, an old
        primary never pulling from the new one (found by the fault matrix: async swap, the old P
        array killed 4 ms after its half turned S-VOL).  The pairs' role wins, and the turn is made
        now as the swap would have made it: a secondary first applies what it holds (the swap had
        applied it before the commit), an old primary's unsent entries are in its bitmap already
        (turned into it before the swap, :meth:`_before_swapped_by_peer`; any left are marked
        there).  A group whose pairs disagree (a group swap cut short) is left as it is: the swap
        asked again turns it."""
        if g.record.role not in ("primary", "secondary") or not g.members:
            return
        roles = {m.volume.half.role for m in g.members.values()}
        want = ("primary" if roles == {PairRole.P_VOL} else "secondary" if roles == {PairRole.S_VOL} else "")
        if not want or want == g.record.role:
            return
        log.warning("journal_turn_finished_at_start", journal=g.name, was=g.record.role, role=want)
        if g.record.role == "secondary":
            await g.drain_restore()
        else:
            await g.mark_entries(list(g.members.values()))  # none expected: kept, never dropped
        pair = next(iter(g.members.values())).name
        await g.start_afresh(want, self.pairs[pair].record.remote_journal)
        self._set_reader(g, self._reader(pair) if want == "secondary" else None)

    async def _into_journal_mode(self, p: Pair) -> None:
        """P side of an async pair at the end of its copy: hold writes, drain, send what the copy's
        passes left (:meth:`PairVolume.copy_held`) and keep them held while the pair turns PAIR:
        from then on every write is in the journal, and none recorded in the bitmap is left behind."""
        p.volume.hold()
        try:
            await p.volume.drain()
            await p.volume.copy_held()
        except BaseException:
            p.volume.release()
            raise

    async def _forget_async(self, p: Pair) -> None:
        g = self.journals.get(p.record.journal)
        if g is not None:
            if g.record.role == "secondary" and p.record.role == "S-VOL":
                # What was acquired for this S-VOL is applied before it leaves: the journal's last
                # marker must never claim writes the volume lacks (a delta resync trusts it).
                await g.drain_restore()
            g.members.pop(p.record.pair_id, None)
            if not any(m.volume.half.role is PairRole.S_VOL for m in g.members.values()):
                self._set_reader(g, None)

    def _describe_async(self, p: Pair, row: dict[str, Any]) -> None:
        row["mode"] = p.record.mode
        if p.record.mode == "async":
            g = self.journals.get(p.record.journal)
            row["journal"] = p.record.journal or None
            row["remote_journal"] = p.record.remote_journal or None
            if g is not None:
                row.update(g.lag())

    # --- async pair create (P side) and ATTACH JOURNAL (S side) ------------------------------------------

    def _check_async(self, journal: str, remote_journal: str, extent: tuple[int, int] | None,
                     bidirectional: bool) -> JournalGroup:
        g = self._journal(journal)
        if g.record.role == "secondary":
            raise PairError(f"journal {journal} receives from another array (secondary): use another journal")
        if g.record.role == "primary" and g.record.peer_journal and g.record.peer_journal != remote_journal:
            raise PairError(f"journal {journal} already sends to journal {g.record.peer_journal}")
        if not remote_journal:
            raise PairError("an async pair needs --remote-journal")
        if extent:
            raise PairError("an async pair mirrors the whole volume (no --extent)")
        if bidirectional:
            raise PairError("an async pair cannot be bidirectional")
        return g

    async def _attach_remote(self, tmp: Pair, g: JournalGroup, remote_journal: str) -> None:
        att = proto.JournalAttachment(g.record.journal_id, g.name, remote_journal)
        await self._control(tmp, proto.AttachJournalCdb(tmp.record.pair_id).encode(), att.encode())

    async def _joined(self, p: Pair, g: JournalGroup) -> None:
        """P side: the pair is in the journal group now."""
        if g.record.role != "primary" or g.record.peer_journal != p.record.remote_journal:
            g.record.role, g.record.peer_journal = "primary", p.record.remote_journal
            await g.save()
        self._start_movers(g)

    async def attach_journal(self, pair_id: int, att: proto.JournalAttachment) -> None:
        """ATTACH JOURNAL at the S side: the pair takes its updates from ``att``'s journals."""
        p = self._by_pair_id(pair_id)
        g = self.journals.get(att.secondary_journal)
        if g is None or g.record.role not in ("", "secondary"):
            raise refuse(Refusal.NO_SUCH_JOURNAL)
        if g.record.peer_journal_id and g.record.peer_journal_id != att.primary_journal_id:
            if g.members:
                raise refuse(Refusal.NO_SUCH_JOURNAL)
            await self._new_primary(g)
        r = p.record
        r.mode, r.journal, r.remote_journal = "async", g.name, att.primary_journal
        g.record.role, g.record.peer_journal, g.record.peer_journal_id = ("secondary", att.primary_journal,
                                                                          att.primary_journal_id)
        await g.save()
        await self._save(p)
        if not isinstance(p.volume, AsyncPairVolume):
            # Registered before it was known to be async: the half gets the async pair volume now (as
            # a restart would give it), so after a swap its host writes go to the journal.
            old = p.volume
            vol = self._wrap(r, p.lu, old.bitmap, old.local)
            vol.half.extent_blocks, vol.copied_bytes = old.half.extent_blocks, old.copied_bytes
            p.volume = vol
            p.lu.write_gate = lambda n: vol.may_write(n.initiator_name)
            self._beside(self._install(p), r.name)
        g.members[pair_id] = Member(pair_id, r.name, p.volume)
        self._set_reader(g, self._reader(r.name))
        self._start_movers(g)
        log.info("journal_attached", pair=r.name, journal=g.name, primary_journal=att.primary_journal)

    async def _new_primary(self, g: JournalGroup) -> None:
        """A secondary journal its pairs left takes entries from another primary (a delta resync after
        the old primary was lost, docs/journal.md): what it acquired is applied first (its last
        marker stays: it says what the S-VOLs hold), then it starts empty in the new primary's
        numbering, its metadata slots cleared so no entry of the old numbering is ever read again."""
        await g.drain_restore()
        j = g.journal
        h = j.header
        j.discard_all()
        await j.volume.write_same(h.meta_start, h.meta_slots, bytes(h.block_size))
        await j.volume.flush()
        j.journal_in, j.committed = 1, 0
        g.record.restored, g.to_be_restored, g.to_be_read = 0, 1, 0
        await g.save()
        log.info("journal_new_primary", journal=g.name, marker=g.record.marker)

    async def read_journal(self, lu: LogicalUnit, cdb: proto.ReadJournalCdb, nexus: Nexus | None = None) -> bytes:
        """READ JOURNAL at the P side: the journal of the async P-VOL on ``lu``.  A relay with several
        remotes holds one per remote on one LU: the reader's session says which, its ISID being
        the one the secondary uses for its journal (``journal:NAME``, :meth:`_reader`)."""
        sending = [p for p in self.pairs.values()
                   if p.lu is lu and p.record.mode == "async" and p.half.role is PairRole.P_VOL]
        if len(sending) > 1 and nexus is not None:
            sending = [p for p in sending
                       if stable_isid(nexus.initiator_name, f"journal:{p.record.remote_journal}") == nexus.isid]
        p = sending[0] if len(sending) == 1 else None
        if p is None:
            raise refuse(Refusal.NOT_A_PRIMARY)
        g = self.journals.get(p.record.journal)
        if g is None:
            raise refuse(Refusal.NOT_A_PRIMARY)
        return await g.serve(cdb.from_sequence, cdb.allocation_length)

    # --- load ------------------------------------------------------------------------------------------

    async def load(self) -> None:
        """The journals first (their pairs join them as they load), then the pairs, then each primary
        journal is replayed onto its P-VOLs and the movers start."""
        await self._load_journals()
        await super().load()
        await self._after_load()

    async def _replay_primary(self, g: JournalGroup) -> None:
        """At start, the primary's entries are written again to their P-VOLs in order (a crash between
        the journal write and the local write is repaired; replaying is idempotent)."""
        n = 0
        for e in list(g.journal.entries):
            m = g.members.get(e.pair_id)
            if m is None:
                continue
            await m.volume.local.write(e.lba, await g.journal.read_data(e))
            n += 1
        if n:
            for m in g.members.values():
                await m.volume.local.flush()
        log.info("journal_replayed", journal=g.name, entries=n)

    async def _after_load(self) -> None:
        for g in self.journals.values():
            await self._finish_turn(g)
            if g.record.role == "primary":
                await self._replay_primary(g)
            if g.record.role:
                self._start_movers(g)

    # --- split of an async pair (its whole journal group, at one point) ---------------------------------

    async def _split_async(self, p: Pair, rw: bool) -> list[Pair]:
        g = self._journal(p.record.journal)
        event = Event.SPLIT_RW if rw else Event.SPLIT
        if p.half.state in JOURNALING:
            moved = await g.to_bitmap(event, "split by the user")
            pairs = [self.pairs[m.name] for m in moved if m.name in self.pairs]
        else:
            await p.volume.apply(event, "split by the user")
            pairs = [p]
        for q in pairs:
            try:
                reason = proto.StateReason.TAKEOVER if rw else proto.StateReason.OPERATOR
                await self._send_state(q, PairState.SSUS, reason)
            except (PairError, PeerFailure) as exc:
                log.warning("pair_split_peer_not_told", pair=q.record.name, error=str(exc))
        return pairs

    async def journal_suspended(self, moved: list[Member]) -> None:
        """Tell the S sides of pairs a full journal suspended (best effort: the link may be why)."""
        for m in moved:
            q = self.pairs.get(m.name)
            if q is None or q.session is None:
                continue
            try:
                await self._send_state(q, PairState.PFUS, proto.StateReason.JOURNAL_FULL)
            except (PairError, PeerFailure) as exc:
                log.warning("pair_pfus_peer_not_told", pair=m.name, error=str(exc))

    # --- the host-driven steps (seed 003 FIG. 16) ---------------------------------------------------------

    async def journal_acquire(self, name: str) -> dict[str, Any]:
        """One journal acquisition (secondary): READ JOURNAL once, store what it brings."""
        g = self._journal(name)
        if g.record.role != "secondary":
            raise PairError(f"journal {name} is not a secondary journal: acquisition runs at the secondary")
        try:
            got = await g.acquire()
        except (PeerFailure, JournalError, proto.MalformedReply) as exc:
            raise PairError(f"journal acquire {name}: {exc}") from None
        return {**g.status(), "acquired": got}

    async def journal_restore(self, name: str) -> dict[str, Any]:
        """Apply the acquired entries in sequence order (secondary)."""
        g = self._journal(name)
        if g.record.role != "secondary":
            raise PairError(f"journal {name} is not a secondary journal: restore runs at the secondary")
        n = 0
        while True:
            k = await g.restore()
            if not k:
                break
            n += k
        return {**g.status(), "restored_now": n}

    async def journal_purge(self, name: str) -> dict[str, Any]:
        """Primary: free the entries the secondary acquired (up to its last to-be-read); secondary:
        free the restored entries (restore frees them already; this says so)."""
        g = self._journal(name)
        if g.record.role == "primary":
            # The secondary's position is known from its last READ JOURNAL (the piggybacked FROM).
            freed = await g.purge(g.peer_from)
        else:
            freed = len(g.journal.purge(g.record.restored + 1))
        return {**g.status(), "purged_now": freed}  # the pointers after the purge

    def journal_status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Pointers, use and lag of every journal (or ``name``'s)."""
        if name is not None:  # "" names no journal: an error, not the list of all
            return [self._journal(name).status()]
        return [g.status() for _, g in sorted(self.journals.items())]

    async def journal_settings(self, name: str, auto: bool) -> dict[str, Any]:
        """Let the movers run by themselves (``auto``) or only when a host asks."""
        g = self._journal(name)
        g.record.auto = auto
        await g.save()
        return g.status()

    def journal_records(self) -> list[dict[str, Any]]:
        """The catalog records (for ``sanlab show``)."""
        return [asdict(g.record) for g in self.journals.values()]


class JournalReader:
    """Secondary: READ JOURNAL to the P-VOL's LU of a pair at its array, on a session of its own
    (ISID from ``journal:NAME``), opened on first use and again after a failure."""

    def __init__(self, pairs: AsyncPairs, pair: str) -> None:
        self.pairs = pairs
        self.pair = pair
        self.session: IscsiSession | None = None
        self.closed = False

    async def __call__(self, cdb: bytes, length: int) -> bytes:
        pm = self.pairs
        p = pm._get(self.pair)
        if self.closed:
            raise PeerUnreachable(f"journal {p.record.journal}: its reader was replaced")
        if self.session is None:
            remote = pm.find_primary(p.record.peer_initiator)
            if remote is None:
                raise PeerUnreachable(f"pair {self.pair}: no remote here reaches the P array {p.record.peer_initiator}")
            host, port = remote.portals[0]
            s = IscsiSession(host, port, p.record.peer_target,
                             pm._initiator_config(remote, f"journal:{p.record.journal}"))
            try:
                await s.connect()
                await s.clear_unit_attentions(p.record.peer_lun)
            except (OSError, IscsiError, asyncio.TimeoutError) as exc:
                await s.close()
                raise PeerUnreachable(f"journal {p.record.journal}: the primary does not answer: {exc}") from exc
            if self.closed:  # replaced while logging in
                await s.close()
                raise PeerUnreachable(f"journal {p.record.journal}: its reader was replaced")
            self.session = s
        try:
            result = await self.session.run(p.record.peer_lun, cdb, b"", length)
            result.check()
        except PeerRefused:
            raise
        except (PeerFailure, IscsiError, OSError, asyncio.TimeoutError) as exc:
            await self.close(reopen=True)
            raise PeerUnreachable(f"journal {p.record.journal}: READ JOURNAL failed: {exc}") from exc
        return bytes(result.data)

    async def close(self, reopen: bool = False) -> None:
        """Log the session out; unless ``reopen``, for good."""
        self.closed = self.closed or not reopen
        s, self.session = self.session, None
        if s is not None:
            await s.close()

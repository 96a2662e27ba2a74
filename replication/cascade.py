"""The relay of a cascade (seed 002, FIG. 1-5; 5th embodiment: fan-out) and multi-target volumes.

A relay array takes a volume's updates in one pair and passes them on in others: local A → relay
B synchronous, relay B → remote C asynchronous (seed 002 FIG. 1).  In the relay two virtual
volumes map one real volume R (the LU's own volume, a file, a RAID group, an external volume):

* the **receiving** virtual volume (the seed's V12) is the S-VOL of the first pair: A's writes land
  there (``#1`` of the relay's V/R table);
* each **sending** virtual volume (V21; V21a, V21b... for several remotes, 5th embodiment) is the
  P-VOL of an asynchronous pair (``#2``, ``#3``...): its pair volume journals every update and
  writes R.

Both are rows of a :class:`~sanlab.storage.vvol.MappingTables` of their own (seed 002 FIG. 4-5),
over the whole of R, with multiple virtualization.  The pair manager builds them itself when a
second pair takes a volume that is already in one (a sync pair whose S-VOL is an async pair's P-VOL
or the reverse, in either creation order), rewires them when a pair leaves, and rebuilds them at
start from the pairs' records; ``sanlab show`` lists them (``relays``).  No user maps them by hand.

The same shape serves a *multi-target* volume (seed 003 FIG. 23: A → B synchronous and A → C
asynchronous): the front is then a sync P-VOL instead of an S-VOL.

Write order (the point of a relay): the front pair volume takes its range lock and writes its local
volume, the :class:`RelayFan`; the fan holds the range in arrival order too and writes each
sending pair volume in turn, whose journal reserves the update's sequence number in that order
(replication/journal.py) before the write is answered to A.  So an update acknowledged to A's host
before another one was issued has the smaller sequence number in every sending journal, and
overlapping updates enter every journal in the order they reached B.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from sanlab.replication.async_pairs import AsyncPairs
from sanlab.replication.pair import PairVolume
from sanlab.replication.pair_record import Pair
from sanlab.replication.pair_state import PairRole
from sanlab.scsi.lu import LogicalUnit
from sanlab.storage.emulated import EmulatedBlockOps
from sanlab.storage.volume import Volume
from sanlab.storage.vvol import MappingTables, VRRow

log = structlog.get_logger("sanlab.replication.cascade")

RECEIVING_VVOL = 1
"""The receiving virtual volume's number in a relay's V/R table (the seed's V12)."""


class RelayFan(EmulatedBlockOps):
    """The receiving virtual volume of a relay: reads from R through its V/R row; each write goes
    through every sending pair volume in turn (their journals, then R), under this volume's range
    lock, so overlapping writes reach each journal in arrival order (module docstring)."""

    def __init__(self, window: Volume, senders: Callable[[], list[Volume]]) -> None:
        self.window = window
        """Virtual volume #1 over R."""
        self.senders = senders
        """The sending pair volumes, as of now."""

    @property
    def thin(self) -> bool:
        """The wrapped volume's (as :attr:`sanlab.replication.pair.PairVolume.thin` says why)."""
        return self.window.thin

    @property
    def block_size(self) -> int:
        """R's."""
        return self.window.block_size

    @property
    def num_blocks(self) -> int:
        """R's."""
        return self.window.num_blocks

    async def read(self, lba: int, nblocks: int) -> bytes:
        """R's blocks (every sending volume writes R before its write is answered)."""
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self.window.read(lba, nblocks)

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        return await self.window.read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """One update passed on to every sending pair (module docstring: in arrival order)."""
        async with self.range_lock.hold(lba, len(data) // self.block_size):
            await self._raw_write(lba, data, fua)

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        outs = self.senders()
        if not outs:
            await self.window.write(lba, data, fua)
        # One after the other, not together: each sender writes R, and two writers of one block
        # running together could leave R with either.
        for vol in outs:
            await vol.write(lba, data, fua)

    async def flush(self) -> None:
        """R and every sending journal."""
        await self.window.flush()
        for vol in self.senders():
            await vol.flush()

    async def close(self) -> None:
        """Flush; R and the pair volumes belong to their owners."""
        await self.flush()


@dataclass(eq=False)
class Relay:
    """The two (or more) virtual volumes over one real volume of a relay (module docstring)."""

    lu: LogicalUnit
    real_name: str
    """``TARGET/LUN`` of the LU whose volume R is."""
    real: Volume
    """R: the LU's own volume (file, RAID group, external volume...)."""
    tables: MappingTables = field(default_factory=MappingTables)
    front: str = ""
    """The pair whose half takes the writes first: sync S-VOL (cascade) or sync P-VOL (multi-target)."""
    sending: dict[str, int] = field(default_factory=dict)
    """Sending pair name → its virtual volume number."""
    fan: RelayFan | None = None

    def __post_init__(self) -> None:
        self.tables.add_real(self.real_name, self.real)
        self.tables.map_virtual(VRRow(RECEIVING_VVOL, self.real_name, 0, self.real.num_blocks, True))

    def sending_volume(self, pair: str) -> Volume:
        """The sending virtual volume of ``pair`` (made on first use, numbered after the others)."""
        vvol = self.sending.get(pair)
        if vvol is None:
            vvol = max([RECEIVING_VVOL, *self.tables.vr]) + 1
            self.tables.map_virtual(VRRow(vvol, self.real_name, 0, self.real.num_blocks, True))
            self.sending[pair] = vvol
        return self.tables.virtual_volume(vvol)

    def drop_sender(self, pair: str) -> None:
        """``pair`` sends no more: its virtual volume goes."""
        vvol = self.sending.pop(pair, None)
        if vvol is not None:
            self.tables.unmap_virtual(vvol)


def real_volume(vol: Volume) -> Volume:
    """The volume under any pair volumes (R, when no relay is built on it yet)."""
    while True:
        if isinstance(vol, PairVolume):
            vol = vol.local
        else:
            return vol


class Relays(AsyncPairs):
    """Pairs sharing one LU: relays of a cascade and multi-target volumes (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relays: dict[int, Relay] = {}
        """By ``id`` of the LU whose volume they share."""

    def pairs_of_lu(self, lu: LogicalUnit, leaving: Pair | None = None) -> list[Pair]:
        """The pair halves this LU holds (but ``leaving``), by name."""
        return [p for _, p in sorted(self.pairs.items()) if p.lu is lu and p is not leaving]

    def join_refusal(self, lu: LogicalUnit, mode: str, role: PairRole, journal: str = "") -> str | None:
        """Why a new ``mode`` pair with its ``role`` half on ``lu`` cannot share it with the pairs
        there (None when it can, or when there are none)."""
        here = self.pairs_of_lu(lu)
        if not here:
            return None
        names = ", ".join(p.record.name for p in here)
        if mode == "async" and role is PairRole.S_VOL or any(
                p.record.mode == "async" and p.half.role is PairRole.S_VOL for p in here):
            return f"is already in pair {names}: an async S-VOL shares its volume with no other pair"
        if any(p.record.bidirectional or p.record.extent_blocks for p in here):
            return f"is already in pair {names} (bidirectional or an extent): no relay on it"
        if mode != "async":
            front = [p for p in here if p.record.mode != "async"]
            if front:
                return f"is already in pair {front[0].record.name}: a volume takes one sync pair"
            return None
        same = [p.record.name for p in here if p.record.journal == journal]
        if same:
            return (f"is already in pair {', '.join(same)} with journal {journal}: each remote of a relay needs "
                    "a journal of its own")
        return None

    # --- the LU's slot -----------------------------------------------------------------------------------

    async def _install(self, p: Pair) -> None:
        if len(self.pairs_of_lu(p.lu)) <= 1 and id(p.lu) not in self.relays:
            await super()._install(p)
            return
        await self._rewire(p.lu)

    async def _uninstall(self, p: Pair) -> None:
        if not self.pairs_of_lu(p.lu, leaving=p) and id(p.lu) not in self.relays:
            await super()._uninstall(p)
            return
        await self._rewire(p.lu, leaving=p)

    async def _rewire(self, lu: LogicalUnit, leaving: Pair | None = None) -> None:
        """Put the LU's pairs in their places (quiesced): with one pair or none, no relay; with more,
        the front pair volume on the receiving virtual volume and each sending one on its own."""
        here = self.pairs_of_lu(lu, leaving)
        key = id(lu)

        def make(current: Volume) -> Volume:
            relay = self.relays.get(key)
            real = relay.real if relay is not None else real_volume(current)
            if len(here) <= 1:
                if relay is not None:
                    log.info("relay_dissolved", lu=relay.real_name, pairs=[q.record.name for q in here])
                    self.relays.pop(key, None)
                for q in here:
                    q.volume.set_local(real)
                return here[0].volume if here else real
            if relay is None:
                relay = Relay(lu, f"{here[0].record.target}/{here[0].record.lun}", real)
                self.relays[key] = relay
            front = next((q for q in here if q.record.mode != "async"), None)
            senders = [q for q in here if q is not front]
            for name in [n for n in relay.sending if n not in {q.record.name for q in senders}]:
                relay.drop_sender(name)
            for q in senders:
                q.volume.set_local(relay.sending_volume(q.record.name))
            names = [q.record.name for q in senders]
            relay.fan = RelayFan(relay.tables.virtual_volume(RECEIVING_VVOL),
                                 lambda: [self.pairs[n].volume for n in names if n in self.pairs])
            relay.front = front.record.name if front is not None else ""
            if front is not None:
                front.volume.set_local(relay.fan)
            log.info("relay_built", lu=relay.real_name, front=relay.front or None, sending=relay.sending)
            return front.volume if front is not None else relay.fan

        await lu.swap_volume(make)
        front = next((q for q in here if q.record.mode != "async"), None)
        if front is not None:
            self.set_gate(front)
        elif len(here) == 1:
            self.set_gate(here[0])
        else:
            lu.write_gate = None

    # --- READ JOURNAL on a relay with several remotes ---------------------------------------------------

    def relay_status(self) -> list[dict[str, Any]]:
        """Each relay's real volume and V/R table (``sanlab show``'s ``relays``)."""
        out = []
        for relay in self.relays.values():
            front = self.pairs.get(relay.front)
            rows = []
            for r in sorted(relay.tables.vr.values(), key=lambda r: r.vvol):
                if r.vvol == RECEIVING_VVOL:
                    role = ("receiving" if front is not None and front.half.role is PairRole.S_VOL
                            else "host writes" if front is not None else "fan-out")
                    pair, half = (front.record.name, front.record.role) if front is not None else (None, None)
                else:
                    name = next(n for n, v in relay.sending.items() if v == r.vvol)
                    role, pair, half = "sending", name, "P-VOL"
                rows.append({"vvol": r.vvol, "real": r.real, "real_start": r.real_start, "size": r.size,
                             "multiple_virtualization": relay.tables.multiple_virtualization(r.vvol),
                             "role": role, "pair": pair, "pair_role": half})
            out.append({"lu": relay.real_name, "real_volume": type(relay.real).__name__,
                        "blocks": relay.real.num_blocks, "block_size": relay.real.block_size,
                        "vr_table": rows})
        return sorted(out, key=lambda r: r["lu"])

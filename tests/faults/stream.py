"""The fault matrix's host (issue 19): a QD1 stream of numbered writes, and the checks that say which
write each block of a volume's image holds.

Write i (1, 2, ...) puts 4 KiB at a block the seed picks, holding (i, lba) repeated, so any image of
the volume says which write each block holds.  A stream writes to one array; when the host has to go
elsewhere (a takeover, a swap) the stream :meth:`Stream.moved` on, numbering on: every check then
covers the writes made at both arrays, each with what the host learnt of it (acknowledged, refused,
or ended without an answer it can trust).
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Callable

from sanlab.target.errors import ScsiCommandError
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess
from tests.integration.test_sync_pairs import A, TRACK

BS = 512
CHUNK = 4096
AREA_TRACKS = 16
"""The stream writes only the first 16 tracks (1 MiB) of the 8 MiB volume: a resync that sends more
than the tracks a case wrote is a copy the bitmap did not ask for."""


def payload(i: int, lba: int) -> bytes:
    """Write ``i``'s 4 KiB at ``lba``: (i, lba) repeated."""
    return (i.to_bytes(8, "big") + lba.to_bytes(8, "big")) * (CHUNK // 16)


def not_executed(exc: BaseException | None) -> bool:
    """The array answered the write with a CHECK CONDITION that says it was never executed: a unit
    attention (SAM-5 §5.14: the command is not performed) or a write protection (DATA PROTECT,
    WRITE PROTECTED 07h/27h/00h: an S-VOL's write gate).  Anything else (a lost connection, a
    timeout, a failure after the write started) leaves the outcome unknown."""
    if not isinstance(exc, ScsiCommandError) or exc.sense is None:
        return False
    s = exc.sense
    return bool(s.key == 0x6 or (s.key == 0x7 and s.asc == 0x27 and s.ascq == 0x00))


class Stream(threading.Thread):
    """The host: QD1 numbered writes to ``target``'s LUN 0 at ``sp`` until stopped or a write fails
    (``error``), each at a 4 KiB block of the first ``area_tracks`` tracks.  ``lbas[i - 1]`` is where
    write i went; ``acked`` the highest write answered GOOD (all of 1..acked but those in ``unsure``
    and ``refused``, which a stream it moved on from left).  The fault hits once, with write
    ``moment + 1`` on its way; ``moment`` may be set later, while the stream runs (local_matrix.py
    sets it once the operation under test has been answered)."""

    area_tracks = AREA_TRACKS
    """(Also a class attribute: a stream made without ``__init__`` in a unit test has it.)"""
    reconnect = True
    """The host's session logs in again after a lost connection (a link cut heals under it)."""

    def __init__(self, sp: SanlabProcess, rng: random.Random, moment: int, fault: Callable[[], None],
                 target: str = A, area_tracks: int = AREA_TRACKS) -> None:
        super().__init__(daemon=True)
        self.sp, self.rng, self.target, self.area_tracks = sp, rng, target, area_tracks
        self.moment, self.fault = moment, fault
        self.delay = rng.uniform(0.0, 0.002)
        """How long after write ``moment + 1`` is sent the fault hits (it may be answered first)."""
        self.lbas: list[int] = []
        self.acked = 0
        self.unsure: set[int] = set()
        """Writes below ``acked`` whose outcome the host never learnt (in flight when a stream ended)."""
        self.refused: set[int] = set()
        """Writes below ``acked`` the array answered as never executed (:func:`not_executed`)."""
        self.halt = threading.Event()
        self.hit = threading.Event()
        self.error: BaseException | None = None

    def moved(self, sp: SanlabProcess, target: str) -> Stream:
        """The host going on at ``target`` on ``sp`` once this stream ended (a write failed): a new
        stream (not started) numbering on from here, without a fault of its own.  The writes this
        one left unanswered keep their place in the history as unsure, or refused when the array
        said so."""
        assert not self.is_alive(), "the host moves once its stream has ended"
        nxt = type(self)(sp, self.rng, -1, lambda: None, target, self.area_tracks)
        nxt.lbas, nxt.acked = self.lbas, self.issued
        nxt.unsure, nxt.refused = set(self.unsure), set(self.refused)
        left = set(range(self.acked + 1, self.issued + 1))
        (nxt.refused if not_executed(self.error) else nxt.unsure).update(left)
        return nxt

    def run(self) -> None:
        async def go() -> None:
            # Longer than the arrays' own 5 s peer timeout, so the host hears how the array ends a
            # write the fault caught (fence data: CHECK CONDITION) rather than giving up first.
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:faults", command_timeout=15.0,
                                  reconnect=self.reconnect)
            async with IscsiSession(self.sp.host, self.sp.port, self.target, cfg) as s:
                await s.clear_unit_attentions(0)
                while not self.halt.is_set():
                    lba = self.rng.randrange(self.area_tracks * TRACK // CHUNK) * (CHUNK // BS)
                    self.lbas.append(lba)
                    write = asyncio.ensure_future(s.write16(0, lba, payload(len(self.lbas), lba), BS))
                    # The fault, with write moment+1 on its way (at most once; ">=": a moment set
                    # from another thread may already be behind by the time it is read).
                    if 0 <= self.moment <= self.acked and not self.hit.is_set():
                        await asyncio.sleep(self.delay)
                        self.fault()
                        self.hit.set()
                    await write
                    self.acked = len(self.lbas)
        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - judged by the case (expected after some faults)
            self.error = exc

    def until(self, n: int, timeout: float = 60.0, stop_on_error: bool = False) -> None:
        """Until ``n`` writes were acknowledged (or, with ``stop_on_error``, the stream ended on a
        failed write)."""
        deadline = time.monotonic() + timeout
        while self.acked < n:
            if stop_on_error and not self.is_alive():
                return
            assert self.is_alive(), f"the stream stopped after {self.acked} writes: {self.error!r}"
            assert time.monotonic() < deadline, f"only {self.acked} of {n} writes in {timeout}s"
            time.sleep(0.005)

    def finish(self) -> None:
        self.halt.set()
        self.join(30)
        assert not self.is_alive(), "the stream did not stop"

    @property
    def issued(self) -> int:
        return len(self.lbas)

    def blocks(self, image: bytes) -> dict[int, int]:
        """Which write each 4 KiB block of the area holds (0: never written), checking each block
        is whole: one write's bytes, or zeros."""
        held: dict[int, int] = {}
        for lba in range(0, self.area_tracks * TRACK // BS, CHUNK // BS):
            blk = image[lba * BS:lba * BS + CHUNK]
            i = int.from_bytes(blk[:8], "big")
            if i == 0:
                assert blk == bytes(CHUNK), f"block {lba}: torn or foreign data {blk[:16].hex()}"
            else:
                assert 0 < i <= self.issued and self.lbas[i - 1] == lba and blk == payload(i, lba), \
                    f"block {lba}: holds {blk[:16].hex()}, not a write of the stream to it"
            held[lba] = i
        return held

    def last_before(self, k: int) -> dict[int, int]:
        """Each block's last acknowledged write among writes 1..k (0: none)."""
        last: dict[int, int] = {lba: 0 for lba in range(0, self.area_tracks * TRACK // BS, CHUNK // BS)}
        for i in range(1, k + 1):
            if i not in self.unsure and i not in self.refused:
                last[self.lbas[i - 1]] = i
        return last

    def check_durable(self, image: bytes, where: str) -> None:
        """Every acknowledged write is in ``image``: each block holds its last acknowledged write, or
        a later write whose outcome the host does not know (in flight, or unsure); never a write
        the array refused."""
        held, last = self.blocks(image), self.last_before(self.acked)
        for lba, i in last.items():
            v = held[lba]
            maybe = v > self.acked or v in self.unsure
            assert v == i or (maybe and v > i and self.lbas[v - 1] == lba), \
                f"{where}: acknowledged write {i} at block {lba} lost (block holds write {v}; {self.acked} acked" \
                + (", it was refused)" if v in self.refused else ")")

    def check_prefix(self, image: bytes, where: str) -> int:
        """``image`` is the stream cut at one point k (writes 1..k, none after): k."""
        held = self.blocks(image)
        k = max(held.values())
        last = self.last_before(k)
        wrong = {lba: (held[lba], last[lba]) for lba in held if held[lba] != last[lba]}
        assert not wrong, f"{where}: not a prefix of the stream at write {k}: block -> (holds, expected) {wrong}"
        return k

"""The pair state machine of synchronous remote copy: one table, no I/O (ARCHITECTURE.md, h11's rule).

A pair is a P-VOL on one array mirrored to an S-VOL on another (seed 003 FIG. 10, seed 004
FIG. 3/10; ../shared/SPEC.md §4).  Each array holds its own half: a :class:`PairRole`, a
:class:`PairState` and the fence level.  Everything that changes a half's state is an
:class:`Event`; :func:`step` maps (role, state, event) to the new role and state and the
:class:`Action` list the pair code carries out, in order.  Movers, links and the management
operations only feed events and perform actions: no other code assigns a state.

The states, with the names users know from enterprise arrays (CCI/TrueCopy):

====== ============================================================================================
SMPL   not in a pair (also the state after delete)
COPY   initial copy or resync running: behind the copy pointer writes are mirrored, ahead of it they
       land locally and are copied when the pointer passes (seed 004's write processing)
PAIR   both copies identical; every host write is mirrored before it is acknowledged
PSUS   split by the user, seen at the P side: writes land locally and are recorded in the bitmap
SSUS   split, seen at the S side: read-only unless split with ``--rw``, then writes are recorded too
PSUE   suspended by an error (the peer unreachable or a mirrored write failed); the fence level says
       whether the P-VOL still takes writes
SSWS   the S side after a takeover: it serves writes as the new primary, recording them
====== ============================================================================================

Host writes (:func:`host_write`): the P-VOL mirrors in COPY/PAIR, records in PSUS and in PSUE
unless the fence forbids it; the S-VOL refuses host writes (DATA PROTECT / WRITE PROTECTED,
07h/27h/00h) in COPY/PAIR/PSUE and plain SSUS, and records them in writable SSUS and SSWS.

FenceLevel levels (:func:`on_mirror_lost`) decide a mirrored write whose S side cannot be reached:
``data`` fails it and every later write until a resync or a P-VOL takeover; ``status`` lets it
succeed only if the S side could be marked suspended, else fails it like ``data``; ``never``
lets it succeed.  In all three the pair goes PSUE and the bitmap keeps the difference.

Takeover (:func:`takeover`) follows the decision table of CCI's ``horctakeover``, run at the
array that is to serve: nop, swap, S-VOL takeover, P-VOL takeover, each with its exit code.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from sanlab.replication.pair_state import FenceLevel, PairRole, PairState


class Event(enum.Enum):
    """Everything that moves a pair half's state."""

    CREATE = "create"
    """This array formed the pair (P side) or accepted it (S side); the initial copy starts."""
    CREATE_NO_COPY = "create-no-copy"
    """Formed with ``--no-copy``: the volumes are known to be identical."""
    COPY_DONE = "copy-done"
    """The initial copy or resync reached the end with nothing left in the bitmaps."""
    SPLIT = "split"
    """The user split the pair (writes in flight drained first)."""
    SPLIT_RW = "split-rw"
    """Split with the S-VOL writable (``split --rw``)."""
    RESYNC = "resync"
    """The user resynchronised P→S: the union of both bitmaps is copied."""
    RESYNC_REVERSE = "resync-reverse"
    """Resync S→P (``resync --reverse``): the S-VOL's data wins."""
    PEER_LOST = "peer-lost"
    """A mirrored write, a copy or the link found the peer unreachable (outcome unknown)."""
    PEER_SUSPENDED = "peer-suspended"
    """The peer told us it suspended the pair (its own error, or a fence ``status`` marking)."""
    DELETE = "delete"
    """The pair is dissolved (both sides, or this side alone with ``--force``)."""
    TAKEOVER_SVOL = "takeover-svol"
    """The S side starts serving as primary without the P side (S-VOL takeover → SSWS)."""
    TAKEOVER_PVOL = "takeover-pvol"
    """The P side releases its fence while the S side is gone (P-VOL takeover)."""
    SWAP = "swap"
    """Roles exchange: the old S becomes the P-VOL; copying runs back by bitmap only."""
    JOURNAL_FULL = "journal-full"
    """Asynchronous pair: the journal passed its threshold (PAIR → PFUL)."""
    JOURNAL_OK = "journal-ok"
    """Asynchronous pair: the journal fell below its threshold again (PFUL → PAIR)."""
    JOURNAL_SUSPEND = "journal-suspend"
    """Asynchronous pair: the journal stayed full too long; its unsent entries became the bitmap (PFUS)."""
    RESTARTED = "restarted"
    """The array started again with the pair in COPY or PAIR: the tracks its bitmap marks (the
    activity log of writes in flight at a crash, or a copy cut short) are sent before PAIR."""


class Action(enum.Enum):
    """What the pair code does for a transition, in the order :func:`step` lists them."""

    DRAIN = "drain"
    """Wait for mirrored writes in flight to finish (a consistent point for split and swap)."""
    STOP_COPY = "stop-copy"
    """Stop the initial-copy / resync mover, keeping its bitmap."""
    START_COPY = "start-copy"
    """Start the mover over the bitmap (all set for an initial copy) from this side to the peer."""
    MERGE_PEER_BITMAP = "merge-peer-bitmap"
    """Read the peer's difference bitmap and OR it into ours before copying (resync's union)."""
    SET_ALL_BITS = "set-all-bits"
    """Mark the whole volume (or extent) different: an initial copy."""
    CLEAR_BITMAP = "clear-bitmap"
    """Forget the differences (``--no-copy``, delete)."""
    SWAP_ROLES = "swap-roles"
    """Exchange P-VOL and S-VOL roles on this side."""
    NEW_GENERATION = "new-generation"
    """Start a new generation id: this side now takes writes the other side does not see."""
    NOTIFY_PEER = "notify-peer"
    """Tell the peer this side's new state (best effort when the peer is lost)."""
    RELEASE_FENCE = "release-fence"
    """Let the P-VOL take writes in PSUE whatever the fence (P-VOL takeover; cleared by a resync)."""
    FORGET = "forget"
    """Remove the pair from the catalog and unwrap the volume."""


class InvalidTransition(Exception):
    """The event cannot happen in this state; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class Transition:
    """Where an event leads and what to do on the way."""

    role: PairRole
    state: PairState
    actions: tuple[Action, ...]


P, S = PairRole.P_VOL, PairRole.S_VOL
A = Action
St = PairState

# (role, state, event) → (new state, actions); the role changes only by SWAP (below).  A pair
# half not listed for an event refuses it with a reason from _WHY.
_TABLE: dict[tuple[PairRole, PairState, Event], tuple[PairState, tuple[Action, ...]]] = {}


def _add(roles: tuple[PairRole, ...], states: tuple[PairState, ...], event: Event, new: PairState | None,
         actions: tuple[Action, ...]) -> None:
    for role in roles:
        for state in states:
            _TABLE[(role, state, event)] = (state if new is None else new, actions)


# Forming: the P side sets every bit and starts copying; the S side just records the pair.
_add((P,), (St.SMPL,), Event.CREATE, St.COPY, (A.SET_ALL_BITS, A.START_COPY))
_add((S,), (St.SMPL,), Event.CREATE, St.COPY, ())
_add((P, S), (St.SMPL,), Event.CREATE_NO_COPY, St.PAIR, (A.CLEAR_BITMAP,))
_add((P, S), (St.COPY,), Event.COPY_DONE, St.PAIR, ())
# Split at a consistent point: in-flight mirrored writes drain first; the mover stops.
_add((P,), (St.COPY, St.PAIR), Event.SPLIT, St.PSUS, (A.DRAIN, A.STOP_COPY, A.NOTIFY_PEER))
_add((P,), (St.COPY, St.PAIR), Event.SPLIT_RW, St.PSUS, (A.DRAIN, A.STOP_COPY, A.NOTIFY_PEER))
_add((S,), (St.COPY, St.PAIR), Event.SPLIT, St.SSUS, ())
_add((S,), (St.COPY, St.PAIR), Event.SPLIT_RW, St.SSUS, (A.NEW_GENERATION,))
# Resync P→S copies the union of both sides' bitmaps; the S side waits for the copy.
_add((P,), (St.PSUS, St.PSUE), Event.RESYNC, St.COPY, (A.MERGE_PEER_BITMAP, A.NOTIFY_PEER, A.START_COPY))
_add((S,), (St.SSUS, St.PSUE), Event.RESYNC, St.COPY, ())
# An S side that never heard of the suspension (the link was down when the P side suspended)
# still says PAIR or COPY: it takes the resync as it is.
_add((S,), (St.PAIR, St.COPY), Event.RESYNC, St.COPY, ())
# Resync S→P: the roles swap first, then the new P side (the old S) copies the union back.
_add((P,), (St.PSUS, St.PSUE), Event.RESYNC_REVERSE, St.COPY, (A.SWAP_ROLES,))
_add((S,), (St.SSUS, St.PSUE, St.SSWS), Event.RESYNC_REVERSE, St.COPY,
     (A.SWAP_ROLES, A.MERGE_PEER_BITMAP, A.NOTIFY_PEER, A.START_COPY))
# The peer gone (or a mirrored write failed with the outcome unknown): suspended by error.
_add((P,), (St.COPY, St.PAIR), Event.PEER_LOST, St.PSUE, (A.STOP_COPY,))
_add((S,), (St.COPY, St.PAIR), Event.PEER_LOST, St.PSUE, ())
_add((P, S), (St.PSUS, St.SSUS, St.PSUE, St.SSWS), Event.PEER_LOST, None, ())
_add((P,), (St.COPY, St.PAIR), Event.PEER_SUSPENDED, St.PSUE, (A.DRAIN, A.STOP_COPY))
_add((S,), (St.COPY, St.PAIR), Event.PEER_SUSPENDED, St.PSUE, ())
_add((P, S), (St.PSUS, St.SSUS, St.PSUE, St.SSWS), Event.PEER_SUSPENDED, None, ())
# Takeovers (see takeover()): the S side serves alone; the P side lifts its fence.
_add((S,), (St.PAIR, St.SSUS, St.PSUE), Event.TAKEOVER_SVOL, St.SSWS, (A.NEW_GENERATION, A.NOTIFY_PEER))
_add((P,), (St.PAIR, St.PSUE), Event.TAKEOVER_PVOL, St.PSUE, (A.DRAIN, A.STOP_COPY, A.RELEASE_FENCE, A.NEW_GENERATION))
# Swap: the S side becomes the P-VOL and copies back by bitmap only (failback needs no full copy).
_add((S,), (St.PAIR, St.SSUS, St.SSWS, St.PSUE, St.PFUS), Event.SWAP, St.COPY,
     (A.DRAIN, A.SWAP_ROLES, A.MERGE_PEER_BITMAP, A.NOTIFY_PEER, A.START_COPY))
# An async P side leaving journal mode for a swap goes through PFUS (its unsent journal becomes
# the bitmap, seed 003 FIG. 17-21), and one already suspended by a full journal swaps from there.
_add((P,), (St.PAIR, St.PSUS, St.PSUE, St.PFUL, St.PFUS), Event.SWAP, St.COPY, (A.DRAIN, A.STOP_COPY, A.SWAP_ROLES))
# Asynchronous pairs (issue 15): journal use past the threshold shows PFUL, and full too long
# suspends (PFUS) with the unsent journal turned into the bitmap; a resync copies only that.
_add((P,), (St.PAIR,), Event.JOURNAL_FULL, St.PFUL, ())
_add((P,), (St.PFUL,), Event.JOURNAL_OK, St.PAIR, ())
_add((P,), (St.PAIR, St.PFUL), Event.JOURNAL_SUSPEND, St.PFUS, (A.DRAIN,))
_add((S,), (St.PAIR, St.COPY), Event.JOURNAL_SUSPEND, St.PFUS, ())
_add((P,), (St.PFUL,), Event.SPLIT, St.PSUS, (A.DRAIN, A.STOP_COPY, A.NOTIFY_PEER))
_add((P,), (St.PFUL,), Event.SPLIT_RW, St.PSUS, (A.DRAIN, A.STOP_COPY, A.NOTIFY_PEER))
_add((P,), (St.PFUS,), Event.RESYNC, St.COPY, (A.MERGE_PEER_BITMAP, A.NOTIFY_PEER, A.START_COPY))
_add((S,), (St.PFUS,), Event.RESYNC, St.COPY, ())
_add((P,), (St.PFUL,), Event.PEER_LOST, St.PSUE, (A.STOP_COPY,))
_add((P, S), (St.PFUS,), Event.PEER_LOST, None, ())
_add((P, S), (St.PFUS,), Event.PEER_SUSPENDED, None, ())
_add((S,), (St.PFUS,), Event.TAKEOVER_SVOL, St.SSWS, (A.NEW_GENERATION, A.NOTIFY_PEER))
# A restart: whatever the bitmap marks is sent again; only those tracks, never a full copy.
_add((P,), (St.COPY, St.PAIR), Event.RESTARTED, St.COPY, (A.START_COPY,))
_add((S,), (St.COPY, St.PAIR), Event.RESTARTED, None, ())
# Delete from any paired state (with the peer, or alone with --force: the caller decides).
_add((P, S), tuple(s for s in PairState if s is not St.SMPL), Event.DELETE, St.SMPL,
     (A.DRAIN, A.STOP_COPY, A.CLEAR_BITMAP, A.FORGET))

_ROLE_AFTER: dict[tuple[PairRole, Event], PairRole] = {
    (P, Event.RESYNC_REVERSE): S, (S, Event.RESYNC_REVERSE): P, (P, Event.SWAP): S, (S, Event.SWAP): P,
}

_WHY: dict[Event, str] = {
    Event.CREATE: "the volume is already in a pair",
    Event.CREATE_NO_COPY: "the volume is already in a pair",
    Event.COPY_DONE: "no copy is running",
    Event.SPLIT: "only a pair in COPY or PAIR can be split",
    Event.SPLIT_RW: "only a pair in COPY or PAIR can be split",
    Event.RESYNC: "only a split or suspended pair can be resynchronised",
    Event.RESYNC_REVERSE: "only a split, suspended or taken-over pair can be resynchronised in reverse",
    Event.PEER_LOST: "not in a pair",
    Event.PEER_SUSPENDED: "not in a pair",
    Event.DELETE: "not in a pair",
    Event.TAKEOVER_SVOL: "an S-VOL takeover needs an S-VOL in PAIR, SSUS or PSUE (an S-VOL in COPY "
                         "holds an incomplete copy)",
    Event.TAKEOVER_PVOL: "a P-VOL takeover needs a P-VOL in PAIR or PSUE",
    Event.SWAP: "a swap needs the pair in PAIR, split or suspended, with a complete S-VOL",
    Event.RESTARTED: "only a pair in COPY or PAIR resumes copying at start",
    Event.JOURNAL_FULL: "only an asynchronous P-VOL in PAIR fills its journal",
    Event.JOURNAL_OK: "only a P-VOL in PFUL leaves it",
    Event.JOURNAL_SUSPEND: "only a pair in PAIR or PFUL suspends on a full journal",
}


def step(role: PairRole, state: PairState, event: Event) -> Transition:
    """The transition ``event`` makes from (``role``, ``state``); :class:`InvalidTransition` if none."""
    hit = _TABLE.get((role, state, event))
    if hit is None:
        raise InvalidTransition(f"{event.value} refused: pair is {role.label} {state.name}: {_WHY[event]}")
    new_state, actions = hit
    return Transition(_ROLE_AFTER.get((role, event), role), new_state, actions)


# --- host writes --------------------------------------------------------------------------------

class WriteRule(enum.Enum):
    """What a host write to a pair half does."""

    MIRROR = "mirror"
    """Write locally and to the peer; acknowledge only when both have it."""
    RECORD = "record"
    """Write locally and set the bitmap bits of the range (persistently, before the write)."""
    PROTECTED = "protected"
    """Refuse: CHECK CONDITION, DATA PROTECT / WRITE PROTECTED (07h/27h/00h)."""
    FENCED = "fenced"
    """Refuse: the fence level forbids writes while the S side is not in step."""


def host_write(role: PairRole, state: PairState, fence: FenceLevel, *, s_writable: bool = False,
               fence_released: bool = False, peer_marked: bool = False) -> WriteRule:
    """The rule for a host write reaching this half (COPY's behind/ahead-of-pointer split is the
    mover's: ahead of the pointer a MIRROR write lands locally and is recorded).

    ``s_writable``: the S side was split with ``--rw``.  ``fence_released``: a P-VOL takeover
    lifted the fence.  ``peer_marked``: under fence ``status``, the S side was marked suspended.
    """
    if role is PairRole.P_VOL:
        if state in (PairState.COPY, PairState.PAIR):
            return WriteRule.MIRROR
        if state is PairState.PSUS:
            return WriteRule.RECORD
        if state is PairState.PSUE:
            if fence is FenceLevel.NEVER or fence_released or (fence is FenceLevel.STATUS and peer_marked):
                return WriteRule.RECORD
            return WriteRule.FENCED
        return WriteRule.RECORD  # SMPL: the caller has no pair volume; kept total for safety
    if state is PairState.SSWS or (state is PairState.SSUS and s_writable):
        return WriteRule.RECORD
    return WriteRule.PROTECTED


@dataclass(frozen=True, slots=True)
class LostMirror:
    """The outcome of a mirrored write whose S side could not be reached."""

    acknowledge: bool
    """True: the host gets GOOD (the data is on the P-VOL and in the bitmap)."""
    state: PairState
    """Always PSUE: the pair is suspended by the error."""


def on_mirror_lost(fence: FenceLevel, peer_marked: bool) -> LostMirror:
    """FenceLevel levels (module docstring): ``peer_marked`` says whether the S side acknowledged being
    marked suspended (only ``status`` asks; with the peer unreachable it is False)."""
    if fence is FenceLevel.NEVER:
        return LostMirror(True, PairState.PSUE)
    if fence is FenceLevel.STATUS:
        return LostMirror(peer_marked, PairState.PSUE)
    return LostMirror(False, PairState.PSUE)


# --- takeover (CCI horctakeover's decision table) -------------------------------------------------

class TakeoverKind(enum.IntEnum):
    """What ``sanlab pair takeover`` did; the value is the command's exit code, as horctakeover's."""

    NOP = 0
    """This side already serves (a P-VOL in step, or an S-VOL already in SSWS): nothing changes."""
    SWAP = 1
    """S side, peer reachable, S-VOL complete: roles exchanged, copying runs back by bitmap."""
    SVOL = 2
    """S side, peer unreachable or pair suspended, S-VOL complete: S-VOL goes SSWS and serves."""
    PVOL = 3
    """P side, fence data/status, S side gone: the fence is lifted and the P-VOL serves (PSUE)."""


@dataclass(frozen=True, slots=True)
class TakeoverDecision:
    """Which takeover applies and the event that carries it out (None for NOP)."""

    kind: TakeoverKind
    event: Event | None


def takeover(role: PairRole, state: PairState, fence: FenceLevel, peer_reachable: bool) -> TakeoverDecision:
    """horctakeover's choice for the array where it runs; :class:`InvalidTransition` when it must be
    refused (not a pair, or an S-VOL whose copy is incomplete: serving it would serve torn data)."""
    if state is PairState.SMPL:
        raise InvalidTransition("takeover refused: the volume is not in a pair (SMPL)")
    if role is PairRole.P_VOL:
        if state in (PairState.PSUE, PairState.PAIR) and fence is not FenceLevel.NEVER and not peer_reachable:
            return TakeoverDecision(TakeoverKind.PVOL, Event.TAKEOVER_PVOL)
        return TakeoverDecision(TakeoverKind.NOP, None)
    if state is PairState.SSWS:
        return TakeoverDecision(TakeoverKind.NOP, None)
    if state is PairState.COPY:
        raise InvalidTransition("takeover refused: the S-VOL is in COPY; its copy is incomplete")
    if peer_reachable and state in (PairState.PAIR, PairState.SSUS):
        return TakeoverDecision(TakeoverKind.SWAP, Event.SWAP)
    return TakeoverDecision(TakeoverKind.SVOL, Event.TAKEOVER_SVOL)


# --- split brain (generation identifiers, as DRBD's) ----------------------------------------------

class SyncVerdict(enum.Enum):
    """Who holds the newer data when the two halves meet again."""

    IN_STEP = "in-step"
    """Neither side took writes on its own since the last sync: resync as the roles say."""
    LOCAL_AHEAD = "local-ahead"
    """Only this side took writes on its own: it is the source."""
    PEER_AHEAD = "peer-ahead"
    """Only the peer took writes on its own: it is the source."""
    SPLIT_BRAIN = "split-brain"
    """Both did: no resync until the user names the side that wins."""


def compare_generations(local_current: int, local_synced: int, peer_current: int, peer_synced: int) -> SyncVerdict:
    """Each side starts a new generation id (:attr:`Action.NEW_GENERATION`) when it first takes writes
    the other side may not see (an S-VOL in SSWS or split ``--rw``, a P-VOL writing in PSUE or after
    a P-VOL takeover) and remembers the id both shared at the last completed copy.  A side whose
    current id differs from that shared id diverged; two diverged sides are a split brain."""
    local_moved = local_current != local_synced
    peer_moved = peer_current != peer_synced or peer_synced != local_synced
    if local_moved and peer_moved:
        return SyncVerdict.SPLIT_BRAIN
    if local_moved:
        return SyncVerdict.LOCAL_AHEAD
    if peer_moved:
        return SyncVerdict.PEER_AHEAD
    return SyncVerdict.IN_STEP

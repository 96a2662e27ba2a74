"""The states of an in-system (local) copy pair and their one transition table (seed 004, FIG. 13-22, 31-40).

The user-facing states are the ones ShadowImage users know and remote pairs already use
(:class:`PairState` here, with the remote pairs' numbers): ``COPY`` while generating or resynchronising,
``PAIR``, ``PSUS`` once divided, ``RCPY`` during a reverse resync (restore), ``PSUE`` after an error.
The seed's finer states ("UNDER GENERATION", "UNDER DIVISION", "UNDER EXTENT DIVISION", ...) are
derived from them for ``copy display``'s ``detail`` (:func:`detail`).

A pair may have one *extent* (seed 004 9th embodiment, FIG. 32 extent information 3206) whose
state differs from the rest of the pair: an extent division of a pair in PAIR leaves the extent in
PSUS and the rest in PAIR; an extent update (FIG. 18) of a divided pair puts the extent in COPY and
the rest stays PSUS.  Both the pair's state and the extent's move through :func:`local_step`.
"""
from __future__ import annotations

import enum


class PairState(enum.IntEnum):
    """A local copy pair's states: the remote pairs' names and numbers
    (:class:`sanlab.replication.pair_state.PairState`) where they mean the same, plus RCPY.  Kept
    apart from that enum because that one is carried on the array-to-array wire, where RCPY has no
    place."""

    COPY = 1
    """Generation or resync running (seed "UNDER GENERATION")."""
    PAIR = 2
    """Generation completed: the copy follows every write."""
    PSUS = 3
    """Divided: the copy is a point-in-time image."""
    PSUE = 5
    """Suspended by an error (a copy failed on a volume)."""
    RCPY = 7
    """Reverse resync: the copy is copied back over the original."""


class CopyEvent(enum.Enum):
    """What happens to a local copy pair (or its extent)."""

    SPLIT = "split"
    RESYNC = "resync"
    RESTORE = "restore"
    COPY_DONE = "copy-done"
    """The mover found nothing left to copy in the area."""
    FAILED = "failed"
    """A copy or copy-on-write failed on a volume."""


class CopyTransitionError(Exception):
    """An event the state does not take (the message says which)."""


LOCAL_STATES: frozenset[PairState] = frozenset(
    {PairState.COPY, PairState.PAIR, PairState.PSUS, PairState.RCPY, PairState.PSUE})
"""The states a local copy pair (or extent) can be in."""

_TABLE: dict[tuple[PairState, CopyEvent], PairState] = {
    # FIG. 16: generation; FIG. 20 step 2007: "GENERATION COMPLETED" once the copy pointer ran through.
    (PairState.COPY, CopyEvent.COPY_DONE): PairState.PAIR,
    (PairState.PAIR, CopyEvent.COPY_DONE): PairState.PAIR,
    # FIG. 17: division is taken at once; the division copy (FIG. 21) runs in PSUS.
    (PairState.COPY, CopyEvent.SPLIT): PairState.PSUS,
    (PairState.PAIR, CopyEvent.SPLIT): PairState.PSUS,
    (PairState.PSUS, CopyEvent.COPY_DONE): PairState.PSUS,
    # FIG. 18 / FIG. 36: extent update and extent couple copy only the differing tracks.
    (PairState.PSUS, CopyEvent.RESYNC): PairState.COPY,
    (PairState.PSUE, CopyEvent.RESYNC): PairState.COPY,
    # Reverse resync: the copy back over the original, online; then the pair is in PAIR again.
    (PairState.PSUS, CopyEvent.RESTORE): PairState.RCPY,
    (PairState.RCPY, CopyEvent.COPY_DONE): PairState.PAIR,
    (PairState.COPY, CopyEvent.FAILED): PairState.PSUE,
    (PairState.PAIR, CopyEvent.FAILED): PairState.PSUE,
    (PairState.PSUS, CopyEvent.FAILED): PairState.PSUE,
    (PairState.RCPY, CopyEvent.FAILED): PairState.PSUE,
    (PairState.PSUE, CopyEvent.FAILED): PairState.PSUE,
}


def local_step(state: PairState, event: CopyEvent) -> PairState:
    """The state after ``event`` (CopyTransitionError when ``state`` does not take it)."""
    new = _TABLE.get((state, event))
    if new is None:
        raise CopyTransitionError(f"a copy in {state.name} cannot {event.value}")
    return new


def detail(state: PairState, extent_state: PairState | None, division_pending: bool,
           extent_division_pending: bool) -> str:
    """The seed's state name for ``copy display``'s ``detail``.

    ``division_pending``: tracks of the divided area still wait for the division copy (FIG. 21);
    ``extent_division_pending`` the same inside the extent.
    """
    if extent_state is not None:
        if extent_state is PairState.PSUS:  # FIG. 33-35: extent division of a pair in PAIR
            return "UNDER EXTENT DIVISION" if extent_division_pending else "EXTENT DIVISION COMPLETED"
        if state is PairState.PSUS:  # FIG. 18: extent update of a divided pair
            return {PairState.COPY: "UNDER EXTENT UPDATE", PairState.PAIR: "EXTENT UPDATE COMPLETED",
                    PairState.RCPY: "UNDER EXTENT RESTORE"}.get(extent_state, "EXTENT " + extent_state.name)
        if extent_state is PairState.COPY:  # FIG. 36: extent couple
            return "UNDER EXTENT COUPLE"
        return "EXTENT " + extent_state.name
    if state is PairState.COPY:
        return "UNDER GENERATION"
    if state is PairState.PAIR:
        return "GENERATION COMPLETED"
    if state is PairState.PSUS:
        return "UNDER DIVISION" if division_pending else "DIVISION COMPLETED"
    if state is PairState.RCPY:
        return "UNDER REVERSE RESYNC"
    return "SUSPENDED BY ERROR"

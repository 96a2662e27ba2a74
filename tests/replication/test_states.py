"""The pair state table (replication/states.py): transitions, write rules, fences, takeover, split brain."""
from __future__ import annotations

import itertools

import pytest

from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.states import (
    Action, Event, InvalidTransition, SyncVerdict, TakeoverKind, WriteRule, compare_generations, host_write,
    on_mirror_lost, step, takeover,
)

P, S = PairRole.P_VOL, PairRole.S_VOL
St = PairState


def walk(role: PairRole, state: PairState, *events: Event) -> tuple[PairRole, PairState]:
    for ev in events:
        t = step(role, state, ev)
        role, state = t.role, t.state
    return role, state


def test_life_of_a_pair_on_both_sides() -> None:
    # create → copy → pair → split → resync → pair → delete, as each side sees it.
    assert walk(P, St.SMPL, Event.CREATE) == (P, St.COPY)
    assert walk(P, St.SMPL, Event.CREATE, Event.COPY_DONE, Event.SPLIT) == (P, St.PSUS)
    assert walk(S, St.SMPL, Event.CREATE, Event.COPY_DONE, Event.SPLIT) == (S, St.SSUS)
    assert walk(P, St.PSUS, Event.RESYNC, Event.COPY_DONE) == (P, St.PAIR)
    assert walk(S, St.SSUS, Event.RESYNC, Event.COPY_DONE) == (S, St.PAIR)
    assert walk(P, St.PAIR, Event.DELETE) == (P, St.SMPL)
    assert walk(S, St.SSWS, Event.DELETE) == (S, St.SMPL)


def test_initial_copy_sets_every_bit_before_the_mover_starts() -> None:
    t = step(P, St.SMPL, Event.CREATE)
    assert t.actions.index(Action.SET_ALL_BITS) < t.actions.index(Action.START_COPY)
    assert step(P, St.SMPL, Event.CREATE_NO_COPY).actions == (Action.CLEAR_BITMAP,)
    assert step(S, St.SMPL, Event.CREATE).actions == ()  # the S side copies nothing itself


def test_split_drains_in_flight_writes_before_anything_else() -> None:
    for ev in (Event.SPLIT, Event.SPLIT_RW):
        t = step(P, St.PAIR, ev)
        assert t.actions[0] is Action.DRAIN and Action.STOP_COPY in t.actions
    # An S-VOL split --rw starts its own generation: its writes are its own from then on.
    assert Action.NEW_GENERATION in step(S, St.PAIR, Event.SPLIT_RW).actions
    assert Action.NEW_GENERATION not in step(S, St.PAIR, Event.SPLIT).actions


def test_resync_copies_the_union_of_both_bitmaps() -> None:
    t = step(P, St.PSUS, Event.RESYNC)
    assert t.state is St.COPY
    assert t.actions.index(Action.MERGE_PEER_BITMAP) < t.actions.index(Action.START_COPY)
    assert Action.SET_ALL_BITS not in t.actions  # never a full copy


def test_reverse_resync_and_swap_exchange_roles_without_a_full_copy() -> None:
    for ev, start_s in ((Event.RESYNC_REVERSE, St.SSWS), (Event.SWAP, St.SSWS), (Event.SWAP, St.PAIR)):
        t = step(S, start_s, ev)
        assert t.role is P and t.state is St.COPY
        assert Action.SWAP_ROLES in t.actions and Action.MERGE_PEER_BITMAP in t.actions
        assert Action.SET_ALL_BITS not in t.actions
    assert step(P, St.PAIR, Event.SWAP).role is S
    assert step(P, St.PSUS, Event.RESYNC_REVERSE).role is S
    # Failover and failback: S takes over, swaps, and after the copy the roles are back.
    role, state = walk(S, St.PAIR, Event.TAKEOVER_SVOL, Event.SWAP, Event.COPY_DONE)
    assert (role, state) == (P, St.PAIR)
    role, state = walk(role, state, Event.SWAP, Event.COPY_DONE)
    assert (role, state) == (S, St.PAIR)


def test_async_p_side_swaps_through_pfus_and_from_a_full_journal() -> None:
    # Seed 003 FIG. 17-21: the old primary's unsent journal becomes its bitmap (PFUS), then the
    # roles exchange; a pair already suspended by a full journal swaps from there.
    role, state = walk(P, St.PAIR, Event.JOURNAL_SUSPEND, Event.SWAP)
    assert (role, state) == (S, St.COPY)
    for start in (St.PFUL, St.PFUS):
        t = step(P, start, Event.SWAP)
        assert t.role is S and t.state is St.COPY and Action.SWAP_ROLES in t.actions
    t = step(S, St.PFUS, Event.SWAP)
    assert t.role is P and Action.MERGE_PEER_BITMAP in t.actions and Action.SET_ALL_BITS not in t.actions


def test_peer_lost_suspends_a_pair_in_step_and_stops_the_mover() -> None:
    t = step(P, St.COPY, Event.PEER_LOST)
    assert t.state is St.PSUE and Action.STOP_COPY in t.actions
    assert step(S, St.PAIR, Event.PEER_LOST).state is St.PSUE
    # Already split or suspended: losing the peer changes nothing.
    for role, state in ((P, St.PSUS), (S, St.SSUS), (P, St.PSUE), (S, St.SSWS)):
        assert step(role, state, Event.PEER_LOST).state is state


@pytest.mark.parametrize("role,state,event", [
    (P, St.PAIR, Event.CREATE),
    (P, St.SMPL, Event.SPLIT),
    (P, St.PAIR, Event.RESYNC),
    (S, St.COPY, Event.TAKEOVER_SVOL),  # an incomplete copy is never served
    (P, St.PSUS, Event.TAKEOVER_PVOL),
    (S, St.SMPL, Event.DELETE),
    (P, St.PAIR, Event.COPY_DONE),
])
def test_refused_events_name_the_reason(role: PairRole, state: PairState, event: Event) -> None:
    with pytest.raises(InvalidTransition) as exc:
        step(role, state, event)
    assert state.name in str(exc.value) and event.value in str(exc.value)


def test_every_event_is_refused_or_defined_in_every_state() -> None:
    # The table is total: each (role, state, event) either transitions or raises with a reason.
    for role, state, ev in itertools.product(PairRole, PairState, Event):
        try:
            t = step(role, state, ev)
        except InvalidTransition as exc:
            assert str(exc)
        else:
            assert isinstance(t.state, PairState)


def test_host_writes_per_role_and_state() -> None:
    assert host_write(P, St.PAIR, FenceLevel.DATA) is WriteRule.MIRROR
    assert host_write(P, St.COPY, FenceLevel.NEVER) is WriteRule.MIRROR
    assert host_write(P, St.PSUS, FenceLevel.DATA) is WriteRule.RECORD
    for state in (St.COPY, St.PAIR, St.PSUE, St.SSUS):
        assert host_write(S, state, FenceLevel.NEVER) is WriteRule.PROTECTED
    assert host_write(S, St.SSUS, FenceLevel.NEVER, s_writable=True) is WriteRule.RECORD
    assert host_write(S, St.SSWS, FenceLevel.DATA) is WriteRule.RECORD


def test_fence_levels_when_the_s_side_is_unreachable() -> None:
    # data: the write fails, and so does every later one while suspended.
    lost = on_mirror_lost(FenceLevel.DATA, peer_marked=False)
    assert (lost.acknowledge, lost.state) == (False, St.PSUE)
    assert host_write(P, St.PSUE, FenceLevel.DATA) is WriteRule.FENCED
    # status: succeeds only if the S side could be marked suspended.
    assert on_mirror_lost(FenceLevel.STATUS, peer_marked=True).acknowledge is True
    assert on_mirror_lost(FenceLevel.STATUS, peer_marked=False).acknowledge is False
    assert host_write(P, St.PSUE, FenceLevel.STATUS, peer_marked=True) is WriteRule.RECORD
    assert host_write(P, St.PSUE, FenceLevel.STATUS, peer_marked=False) is WriteRule.FENCED
    # never: the write succeeds, the bitmap keeps the difference.
    assert on_mirror_lost(FenceLevel.NEVER, peer_marked=False) .acknowledge is True
    assert host_write(P, St.PSUE, FenceLevel.NEVER) is WriteRule.RECORD
    # A P-VOL takeover lifts the fence.
    assert Action.RELEASE_FENCE in step(P, St.PSUE, Event.TAKEOVER_PVOL).actions
    assert host_write(P, St.PSUE, FenceLevel.DATA, fence_released=True) is WriteRule.RECORD


@pytest.mark.parametrize("role,state,fence,reachable,kind", [
    (P, St.PAIR, FenceLevel.DATA, True, TakeoverKind.NOP),
    (P, St.PSUE, FenceLevel.NEVER, False, TakeoverKind.NOP),   # a never-fenced P-VOL already serves
    (P, St.PSUE, FenceLevel.DATA, False, TakeoverKind.PVOL),
    (P, St.PAIR, FenceLevel.STATUS, False, TakeoverKind.PVOL),
    (S, St.PAIR, FenceLevel.DATA, True, TakeoverKind.SWAP),
    (S, St.SSUS, FenceLevel.NEVER, True, TakeoverKind.SWAP),
    (S, St.PAIR, FenceLevel.DATA, False, TakeoverKind.SVOL),
    (S, St.PSUE, FenceLevel.NEVER, True, TakeoverKind.SVOL),
    (S, St.SSWS, FenceLevel.NEVER, False, TakeoverKind.NOP),
])
def test_takeover_decision_table(role: PairRole, state: PairState, fence: FenceLevel, reachable: bool,
                                 kind: TakeoverKind) -> None:
    d = takeover(role, state, fence, reachable)
    assert d.kind is kind
    if d.event is not None:
        step(role, state, d.event)  # the chosen event is one the table takes
    assert int(kind) == {"NOP": 0, "SWAP": 1, "SVOL": 2, "PVOL": 3}[kind.name]  # horctakeover's exit codes


@pytest.mark.parametrize("role,state", [(S, St.COPY), (P, St.SMPL), (S, St.SMPL)])
def test_takeover_refused(role: PairRole, state: PairState) -> None:
    with pytest.raises(InvalidTransition):
        takeover(role, state, FenceLevel.DATA, True)


def test_generations_find_the_newer_side_and_split_brain() -> None:
    assert compare_generations(7, 7, 7, 7) is SyncVerdict.IN_STEP
    assert compare_generations(9, 7, 7, 7) is SyncVerdict.LOCAL_AHEAD
    assert compare_generations(7, 7, 8, 7) is SyncVerdict.PEER_AHEAD
    assert compare_generations(9, 7, 8, 7) is SyncVerdict.SPLIT_BRAIN
    # The peer remembers another shared generation: it moved without us; never silently in step.
    assert compare_generations(9, 7, 8, 8) is SyncVerdict.SPLIT_BRAIN
    assert compare_generations(7, 7, 8, 8) is SyncVerdict.PEER_AHEAD

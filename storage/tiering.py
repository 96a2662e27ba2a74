"""Automatic rearrangement policy (seed 004, 3rd-4th embodiments), pure functions.

Per-LDEV statistics sampled over an interval give rates (random and
sequential reads and writes per second) and a utilization (busy seconds per
second).  The policy proposes LDEV moves:

1. **Hot random data to mirrors**: an LDEV whose random I/O rate is high and
   that lives on a parity group (RAID 5/6, where every small write costs a
   read-modify-write) moves to a RAID 1/10 group with free LDEVs.
2. **Level utilization**: when the busiest group's utilization exceeds the
   least busy one's by more than a margin, its hottest LDEV moves there.

One move per group per round keeps rearrangement from becoming the load.
"""
from __future__ import annotations

from dataclasses import dataclass

MIRRORED_LEVELS = frozenset({1, 10})
"""RAID levels where a small write costs two writes and no read: where hot random data goes."""
PARITY_LEVELS = frozenset({5, 6})
"""RAID levels where a small write is a read-modify-write of data and parity: what hot random data leaves."""


@dataclass(frozen=True, slots=True)
class LdevLoad:
    """One LDEV's load over the last interval."""

    volume: str
    """Name of the logical volume the LDEV belongs to."""
    index: int
    """The LDEV's position in that volume."""
    group: str
    """RAID group the LDEV lives on now."""
    random_iops: float
    """Random (not sequential) reads and writes per second."""
    sequential_iops: float
    """Sequential reads and writes per second."""
    utilization: float
    """Busy seconds per second of its group spent on this LDEV (:attr:`LdevStats.busy` over the interval)."""


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A RAID group as the policy sees it."""

    name: str
    level: int
    """RAID level number (0, 1, 5, 6 or 10)."""
    free_ldevs: int
    """LDEVs not in use: how many moves it can take in."""


@dataclass(frozen=True, slots=True)
class Move:
    """One proposed move: LDEV ``index`` of logical volume ``volume`` from group ``source`` to ``dest``."""

    volume: str
    index: int
    source: str
    dest: str
    reason: str
    """Why, in words, for the log and the operator."""


def plan_moves(loads: list[LdevLoad], groups: list[GroupInfo], *, hot_random_iops: float = 50.0,
               imbalance: float = 0.25) -> list[Move]:
    """The moves worth making now (at most one out of and one into each group)."""
    info = {g.name: g for g in groups}
    free = {g.name: g.free_ldevs for g in groups}
    busy_src: set[str] = set()
    busy_dst: set[str] = set()
    moves: list[Move] = []

    def take(load: LdevLoad, dest: str, reason: str) -> None:
        moves.append(Move(load.volume, load.index, load.group, dest, reason))
        free[dest] -= 1
        busy_src.add(load.group)
        busy_dst.add(dest)

    # 1. Hot random data off parity groups onto mirrored ones.
    mirrors = [g for g in groups if g.level in MIRRORED_LEVELS]
    for load in sorted(loads, key=lambda x: -x.random_iops):
        src = info.get(load.group)
        if src is None or src.level not in PARITY_LEVELS or load.random_iops < hot_random_iops:
            continue
        if load.group in busy_src:
            continue
        targets = [g for g in mirrors if free[g.name] > 0 and g.name not in busy_dst]
        if targets:
            take(load, max(targets, key=lambda g: free[g.name]).name, "hot random I/O to a mirrored group")

    # 2. Level utilization between groups.
    util = {g.name: 0.0 for g in groups}
    for load in loads:
        if load.group in util:
            util[load.group] += load.utilization
    if len(util) >= 2:
        hot = max(util, key=lambda g: util[g])
        cold = min(util, key=lambda g: util[g])
        if util[hot] - util[cold] > imbalance and hot not in busy_src and cold not in busy_dst and free[cold] > 0:
            moved = {(m.volume, m.index) for m in moves}
            candidates = [x for x in loads if x.group == hot and (x.volume, x.index) not in moved]
            if candidates:
                # The LDEV whose move brings the two closest to equal.
                gap = util[hot] - util[cold]
                best = min(candidates, key=lambda x: abs(gap - 2 * x.utilization))
                if 2 * best.utilization < 2 * gap:
                    take(best, cold, "level RAID-group utilization")
    return moves

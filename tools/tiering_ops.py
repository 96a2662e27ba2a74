"""Management operations that place LDEVs: rearrangement by hand and statistics-driven tiering.

The policy is storage/tiering.py's (pure functions); here the statistics are sampled, the moves
carried out with :meth:`TieringOps.rearrange`, and the automatic loop runs under the array's task
supervisor (kind ``tiering``).  Asked to stop, the loop finishes the move in hand first: an LDEV
copy is never cut off midway.  Turning tiering on or off touches nothing else (migrations go on).
"""
from __future__ import annotations

import asyncio
import math
from typing import Any

import structlog

from sanlab.storage.supervisor import SupervisorError
from sanlab.storage.tiering import GroupInfo, LdevLoad, plan_moves
from sanlab.storage.volume import VolumeError
from sanlab.tools.array import AdminError, ArrayState, found

log = structlog.get_logger("sanlab.admin")

AUTO = "auto"
MIN_INTERVAL = 0.01
"""Shortest auto-tiering period (seconds): a zero one would run rounds back to back and starve the
array's event loop of everything else (found by tests/tools/test_mgmt_fuzz.py)."""


def _seconds(name: str, value: float, least: float) -> float:
    """``value`` if it is a finite number of seconds of at least ``least`` (and above 0), else AdminError."""
    if not (math.isfinite(value) and value >= least and value > 0):
        raise AdminError(f"{name}={value} is not a number of seconds of at least {least}"
                         if least else f"{name}={value} is not a positive number of seconds")
    return value
"""The name of the one automatic tiering task."""


class TieringOps:
    """The rearrangement and tiering operations of tools/operations.py (``Domain.TIERING``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array
        self._last_stats: dict[tuple[str, int], tuple[int, int, float]] = {}
        self._switching = asyncio.Lock()
        """Serialises auto-tiering on/off (not the change lock: stopping waits for a round's moves,
        which take that one)."""

    async def rearrange(self, volume: str, index: int, group: str | None = None,
                        ldev: str | None = None) -> dict[str, Any]:
        """Move LDEV ``index`` of ``volume`` onto another RAID group (or a designated LDEV), online."""
        a = self.array
        async with a.changes:  # held through the copy: the volume and both LDEVs stay as checked
            vol = found(a.volumes.get(volume), f"no volume {volume}")
            if not 0 <= index < len(vol.ldevs):
                raise AdminError(f"volume {volume} has no LDEV {index}")
            try:
                if ldev is not None:
                    grp, _, idx = ldev.partition(":")
                    dest = a.allocator.ldev(grp, int(idx))
                    a.allocator.mark_used([dest])
                else:
                    if group is None or group not in a.groups:
                        raise AdminError(f"no RAID group {group}")
                    dest = a.allocator.allocate(a.allocator.ldev_size, [group])[0]
            except VolumeError as exc:
                raise AdminError(str(exc)) from None
            try:
                old = await vol.rearrange(index, dest)
            except BaseException:
                a.allocator.release([dest])
                raise
            # The data has moved and the volume reads it from ``dest`` already; the commit records it
            # (a crash before it leaves the catalog naming the old LDEV, whose data is still intact).
            async with a.catalog.change() as change:
                change.move_ldev(volume, index, dest.group, dest.index)
            a.allocator.release([old])
        log.info("ldev_rearranged", volume=volume, index=index, source=old.ldev_id, dest=dest.ldev_id)
        return {"volume": volume, "index": index, "from": old.ldev_id, "to": dest.ldev_id}

    def ldev_loads(self, seconds: float) -> list[LdevLoad]:
        """Rates since the previous call (the statistics are cumulative counters)."""
        now: dict[tuple[str, int], tuple[int, int, float]] = {}
        loads = []
        for name, vol in self.array.volumes.items():
            for i, st in enumerate(vol.stats):
                seq = st.sequential_reads + st.sequential_writes
                rnd = st.reads + st.writes - seq
                now[(name, i)] = (rnd, seq, st.busy)
                r0, s0, b0 = self._last_stats.get((name, i), (0, 0, 0.0))
                loads.append(LdevLoad(name, i, vol.ldevs[i].group, (rnd - r0) / seconds, (seq - s0) / seconds,
                                      (st.busy - b0) / seconds))
        self._last_stats = now
        return loads

    async def tiering_round(self, seconds: float = 1.0) -> dict[str, Any]:
        """Sample the statistics, plan and carry out the moves the policy proposes."""
        return await self._round(_seconds("seconds", seconds, 0.0), None)

    async def _round(self, seconds: float, stop: asyncio.Event | None) -> dict[str, Any]:
        a = self.array
        loads = self.ldev_loads(seconds)
        groups = [GroupInfo(n, int(g.level), len(a.allocator.free(n))) for n, g in a.groups.items()]
        done = []
        for m in plan_moves(loads, groups):
            if stop is not None and stop.is_set():
                break  # the rest waits for the next start
            done.append(await self.rearrange(m.volume, m.index, group=m.dest) | {"reason": m.reason})
        return {"moves": done}

    async def auto_tiering(self, enable: bool = True, interval: float = 60.0) -> dict[str, Any]:
        """Run a tiering round every ``interval`` seconds (or stop doing so) as a supervised task."""
        if enable:
            _seconds("interval", interval, MIN_INTERVAL)
        async with self._switching:
            await self.array.supervisor.stop("tiering", AUTO)
            if enable:
                stop = asyncio.Event()
                try:
                    self.array.supervisor.start("tiering", AUTO, self._loop(interval, stop), stop=stop,
                                                interval=interval)
                except SupervisorError as exc:
                    raise AdminError(f"cannot start auto-tiering: {exc}") from None
        return {"auto_tiering": enable, "interval": interval}

    async def _loop(self, interval: float, stop: asyncio.Event) -> None:
        """A round every ``interval`` seconds until ``stop`` is set; a failed round is logged, the next one tries."""
        self.ldev_loads(interval)
        while True:
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self._round(interval, stop)
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("tiering_round_failed")

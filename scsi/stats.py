"""What each logical unit has done: commands, bytes, errors and a latency histogram (issue 18).

The status page and the Prometheus metrics (tools/metrics.py) read these.  Every host command
ends here, on the target's fast path too, so the cost is kept to a table look-up, one clock read
and a few integer additions on a slotted object; nothing of the metrics library is touched per
command: the collector turns these integers into metric families only when it is scraped.

Latency is the device server's time for the command: from when the task is complete (its
Data-Out assembled) to its result, so it is the array's service time, not the host's view with
the network and the R2T round trips.
"""
from __future__ import annotations

import enum
from bisect import bisect_left
from time import perf_counter_ns
from typing import Final

from sanlab.scsi.task import ScsiResult, ScsiStatus


class Op(enum.IntEnum):
    """The kinds of command counted apart."""

    OTHER = 0
    READ = 1
    WRITE = 2


_READS: Final = (0x08, 0x28, 0xA8, 0x88)
"""READ (6), (10), (12), (16) (SBC-3 §5.10-5.13)."""
_WRITES: Final = (0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E, 0x41, 0x93, 0x89, 0x9C)
"""WRITE (6), (10), (12), (16), WRITE AND VERIFY (10), (12), (16), WRITE SAME (10), (16),
COMPARE AND WRITE, WRITE ATOMIC (16): the commands that store host data."""

OP_OF: Final[tuple[int, ...]] = tuple(
    int(Op.READ) if code in _READS else int(Op.WRITE) if code in _WRITES else int(Op.OTHER) for code in range(256))
"""Operation code → :class:`Op` as a plain int (a tuple of ints: one index per command, no hashing
and no enum attribute look-ups, which cost more than the rest of :meth:`LuStats.done`)."""
_WRITE: Final = int(Op.WRITE)
_GOOD: Final = ScsiStatus.GOOD

LATENCY_BOUNDS: Final[tuple[float, ...]] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0)
"""Upper bounds (seconds) of the latency buckets: from a page-cache hit (tens of µs) to a peer's
time-out (seconds); the last bucket (+Inf) holds the rest."""
_BOUNDS_NS: Final = tuple(int(b * 1e9) for b in LATENCY_BOUNDS)


class LuStats:
    """Counters of one logical unit, by :class:`Op`; read at scrape time, never reset."""

    __slots__ = ("commands", "bytes", "errors", "buckets", "latency_ns")

    def __init__(self) -> None:
        self.commands = [0, 0, 0]
        """Commands ended, by :class:`Op`."""
        self.bytes = [0, 0, 0]
        """Data moved by the commands that ended GOOD: Data-In of reads, Data-Out of writes."""
        self.errors = [0, 0, 0]
        """Commands that ended with another status than GOOD (CHECK CONDITION, RESERVATION CONFLICT, ...)."""
        self.buckets = [[0] * (len(_BOUNDS_NS) + 1) for _ in Op]
        """Per :class:`Op`, commands whose latency fell in each bucket (not cumulative; the last is +Inf)."""
        self.latency_ns = [0, 0, 0]
        """Per :class:`Op`, the sum of latencies in nanoseconds."""

    def done(self, cdb: bytes, data_out: int, result: ScsiResult, started_ns: int) -> None:
        """Count a command with operation code ``cdb[0]`` and ``data_out`` bytes of Data-Out that
        ended with ``result``; ``started_ns`` is :func:`time.perf_counter_ns` when it began."""
        elapsed = perf_counter_ns() - started_ns
        op = OP_OF[cdb[0]] if cdb else 0
        self.commands[op] += 1
        if result.status is _GOOD:
            self.bytes[op] += data_out if op == _WRITE else len(result.data_in)
        else:
            self.errors[op] += 1
        self.buckets[op][bisect_left(_BOUNDS_NS, elapsed)] += 1
        self.latency_ns[op] += elapsed


now_ns = perf_counter_ns
"""The clock :meth:`LuStats.done` measures with: read it when a command starts."""

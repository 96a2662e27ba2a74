"""Starting a SCSI command: the one convention of the fast path, and the one rule for taking it.

Every SCSI command reaches the device server the same way: the iSCSI connection (sans-IO) turns
its PDUs into one :class:`~sanlab.scsi.task.ScsiTask`, and the asyncio glue asks
:meth:`~sanlab.scsi.device_server.DeviceServer.start` to run it.  The answer is an
:data:`Outcome`, one of three things:

* a :class:`~sanlab.scsi.task.ScsiResult`: the command is over (a READ served from the page cache,
  a WRITE copied into it), answered in the same turn of the event loop, with no coroutine;
* :class:`Pending`: the command is under way and waits (its transfer runs in the volume's thread
  pool); the future gives its result;
* :data:`DECLINE`: nothing was done; the command takes the general path
  (:meth:`~sanlab.scsi.device_server.DeviceServer.execute`, a coroutine through the command
  table) and is not offered to the fast path again.

:func:`starts_at_once` is the rule that lets a command of an LU be started this way at all: it
holds only when none of the checks of the general path (unit attention, reservations, the LU's
state, the task set) could change the outcome, so both paths answer alike to the bit
(tests/scsi/test_fast_path.py compares them).
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import structlog

from sanlab.scsi.sense import Asc, SenseKey, build_sense
from sanlab.scsi.task import Nexus, ScsiResult, ScsiStatus
from sanlab.storage.volume import SpaceExhausted

if TYPE_CHECKING:
    from sanlab.scsi.lu import LogicalUnit
    from sanlab.storage.volume import VolumeError

log = structlog.get_logger("sanlab.scsi")


class Decline(enum.Enum):
    """The type of :data:`DECLINE` (an enum: a singleton that type checkers can narrow)."""

    DECLINE = "decline"


DECLINE = Decline.DECLINE
"""Not started: the general path runs the command (and no other path tries it again)."""


@dataclass(slots=True)
class Pending:
    """A started command that waits: ``answer`` resolves to its result (never raises a
    VolumeError: that is already a MEDIUM ERROR result)."""

    answer: asyncio.Future[ScsiResult]


Outcome = Union[ScsiResult, Pending, Decline]
"""What starting a command gives: its result, the wait for it, or a decline."""


def starts_at_once(lu: LogicalUnit, nexus: Nexus) -> bool:
    """True when a SIMPLE READ/WRITE of ``lu`` from ``nexus`` may be started on the spot: its
    volume can finish I/O without waiting (``LogicalUnit.nowait_volume``), the task set has no
    ORDERED or HEAD OF QUEUE task it would have to wait for (SAM-5 §8.6), the LU is not
    sanitizing, has its medium and is not software write protected (SBC-3 §4.11, §5.25, SPC-4
    §7.5.8), no unit attention is pending for the nexus (SAM-5 §5.14), and no reservation is
    held (SPC-4 §5.9.1: then the conflict rule of the command's row must be consulted).  These
    are exactly the general path's checks whose answer could differ from GOOD, but for a write
    gate (``LogicalUnit.write_gate``), which the fast path asks itself, in the general path's
    order (DeviceServer.start)."""
    return (lu.nowait_volume is not None and lu.task_set.open and not lu.sanitizing and lu.medium_present
            and not lu.swp and not lu.pending_ua(nexus) and lu.reservations.free())


def medium_error(lun: int, cdb: bytes, exc: VolumeError, asc: Asc, descriptor: bool, data_out: bool,
                 logger: Any = None) -> ScsiResult:
    """The answer to a command whose volume I/O failed: MEDIUM ERROR with ``asc`` (UNRECOVERED
    READ ERROR, or WRITE ERROR for commands that store data, SBC-3 §4.15), logged (to ``logger``,
    the device server's, when given)."""
    (logger or log).error("volume_error", lun=lun, cdb=bytes(cdb[:16]).hex(), error=str(exc))
    if isinstance(exc, SpaceExhausted):
        key, asc = SenseKey.DATA_PROTECT, Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT
    else:
        key = SenseKey.MEDIUM_ERROR
    return ScsiResult(status=ScsiStatus.CHECK_CONDITION, sense=build_sense(key, asc, descriptor=descriptor),
                      data_out_direction=data_out)

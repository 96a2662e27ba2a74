"""What a SCSI command sent to a target comes back as, and what the initiator makes of it.

:class:`CommandResult` is the answer (status, Data-In, sense, residual) as the
initiator's core assembles it (:mod:`sanlab.target.initiator_connection`).
:meth:`CommandResult.check` turns a status other than GOOD into
:class:`~sanlab.target.errors.ScsiCommandError`, a PeerRefused
(:mod:`sanlab.storage.peer`): the target answered.  :class:`RetryPolicy` says
which answers are not final, because SAM-5 says the command was not performed
and may simply be sent again.
"""
from __future__ import annotations

from dataclasses import dataclass

from sanlab.scsi.sense import Sense, SenseKey
from sanlab.scsi.task import ScsiStatus
from sanlab.target.errors import ScsiCommandError


@dataclass(slots=True)
class CommandResult:
    """Status, Data-In and sense of one command."""

    status: int
    """SAM-5 status (:class:`~sanlab.scsi.task.ScsiStatus` values)."""
    data: bytes = b""
    sense: Sense | None = None
    residual: int = 0
    """Positive: underflow (less moved than expected); negative: overflow."""

    def check(self) -> "CommandResult":
        """Raise :class:`~sanlab.target.errors.ScsiCommandError` (a PeerRefused) unless GOOD."""
        if self.status != ScsiStatus.GOOD:
            raise ScsiCommandError(self.status, self.sense)
        return self


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    """Which answers ``IscsiSession.run`` tries again: those where the command was not performed.

    * BUSY and TASK SET FULL (SAM-5 §5.3): the target is alive but cannot take the command
      now; tried again after each wait of ``busy_backoff``, then refused.
    * CHECK CONDITION with UNIT ATTENTION: the command was not performed, and reporting the
      condition cleared it (SAM-5 §5.14).  A peer reports one to the array's own I_T nexus
      (after a reconnect: I_T NEXUS LOSS; a reset; a capacity change), never to the host, so it
      is logged and the command tried again, at most ``unit_attention_retries`` times.

    Everything else (other sense, RESERVATION CONFLICT, ACA ACTIVE, TASK ABORTED) is the
    target's answer and is raised as :class:`ScsiCommandError` (a PeerRefused).
    """

    busy_backoff: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    unit_attention_retries: int = 8

    def delay(self, result: CommandResult, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt`` (from 0), or None: do not retry."""
        if result.status in (ScsiStatus.BUSY, ScsiStatus.TASK_SET_FULL):
            return self.busy_backoff[attempt] if attempt < len(self.busy_backoff) else None
        if (result.status == ScsiStatus.CHECK_CONDITION and result.sense is not None
                and result.sense.key == SenseKey.UNIT_ATTENTION and attempt < self.unit_attention_retries):
            return 0.0
        return None

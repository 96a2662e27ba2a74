"""Failures of a peer: another array's LUN reached through this array's iSCSI initiator.

A command sent to a peer fails in one of two ways, and what the caller may
conclude differs (issue 13, seam 2):

* :class:`PeerRefused` — **the peer answered**, and the answer was a failure:
  CHECK CONDITION with sense, RESERVATION CONFLICT, BUSY or TASK SET FULL that
  outlasted the initiator's retries, a Reject of the command, a login refused
  with a status.  The outcome is *known*: the peer reported it.  RESERVATION
  CONFLICT, BUSY and TASK SET FULL mean the command was not performed (SAM-5
  §5.3); with CHECK CONDITION the sense says what happened (a MEDIUM ERROR on a
  write may have written part of it, as on a local disk), and TASK ABORTED may
  leave a write partly done.  A synchronous pair fails the host's write.
* :class:`PeerUnreachable` — **no answer**: the command timed out, the
  connection was lost while it was outstanding, the session could not be
  re-established in time.  The outcome is *unknown*: the peer may or may not
  have executed the command, wholly or partly.  A synchronous pair suspends
  and records the range in its bitmap (the peer's copy must be assumed to
  differ), and lets the host's write complete.

The initiator (:mod:`sanlab.target.initiator`) raises subclasses of these
(``ScsiCommandError`` is a :class:`PeerRefused`, ``CommandTimeout`` a
:class:`PeerUnreachable`, ...), and volumes whose medium is on a peer
(:mod:`sanlab.storage.external`, next the pair volumes) raise these two
classes themselves, naming the volume.  Both are :class:`VolumeError`: the
device server answers the host as for any failed medium (MEDIUM ERROR with
UNRECOVERED READ ERROR or WRITE ERROR).  The peer's own sense is *not*
forwarded to the host: it describes the array's I_T nexus with the peer and the
CDB the array built (a UNIT ATTENTION of that nexus, an INVALID FIELD IN CDB
pointing into a READ(16) the host never sent), not the host's command.  It is
kept here for the caller's decision and for the log.

``storage`` imports only the vocabulary modules of ``scsi`` (status codes and
decoded sense, which import nothing of sanlab), so there is no import cycle.
"""
from __future__ import annotations

from sanlab.scsi.sense import Sense
from sanlab.scsi.task import ScsiStatus
from sanlab.storage.volume import VolumeError


class PeerFailure(VolumeError):
    """A command to a peer did not succeed; always one of :class:`PeerRefused` or :class:`PeerUnreachable`."""


class PeerRefused(PeerFailure):
    """The peer answered with a failure: the outcome is known (see the module docstring)."""

    def __init__(self, message: str, *, status: int | None = None, sense: Sense | None = None,
                 login_status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """SAM-5 status the peer returned (:class:`~sanlab.scsi.task.ScsiStatus` values); None when the
        refusal was not a SCSI status (a Reject, a refused login)."""
        self.sense = sense
        """The peer's sense data, decoded, with CHECK CONDITION (None if it sent none or unreadable sense)."""
        self.login_status = login_status
        """Login Response Status-Class << 8 | Status-Detail (RFC 7143 §11.13.5) of a refused login."""

    @property
    def reservation_conflict(self) -> bool:
        """The peer's LUN is reserved by another I_T nexus (SPC-4 §5.9)."""
        return self.status == ScsiStatus.RESERVATION_CONFLICT


class PeerUnreachable(PeerFailure):
    """The peer did not answer: the outcome is unknown (see the module docstring)."""


def with_context(exc: PeerFailure, context: str) -> PeerFailure:
    """The same kind of failure, with the same facts, its message prefixed by ``context``.

    Lets a volume name itself in the failure while its callers still see only the two
    classes of this module (not the initiator's subclasses).
    """
    message = f"{context}: {exc}"
    if isinstance(exc, PeerRefused):
        return PeerRefused(message, status=exc.status, sense=exc.sense, login_status=exc.login_status)
    return PeerUnreachable(message)

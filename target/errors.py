"""Errors that carry their iSCSI answer (ARCHITECTURE.md convention 4)."""
from __future__ import annotations

from enum import IntEnum

from sanlab.scsi.sense import Sense
from sanlab.scsi.task import ScsiStatus
from sanlab.storage.peer import PeerRefused, PeerUnreachable


class RejectReason(IntEnum):
    """Reject PDU reason codes, RFC 7143 §11.17.1."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    DEPRECATED = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


class LoginStatus(IntEnum):
    """Login Response Status-Class/Status-Detail as one 16-bit value, RFC 7143 §11.13.5."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


class ProtocolError(Exception):
    """A PDU that breaks RFC 7143.

    ``reject`` names the Reject reason to send; ``None`` means the connection
    must be dropped because the stream can no longer be trusted (e.g. a header
    digest error, RFC 7143 §7.8, or a malformed BHS length).
    """

    def __init__(self, message: str, reject: RejectReason | None = RejectReason.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.reject = reject


class LoginError(Exception):
    """A login that fails with the given status (sent in the final Login Response)."""

    def __init__(self, status: LoginStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- the initiator's errors ------------------------------------------------------------------------
# Each is either a PeerRefused (the target answered) or a PeerUnreachable (no answer, outcome
# unknown), so that callers reaching peers (external volumes, pairs) can tell which happened
# (sanlab.storage.peer).  IscsiError is their common base for code that only talks iSCSI.


class IscsiError(Exception):
    """Base of the initiator's errors; every concrete one is also a PeerRefused or a PeerUnreachable."""


class LoginFailed(IscsiError, PeerRefused):
    """The target refused the login (or answered it so that we cannot go on); ``login_status`` is
    the RFC 7143 §11.13.5 Status-Class << 8 | Status-Detail (``status``, the SCSI status, is None)."""

    def __init__(self, status: int, message: str) -> None:
        PeerRefused.__init__(self, f"login failed with status 0x{status:04x}: {message}", login_status=status)


class CommandRejected(IscsiError, PeerRefused):
    """The target answered a request with a Reject PDU (RFC 7143 §11.17): it was not carried out."""

    def __init__(self, reason: int) -> None:
        name = RejectReason(reason).name if reason in RejectReason._value2member_map_ else "unknown"
        PeerRefused.__init__(self, f"target rejected the PDU (reason 0x{reason:02x} {name})")
        self.reason = reason


class ScsiCommandError(IscsiError, PeerRefused):
    """A command ended with a status other than GOOD (the target's answer, with its sense)."""

    def __init__(self, status: int, sense: Sense | None, message: str = "") -> None:
        name = ScsiStatus(status).name if status in ScsiStatus._value2member_map_ else "unknown"
        detail = f" sense {sense.key:x}/{sense.asc:02x}/{sense.ascq:02x}" if sense else ""
        PeerRefused.__init__(self, f"{message}{': ' if message else ''}SCSI status 0x{status:02x} {name}{detail}",
                             status=status, sense=sense)


class ConnectionLost(IscsiError, PeerUnreachable):
    """The connection ended (or could not be made) while the request was outstanding; its outcome is unknown."""


class CommandTimeout(IscsiError, PeerUnreachable):
    """The command did not complete in time and was aborted; its outcome is unknown."""

"""The initiator's errors are classified: each is a PeerRefused or a PeerUnreachable, never both, never neither."""
from __future__ import annotations

import pytest

from sanlab.scsi.sense import Sense
from sanlab.scsi.task import ScsiStatus
from sanlab.storage.peer import PeerFailure, PeerRefused, PeerUnreachable
from sanlab.storage.volume import VolumeError
from sanlab.target import errors
from sanlab.target.errors import (
    CommandRejected, CommandTimeout, ConnectionLost, IscsiError, LoginFailed, LoginStatus, RejectReason,
    ScsiCommandError,
)


def concrete_errors() -> list[type[IscsiError]]:
    return [c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, IscsiError) and c is not IscsiError]


def test_every_initiator_error_has_exactly_one_kind() -> None:
    found = concrete_errors()
    assert set(found) == {LoginFailed, CommandRejected, ScsiCommandError, ConnectionLost, CommandTimeout}
    for cls in found:
        assert issubclass(cls, PeerRefused) != issubclass(cls, PeerUnreachable), cls
        # A volume built on the initiator may let them through to the device server (MEDIUM ERROR).
        assert issubclass(cls, PeerFailure) and issubclass(cls, VolumeError), cls


@pytest.mark.parametrize("exc, refused", [
    (ScsiCommandError(ScsiStatus.RESERVATION_CONFLICT, None), True),
    (ScsiCommandError(ScsiStatus.CHECK_CONDITION, Sense(0x7, 0x27, 0x00)), True),
    (ScsiCommandError(ScsiStatus.BUSY, None), True),
    (CommandRejected(RejectReason.INVALID_PDU_FIELD), True),
    (LoginFailed(LoginStatus.AUTHORIZATION_FAILURE, "not in the ACL"), True),
    (ConnectionLost("target closed the connection"), False),
    (CommandTimeout("no answer"), False),
])
def test_classification(exc: IscsiError, refused: bool) -> None:
    assert isinstance(exc, PeerRefused) is refused
    assert isinstance(exc, PeerUnreachable) is not refused


def test_refusals_carry_the_answer() -> None:
    sense = Sense(0x7, 0x27, 0x00)
    exc = ScsiCommandError(ScsiStatus.CHECK_CONDITION, sense)
    assert (exc.status, exc.sense, exc.login_status) == (2, sense, None)
    assert "CHECK_CONDITION" in str(exc) and "7/27/00" in str(exc)
    conflict = ScsiCommandError(ScsiStatus.RESERVATION_CONFLICT, None)
    assert conflict.reservation_conflict and not exc.reservation_conflict
    login = LoginFailed(LoginStatus.TARGET_REMOVED, "gone")
    assert (login.status, login.login_status) == (None, 0x0204)
    rejected = CommandRejected(RejectReason.WAITING_FOR_LOGOUT)
    assert rejected.reason == 0x0C and "WAITING_FOR_LOGOUT" in str(rejected)

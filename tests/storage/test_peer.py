"""Peer failures keep their kind and their facts when a volume names itself in them."""
from __future__ import annotations

from sanlab.scsi.sense import Sense
from sanlab.scsi.task import ScsiStatus
from sanlab.storage.peer import PeerRefused, PeerUnreachable, with_context


def test_with_context_keeps_the_kind_and_the_answer() -> None:
    sense = Sense(0x3, 0x11, 0x00)
    refused = with_context(PeerRefused("medium", status=ScsiStatus.CHECK_CONDITION, sense=sense), "external volume b0")
    assert type(refused) is PeerRefused and str(refused) == "external volume b0: medium"
    assert (refused.status, refused.sense, refused.login_status) == (ScsiStatus.CHECK_CONDITION, sense, None)
    login = with_context(PeerRefused("login", login_status=0x0201), "v")
    assert isinstance(login, PeerRefused) and login.login_status == 0x0201
    lost = with_context(PeerUnreachable("connection reset"), "external volume b0")
    assert type(lost) is PeerUnreachable and str(lost) == "external volume b0: connection reset"

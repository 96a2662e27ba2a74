"""A command's answer: which statuses are the target's refusal, which are tried again (SAM-5)."""
from __future__ import annotations

import pytest

from sanlab.scsi.sense import Asc, Sense, SenseKey
from sanlab.scsi.task import ScsiStatus
from sanlab.storage.peer import PeerRefused
from sanlab.target.errors import ScsiCommandError
from sanlab.target.outcome import CommandResult, RetryPolicy

UA = Sense(SenseKey.UNIT_ATTENTION, 0x29, 0x07)  # I_T NEXUS LOSS OCCURRED
WRITE_PROTECTED = Sense(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED >> 8, 0)


def test_good_passes_anything_else_is_a_refusal() -> None:
    ok = CommandResult(ScsiStatus.GOOD, b"data")
    assert ok.check() is ok
    with pytest.raises(ScsiCommandError) as exc:
        CommandResult(ScsiStatus.CHECK_CONDITION, sense=WRITE_PROTECTED).check()
    assert isinstance(exc.value, PeerRefused) and exc.value.sense == WRITE_PROTECTED


@pytest.mark.parametrize("result, delays", [
    # BUSY / TASK SET FULL: the target is there but cannot take it now; backoff, then refused.
    (CommandResult(ScsiStatus.BUSY), [0.01, 0.05, None]),
    (CommandResult(ScsiStatus.TASK_SET_FULL), [0.01, 0.05, None]),
    # A UNIT ATTENTION: the command was not performed; at once, a bounded number of times.
    (CommandResult(ScsiStatus.CHECK_CONDITION, sense=UA), [0.0, 0.0, 0.0, None]),
    # The target's answer, final.
    (CommandResult(ScsiStatus.CHECK_CONDITION, sense=WRITE_PROTECTED), [None]),
    (CommandResult(ScsiStatus.CHECK_CONDITION), [None]),
    (CommandResult(ScsiStatus.RESERVATION_CONFLICT), [None]),
    (CommandResult(ScsiStatus.TASK_ABORTED), [None]),
])
def test_retry_policy(result: CommandResult, delays: list[float | None]) -> None:
    policy = RetryPolicy(busy_backoff=(0.01, 0.05), unit_attention_retries=3)
    assert [policy.delay(result, attempt) for attempt in range(len(delays))] == delays

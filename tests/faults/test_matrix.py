"""The fault matrix (issue 19): every (operation, fault) of tests/faults/matrix.py at moments chosen by
seed. The default run takes a fixed sample; the slow job runs the whole table at ``MOMENTS_PER_CASE``
seeds each. ``--fault-seed N`` or ``SANLAB_FAULT_SEED=N`` replays one seed on the selected cases."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable

import pytest

from sanlab.scsi.sense import Sense
from sanlab.target.errors import ConnectionLost, ScsiCommandError
from tests.faults.conftest import CASE_KEY, SEED_KEY
from tests.faults.matrix import MATRIX, run_case
from tests.faults.stream import AREA_TRACKS, BS, CHUNK, Stream, not_executed, payload
from tests.integration.test_sync_pairs import TRACK

pytestmark = pytest.mark.integration

SAMPLE = [("sync-pair", "kill-p", 7), ("async-pair", "kill-s", 3), ("sync-pair", "full-fs-p", 5),
          ("async-pair", "full-fs-p", 5), ("sync-takeover", "kill-p", 7), ("async-create", "kill-s", 2),
          ("async-pair", "journal-full", 1)]
"""The default run's cases, at fixed seeds."""
MOMENTS_PER_CASE = 3
_BASE = random.randrange(1 << 30)


def chosen_seed(request: pytest.FixtureRequest, default: int) -> int:
    given = request.config.getoption("--fault-seed", default=None)
    if given is None and os.environ.get("SANLAB_FAULT_SEED"):
        given = int(os.environ["SANLAB_FAULT_SEED"])
    return default if given is None else int(given)


def case(request: pytest.FixtureRequest, tmp_path: Path, op: str, fault: str, seed: int,
         run: Callable[[Path, str, str, int], object] = run_case) -> None:
    """Case (op, fault) by ``run`` at ``seed`` (or the one given to replay), the seed and case in the
    report (conftest.py's user properties); test_local_matrix.py passes its own ``run``."""
    seed = chosen_seed(request, seed)
    request.node.user_properties += [(CASE_KEY, f"{op} x {fault}"), (SEED_KEY, seed)]
    run(tmp_path, op, fault, seed)


@pytest.mark.parametrize("op,fault,seed", SAMPLE, ids=[f"{o}-{f}" for o, f, _ in SAMPLE])
def test_sample(request: pytest.FixtureRequest, tmp_path: Path, op: str, fault: str, seed: int) -> None:
    case(request, tmp_path, op, fault, seed)


@pytest.mark.slow
@pytest.mark.parametrize("moment", range(MOMENTS_PER_CASE))
@pytest.mark.parametrize("op,fault", MATRIX, ids=[f"{o}-{f}" for o, f in MATRIX])
def test_matrix(request: pytest.FixtureRequest, tmp_path: Path, op: str, fault: str, moment: int) -> None:
    case(request, tmp_path, op, fault, _BASE + moment)


def stream_of(lbas: list[int], acked: int) -> Stream:
    """A stream that wrote ``lbas`` (write i at lbas[i - 1]), ``acked`` of them answered, without a host."""
    s = Stream.__new__(Stream)
    s.lbas, s.acked = list(lbas), acked
    s.unsure, s.refused = set(), set()
    return s


def image(s: Stream, writes: list[int]) -> bytes:
    img = bytearray(2 * AREA_TRACKS * TRACK)
    for i in writes:
        lba = s.lbas[i - 1]
        img[lba * BS:lba * BS + CHUNK] = payload(i, lba)
    return bytes(img)


def test_the_invariants_catch_a_lost_write_a_gap_and_a_torn_block() -> None:
    """The matrix's checks fail when they should: the cases passing means something."""
    s = stream_of([0, 8, 16, 8, 24], acked=4)  # write 5 in flight
    s.check_durable(image(s, [1, 2, 3, 4]), "all acked")
    s.check_durable(image(s, [1, 2, 3, 4, 5]), "the in-flight write landed too")
    with pytest.raises(AssertionError, match="acknowledged write 4 at block 8 lost"):
        s.check_durable(image(s, [1, 2, 3]), "write 4 lost")
    assert s.check_prefix(image(s, [1, 2, 3]), "a prefix") == 3
    assert s.check_prefix(image(s, []), "nothing yet") == 0
    with pytest.raises(AssertionError, match="not a prefix of the stream at write 3"):
        s.check_prefix(image(s, [1, 3]), "write 2 skipped")  # 3 applied before 2: out of order
    torn = bytearray(image(s, [1]))
    torn[100] ^= 1
    with pytest.raises(AssertionError, match="block 0: holds"):
        s.check_prefix(bytes(torn), "torn")
    foreign = bytearray(image(s, []))
    foreign[8 * BS + 20] = 1
    with pytest.raises(AssertionError, match="block 8: torn or foreign"):
        s.check_durable(bytes(foreign), "foreign")


def test_a_moved_stream_keeps_what_the_host_learnt_of_each_write() -> None:
    """A host moving arrays: a write refused (never executed) must not show anywhere, one left without
    an answer may land, and either way the later acknowledged writes must win."""
    def ended(lbas: list[int], acked: int, error: BaseException) -> Stream:
        s = Stream(None, random.Random(0), -1, lambda: None)  # type: ignore[arg-type]  # never started
        s.lbas, s.acked, s.error = list(lbas), acked, error
        return s
    protected = ScsiCommandError(2, Sense(0x7, 0x27, 0x00))
    unknown = ConnectionLost("the connection ended")
    assert not_executed(protected) and not not_executed(unknown)
    assert not not_executed(ScsiCommandError(2, Sense(0x2, 0x04, 0x03)))  # fence data: the P-VOL may hold it
    s = ended([0, 8], 1, unknown).moved(None, "B")  # type: ignore[arg-type]  # never started
    assert (s.acked, s.unsure, s.refused) == (2, {2}, set())
    s.lbas += [8, 16]
    s.acked = 4  # writes 3 and 4 acknowledged at the other array
    s.check_durable(image(s, [1, 3, 4]), "write 2 never landed")
    s.check_durable(image(s, [1, 2, 3, 4]), "write 2 landed, then 3 over it")
    with pytest.raises(AssertionError, match="acknowledged write 3 at block 8 lost"):
        s.check_durable(image(s, [1, 2, 4]), "the unsure write 2 over the acknowledged 3")
    r = ended([0, 8], 1, protected).moved(None, "B")  # type: ignore[arg-type]  # never started
    assert (r.unsure, r.refused) == (set(), {2})
    r.lbas += [16]
    r.acked = 3
    r.check_durable(image(r, [1, 3]), "the refused write nowhere")
    with pytest.raises(AssertionError, match="it was refused"):
        r.check_durable(image(r, [1, 2, 3]), "the refused write executed")

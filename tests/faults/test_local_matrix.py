"""The local-copy fault matrix (issue 19): every (copy operation, fault) of tests/faults/local_matrix.py
at moments chosen by seed.  The default run takes a fixed sample; the slow job runs the whole table at
``MOMENTS_PER_CASE`` seeds each.  ``--fault-seed N`` or ``SANLAB_FAULT_SEED=N`` replays one seed on the
selected cases (test_matrix.py's rules)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.local_matrix import AREA, MATRIX, Case, Division, check_outside, check_suffix, run_case
from tests.faults.stream import BS, CHUNK, payload
from tests.integration.test_sync_pairs import TRACK
from tests.faults.test_matrix import case, stream_of

pytestmark = pytest.mark.integration

SAMPLE = [("copy-division", "kill", 11), ("copy-restore", "kill", 4), ("copy-generation", "full-fs-copy", 2)]
"""The default run's cases, at fixed seeds."""
MOMENTS_PER_CASE = 2
_BASE = random.randrange(1 << 30)


@pytest.mark.parametrize("op,fault,seed", SAMPLE, ids=[f"{o}-{f}" for o, f, _ in SAMPLE])
def test_local_sample(request: pytest.FixtureRequest, tmp_path: Path, op: str, fault: str, seed: int) -> None:
    case(request, tmp_path, op, fault, seed, run_case)


@pytest.mark.slow
@pytest.mark.parametrize("moment", range(MOMENTS_PER_CASE))
@pytest.mark.parametrize("op,fault", MATRIX, ids=[f"{o}-{f}" for o, f in MATRIX])
def test_local_matrix(request: pytest.FixtureRequest, tmp_path: Path, op: str, fault: str, moment: int) -> None:
    case(request, tmp_path, op, fault, _BASE + moment, run_case)


def area_image(lbas: list[int], writes: list[int]) -> bytes:
    img = bytearray(AREA * TRACK)
    for i in writes:
        lba = lbas[i - 1]
        img[lba * BS:lba * BS + CHUNK] = payload(i, lba)
    return bytes(img)


def test_the_local_checks_catch_a_wrong_cut_a_moved_image_and_a_write_from_before_a_restore() -> None:
    """The local matrix's own checks fail when they should: the cases passing means something."""
    s = stream_of([0, 8, 16, 8, 24], acked=4)  # write 5 in flight
    s.area_tracks = AREA
    # Restore: the copy's image (zeros here) with the writes after one point of the request on top.
    assert check_suffix(s, area_image(s.lbas, [3, 4]), 1, 3, "writes 3 and 4 after the restore") == 1
    assert check_suffix(s, area_image(s.lbas, [3, 4, 5]), 1, 3, "the in-flight write landed") == 1
    with pytest.raises(AssertionError, match="no single point of the stream"):
        check_suffix(s, area_image(s.lbas, [1, 2, 3, 4]), 2, 3, "write 1 (before the restore) survived it")
    with pytest.raises(AssertionError, match="no single point of the stream"):
        check_suffix(s, area_image(s.lbas, [3]), 1, 3, "write 4, acked after the restore, lost")
    with pytest.raises(AssertionError, match="block 8 holds write 2, its last acknowledged write is 4"):
        check_suffix(s, area_image(s.lbas, [2, 3]), 1, 3, "an older write where a newer was acked")
    # Division: the copy is the stream cut between the split's request and answer, the same cut each time.
    c = Case(None, s, b"", before=2, after=3)  # type: ignore[arg-type]
    op = Division()
    assert op.view(c, area_image(s.lbas, [1, 2]), "the copy") == "the copy: cut at 2 (2..3)"
    with pytest.raises(AssertionError, match="the copy's image moved from write 2 to 3"):
        op.view(c, area_image(s.lbas, [1, 2, 3]), "a write after the cut reached the copy")
    c.cut = None
    with pytest.raises(AssertionError, match="not between 2 and 3"):
        op.view(c, area_image(s.lbas, [1]), "write 2, acked before the split, missing")
    # Past the area: the tracks that differ are named.
    with pytest.raises(AssertionError, match=r"1 tracks past the stream's area differ .*\[65\]"):
        check_outside(bytes(AREA * TRACK) + bytes(TRACK) + b"x" * TRACK, bytes(2 * TRACK), "one track")

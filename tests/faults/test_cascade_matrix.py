"""The fault matrix's cascade cases (issue 19, tests/faults/cascade_matrix.py): A → B sync, B → C
async, each fault at moments chosen by seed.  The default run takes one case at a fixed seed; the slow
job runs every fault at ``MOMENTS_PER_CASE`` seeds.  ``--fault-seed N`` or ``SANLAB_FAULT_SEED=N``
replays one seed."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.cascade_matrix import FAULTS, run_case
from tests.faults.conftest import CASE_KEY, SEED_KEY
from tests.faults.test_matrix import chosen_seed

pytestmark = pytest.mark.integration

SAMPLE = [("kill-b", 11)]
"""The default run's case: the relay itself killed mid-stream."""
MOMENTS_PER_CASE = 2
_BASE = random.randrange(1 << 30)


def case(request: pytest.FixtureRequest, tmp_path: Path, fault: str, seed: int) -> None:
    seed = chosen_seed(request, seed)
    request.node.user_properties += [(CASE_KEY, f"cascade x {fault}"), (SEED_KEY, seed)]
    run_case(tmp_path, fault, seed)


@pytest.mark.parametrize("fault,seed", SAMPLE, ids=[f for f, _ in SAMPLE])
def test_cascade_sample(request: pytest.FixtureRequest, tmp_path: Path, fault: str, seed: int) -> None:
    case(request, tmp_path, fault, seed)


@pytest.mark.slow
@pytest.mark.parametrize("moment", range(MOMENTS_PER_CASE))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_cascade_matrix(request: pytest.FixtureRequest, tmp_path: Path, fault: str, moment: int) -> None:
    case(request, tmp_path, fault, _BASE + moment)

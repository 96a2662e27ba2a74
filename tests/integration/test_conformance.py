"""libiscsi's conformance suite (`iscsi-test-cu`) against `sanlab serve`.

CUnit counts a skipped test as passed, so each run also counts the tests that
printed "[SKIPPED]" and reports ran / failed / skipped / genuinely passed.
"""
from __future__ import annotations

import re
from typing import Callable

import pytest

from tests.conftest import SanlabProcess, need, run

pytestmark = pytest.mark.integration

CONFIG = """
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
[[targets.luns]]
lun = 0
size = "128MiB"
"""

# The suites the target core must pass (issue: iSCSI target core, deliverable 5).
CORE_SUITES = [
    "iSCSI.iSCSIcmdsn",
    "iSCSI.iSCSIdatasn",
    "iSCSI.iSCSIResiduals",
    "iSCSI.iSCSITMF",
    "SCSI.Inquiry",
    "SCSI.ReadCapacity10",
    "SCSI.ReadCapacity16",
    "SCSI.Read10",
    "SCSI.Read16",
    "SCSI.Write10",
    "SCSI.Write16",
    "SCSI.TestUnitReady",
]


def run_suite(sp: SanlabProcess, suite: str) -> tuple[int, int, int, str]:
    """(ran, failed, skipped, output) of one iscsi-test-cu run."""
    cp = run([need("iscsi-test-cu"), "-d", "-n", "-t", suite, sp.url()], timeout=600, check=False)
    out = cp.stdout + cp.stderr
    m = re.search(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.MULTILINE)
    assert m, f"no CUnit summary for {suite}:\n{out[-3000:]}"
    ran, failed = int(m.group(2)), int(m.group(4))
    skipped = len(re.findall(r"\[SKIPPED\]", out))
    return ran, failed, skipped, out


@pytest.mark.parametrize("suite", CORE_SUITES)
def test_core_suite(sanlab_factory: Callable[..., SanlabProcess], suite: str) -> None:
    sp = sanlab_factory(CONFIG)
    ran, failed, skipped, out = run_suite(sp, suite)
    print(f"{suite}: ran {ran}, failed {failed}, skipped {skipped}, genuinely passed {ran - failed - skipped}")
    assert ran > 0, out[-3000:]
    assert failed == 0, out[-6000:]
    assert skipped == 0, out[-6000:]

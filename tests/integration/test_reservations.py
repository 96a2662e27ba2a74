"""Reservations between two real initiators against `sanlab serve` (SPC-2 RESERVE, SPC-4 PRs).

libiscsi's PR and RESERVE(6) suites run with the same URL twice, so the suite's second initiator
(``iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2``) is a second I_T nexus; the project's own
initiator checks what the suites do not: the conflict a write gets, logout lifting an SPC-2
reservation, and APTPL surviving a restart of the array.
"""
from __future__ import annotations

import re
import signal
import struct
from pathlib import Path
from typing import Callable

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import TARGET, SanlabProcess, need, run, start_sanlab
from tests.integration.test_conformance import CONFIG, skipped_tests

pytestmark = pytest.mark.integration

RESERVATION_CONFLICT = 0x18
HOST_A = "iqn.1994-05.com.example:host-a"
HOST_B = "iqn.1994-05.com.example:host-b"

# MultipathIO first: its CompareAndWrite test reads LBA 256 as zeros without writing it first.
PR_SUITES = [
    "SCSI.MultipathIO",
    "SCSI.PrinReadKeys",
    "SCSI.PrinServiceactionRange",
    "SCSI.PrinReportCapabilities",
    "SCSI.ProutRegister",
    "SCSI.ProutReserve",
    "SCSI.ProutClear",
    "SCSI.ProutPreempt",
    "SCSI.Reserve6",
]


def run_two_paths(sp: SanlabProcess, suite: str) -> tuple[int, int, list[str], str]:
    """(ran, failed, skipped, output) of one iscsi-test-cu run with the LUN's URL given twice."""
    cp = run([need("iscsi-test-cu"), "-d", "-v", "-t", suite, sp.url(), sp.url()], timeout=600, check=False)
    out = cp.stdout + cp.stderr
    m = re.search(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.MULTILINE)
    assert m, f"no CUnit summary for {suite}:\n{out[-3000:]}"
    return int(m.group(2)), int(m.group(4)), skipped_tests(out), out


def test_libiscsi_reservation_suites(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    report = {}
    for suite in PR_SUITES:
        ran, failed, skipped, out = run_two_paths(sp, suite)
        report[suite] = (ran, failed, skipped)
        assert ran > 0 and failed == 0 and not skipped, f"{suite}: {report[suite]}\n{out[-4000:]}"
    print(report)


def _session(sp: SanlabProcess, name: str, isid: int = 0x023D00000001) -> IscsiSession:
    """A session from a fixed initiator port (the registration names the ISID; a random one would be
    another I_T nexus after the restart)."""
    return IscsiSession(sp.host, sp.port, TARGET, InitiatorConfig(initiator_name=name, isid=isid))


async def test_reserve6_between_two_initiators(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    block = bytes(range(256)) * 2
    async with _session(sp, HOST_A) as a, _session(sp, HOST_B) as b:
        await a.clear_unit_attentions(0)
        await b.clear_unit_attentions(0)
        (await a.reserve6(0)).check()
        await a.write16(0, 8, block, 512)
        with pytest.raises(Exception) as exc:
            await b.write16(0, 8, block, 512)
        assert getattr(exc.value, "status", None) == RESERVATION_CONFLICT
        assert (await b.reserve6(0)).status == RESERVATION_CONFLICT
        (await b.release6(0)).check()  # a non-holder's RELEASE: GOOD, no effect
        assert (await b.test_unit_ready(0)).status == RESERVATION_CONFLICT
        (await a.release6(0)).check()
        await b.write16(0, 8, block, 512)
        (await a.reserve6(0)).check()
        assert (await b.test_unit_ready(0)).status == RESERVATION_CONFLICT
        await a.logout()  # I_T nexus loss ends A's reservation
        (await b.test_unit_ready(0)).check()
        await b.write16(0, 8, block, 512)
        assert await b.read16(0, 8, 1, 512) == block


async def test_aptpl_survives_restart(tmp_path: Path) -> None:
    port_dir = tmp_path / "array"
    port_dir.mkdir()
    sp = start_sanlab(port_dir, CONFIG)
    try:
        async with _session(sp, HOST_A) as a:
            await a.clear_unit_attentions(0)
            (await a.persistent_reserve_out(0, 0x00, 0, key=0, sa_key=0xAAAA, flags=0x01)).check()  # APTPL
            (await a.persistent_reserve_out(0, 0x01, 0x1, key=0xAAAA)).check()  # Write Exclusive
    finally:
        assert sp.stop() == 0
    sp = start_sanlab(port_dir, CONFIG, port=sp.port)
    try:
        async with _session(sp, HOST_B) as b, _session(sp, HOST_A) as a:
            await b.clear_unit_attentions(0)
            await a.clear_unit_attentions(0)
            r = (await b.persistent_reserve_in(0, 0x01)).check()
            gen, length = struct.unpack_from(">II", r.data)
            assert length == 16
            key, scope_type = struct.unpack_from(">Q4xxBxx", r.data, 8)
            assert (key, scope_type) == (0xAAAA, 0x01)
            assert (await b.execute(0, bytes([0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0]), data_out=bytes(512))).status \
                == RESERVATION_CONFLICT
            await b.read16(0, 1, 1, 512)  # Write Exclusive: reads stay shared
            (await a.persistent_reserve_out(0, 0x03, 0, key=0xAAAA)).check()  # CLEAR
            await b.write16(0, 1, bytes(512), 512)
    finally:
        assert sp.stop(signal.SIGTERM) == 0

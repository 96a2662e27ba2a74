"""Fuzzing a real `sanlab serve` with random CDBs through our initiator (sanlab.target.initiator).

Invariant (SAM-5, SPC-4 §4.5): every command gets a status; a CHECK CONDITION carries a sense key
the device server documents for bad or refused input (ILLEGAL REQUEST, UNIT ATTENTION, NOT READY,
DATA PROTECT, MISCOMPARE, COPY ABORTED, ABORTED COMMAND, NO SENSE) — never HARDWARE ERROR, which
is what an exception inside the device server becomes (server.py ``_internal_failure``); the session
is never dropped, and the log holds no crash.  CDBs are drawn opcode first (the group code gives the
length, SAM-5 §5.2), then fields either fully random or small (mostly zero bytes), so both the
field checks and the handlers behind them are reached.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.scsi.sense import SenseKey
from sanlab.scsi.task import ScsiStatus
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import TARGET, SanlabProcess
from tests.faults.test_pdu_fuzz import CONFIG, RSS_GROWTH, Watch

pytestmark = pytest.mark.integration

DOCUMENTED_KEYS = {SenseKey.NO_SENSE, SenseKey.NOT_READY, SenseKey.ILLEGAL_REQUEST, SenseKey.UNIT_ATTENTION,
                   SenseKey.DATA_PROTECT, SenseKey.COPY_ABORTED, SenseKey.ABORTED_COMMAND, SenseKey.MISCOMPARE}
STATUSES = {ScsiStatus.GOOD, ScsiStatus.CHECK_CONDITION, ScsiStatus.CONDITION_MET, ScsiStatus.BUSY,
            ScsiStatus.RESERVATION_CONFLICT, ScsiStatus.TASK_SET_FULL}
# Opcodes the array implements (scsi/commands.py) weigh more than the rest of the space.
KNOWN = [0x00, 0x03, 0x04, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x1D, 0x1E, 0x25, 0x28, 0x2A, 0x2B, 0x2E, 0x2F,
         0x34, 0x35, 0x3B, 0x3C, 0x41, 0x42, 0x48, 0x4D, 0x55, 0x56, 0x57, 0x5A, 0x5E, 0x5F, 0x7F, 0x83, 0x84,
         0x88, 0x89, 0x8A, 0x8E, 0x8F, 0x91, 0x93, 0x9C, 0x9E, 0xA0, 0xA3, 0xA4, 0xA8, 0xAA, 0xAE, 0xAF]
_GROUP_LEN = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}


@st.composite
def cdbs(draw: st.DrawFn) -> bytes:
    op = draw(st.one_of(st.sampled_from(KNOWN), st.integers(0, 255)))
    n = _GROUP_LEN.get(op >> 5) or draw(st.sampled_from([10, 16, 32]))
    if draw(st.booleans()):
        rest = bytearray(draw(st.binary(min_size=n - 1, max_size=n - 1)))
    else:
        rest = bytearray(n - 1)
        for _ in range(draw(st.integers(0, 4))):
            rest[draw(st.integers(0, n - 2))] = draw(st.sampled_from([1, 2, 8, 0x10, 0x80, 0xFF]))
    return bytes([op]) + bytes(rest)


COMMANDS = st.lists(st.tuples(cdbs(), st.binary(max_size=1536), st.sampled_from([0, 18, 512, 4096])),
                    min_size=1, max_size=6)


async def run_commands(sp: SanlabProcess, commands: list[tuple[bytes, bytes, int]]) -> None:
    cfg = InitiatorConfig(isid=0x800000AB0000, reconnect=False, command_timeout=20.0)
    async with IscsiSession(sp.host, sp.port, TARGET, cfg) as s:
        for cdb, data_out, read_length in commands:
            r = await s.execute(0, cdb, data_out, read_length)
            assert r.status in STATUSES, (cdb.hex(), r)
            if r.status == ScsiStatus.CHECK_CONDITION:
                assert r.sense is not None and r.sense.key in DOCUMENTED_KEYS, (cdb.hex(), r.sense)


@pytest.fixture
def server(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    return sanlab_factory(CONFIG)


CDB_FUZZ = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_random_cdbs_get_a_documented_answer(server: SanlabProcess) -> None:
    watch = Watch(server)

    @CDB_FUZZ
    @given(commands=COMMANDS)
    def one(commands: list[tuple[bytes, bytes, int]]) -> None:
        asyncio.run(run_commands(server, commands))
        watch.check()
    one()


@pytest.mark.slow
def test_random_cdbs_explore(server: SanlabProcess) -> None:
    """The long run, then every example again: the server's RSS must not grow on the second pass
    (test_pdu_fuzz.test_pdu_fuzz_explore says why the first may)."""
    watch = Watch(server)
    drawn: list[list[tuple[bytes, bytes, int]]] = []

    @settings(CDB_FUZZ, max_examples=1500)
    @given(commands=COMMANDS)
    def one(commands: list[tuple[bytes, bytes, int]]) -> None:
        drawn.append(commands)
        asyncio.run(run_commands(server, commands))
        watch.check()
    one()
    first = server.rss()
    for commands in drawn:
        asyncio.run(run_commands(server, commands))
        watch.check()
    second = server.rss()
    print(f"\nCDB fuzz: {len(drawn)} examples twice; server RSS after the first pass {first >> 20} MiB, "
          f"after the second {second >> 20} MiB")
    assert second - first < RSS_GROWTH, f"RSS grew {(second - first) >> 20} MiB on the same examples again"

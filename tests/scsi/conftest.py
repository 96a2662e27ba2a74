"""Fixtures for the device server tests: real FileVolumes in tmp_path, byte CDBs."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import ScsiStatus, ScsiTask
from tests.scsi.helpers import NX, TARGET, Run, make_lu, runner


@pytest.fixture
def lu(tmp_path: Path) -> LogicalUnit:
    return make_lu(tmp_path)


@pytest.fixture
async def ds(lu: LogicalUnit) -> AsyncIterator[DeviceServer]:
    """A device server with LU 0; NX's power-on unit attention already consumed."""
    server = DeviceServer(TARGET, {0: lu})
    server.nexus_added(NX)
    res = await server.execute(ScsiTask(NX, 0, bytes(6)))
    assert res.status == ScsiStatus.CHECK_CONDITION
    assert (await server.execute(ScsiTask(NX, 0, bytes(6)))).status == ScsiStatus.GOOD
    yield server
    await server.close()


@pytest.fixture
def run(ds: DeviceServer) -> Run:
    """Execute a CDB on ``ds``."""
    return runner(ds)

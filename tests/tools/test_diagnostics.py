"""``kill -USR1`` on a running array (tools/diagnostics.py): every task's await chain in the log,
every thread's stack on stderr, and the array goes on serving."""
from __future__ import annotations

import json
import signal
import time

from tests.conftest import SanlabProcess, need, run


def _dumps(sp: SanlabProcess) -> list[dict[str, object]]:
    out = []
    for line in sp.log().splitlines():
        if '"task_stacks"' in line:
            out.append(json.loads(line))
    return out


def test_sigusr1_logs_every_task_and_thread_and_the_array_keeps_serving(sanlab: SanlabProcess) -> None:
    need("iscsi-inq")
    assert _dumps(sanlab) == []
    sanlab.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not _dumps(sanlab) and time.monotonic() < deadline:
        time.sleep(0.05)
    (dump,) = _dumps(sanlab)
    tasks = dump["tasks"]
    assert isinstance(tasks, list) and dump["count"] == len(tasks) >= 1
    # The main task is parked in serve's wait for a stop signal: its chain runs from the runner's
    # wrapper down through tools/serve.py to the Event it waits on.
    chains = [t["stack"] for t in tasks]
    assert any(any("tools/serve.py" in f and "serve" in f for f in chain) and "locks.py" in chain[-1] for chain in chains), chains
    log = sanlab.log()
    assert "Current thread" in log and "tools/diagnostics.py" in log  # faulthandler's dump, on stderr
    assert sanlab.proc.poll() is None
    assert "Peripheral" in run(["iscsi-inq", sanlab.url()]).stdout  # still serving

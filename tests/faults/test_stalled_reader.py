"""An initiator that stops reading its answers costs only its own connection.

It logs in, asks for far more Data-In than the socket buffers hold, and never reads again. The
target's NOP-In goes unanswered, so the connection is closed after nop_timeout (RFC 7143 §11.18);
closing first flushes what is buffered, which never happens here, so the target aborts the socket
after CLOSE_FLUSH_SECONDS (target/server.py). Meanwhile, and after, another session is served.
"""
from __future__ import annotations

import socket
import subprocess
import time
from typing import Callable

import pytest

from sanlab.target.pdu import NopIn, NopOut, ScsiCommand
from sanlab.target.server import CLOSE_FLUSH_SECONDS
from tests.conftest import TARGET, SanlabProcess
from tests.target.wire_client import WireClient

pytestmark = pytest.mark.integration

CONFIG = f"""
[server]
nop_interval = 1
nop_timeout = 2

[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
size = "64MiB"
"""


def held_sockets(sp: SanlabProcess, peer_port: int) -> list[str]:
    """The target process's own sockets to the client's port ``peer_port`` (`ss -p` names the holder;
    a socket the process closed but the kernel still drains is nobody's and is not counted)."""
    out = subprocess.run(["ss", "-Htanp", f"( sport = :{sp.port} and dport = :{peer_port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [line for line in out.splitlines() if f"pid={sp.proc.pid}," in line]


def alive(sp: SanlabProcess) -> None:
    c = WireClient(sp.host, sp.port)
    try:
        assert c.login(TARGET, isid=0x400000000042).status_class == 0
        c.send_pdu(NopOut(initiator_task_tag=c.next_itt(), cmdsn=c.cmdsn, expstatsn=c.statsn, data=b"here"))
        r = c.recv()
        assert isinstance(r, NopIn) and bytes(r.data) == b"here"
    finally:
        c.close()


def test_a_client_that_never_reads_is_dropped_and_others_are_served(
        sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CONFIG)
    stuck = WireClient(sp.host, sp.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert stuck.login(TARGET, isid=0x400000000041).status_class == 0
    peer_port = stuck.sock.getsockname()[1]
    blocks = 16384  # 8 MiB a READ(10): far beyond both sockets' buffers
    for _ in range(4):
        cdb = bytes([0x28, 0, 0, 0, 0, 0, 0]) + blocks.to_bytes(2, "big") + b"\0"
        stuck.send_pdu(ScsiCommand(read=True, initiator_task_tag=stuck.next_itt(), cmdsn=stuck.cmdsn,
                                   expected_data_transfer_length=blocks * 512, expstatsn=stuck.statsn,
                                   cdb=cdb.ljust(16, b"\0")))
        stuck.cmdsn += 1
    try:
        alive(sp)  # while the stuck one's answers sit in its buffers
        assert len(held_sockets(sp, peer_port)) == 1
        deadline = time.monotonic() + 2 + 2 + CLOSE_FLUSH_SECONDS + 20
        while held_sockets(sp, peer_port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert held_sockets(sp, peer_port) == [], sp.log()[-3000:]
        assert "connection_closing" in sp.log()
        alive(sp)
    finally:
        stuck.close()

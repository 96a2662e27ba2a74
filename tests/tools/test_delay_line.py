"""The lab's delay line (tools/delay_line.py): a real process between a client and an echo server on
loopback; every byte comes back, in order, a round trip no sooner than twice the one-way delay."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from tests.conftest import free_port


@pytest.fixture
def echo() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    srv.close()


def relay(to_port: int, delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sanlab.tools.delay_line", "--listen", f"127.0.0.1:{port}",
                             "--to", f"127.0.0.1:{to_port}", "--delay-ms", str(delay_ms)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "ms each way" in proc.stdout.readline()
    return proc, port


def test_bytes_come_back_in_order_after_twice_the_delay(echo: int) -> None:
    proc, port = relay(echo, 60)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            rtts = []
            for i in range(3):
                t = time.monotonic()
                s.sendall(bytes([i]))
                assert s.recv(1) == bytes([i])
                rtts.append(time.monotonic() - t)
            assert min(rtts) >= 0.120, rtts  # 60 ms each way
            assert max(rtts) < 2.0, rtts
            data = os.urandom(3 << 20)  # more than a window's worth in flight would be refused
            sender = threading.Thread(target=s.sendall, args=(data,))
            sender.start()
            got = bytearray()
            while len(got) < len(data):
                got += s.recv(1 << 20)
            sender.join(10)
            assert bytes(got) == data
            s.shutdown(socket.SHUT_WR)  # our EOF reaches the echo server, its close comes back
            assert s.recv(1) == b""
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_refused_arguments() -> None:
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.delay_line", "--listen", "nowhere", "--to",
                         "127.0.0.1:1", "--delay-ms", "1"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 2 and "'nowhere' is not HOST:PORT" in cp.stderr

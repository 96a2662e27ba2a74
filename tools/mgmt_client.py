"""The management socket's client side: what a ``sanlab`` subcommand needs to ask a running array.

Kept apart from tools/mgmt.py (the server, which imports the whole array) so that a command such as
``sanlab pair display`` starts in a fraction of the time ``sanlab serve`` takes to import: scripts and
``pair wait`` loops call the CLI many times a minute.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

SOCKET_NAME = "sanlab.sock"
"""The management socket's file name in the data directory."""


class AdminError(Exception):
    """A management request that cannot be carried out; the message says why."""


def request(data_dir: Path, op: str, args: dict[str, Any] | None = None, timeout: float = 600.0) -> dict[str, Any]:
    """Send one request to the array whose data directory is ``data_dir`` (blocking client)."""
    path = data_dir / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise AdminError(f"no running array at {path} (is `sanlab serve --data-dir {data_dir}` up?)") from None
        s.sendall(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply

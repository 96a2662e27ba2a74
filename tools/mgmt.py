"""The management socket: JSON requests to a running array over a UNIX domain socket.

One request per line, ``{"op": "<operation>", "args": {...}}``; one reply per
line, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "<why>"}``.
The socket lives in the data directory with owner-only permissions (0600):
whoever can use it can reconfigure the array.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import structlog

from sanlab.tools.admin import Admin, AdminError

log = structlog.get_logger("sanlab.mgmt")

SOCKET_NAME = "sanlab.sock"
MAX_REQUEST = 1 << 20


class MgmtServer:
    """Serves :class:`~sanlab.tools.admin.Admin` operations on ``<data_dir>/sanlab.sock``."""

    def __init__(self, admin: Admin, path: Path) -> None:
        self.admin = admin
        self.path = path
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        if self.path.exists():
            self.path.unlink()
        old = os.umask(0o177)  # created 0600: no window in which others could connect
        try:
            self._server = await asyncio.start_unix_server(self._client, str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.info("mgmt_listening", path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.path.exists():
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self.handle(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            log.info("mgmt_client_error", error=str(exc))
        finally:
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise AdminError('a request is {"op": "...", "args": {...}}')
            op, args = req["op"], req.get("args") or {}
            if op not in Admin.OPERATIONS or not isinstance(args, dict):
                raise AdminError(f"unknown operation {op!r}; known: {', '.join(Admin.OPERATIONS)}")
            fn = getattr(self.admin, op)
            result = fn(**args)
            if asyncio.iscoroutine(result):
                result = await result
            log.info("mgmt_op", op=op, args=args)
            return {"ok": True, "result": result}
        except json.JSONDecodeError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments: {exc}"}
        except AdminError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the caller gets the reason; the array keeps running
            log.exception("mgmt_op_failed")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


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

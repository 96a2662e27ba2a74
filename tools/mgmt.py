"""The management socket: JSON requests to a running array over a UNIX domain socket.

One request per line, ``{"op": "<operation>", "args": {...}}``; one reply per
line, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "<why>"}``.
The socket lives in the data directory with owner-only permissions (0600):
whoever can use it can reconfigure the array.  The mode is the first lock; the
second is the peer's credentials (SO_PEERCRED, unix(7)): a connection from a uid
other than the array's own or root is answered with one refusal and closed, so a
socket made reachable by mistake (a chmod, a shared directory) still manages nothing.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import structlog

from sanlab.tools.admin import Admin, AdminError
from sanlab.tools.dispatch import perform
from sanlab.tools.mgmt_client import SOCKET_NAME as SOCKET_NAME, request as request  # the client half

log = structlog.get_logger("sanlab.mgmt")

MAX_REQUEST = 1 << 20
PEER_CRED = struct.Struct("3i")
"""struct ucred (unix(7)): pid, uid, gid of the connecting process."""


def peer_uid(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a UNIX socket, from the kernel (SO_PEERCRED)."""
    pid, uid, _gid = PEER_CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CRED.size))
    return pid, uid


def peer_allowed(uid: int) -> bool:
    """The array's own user and root may manage it; nobody else."""
    return uid in (os.geteuid(), 0)


class MgmtServer:
    """Serves the operations of tools/operations.py, carried out by :class:`~sanlab.tools.admin.Admin`'s
    domains, on ``<data_dir>/sanlab.sock``."""

    def __init__(self, admin: Admin, path: Path) -> None:
        self.admin = admin
        self.path = path
        self._server: asyncio.base_events.Server | None = None
        self._identity: tuple[int, int] | None = None
        """(st_dev, st_ino) of the socket file this server bound: the only one :meth:`stop` removes."""

    async def start(self) -> None:
        """Listen on :attr:`path`, replacing only a stale socket file nobody answers on.

        Raises OSError when the path is taken by a live socket or by something that is not a socket.
        """
        self._remove_stale()
        old = os.umask(0o177)  # created 0600: no window in which others could connect
        try:
            self._server = await asyncio.start_unix_server(self._client, str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        os.chmod(self.path, 0o600)
        log.info("mgmt_listening", path=str(self.path))

    def _remove_stale(self) -> None:
        """Unlink a socket file left by a process that died without removing it (kill -9, power loss).

        A socket someone still accepts on belongs to a running array and is left alone; so is a
        path that is not a socket at all (it is not ours to delete).  The data-directory lock
        (tools/datadir.py) already keeps a second array away; this also covers a socket path
        shared by other means.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket; not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except FileNotFoundError:
                return
            except ConnectionRefusedError:
                log.warning("mgmt_stale_socket_removed", path=str(self.path))
                self.path.unlink(missing_ok=True)
                return
            except OSError as exc:
                raise OSError(errno.EADDRINUSE, f"{self.path}: cannot tell whether it is in use ({exc})") from None
        raise OSError(errno.EADDRINUSE, f"{self.path} is in use by another running process")

    async def stop(self) -> None:
        """Stop listening and remove the socket file, if it is still the one this server bound."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._unlink_own()

    def _unlink_own(self) -> None:
        """Remove the socket file only while it is still the one :meth:`start` bound.

        The path may have been replaced since (another array started after this one lost its
        socket): unlinking by name would cut that array off from its own management socket.
        """
        identity, self._identity = self._identity, None
        if identity is None:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == identity:
            self.path.unlink(missing_ok=True)
        else:
            log.warning("mgmt_socket_replaced", path=str(self.path))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid = peer_uid(sock)
        if not peer_allowed(uid):
            log.warning("mgmt_peer_refused", uid=uid, pid=pid, owner_uid=os.geteuid())
            reply = {"ok": False, "error": f"permission denied: uid {uid} may not manage this array "
                                           f"(only its owner, uid {os.geteuid()}, or root)"}
            try:
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
            return
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # no newline within MAX_REQUEST bytes: the stream cannot be resynchronised
                    reply = {"ok": False, "error": f"a request is one line of at most {MAX_REQUEST} bytes"}
                    writer.write(json.dumps(reply).encode() + b"\n")
                    await writer.drain()
                    break
                if not line:
                    break
                reply = await self.handle(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            log.info("mgmt_client_error", error=str(exc))
        finally:
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        """One JSON request line → its reply (tools/dispatch.py: the command device answers the same way)."""
        try:
            req = json.loads(line)
        except (ValueError, RecursionError) as exc:
            # ValueError: not JSON, not UTF-8, or a number too long for int() (int_max_str_digits);
            # RecursionError: arrays or objects nested past the decoder's depth.
            return {"ok": False, "error": f"not JSON: {str(exc)[:200]}"}
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return {"ok": False, "error": 'a request is {"op": "...", "args": {...}}'}
        reply = await perform(self.admin.handler, req["op"], req.get("args") or {}, "socket")
        return reply.body



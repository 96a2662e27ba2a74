"""A small HTTP/1.1 server and client on asyncio streams, for the status page and metrics (issue 18).

Only what a browser, Prometheus and another array need: GET and HEAD of a few fixed paths, one
request per connection (``Connection: close``), bodies built in memory.  The request head is
parsed by :func:`parse_request` (plain bytes in, a :class:`Request` or an :class:`HttpError` out)
so the rules are tested without sockets; :class:`HttpServer` is the asyncio glue.  A slow or
silent client is dropped after :data:`READ_TIMEOUT`; a handler runs on the event loop, so handlers
only read the array's state (RFC 9110, RFC 9112 for the message syntax).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import unquote, urlsplit

import structlog

log = structlog.get_logger("sanlab.tools.http")

MAX_HEAD = 8192
"""Longest request head (request line and header fields) accepted: 431 beyond (RFC 6585 §5)."""
READ_TIMEOUT = 10.0
"""Seconds a client may take to send its request head."""

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            505: "HTTP Version Not Supported"}


class HttpError(Exception):
    """A request answered with an error status; the message is the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head."""

    method: str
    path: str
    """The path, percent-decoded, without the query."""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Field names in lower case (RFC 9110 §5.1: they are case-insensitive)."""


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers."""

    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    status: int = 200


def parse_request(head: bytes) -> Request:
    """The request line and header fields up to (not including) the empty line (RFC 9112 §2-§5)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"{version[:20]} is not HTTP/1.x")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path (origin-form, RFC 9112 §3.2.1)")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, f"malformed header field {line[:80]!r}")
        headers[name.lower()] = value.strip()
    split = urlsplit(target)
    return Request(method, unquote(split.path), split.query, headers)


def encode_response(resp: Response, head_only: bool = False) -> bytes:
    """Status line, headers and body of ``resp``; the connection closes after it."""
    reason = _REASONS.get(resp.status, "")
    head = (f"HTTP/1.1 {resp.status} {reason}\r\nContent-Type: {resp.content_type}\r\n"
            f"Content-Length: {len(resp.body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + (b"" if head_only else resp.body)


Handler = Callable[[Request], Awaitable[Response]]
"""Answers a GET of one path."""


class HttpServer:
    """Serves ``routes`` (path → handler) on one address until :meth:`stop`."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self.host, self.port = host, port
        self.routes = routes
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The address bound (the port is the real one when 0 was asked for)."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Bind and listen (OSError when the address is taken or not ours)."""
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=MAX_HEAD)
        log.info("http_serving", address=f"{self.address[0]}:{self.address[1]}", paths=sorted(self.routes))

    async def stop(self) -> None:
        """Stop listening and end the connections still open."""
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            resp, head_only = await self._answer(reader)
            writer.write(encode_response(resp, head_only))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            req = parse_request(head[:-4])
        except asyncio.LimitOverrunError:
            return Response(b"request head too large\n", status=431), False
        except asyncio.IncompleteReadError:
            return Response(b"request head incomplete\n", status=400), False
        except TimeoutError:
            return Response(b"request head not sent in time\n", status=408), False
        except HttpError as exc:
            return Response(f"{exc}\n".encode(), status=exc.status), False
        if req.method not in ("GET", "HEAD"):
            return Response(f"{req.method} is not allowed: GET or HEAD\n".encode(), status=405), False
        handler = self.routes.get(req.path)
        if handler is None:
            paths = ", ".join(sorted(self.routes))
            return Response(f"no page {req.path} (there are: {paths})\n".encode(), status=404), req.method == "HEAD"
        try:
            return await handler(req), req.method == "HEAD"
        except Exception as exc:  # noqa: BLE001 - one failed page must not take the array down
            log.exception("http_handler_failed", path=req.path)
            return Response(f"{type(exc).__name__}: {exc}\n".encode(), status=500), False


async def get_json(host: str, port: int, path: str, timeout: float = 2.0) -> Any:
    """GET ``path`` from ``host:port`` and decode its JSON body (OSError, TimeoutError, ValueError)."""
    async def go() -> Any:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        head, sep, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)
        if not sep or len(status) < 2 or status[1] != b"200":
            raise ValueError(f"http://{host}:{port}{path} answered {head[:60]!r}")
        return json.loads(body)
    return await asyncio.wait_for(go(), timeout)

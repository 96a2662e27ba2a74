"""The status page's HTTP server: request heads as bytes (sans-IO), then a real server on a socket."""
from __future__ import annotations

import asyncio

import pytest

from sanlab.tools.http import HttpError, HttpServer, Request, Response, encode_response, get_json, parse_request


def test_request_line_and_headers_are_parsed() -> None:
    req = parse_request(b"GET /status.json?x=1 HTTP/1.1\r\nHost: a:1\r\nAccept:  */* \r\nX-Empty:")
    assert req == Request("GET", "/status.json", "x=1", {"host": "a:1", "accept": "*/*", "x-empty": ""})
    assert parse_request(b"HEAD /a%20b HTTP/1.0").path == "/a b"


@pytest.mark.parametrize("head, status, words", [
    (b"GET /\r\n", 400, "malformed request line"),
    (b"GET  / HTTP/1.1", 400, "malformed request line"),
    (b"GET / HTTP/2.0", 505, "not HTTP/1.x"),
    (b"GET http://x/ HTTP/1.1", 400, "origin-form"),
    (b"GET / HTTP/1.1\r\nno colon here", 400, "malformed header field"),
    (b"GET / HTTP/1.1\r\n folded: value", 400, "malformed header field"),
    (b"GET /\xff HTTP/1.1", 400, "not ASCII"),
])
def test_bad_request_heads_get_a_precise_status(head: bytes, status: int, words: str) -> None:
    with pytest.raises(HttpError) as err:
        parse_request(head)
    assert err.value.status == status and words in str(err.value)


def test_response_has_length_and_closes() -> None:
    raw = encode_response(Response(b"{}", "application/json"))
    assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                   b"Cache-Control: no-store\r\nConnection: close\r\n\r\n{}")
    assert encode_response(Response(b"{}"), head_only=True).endswith(b"\r\n\r\n")


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    writer.write_eof()
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_server_answers_routes_errors_and_head_over_a_socket() -> None:
    async def hello(req: Request) -> Response:
        return Response(f'{{"path": "{req.path}"}}'.encode(), "application/json")

    async def broken(_req: Request) -> Response:
        raise RuntimeError("boom")

    server = HttpServer("127.0.0.1", 0, {"/hello": hello, "/broken": broken})
    await server.start()
    port = server.address[1]
    try:
        assert await get_json("127.0.0.1", port, "/hello") == {"path": "/hello"}
        head = await _exchange(port, b"HEAD /hello HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 18" in head and head.endswith(b"\r\n\r\n")
        missing = await _exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404") and b"no page /nope (there are: /broken, /hello)" in missing
        post = await _exchange(port, b"POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"POST is not allowed" in post
        huge = await _exchange(port, b"GET /hello HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431")
        cut = await _exchange(port, b"GET /hello HTT")  # the client half-closes: not a whole head
        assert cut.startswith(b"HTTP/1.1 400") and b"incomplete" in cut
        failed = await _exchange(port, b"GET /broken HTTP/1.1\r\n\r\n")
        assert failed.startswith(b"HTTP/1.1 500") and b"RuntimeError: boom" in failed
        with pytest.raises(ValueError, match="404"):
            await get_json("127.0.0.1", port, "/nope")
    finally:
        await server.stop()

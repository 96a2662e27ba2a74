"""Links to remotes (replication/link.py) against an in-process sanlab target: up, down with the
reason, up again; CHAP and mutual CHAP; a stop that never waits for a peer; no secret in any repr."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from sanlab.replication.link import Link, LinkSettings, Remote, describe_failure
from sanlab.target.chap import ChapCredentials
from sanlab.target.errors import LoginFailed, LoginStatus
from sanlab.target.server import IscsiServer
from sanlab.tools.assemble import build_server
from sanlab.tools.config import parse_config
from tests.conftest import free_port

B = "iqn.2026-11.org.sanlab:array-b"
FAST = LinkSettings(login_timeout=5.0, ping_interval=0.1, ping_timeout=2.0, backoff=(0.1, 0.2, 0.4))
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def peer_config(tmp: Path, port: int, chap: bool = False) -> str:
    auth = """
[targets.chap]
username = "array-a"
secret = "a-to-b-secret-12"
[targets.mutual_chap]
username = "array-b"
secret = "b-to-a-secret-12"
""" if chap else ""
    return f"""
[server]
portals = ["127.0.0.1:{port}"]
[[targets]]
name = "{B}"
{auth}
[[targets.luns]]
lun = 0
size = "1MiB"
"""


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[tuple[int, Callable[[bool], Awaitable[IscsiServer]]]]:
    """A free port and a way to start an in-process target there (stopped at the end)."""
    import tomllib
    port = free_port()
    running: list[IscsiServer] = []

    async def start(chap: bool = False) -> IscsiServer:
        cfg = parse_config(tomllib.loads(peer_config(tmp_path, port, chap)), "peer", tmp_path)
        server = build_server(cfg)
        await server.start()
        running.append(server)
        return server

    yield port, start
    for server in running:
        await server.stop(grace=0.5)
        for t in server.targets.values():
            await t.device_server.close()


def remote(port: int, chap: ChapCredentials | None = None, mutual: ChapCredentials | None = None) -> Remote:
    return Remote("array-b", (("127.0.0.1", port),), B, chap, mutual)


async def _stopped(link: Link, task: asyncio.Task[None]) -> None:
    link.stop_event.set()
    await asyncio.wait_for(task, 5.0)
    assert not link.state.up and link.state.reason == "stopped"


async def test_the_link_follows_the_peer_up_down_and_up(
        peer: tuple[int, Callable[[bool], Awaitable[IscsiServer]]]) -> None:
    port, start = peer
    times = iter([T0.replace(minute=m) for m in range(60)])
    link = Link(remote(port), "iqn.2026-11.org.sanlab:array-a", FAST, clock=lambda: next(times))
    assert (link.state.up, link.state.reason, link.state.since) == (False, "not logged in yet", T0)
    task = asyncio.create_task(link.run())
    # Nobody listens yet: down with the reason, retried.
    assert not await link.wait_state(True, 0.5)
    assert link.state.reason == f"connection refused at 127.0.0.1:{port}"
    assert link.state.since == T0  # still down since it started: a new reason is no new "since"
    server = await start(False)
    assert await link.wait_state(True, 10.0), link.state
    assert link.state.reason == f"logged in to 127.0.0.1:{port}" and link.session is not None
    up_since = link.state.since
    assert up_since > T0
    assert link.state.describe() == {"link": "up", "reason": f"logged in to 127.0.0.1:{port}",
                                     "since": up_since.isoformat(timespec="seconds")}
    await server.stop(grace=0.5)
    assert await link.wait_state(False, 10.0), link.state
    assert "127.0.0.1" in link.state.reason and link.session is None and link.state.since > up_since
    await start(False)
    assert await link.wait_state(True, 10.0), link.state  # logged in again by itself
    await _stopped(link, task)


async def test_chap_and_mutual_chap(peer: tuple[int, Callable[[bool], Awaitable[IscsiServer]]]) -> None:
    port, start = peer
    await start(True)
    me = "iqn.2026-11.org.sanlab:array-a"
    good = ChapCredentials("array-a", b"a-to-b-secret-12")
    cases = {
        "right": (good, ChapCredentials("array-b", b"b-to-a-secret-12"), True),
        "right-no-mutual": (good, None, True),
        "wrong-secret": (ChapCredentials("array-a", b"not-the-secret-1"), None, False),
        "no-chap": (None, None, False),
        "wrong-mutual": (good, ChapCredentials("array-b", b"not-the-peer-123"), False),
    }
    links = {k: Link(remote(port, c, m), me, FAST) for k, (c, m, _) in cases.items()}
    tasks = [asyncio.create_task(link.run()) for link in links.values()]
    for key, (_, _, up) in cases.items():
        link = links[key]
        assert await link.wait_state(up, 10.0), (key, link.state)
        if not up:
            # The state reaches down at once (it starts there): wait for the login's answer.
            for _ in range(100):
                if link.state.reason != "not logged in yet":
                    break
                await asyncio.sleep(0.05)
            assert link.state.reason.startswith(f"authentication failed at 127.0.0.1:{port}"), (key, link.state)
    for link, task in zip(links.values(), tasks):
        await _stopped(link, task)


async def test_a_stop_does_not_wait_for_a_peer_that_never_answers() -> None:
    """A portal that accepts the connection and says nothing: stopping abandons the login at once."""
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = Link(remote(port), "iqn.2026-11.org.sanlab:array-a",
                LinkSettings(login_timeout=60.0, backoff=(60.0,)))
    task = asyncio.create_task(link.run())
    await asyncio.sleep(0.3)
    t0 = asyncio.get_running_loop().time()
    await _stopped(link, task)
    assert asyncio.get_running_loop().time() - t0 < 2.0
    server.close()
    await server.wait_closed()


async def test_a_login_that_times_out_is_down_with_the_reason_and_retried() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = Link(remote(port), "iqn.2026-11.org.sanlab:array-a", LinkSettings(login_timeout=0.3, backoff=(0.1,)))
    task = asyncio.create_task(link.run())
    for _ in range(60):
        if link.state.reason != "not logged in yet":
            break
        await asyncio.sleep(0.05)
    assert link.state.reason == f"connection to 127.0.0.1:{port} lost: no login within 0.3s"
    await _stopped(link, task)
    server.close()
    await server.wait_closed()


def test_reasons_and_reprs() -> None:
    assert describe_failure("h:1", LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, "x")).startswith(
        "authentication failed at h:1")
    assert describe_failure("h:1", LoginFailed(LoginStatus.NOT_FOUND, "x")).startswith("no such target at h:1")
    assert describe_failure("h:1", ConnectionRefusedError()) == "connection refused at h:1"
    r = Remote("b", (("::1", 3260), ("10.0.0.1", 3260)), B, ChapCredentials("u", b"a-to-b-secret-12"),
               ChapCredentials("m", b"b-to-a-secret-12"))
    assert r.portal_texts() == ["[::1]:3260", "10.0.0.1:3260"]
    assert "secret" not in repr(r) and "b-to-a" not in repr(r)

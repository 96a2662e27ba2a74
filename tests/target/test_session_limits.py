"""Session limits per target and per initiator (issue 19; docs/security.md): past them a new login
gets OUT OF RESOURCES (0302h), the sessions already in go on, a reinstatement is always admitted.
A real `sanlab serve`; hosts are the project's initiator (for the exact status) and libiscsi."""
from __future__ import annotations

import asyncio
import json
import subprocess
from contextlib import AsyncExitStack
from typing import Callable

import pytest

from sanlab.target.errors import ConnectionLost, LoginFailed
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, need

T0, T1 = "iqn.2026-11.org.sanlab:limit0", "iqn.2026-11.org.sanlab:limit1"
HOST = "iqn.1994-05.com.example:host"
CONFIG = f"""
[server]
max_sessions_per_target = 3
max_sessions_per_initiator = 2
[[targets]]
name = "{T0}"
[[targets.luns]]
lun = 0
file = "t0.img"
size = "1MiB"
[[targets]]
name = "{T1}"
[[targets.luns]]
lun = 0
file = "t1.img"
size = "1MiB"
"""
OUT_OF_RESOURCES = 0x0302


def test_sessions_past_the_limits_are_refused_and_the_others_go_on(
        sanlab_factory: Callable[..., SanlabProcess]) -> None:
    need("iscsi-inq")
    sp = sanlab_factory(CONFIG)

    def cfg(host: int, isid: int) -> InitiatorConfig:
        return InitiatorConfig(initiator_name=f"{HOST}{host}", isid=(0x80 << 40) | isid, reconnect=False)

    async def login(stack: AsyncExitStack, target: str, host: int, isid: int) -> IscsiSession:
        return await stack.enter_async_context(IscsiSession(sp.host, sp.port, target, cfg(host, isid)))

    async def served(s: IscsiSession) -> bool:
        await s.clear_unit_attentions(0)
        return (await s.test_unit_ready(0)).status == 0

    async def refused(target: str, host: int, isid: int) -> None:
        with pytest.raises(LoginFailed) as info:
            async with IscsiSession(sp.host, sp.port, target, cfg(host, isid)):
                pass
        assert info.value.login_status == OUT_OF_RESOURCES, info.value

    async def go() -> None:
        async with AsyncExitStack() as stack:
            a = await login(stack, T0, 1, 1)
            b = await login(stack, T1, 1, 2)
            # host1 has two sessions (over both targets): a third is refused, whatever the target.
            await refused(T0, 1, 3)
            # A reinstatement (same name and ISID) replaces its session: admitted at the limit.
            again = await login(stack, T0, 1, 1)
            assert await served(again)
            # T0 holds host1's and two more; a fourth session of T0 is refused.
            c = await login(stack, T0, 2, 1)
            d = await login(stack, T0, 3, 1)
            await refused(T0, 4, 1)
            # The sessions already in are served.
            for s in (b, c, d):
                assert await served(s)
            with pytest.raises(ConnectionLost):  # the reinstated session's old connection is gone
                await a.test_unit_ready(0)
            # libiscsi is refused too (its own message), and T1 still takes host4.
            cp = subprocess.run(["iscsi-inq", f"iscsi://{sp.portal}/{T0}/0"], capture_output=True, text=True,
                                timeout=60)
            assert cp.returncode != 0, cp.stdout
            e = await login(stack, T1, 4, 1)
            assert await served(e)
        # Logged out: room again.
        async with AsyncExitStack() as stack:
            f = await login(stack, T0, 4, 1)
            assert await served(f)

    asyncio.run(go())
    # The array says which limit and whose (the Login Response carries only the status).
    hits = [json.loads(line) for line in sp.log().splitlines() if '"session_limit"' in line]
    assert [(h["limit"], h["initiator"], h["target"], h["sessions"]) for h in hits] == [
        ("per_initiator", f"{HOST}1", T0, 2), ("per_target", f"{HOST}4", T0, 3),
        ("per_target", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq", T0, 3)], hits

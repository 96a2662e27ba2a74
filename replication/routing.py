"""Sending command blocks on between arrays: connection tables and the shortest path (seed 003 FIG. 26-37).

A block whose transfer destination names other arrays (replication/command_router.py) goes on over
the **array links** (replication/link.py: this array's initiator session to each remote's target) to
the command device the remote serves there, found by REPORT LUNS and INQUIRY (its PRODUCT
IDENTIFICATION, replication/cmddev.py) and remembered.  A remote's name is the array's name in
transfer destinations, so the remote called ``array-b`` here is the array whose name is ``array-b``.

**Which hop** (:meth:`ConnectionTable.next_hop`):

* FIG. 37: of the destination's names, the farthest one this array links to directly (a link that is
  up) is the next hop, and the names before it are dropped: the block skips arrays it need not pass;
* otherwise FIG. 35-36: the first hop of the shortest path (fewest links, ties broken by name) to the
  first name, over the **connection table**: this array's own links that are up, and the tables its
  neighbours reported.  The names stay as they are; the hop sends the block on again the same way.

**Connection tables** are exchanged with the neighbours: this array asks each neighbour whose link is
up for its table (the ``display-command-devices`` operation, whose PROCESS NUMBER tools/ injects),
when it has to route and its table is older than :data:`REFRESH_SECONDS`, when no route is known, and
after a hop failed (then the block is tried once more on the new route).  A neighbour answers with
every array it knows and their links (its own live, the rest as it learned them), so routes beyond
two hops are learned as the arrays route.  Answering never asks anyone (no waiting in a circle).
A link that is down is left out of this array's own row at once: the route changes with it.

One block at a time goes on each link (a lock per remote): the command device keeps one result per
I_T nexus, and the link's session is one nexus.  The results come back the way the block went
(FIG. 32): each hop's WRITE is answered, and its READ returns the edited data of everything after it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from typing import Callable, Protocol

import structlog

from sanlab.replication.cmddev_client import CommandDeviceRefused, NoCommandDevice, find_command_device, submit
from sanlab.replication.command_block import (
    Command, CommandBlock, EditedData, MalformedEditedData, ResultStatus, TransferDestination,
)
from sanlab.replication.command_router import Unreachable
from sanlab.replication.link import describe_failure
from sanlab.target.initiator import IscsiError, IscsiSession

log = structlog.get_logger("sanlab.replication.routing")

REFRESH_SECONDS = 5.0
"""A connection table older than this is asked for again before a block is routed by it."""
FORWARD_TIMEOUT = 600.0
"""Seconds one hop may take to answer (the command may wait, as ``wait-rebuild`` does)."""


class LinkView(Protocol):
    """What routing needs of a link (replication/link.py's :class:`~sanlab.replication.link.Link`)."""

    @property
    def session(self) -> IscsiSession | None:
        """The logged-in session while the link is up, else None."""


Graph = dict[str, tuple[str, ...]]
"""Array name → the arrays it links to (links that are up)."""


class ConnectionTable:
    """Which arrays link to which (seed 003 FIG. 36), and the routes it gives (module docstring)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.learned: Graph = {}
        """What the neighbours reported, by array (this array's own row is never taken from them)."""
        self.learned_at = float("-inf")
        """time.monotonic() of the last exchange."""

    def graph(self, up: tuple[str, ...]) -> Graph:
        """The whole table: this array's links that are up (``up``), and what was learned."""
        g = {k: v for k, v in self.learned.items() if k != self.me}
        g[self.me] = tuple(sorted(up))
        return g

    def learn(self, reports: Mapping[str, Graph]) -> None:
        """Take the neighbours' tables: each neighbour's own row from itself, other rows from the first
        neighbour (by name) that knows them."""
        merged: Graph = {}
        for neighbour in sorted(reports):
            for array, links in sorted(reports[neighbour].items()):
                if array != neighbour and array not in merged:
                    merged[array] = links
        for neighbour, table in reports.items():
            if neighbour in table:
                merged[neighbour] = table[neighbour]
        self.learned = merged
        self.learned_at = time.monotonic()

    def shortest_path(self, destination: str, up: tuple[str, ...]) -> list[str] | None:
        """The arrays from this one to ``destination`` over the fewest links (breadth first, ties by
        name), or None when the table knows no way."""
        g = self.graph(up)
        back: dict[str, str] = {self.me: self.me}
        queue = deque([self.me])
        while queue:
            node = queue.popleft()
            if node == destination:
                path = [node]
                while path[-1] != self.me:
                    path.append(back[path[-1]])
                return path[::-1]
            # Only this array's own links are known to be up now; beyond them, as reported.
            for nxt in sorted(g.get(node, ())):
                if nxt not in back:
                    back[nxt] = node
                    queue.append(nxt)
        return None

    def next_hop(self, addresses: tuple[str, ...], up: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
        """(next hop, the destination's names as sent there) or None: no route known."""
        for n in range(len(addresses) - 1, -1, -1):  # FIG. 37 S3704-S3708: the farthest direct one
            if addresses[n] in up:
                return addresses[n], addresses[n:]
        path = self.shortest_path(addresses[0], up)
        if path is None or len(path) < 2:
            return None
        return path[1], addresses


class LinkForwarder:
    """Sends blocks on over the array links (the :data:`~sanlab.replication.command_router.Forward`)."""

    def __init__(self, me: str, links: Callable[[], Mapping[str, LinkView]], table_process: int) -> None:
        self.table = ConnectionTable(me)
        self.links = links
        """The links by remote name, as they are now (remotes come and go at run time)."""
        self.table_process = table_process
        """PROCESS NUMBER of the operation whose result carries a connection table (``connections``)."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._luns: dict[str, int] = {}
        """Remote → its command device's LUN, once found (forgotten when a hop fails)."""
        self._refreshing: asyncio.Lock = asyncio.Lock()

    def up(self) -> tuple[str, ...]:
        """The remotes whose link is up now."""
        return tuple(sorted(name for name, link in self.links().items() if link.session is not None))

    def connections(self) -> Graph:
        """The connection table as this array tells its neighbours."""
        return self.table.graph(self.up())

    async def __call__(self, block: CommandBlock) -> EditedData:
        """Send ``block`` (its first parameter a transfer destination) on; the edited data it gets back."""
        dest = block.parameters[0]
        assert isinstance(dest, TransferDestination)
        if time.monotonic() - self.table.learned_at > REFRESH_SECONDS:
            await self.refresh()
        try:
            return await self._one_try(block, dest)
        except Unreachable as first:
            log.info("cmddev_route_retry", destination=list(dest.addresses), reason=str(first))
            await self.refresh()
            return await self._one_try(block, dest)

    async def _one_try(self, block: CommandBlock, dest: TransferDestination) -> EditedData:
        choice = self.table.next_hop(dest.addresses, self.up())
        if choice is None:
            raise Unreachable(f"no route from {self.table.me} to {dest.addresses[0]} (connection table: "
                              f"{self.connections()})")
        hop, names = choice
        log.info("cmddev_forward", destination=list(dest.addresses), next_hop=hop, id=block.identification,
                 hops=block.hops)
        return await self.send(hop, CommandBlock(block.identification, (TransferDestination(names),)
                                                 + block.parameters[1:], block.hops))

    async def send(self, remote: str, block: CommandBlock) -> EditedData:
        """``block`` written to ``remote``'s command device over its link; Unreachable when it cannot be."""
        link = self.links().get(remote)
        session = link.session if link is not None else None
        if session is None:
            raise Unreachable(f"the link to {remote} is down")
        lock = self._locks.setdefault(remote, asyncio.Lock())
        async with lock:
            try:
                lun = self._luns.get(remote)
                if lun is None:
                    lun = self._luns[remote] = await find_command_device(session)
                return await submit(session, lun, block, FORWARD_TIMEOUT)
            except NoCommandDevice as exc:
                raise Unreachable(str(exc)) from None
            except (CommandDeviceRefused, MalformedEditedData) as exc:
                self._luns.pop(remote, None)
                raise Unreachable(f"{remote}: {exc}") from None
            except (OSError, IscsiError) as exc:
                self._luns.pop(remote, None)
                raise Unreachable(describe_failure(remote, exc)) from None

    async def refresh(self) -> None:
        """Ask every neighbour whose link is up for its connection table (one exchange at a time)."""
        async with self._refreshing:
            reports: dict[str, Graph] = {}
            for remote in self.up():
                ask = CommandBlock(int(time.monotonic() * 1000) & 0xFFFFFFFF, (Command(self.table_process),))
                try:
                    edited = await self.send(remote, ask)
                except Unreachable as exc:
                    log.info("connection_table_not_read", remote=remote, reason=str(exc))
                    continue
                res = edited.results[0] if edited.results else None
                if res is None or res.status != ResultStatus.DONE or not isinstance(res.output, dict):
                    continue
                table = res.output.get("connections")
                if isinstance(table, dict):
                    reports[remote] = {str(k): tuple(str(x) for x in v) for k, v in table.items()
                                       if isinstance(v, list)}
            self.table.learn(reports)
            log.info("connection_table_learned", table=self.connections())

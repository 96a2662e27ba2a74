"""The whole lab on one page: ``/topology.json`` (issue 18).

Any array serving ``--http`` can draw the topology: it starts from its own status, reads the
``/status.json`` of every remote whose status page address the config gives (``[[remotes]] http =
"HOST:PORT"``), then of their remotes, breadth first, so A—B—C is found from A.  Nothing is
configured twice and no array needs to know the whole lab.  An array whose page cannot be read is
still drawn (as unreachable, with the reason), by the name its neighbour calls it.

:func:`pair_links` (no I/O) turns the statuses into arrows: one per pair, from the P-VOL's array to
the S-VOL's, with the state the P-VOL's array reports (the S side's when the P array was not read).
"""
from __future__ import annotations

import asyncio
from typing import Any

from sanlab.tools.cmddev_ops import array_name
from sanlab.tools.config import ConfigError, parse_portal
from sanlab.tools.http import get_json

MAX_ARRAYS = 32
"""Most arrays one topology reads (a bound on the walk, whatever the remotes say)."""
PEER_TIMEOUT = 2.0
"""Seconds to wait for one peer's status page."""


def _peer_array(pair: dict[str, Any]) -> str:
    """The array at the other end of a pair row: the remote's name at the P side, the P array's
    initiator name (its last part is the array's name) at the S side."""
    return array_name(str(pair.get("remote") or ""))


def pair_links(arrays: list[dict[str, Any]], aliases: dict[str, str]) -> list[dict[str, Any]]:
    """Arrows for the pairs in ``arrays`` (each ``{"name", "status"}``); ``aliases`` maps a remote's
    name to the name the array behind it gave itself."""
    def canon(name: str) -> str:
        return aliases.get(name, name)

    links: dict[tuple[str, str, str], dict[str, Any]] = {}
    for side in ("P-VOL", "S-VOL"):  # the P side's view wins; the S side fills in where P is unknown
        for a in arrays:
            for p in (a.get("status") or {}).get("pairs", []):
                if p.get("role") != side:
                    continue
                here, there = a["name"], canon(_peer_array(p))
                src, dst = (here, there) if side == "P-VOL" else (there, here)
                key = (p["name"], src, dst)
                if key in links:
                    continue
                links[key] = {"pair": p["name"], "from": src, "to": dst, "state": p["state"],
                              "mode": p.get("mode", "sync"), "progress": p.get("progress", 0),
                              "rpo_seconds": p.get("rpo_seconds"), "reported_by": here}
    return list(links.values())


async def topology(own: dict[str, Any], timeout: float = PEER_TIMEOUT) -> dict[str, Any]:
    """``{"arrays": [...], "links": [...]}`` from this array's status ``own`` and its peers' pages."""
    arrays: list[dict[str, Any]] = [{"name": own["array"]["name"], "http": own["array"].get("http"),
                                     "status": own, "error": None}]
    names = {arrays[0]["name"]}
    seen = {arrays[0]["http"]} if arrays[0]["http"] else set()
    aliases: dict[str, str] = {}
    frontier = [(r["name"], r.get("http")) for r in own.get("remotes", [])]
    while frontier and len(arrays) < MAX_ARRAYS:
        todo = []
        for remote, http in frontier:
            if http is None:
                if remote not in names and remote not in aliases:
                    names.add(remote)
                    arrays.append({"name": remote, "http": None, "status": None, "error": "no status page address"})
                continue
            if http not in seen:
                seen.add(http)
                todo.append((remote, http))
        todo = todo[:MAX_ARRAYS - len(arrays)]
        results = await asyncio.gather(*(_read(http, timeout) for _, http in todo))
        frontier = []
        for (remote, http), (status, error) in zip(todo, results):
            name = status["array"]["name"] if status else remote
            aliases[remote] = name
            if name in names:
                continue  # ourselves or an array already drawn, reached by another address
            names.add(name)
            arrays.append({"name": name, "http": http, "status": status, "error": error})
            if status:
                frontier += [(r["name"], r.get("http")) for r in status.get("remotes", [])]
    return {"arrays": arrays, "links": pair_links(arrays, aliases)}


async def _read(http: str, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """A peer's status, or None and why not."""
    try:
        host, port = parse_portal(http, "remotes", "http")
        status = await get_json(host, port, "/status.json", timeout)
        if not isinstance(status, dict) or "array" not in status:
            return None, f"http://{http}/status.json is not a sanlab status"
        return status, None
    except (OSError, TimeoutError, ValueError, ConfigError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]

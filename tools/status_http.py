"""The pages ``sanlab serve --http HOST:PORT`` serves (issue 18).

==================  =====================================================================
``/``               the status page: targets and LUs, RAID groups, remotes, pairs, journals,
                    local copies, and a live chart of RPO and copy rate (polls /status.json)
``/status.json``    what the status page shows (tools/status.py)
``/metrics``        Prometheus text exposition (tools/metrics.py)
``/topology``       every array reachable through the remotes' status pages, pairs as arrows
``/topology.json``  what the topology page draws (tools/topology.py)
==================  =====================================================================

The pages are files of this package (tools/web/), served by the array: a lab machine without
Internet access shows them whole.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any

from sanlab.tools.http import Handler, HttpServer, Request, Response
from sanlab.tools.metrics import CONTENT_TYPE, exposition, registry_for
from sanlab.tools.status import ArrayView
from sanlab.tools.topology import topology

_STATIC = {"/": ("status.html", "text/html; charset=utf-8"),
           "/topology": ("topology.html", "text/html; charset=utf-8"),
           "/sanlab.js": ("sanlab.js", "text/javascript; charset=utf-8"),
           "/sanlab.css": ("sanlab.css", "text/css; charset=utf-8")}
"""Path → (file in tools/web/, content type)."""


def _json(value: Any) -> Response:
    return Response(json.dumps(value).encode(), "application/json")


def routes(view: ArrayView) -> dict[str, Handler]:
    """Every path served, bound to ``view``."""
    registry = registry_for(view)
    web = resources.files("sanlab.tools") / "web"

    def static(name: str, content_type: str) -> Handler:
        body = (web / name).read_bytes()  # read once, at start-up (not on the event loop's hot path)

        async def page(_req: Request) -> Response:
            return Response(body, content_type)
        return page

    async def status(_req: Request) -> Response:
        return _json(view.status())

    async def metrics(_req: Request) -> Response:
        return Response(exposition(registry), CONTENT_TYPE)

    async def topology_json(_req: Request) -> Response:
        return _json(await topology(view.status()))

    table: dict[str, Handler] = {path: static(name, ctype) for path, (name, ctype) in _STATIC.items()}
    table.update({"/status.json": status, "/metrics": metrics, "/topology.json": topology_json})
    return table


def status_server(view: ArrayView, host: str, port: int) -> HttpServer:
    """The HTTP server of the status page and metrics (not started)."""
    return HttpServer(host, port, routes(view))

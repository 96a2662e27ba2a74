"""``sanlab snapshot ...``: snapshots of the running array's volumes, through its management socket
(or a command device: ``sanlab --cmddev URL snapshot ...``).

The forms (issue 17)::

    sanlab snapshot create NAME --vol VOL [--data-dir D]
    sanlab snapshot delete|restore NAME [--data-dir D]
    sanlab snapshot list [NAME] [--json] [--data-dir D]
    sanlab snapshot export NAME --target IQN --lun N [--data-dir D]     # a read-only LU
    sanlab snapshot unexport NAME [--data-dir D]

``VOL`` is ``TARGET/LUN`` or an exported LU's name.  Exit status: 0 done, 1 refused by the array
(the message says why), 2 not understood or no array running.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sanlab.tools.mgmt_client import AdminError
from sanlab.tools.transport import transport_for
from sanlab.tools.units import format_size

COLUMNS = ("name", "origin", "created", "pool_bytes", "export")


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(no snapshots)")
        return
    cells = [[r["name"], r["origin"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])),
              format_size(r["pool_bytes"]), r["export"] or "-"] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(COLUMNS)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(COLUMNS, widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab snapshot`` action (module docstring)."""
    action = args.action
    req: dict[str, Any] = {"name": args.name} if args.name else {}
    if action == "create":
        req["vol"] = args.vol
    elif action == "export":
        req.update(target=args.target, lun=args.lun)
    try:
        reply = transport_for(args).request(f"snapshot_{action}", req)
    except AdminError as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"sanlab: {reply.get('error')}", file=sys.stderr)
        return 1
    if action == "list" and not args.json:
        _table(reply["result"])
    else:
        print(json.dumps(reply["result"], indent=2))
    return 0


def add_snapshot_parser(sub: Any) -> None:
    """The ``snapshot`` subcommand and its actions, on the ``sanlab`` parser's subparsers."""
    p = sub.add_parser("snapshot", help="snapshots: space-efficient point-in-time images of a volume")
    ps = p.add_subparsers(dest="action", required=True)
    c = ps.add_parser("create", help="take snapshot NAME of a volume at once")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--vol", metavar="VOL", required=True, help="TARGET/LUN or an exported LU's name")
    d = ps.add_parser("delete", help="delete snapshot NAME (any order)")
    d.add_argument("name", metavar="NAME")
    r = ps.add_parser("restore", help="write snapshot NAME's image back over its volume")
    r.add_argument("name", metavar="NAME")
    ls = ps.add_parser("list", help="the snapshots: origin, time, pool use, export")
    ls.add_argument("name", metavar="NAME", nargs="?")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    e = ps.add_parser("export", help="serve snapshot NAME read-only as LUN of TARGET")
    e.add_argument("name", metavar="NAME")
    e.add_argument("--target", metavar="IQN", required=True, help="a target of this array")
    e.add_argument("--lun", type=int, required=True, metavar="N")
    u = ps.add_parser("unexport", help="stop serving snapshot NAME as an LU")
    u.add_argument("name", metavar="NAME")
    for q in (c, d, r, ls, e, u):
        q.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")
    p.set_defaults(func=cmd_snapshot)

"""``sanlab copy ...``: local copy pairs of the running array, through its management socket (or a
command device: ``sanlab --cmddev URL copy ...``, tools/transport.py).

The forms (issue 17; scripts depend on them)::

    sanlab copy create NAME --pvol VOL --svol VOL [--extent LBA:COUNT] [--group G] [--data-dir D]
    sanlab copy split|resync|restore|delete NAME [--extent LBA:COUNT] [--group G] [--data-dir D]
    sanlab copy display [NAME] [--json] [--watch] [--data-dir D]
    sanlab copy wait NAME --state STATE [--timeout SECONDS] [--data-dir D]

``VOL`` is ``TARGET/LUN`` or an exported LU's name.  Exit status: 0 done, 1 refused by the array
(the message says why) or ``wait`` timed out, 2 not understood or no array running.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from sanlab.tools.subcommands import Row, add_data_dir, bar, call, display, name_or_group, print_table, run, wait_state
from sanlab.tools.transport import transport_for

STATES = ("SMPL", "COPY", "PAIR", "PSUS", "RCPY", "PSUE")
COLUMNS = (("name", "NAME"), ("pvol", "P-VOL"), ("svol", "S-VOL"), ("state", "STATE"), ("detail", "DETAIL"),
           ("progress", "%"), ("pending_bytes", "PENDING"), ("copied_bytes", "COPIED"), ("group", "GROUP"))


def _print(rows: list[Row]) -> None:
    print_table(rows, COLUMNS, "(no copy pairs)")


def _watch_line(r: Row) -> str:
    return f"{r['name']:<20} {r['state']:<5} {r['detail']:<26} {bar(int(r['progress']))}  pending {r['pending_bytes']} B"


def cmd_copy(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab copy`` action (module docstring)."""
    return run(lambda: _act(args))


def _act(args: argparse.Namespace) -> int:
    action = args.action
    send = transport_for(args)
    if action == "create":
        req: dict[str, Any] = {"name": args.name, "pvol": args.pvol, "svol": args.svol}
        if args.extent:
            req["extent"] = args.extent
        if args.group:
            req["group"] = args.group
        print(json.dumps(call(send, "copy_create", req), indent=2))
    elif action in ("split", "resync", "restore", "delete"):
        named = name_or_group(args, "copy")
        if named is None:
            return 2
        req = named
        if action != "delete" and args.extent:
            req["extent"] = args.extent
        print(json.dumps(call(send, f"copy_{action}", req), indent=2))
    elif action == "display":
        return display(send, "copy_display", args, _print, _watch_line, lambda r: bool(r["copying"]))
    elif action == "wait":
        # A state is reached when no copy for it is pending (COPY ends in PAIR by itself).
        return wait_state(send, "copy_display", "copy", args)
    return 0


def add_copy_parser(sub: Any) -> None:
    """The ``copy`` subcommand and its actions, on the ``sanlab`` parser's subparsers."""
    p = sub.add_parser("copy", help="local copy pairs (in-system copies): create, split, resync, restore, delete")
    ps = p.add_subparsers(dest="action", required=True)
    c = ps.add_parser("create", help="form copy pair NAME; the generation copy runs in the background")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--pvol", metavar="VOL", required=True, help="the original: TARGET/LUN or an exported LU's name")
    c.add_argument("--svol", metavar="VOL", required=True, help="the copy: TARGET/LUN or an exported LU's name")
    c.add_argument("--extent", metavar="LBA:COUNT", help="pair only this area of the volumes (track aligned)")
    c.add_argument("--group", metavar="G", help="consistency group")
    acts = []
    for action, text in (("split", "divide: the copy becomes a point-in-time image at once"),
                         ("resync", "copy only what differs to the copy, back to PAIR"),
                         ("restore", "reverse resync: the copy back over the original, online"),
                         ("delete", "dissolve the pair; both volumes keep their data")):
        a = ps.add_parser(action, help=text)
        a.add_argument("name", metavar="NAME", nargs="?")
        if action != "delete":
            a.add_argument("--extent", metavar="LBA:COUNT", help="act on this area only (track aligned)")
        a.add_argument("--group", metavar="G", help="act on every copy of consistency group G (instead of NAME)")
        acts.append(a)
    dp = ps.add_parser("display", help="the local copy pairs: state, detail, progress, bytes")
    dp.add_argument("name", metavar="NAME", nargs="?")
    dp.add_argument("--json", action="store_true", help="machine-readable output")
    dp.add_argument("--watch", action="store_true", help="refresh with a progress bar until no copy runs")
    wt = ps.add_parser("wait", help="wait until copy NAME is in STATE (exit 0), or the timeout (exit 1)")
    wt.add_argument("name", metavar="NAME")
    wt.add_argument("--state", choices=STATES, required=True)
    wt.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    add_data_dir(c, *acts, dp, wt)
    p.set_defaults(func=cmd_copy)

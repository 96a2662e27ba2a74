"""``sanlab pair ...``: remote-copy pairs of the running array, through its management socket.

The forms (issue 14; scripts depend on them)::

    sanlab pair create NAME --pvol TARGET/LUN --remote REMOTE --svol TARGET/LUN [--fence data|status|never]
            [--group G] [--extent LBA:COUNT] [--bidirectional] [--no-copy] [--data-dir D]
    sanlab pair split NAME [--rw] | resync NAME [--reverse] | delete NAME [--force]
            | takeover NAME | swap NAME
    sanlab pair display [NAME] [--json] [--watch] [--data-dir D]
    sanlab pair wait NAME --state STATE [--timeout SECONDS] [--data-dir D]

Exit status as ``sanlab admin``: 0 done, 1 refused by the array (the message says why), 2 not
understood or no array running; ``wait`` exits 1 when the timeout passes first; ``takeover`` exits
with CCI horctakeover's codes: 0 nop, 1 swap, 2 S-VOL takeover, 3 P-VOL takeover; a refused
takeover exits 1 too, with the message on stderr and nothing on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sanlab.tools.array import AdminError
from sanlab.tools.mgmt import request

STATES = ("SMPL", "COPY", "PAIR", "PSUS", "SSUS", "PSUE", "SSWS")
COLUMNS = (("name", "NAME"), ("role", "ROLE"), ("state", "STATE"), ("fence", "FENCE"), ("remote", "REMOTE"),
           ("progress", "%"), ("pending_bytes", "PENDING"), ("copied_bytes", "COPIED"), ("reason", "REASON"))


def _bar(progress: int, width: int = 30) -> str:
    full = progress * width // 100
    return "[" + "#" * full + "." * (width - full) + f"] {progress:3d}%"


def _print(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(no pairs)")
        return
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(COLUMNS)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(COLUMNS, widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def _call(data_dir: Path, op: str, args: dict[str, Any]) -> Any:
    reply = request(data_dir, op, args)
    if not reply.get("ok"):
        raise _Refused(str(reply.get("error")))
    return reply["result"]


class _Refused(Exception):
    pass


def cmd_pair(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab pair`` action (module docstring)."""
    data_dir = Path(args.data_dir or "sanlab-data")
    action = args.action
    try:
        if action == "create":
            req: dict[str, Any] = {"name": args.name, "pvol": args.pvol, "remote": args.remote, "svol": args.svol,
                                   "fence": args.fence, "bidirectional": args.bidirectional, "no_copy": args.no_copy}
            if args.group:
                req["group"] = args.group
            if args.extent:
                req["extent"] = args.extent
            if args.pace:
                req["pace"] = args.pace
            print(json.dumps(_call(data_dir, "pair_create", req), indent=2))
        elif action in ("split", "resync", "delete"):
            if bool(args.name) == bool(args.group):
                print(f"sanlab: pair {action}: give a pair NAME or --group G", file=sys.stderr)
                return 2
            flag = {"split": "rw", "resync": "reverse", "delete": "force"}[action]
            req = {"name": args.name or "", "group": args.group or "", flag: getattr(args, flag)}
            print(json.dumps(_call(data_dir, f"pair_{action}", req), indent=2))
        elif action in ("takeover", "swap"):
            if bool(args.name) == bool(args.group):
                print(f"sanlab: pair {action}: give a pair NAME or --group G", file=sys.stderr)
                return 2
            req = {"name": args.name or "", "group": args.group or ""}
            if action == "swap":
                req["force"] = args.force
            result = _call(data_dir, f"pair_{action}", req)
            print(json.dumps(result, indent=2))
            if action == "takeover":
                return int(result["exit_code"])  # horctakeover's: 0 nop, 1 swap, 2 S-VOL, 3 P-VOL takeover
        elif action == "display":
            return _display(data_dir, args)
        elif action == "wait":
            return _wait(data_dir, args)
    except AdminError as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2
    except _Refused as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 1
    return 0


def _display(data_dir: Path, args: argparse.Namespace) -> int:
    req = {"name": args.name} if args.name else {}
    while True:
        rows = _call(data_dir, "pair_display", req)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif args.watch:
            print("\033[2J\033[H", end="")
            for r in rows:
                print(f"{r['name']:<20} {r['role']} {r['state']:<5} {_bar(int(r['progress']))}"
                      f"  pending {r['pending_bytes']} B")
        else:
            _print(rows)
        if not args.watch or all(r["state"] != "COPY" for r in rows):
            return 0
        time.sleep(1.0)


def _wait(data_dir: Path, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            state = _call(data_dir, "pair_display", {"name": args.name})[0]["state"]
        except _Refused:
            state = "SMPL"  # no such pair here: simplex (after a delete)
        if state == args.state:
            return 0
        if time.monotonic() >= deadline:
            print(f"sanlab: pair wait {args.name}: still {state} after {args.timeout:g} s (waited for {args.state})",
                  file=sys.stderr)
            return 1
        time.sleep(0.2)


def add_pair_parser(sub: Any) -> None:
    """The ``pair`` subcommand and its actions, on the ``sanlab`` parser's subparsers."""
    p = sub.add_parser("pair", help="remote-copy pairs: create, split, resync, delete, display, wait")
    ps = p.add_subparsers(dest="action", required=True)
    c = ps.add_parser("create", help="form pair NAME (checked at both arrays first)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--pvol", metavar="TARGET/LUN", required=True, help="the local volume (or an exported LU's name)")
    c.add_argument("--remote", metavar="REMOTE", required=True, help="the remote holding the S-VOL")
    c.add_argument("--svol", metavar="TARGET/LUN", required=True, help="the S-VOL on the remote")
    c.add_argument("--fence", choices=("data", "status", "never"), default="data",
                   help="what a host write gets when the S side is unreachable (default data)")
    c.add_argument("--group", metavar="G", help="consistency group")
    c.add_argument("--extent", metavar="LBA:COUNT", help="mirror only this area of the P-VOL")
    c.add_argument("--bidirectional", action="store_true", help="hosts write at both arrays")
    c.add_argument("--no-copy", action="store_true", help="the volumes are known identical: no initial copy")
    c.add_argument("--pace", type=float, default=0.0, metavar="MIB_PER_S",
                   help="MiB/s the initial copy and resyncs may use (default: no limit)")
    sp = ps.add_parser("split", help="split pair NAME (or --group G) at a consistent point")
    sp.add_argument("name", metavar="NAME", nargs="?")
    sp.add_argument("--rw", action="store_true", help="the S-VOL takes host writes while split")
    rs = ps.add_parser("resync", help="copy only what differs, back to PAIR")
    rs.add_argument("name", metavar="NAME", nargs="?")
    rs.add_argument("--reverse", action="store_true", help="copy S-VOL to P-VOL")
    d = ps.add_parser("delete", help="both halves back to SMPL")
    d.add_argument("name", metavar="NAME", nargs="?")
    d.add_argument("--force", action="store_true", help="delete this side alone (the peer is gone)")
    t = ps.add_parser("takeover", help="serve the pair from this array (horctakeover's decision table)")
    t.add_argument("name", metavar="NAME", nargs="?")
    w = ps.add_parser("swap", help="exchange the P-VOL and S-VOL roles")
    w.add_argument("name", metavar="NAME", nargs="?")
    w.add_argument("--force", action="store_true", help="after a split brain: this array's data wins")
    for q in (sp, rs, d, t, w):
        q.add_argument("--group", metavar="G", help="act on every pair of consistency group G (instead of NAME)")
    dp = ps.add_parser("display", help="the pair halves at this array")
    dp.add_argument("name", metavar="NAME", nargs="?")
    dp.add_argument("--json", action="store_true", help="machine-readable output")
    dp.add_argument("--watch", action="store_true", help="refresh with a progress bar until no pair is copying")
    wt = ps.add_parser("wait", help="wait until pair NAME is in STATE (exit 0), or the timeout (exit 1)")
    wt.add_argument("name", metavar="NAME")
    wt.add_argument("--state", choices=STATES, required=True)
    wt.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    for q in (c, sp, rs, d, t, w, dp, wt):
        q.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")
    p.set_defaults(func=cmd_pair)

"""``sanlab pair ...``: remote-copy pairs of the running array, through its management socket (or a
command device: ``sanlab --cmddev URL pair ...``, tools/transport.py).

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
from typing import Any

from sanlab.tools.subcommands import Row, add_data_dir, bar, call, display, name_or_group, print_table, run, wait_state
from sanlab.tools.transport import transport_for

STATES = ("SMPL", "COPY", "PAIR", "PSUS", "SSUS", "PSUE", "SSWS", "PFUL", "PFUS")
COLUMNS = (("name", "NAME"), ("role", "ROLE"), ("state", "STATE"), ("fence", "FENCE"), ("remote", "REMOTE"),
           ("progress", "%"), ("pending_bytes", "PENDING"), ("copied_bytes", "COPIED"), ("reason", "REASON"))


LAG_COLUMNS = (("lag_entries", "LAG"), ("lag_bytes", "LAG-BYTES"), ("rpo_seconds", "RPO-S"),
               ("journal_use", "JNL%"))
"""Added before REASON when a pair shown is async (issue 15): backlog in entries and bytes, RPO in
seconds, journal use in percent (the ``--json`` fields of the same names); empty for sync pairs."""


def _print(rows: list[Row]) -> None:
    columns: tuple[tuple[str, str], ...] = COLUMNS
    if any(r.get("mode") == "async" for r in rows):
        columns = COLUMNS[:-1] + LAG_COLUMNS + COLUMNS[-1:]
    print_table(rows, columns, "(no pairs)")


def _watch_line(r: Row) -> str:
    return f"{r['name']:<20} {r['role']} {r['state']:<5} {bar(int(r['progress']))}  pending {r['pending_bytes']} B"


def cmd_pair(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab pair`` action (module docstring)."""
    return run(lambda: _act(args))


def _act(args: argparse.Namespace) -> int:
    action = args.action
    send = transport_for(args)
    if action == "create":
        req: dict[str, Any] = {"name": args.name, "pvol": args.pvol, "remote": args.remote, "svol": args.svol,
                               "fence": args.fence, "bidirectional": args.bidirectional, "no_copy": args.no_copy}
        if args.group:
            req["group"] = args.group
        if args.extent:
            req["extent"] = args.extent
        if args.pace:
            req["pace"] = args.pace
        if args.mode != "sync":
            req.update(mode=args.mode, journal=args.journal, remote_journal=args.remote_journal)
        if args.delta:
            req["delta"] = True
        print(json.dumps(call(send, "pair_create", req), indent=2))
    elif action in ("split", "resync", "delete"):
        named = name_or_group(args, "pair")
        if named is None:
            return 2
        flag = {"split": "rw", "resync": "reverse", "delete": "force"}[action]
        req = {**named, flag: getattr(args, flag)}
        print(json.dumps(call(send, f"pair_{action}", req), indent=2))
    elif action in ("takeover", "swap"):
        named = name_or_group(args, "pair")
        if named is None:
            return 2
        req = named
        if action == "swap":
            req["force"] = args.force
        result = call(send, f"pair_{action}", req)
        print(json.dumps(result, indent=2))
        if action == "takeover":
            return int(result["exit_code"])  # horctakeover's: 0 nop, 1 swap, 2 S-VOL, 3 P-VOL takeover
    elif action == "display":
        return display(send, "pair_display", args, _print, _watch_line, lambda r: bool(r["state"] == "COPY"))
    elif action == "wait":
        return wait_state(send, "pair_display", "pair", args)
    return 0


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
    c.add_argument("--mode", choices=("sync", "async"), default="sync",
                   help="sync (default) or async: updates reach the S-VOL through the journals")
    c.add_argument("--journal", metavar="J", default="", help="async: this array's journal")
    c.add_argument("--remote-journal", metavar="J", default="", help="async: the remote array's journal")
    c.add_argument("--delta", action="store_true",
                   help="async: resume the S-VOL from this volume's standby journal (delta resync, no copy)")
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
    add_data_dir(c, sp, rs, d, t, w, dp, wt)
    p.set_defaults(func=cmd_pair)


def cmd_journal(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab journal`` action (issue 15)::

        sanlab journal create NAME --size SIZE [--volume VOL] [--threshold PCT] [--full-timeout S]
            [--standby-for TARGET/LUN] [--data-dir D]
        sanlab journal acquire|restore|purge|status|display NAME [--json] [--data-dir D]
    """
    return run(lambda: _journal(args))


def _journal(args: argparse.Namespace) -> int:
    send = transport_for(args)
    if args.action == "create":
        req: dict[str, Any] = {"name": args.name, "threshold": args.threshold, "full_timeout": args.full_timeout,
                               "auto": not args.manual}
        if args.size:
            req["size"] = args.size
        if args.volume:
            req["volume"] = args.volume
        if args.standby_for:
            req["standby_for"] = args.standby_for
        result = call(send, "journal_create", req)
    elif args.action == "display":
        result = call(send, "journal_display", {"name": args.name} if args.name else {})
    else:
        result = call(send, f"journal_{args.action}", {"name": args.name})
    if getattr(args, "json", False) or args.action == "create":
        print(json.dumps(result, indent=2))
    else:
        for row in result if isinstance(result, list) else [result]:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def add_journal_parser(sub: Any) -> None:
    """The ``journal`` subcommand (issue 15) on the ``sanlab`` parser's subparsers."""
    p = sub.add_parser("journal", help="journals of async pairs: create, acquire, restore, purge, status, display")
    ps = p.add_subparsers(dest="action", required=True)
    c = ps.add_parser("create", help="create journal NAME")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--size", metavar="SIZE", default="", help="size of the journal file (e.g. 64MiB)")
    c.add_argument("--volume", metavar="VOL", default="", help="a catalog volume to hold the journal")
    c.add_argument("--threshold", type=int, default=80, metavar="PCT", help="PFUL past this use (default 80)")
    c.add_argument("--full-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="PFUL this long suspends the pairs: PFUS (default 60)")
    c.add_argument("--standby-for", metavar="TARGET/LUN", default="",
                   help="a standby journal recording this volume's writes for a delta resync (docs/journal.md)")
    c.add_argument("--manual", action="store_true",
                   help="acquisition, restore and purge only when asked (seed 003 FIG. 16's host-driven flow)")
    subs = [c]
    for action, text in (("acquire", "one READ JOURNAL from the primary (secondary)"),
                         ("restore", "apply the acquired entries in order (secondary)"),
                         ("purge", "free the entries the secondary holds"),
                         ("status", "pointers, use and lag"), ("display", "every journal (or NAME)")):
        q = ps.add_parser(action, help=text)
        q.add_argument("name", metavar="NAME", nargs="?" if action == "display" else None)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        subs.append(q)
    add_data_dir(*subs)
    p.set_defaults(func=cmd_journal)

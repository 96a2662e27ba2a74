"""The ``sanlab`` command: its parser, ``show``, ``admin``, ``migrate`` and ``remote``; ``serve`` (the
array's run from start-up to shutdown) is in ``serve.py``, the array is assembled from its
configuration in ``assemble.py``, and the other subcommands' parsers live in their ``*_cli.py``
modules.  Only ``serve`` imports the array: every other command is a client of the management
socket (or a command device) and starts in a fraction of the time."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from sanlab.tools import operations
from sanlab.tools.backup_cli import add_backup_parser
from sanlab.tools.capture_cli import add_capture_parser
from sanlab.tools.config import ConfigError, parse_portal
from sanlab.tools.copy_cli import add_copy_parser
from sanlab.tools.mgmt_client import AdminError
from sanlab.tools.pair_cli import add_journal_parser, add_pair_parser
from sanlab.tools.snapshot_cli import add_snapshot_parser
from sanlab.tools.transport import add_transport_options, transport_for
from sanlab.tools.units import format_blocks, format_size
from sanlab.tools.version import package_version


def ldev_ranges(ldevs: Sequence[str]) -> str:
    """``["rg0:0", "rg0:1", "rg0:2", "rg1:7"]`` → ``"rg0:0-2,rg1:7"``, keeping the volume's order.

    A volume of a few GiB holds hundreds of LDEVs; listed one by one they drown the table.
    """
    runs: list[tuple[str, int, int]] = []
    for ref in ldevs:
        group, _, index = ref.rpartition(":")
        i = int(index)
        if runs and runs[-1][0] == group and runs[-1][2] == i - 1:
            runs[-1] = (group, runs[-1][1], i)
        else:
            runs.append((group, i, i))
    return ",".join(f"{g}:{a}" if a == b else f"{g}:{a}-{b}" for g, a, b in runs)


def _duration(seconds: float) -> str:
    """``65`` → ``"1m05s"``, ``7380`` → ``"2h03m"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _group_state(g: dict[str, Any]) -> str:
    """``ok``, ``degraded``, ``rebuild failed`` or ``rebuilding  36.0% at 12.50 MiB/s, ETA 1m05s``.

    Rate and ETA are printed when the array gives them (``rebuild_rate``, ``rebuild_eta``).
    """
    if g.get("rebuild_error"):
        return "rebuild failed (below)"
    progress = g.get("rebuild_progress")
    if progress is not None:
        text = f"rebuilding {float(progress) * 100:5.1f}%"
        rate, eta = g.get("rebuild_rate"), g.get("rebuild_eta")
        if rate is not None:
            text += f" at {format_size(int(rate))}/s"
        if eta is not None:
            text += f", ETA {_duration(float(eta))}"
        return text
    return "degraded" if g.get("degraded") else "ok"


def _sharing(row: dict[str, Any], prefix: str) -> str:
    """The multiple-virtualization column: ``no``, ``allowed`` (asked, nothing shared) or ``yes: #2``."""
    shares = row.get("shares_with") or []
    asked = bool(row.get("multiple_virtualization_asked"))
    if shares:
        return "yes: " + ",".join(f"{prefix}{x}" for x in shares) + (" (asked)" if asked else "")
    return "allowed" if asked else "no"


def _blocks_text(blocks: int, block_size: int | None) -> str:
    return format_blocks(blocks, block_size) if block_size else f"{blocks} blocks"


def _print_show(view: dict[str, Any]) -> None:
    """``sanlab show`` for people: sizes with units, LDEVs as ranges, rebuild progress (``--json`` has raw numbers)."""
    def table(title: str, rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> None:
        print(f"{title}:")
        if not rows:
            print("  (none)")
            return
        widths = [max(len(head), *(len(str(r.get(key, ""))) for r in rows)) for key, head in cols]
        print("  " + "  ".join(head.ljust(w) for (_, head), w in zip(cols, widths)).rstrip())
        for r in rows:
            print("  " + "  ".join(str(r.get(key, "")).ljust(w) for (key, _), w in zip(cols, widths)).rstrip())

    print(f"LDEV size: {format_size(int(view['ldev_size']))}")
    groups = [dict(g, level=f"RAID {g['level']}", capacity=format_size(int(g["capacity"])),
                   stripe_size=format_size(int(g["stripe_size"])), ldevs=f"{g['ldevs']} ({g['ldevs_free']} free)",
                   state=_group_state(g), drives=" ".join(f"{d['index']}:{d['state']}" for d in g["drives"]))
              for g in view["raid_groups"]]
    table("RAID groups", groups, [("name", "NAME"), ("level", "LEVEL"), ("capacity", "CAPACITY"),
                                  ("stripe_size", "STRIPE"), ("ldevs", "LDEVS"), ("state", "STATE"),
                                  ("drives", "DRIVES")])
    for g in view["raid_groups"]:
        if g.get("rebuild_error"):
            print(f"  {g['name']}: {g['rebuild_error']}")
    vols = [dict(v, size=format_size(int(v["blocks"]) * int(v["block_size"])),
                 blocks=f"{v['blocks']} x {v['block_size']} B", ldevs=ldev_ranges(v["ldevs"]))
            for v in view["volumes"]]
    table("Volumes", vols, [("name", "NAME"), ("size", "SIZE"), ("blocks", "BLOCKS"), ("ldevs", "LDEVS")])
    vr = [dict(r, vvol=f"#{r['vvol']}", real_start=r["real_start"], size=_blocks_text(r["size"], r.get("block_size")),
               mv=_sharing(r, "#")) for r in view["vr_table"]]
    table("V/R table (virtual volumes; blocks of the real volume)", vr,
          [("vvol", "VVOL"), ("real", "REAL"), ("real_start", "START"), ("size", "SIZE"),
           ("mv", "MULTIPLE VIRTUALIZATION")])
    luv = [dict(r, vvol=f"#{r['vvol']}", size=_blocks_text(r["size"], r.get("block_size")), mv=_sharing(r, ""))
           for r in view["luv_table"]]
    table("LU/V table (LUs; blocks of the virtual volume)", luv,
          [("lu", "LU"), ("vvol", "VVOL"), ("vstart", "START"), ("size", "SIZE"), ("mv", "MULTIPLE VIRTUALIZATION")])
    table("Exports", view["exports"], [("target", "TARGET"), ("lun", "LUN"), ("lu", "LU")])
    ext = [dict(e, size=_blocks_text(e["blocks"], e["block_size"])) for e in view.get("external_volumes", [])]
    table("External volumes", ext, [("name", "NAME"), ("size", "SIZE")])
    tasks = [dict(t, on=" ".join(f"{k}={v}" for k, v in t.get("context", {}).items()),
                  time=_duration(float(t.get("seconds", 0.0)))) for t in view.get("background_tasks", [])]
    table("Background tasks", tasks, [("kind", "KIND"), ("name", "NAME"), ("on", "ON"), ("state", "STATE"),
                                      ("time", "TIME")])
    for t in tasks:
        if t.get("error"):
            print(f"  {t['kind']} {t['name']}: {t['error']}")


def _bar(fraction: float, width: int = 30) -> str:
    full = int(fraction * width)
    return "[" + "#" * full + "." * (width - full) + f"] {fraction * 100:5.1f}%"


def cmd_migrate(args: argparse.Namespace) -> int:
    """``sanlab migrate start|status``: through the running array's management socket (or ``--cmddev``)."""
    import time as _time
    try:
        send = transport_for(args)
        if args.action == "start":
            req: dict[str, object] = {"source": args.source, "dest": args.dest}
            if args.range:
                a, _, b = args.range.partition(":")
                if not (a.isdigit() and b.isdigit()):
                    raise ConfigError("command line", "--range", "START:END in blocks")
                req.update(start=int(a), end=int(b))
            reply = send.request("migrate_start", req)
            if not reply.get("ok"):
                print(f"sanlab: migrate start: {reply.get('error')}", file=sys.stderr)
                return 1
            print(json.dumps(reply["result"], indent=2))
            return 0
        while True:
            reply = send.request("migrate_status")
            if not reply.get("ok"):
                print(f"sanlab: migrate status: {reply.get('error')}", file=sys.stderr)
                return 1
            rows = reply["result"]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    rate = r.get("rate_bytes_per_s", 0) / (1 << 20)
                    print(f"{r['volume']:<16} {r['state']:<9} {_bar(float(r['progress']))} {rate:8.1f} MiB/s"
                          f"  from {r['source']}")
            if not args.watch or all(r["state"] != "copying" for r in rows):
                return 0
            _time.sleep(1.0)
    except (AdminError, ConfigError) as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2


REMOTE_COLUMNS = (("name", "NAME"), ("link", "LINK"), ("since", "SINCE"), ("target", "TARGET"),
                  ("portals", "PORTALS"), ("chap", "CHAP"), ("mutual_chap", "MUTUAL"), ("source", "SOURCE"),
                  ("reason", "REASON"))
"""The columns of ``sanlab remote display`` (``--json`` has the same keys)."""


def _print_remotes(rows: list[dict[str, Any]]) -> None:
    """``sanlab remote display`` for people: one line per remote; CHAP as yes/no, never a secret."""
    if not rows:
        print("(no remotes)")
        return

    def cell(r: dict[str, Any], key: str) -> str:
        v = r.get(key)
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list):
            return ",".join(str(x) for x in v)
        return "" if v is None else str(v)

    cells = [[cell(r, key) for key, _ in REMOTE_COLUMNS] for r in rows]
    widths = [max(len(head), *(len(c[i]) for c in cells)) for i, (_, head) in enumerate(REMOTE_COLUMNS)]
    print("  ".join(head.ljust(w) for (_, head), w in zip(REMOTE_COLUMNS, widths)).rstrip())
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())


def cmd_remote(args: argparse.Namespace) -> int:
    """``sanlab remote add|delete|display``: remotes (peer arrays) of the running array.

    The portals are checked here too, so a typo is answered without a running array.  Exit status
    as ``sanlab admin``: 0 done, 1 refused by the array (a name taken, no such remote), 2 not
    understood or no array running.
    """
    what = f"remote {args.action}"
    try:
        send = transport_for(args)
        if args.action == "add":
            for p in args.portal:
                parse_portal(p, what, "--portal")
            req: dict[str, object] = {"name": args.name, "portals": list(args.portal), "target": args.target}
            for key in ("chap_user", "chap_secret", "mutual_user", "mutual_secret"):
                if getattr(args, key) is not None:
                    req[key] = getattr(args, key)
            reply = send.request("add_remote", req)
        elif args.action == "delete":
            reply = send.request("delete_remote", {"name": args.name})
        else:
            reply = send.request("display_remotes", {"name": args.name} if args.name else {})
    except (AdminError, ConfigError) as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"sanlab: {what}: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.action == "display" and not args.json:
        _print_remotes(reply["result"])
    else:
        print(json.dumps(reply["result"], indent=2))
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """``sanlab admin OP key=value ...`` and ``sanlab show``: one request to the running array.

    The words are checked against the operation table (tools/operations.py) here, so a typo or
    ``--help`` needs no running array; sizes go out as written ("1MiB") for the array to convert.
    Exit status: 0 done, 1 refused by the array, 2 not understood or no array to ask.
    """
    words: list[str] = list(getattr(args, "args", None) or [])
    try:
        if args.command == "show":
            op = operations.lookup("show")
        else:
            if args.op is None:
                print(operations.overview(), file=sys.stdout if args.help else sys.stderr)
                return 0 if args.help else 2
            op = operations.lookup(args.op)
            if args.help or "help" in words:
                print(operations.help_text(op))
                return 0
        reply = transport_for(args).request(op.name, operations.parse_words(op, words))
    except (AdminError, ConfigError, operations.ArgumentError) as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        error = str(reply.get("error"))
        said = error.startswith(f"{op.command}: ")  # the array named the operation already
        print(f"sanlab: {error}" if said else f"sanlab: {op.command}: {error}", file=sys.stderr)
        return 1
    if args.json or op.name != "show":
        print(json.dumps(reply["result"], indent=2))
    else:
        _print_show(reply["result"])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``sanlab serve`` (tools/serve.py, imported only here: the other commands start without the array)."""
    from sanlab.tools.serve import cmd_serve as serve
    return serve(args)


def make_parser() -> argparse.ArgumentParser:
    """The ``sanlab`` command line: serve, show, admin, migrate, remote, pair."""
    p = argparse.ArgumentParser(prog="sanlab", description="sanlab: a software disk array that speaks iSCSI")
    p.add_argument("--version", action="version", version=f"sanlab {package_version()}")
    add_transport_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the array (iSCSI target)")
    s.add_argument("--config", metavar="FILE", help="TOML config (default: embedded one-LUN config)")
    s.add_argument("--data-dir", metavar="DIR", help="data directory (default ./sanlab-data)")
    s.add_argument("--portal", metavar="HOST:PORT", action="append",
                   help="listen here (repeatable; replaces the config's portals)")
    s.add_argument("--http", metavar="HOST:PORT",
                   help="serve the status page (/), /status.json, /metrics (Prometheus) and /topology here "
                        "(default: the config's server.http, else off)")
    s.add_argument("--capture", metavar="FILE.pcap",
                   help="capture every iSCSI connection into this pcap file until the array stops")
    s.add_argument("--capture-interface", metavar="IFACE",
                   help="with --capture, as root: take the capture from this network interface with dumpcap "
                        "(the array's portals' and remotes' ports) instead of the array's own framing")
    s.add_argument("--log-format", choices=("json", "console"), default="console")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    s.set_defaults(func=cmd_serve)
    sh = sub.add_parser("show", help="the running array's RAID groups, volumes and mapping tables")
    sh.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.set_defaults(func=cmd_admin)
    # --help is answered by cmd_admin from the operation table: `sanlab admin OP --help` lists OP's
    # arguments, which argparse's own help (one for every operation) could not.
    a = sub.add_parser("admin", help="a management operation on the running array (sanlab admin --help lists them)",
                       add_help=False)
    a.add_argument("-h", "--help", action="store_true", help="the operations, or OP's arguments")
    a.add_argument("op", nargs="?", help="operation, e.g. create-volume")
    a.add_argument("args", nargs="*", help="key=value arguments")
    a.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")
    a.add_argument("--json", action="store_true", help="machine-readable output (always JSON for operations)")
    a.set_defaults(func=cmd_admin)
    m = sub.add_parser("migrate", help="migratory copy of a volume from another array")
    msub = m.add_subparsers(dest="action", required=True)
    ms = msub.add_parser("start", help="take SRC (an external volume) over into volume DST; DST serves at once")
    ms.add_argument("source", metavar="SRC")
    ms.add_argument("dest", metavar="DST")
    ms.add_argument("--range", metavar="START:END", help="migrate only these blocks")
    mt = msub.add_parser("status", help="progress and rate of migrations")
    mt.add_argument("--watch", action="store_true", help="refresh until every migration is simplex")
    mt.add_argument("--json", action="store_true")
    for sp in (ms, mt):
        sp.add_argument("--data-dir", metavar="DIR", help="data directory of the running array")
    m.set_defaults(func=cmd_migrate)
    r = sub.add_parser("remote", help="remotes: named peer arrays for remote copy, and their links")
    rsub = r.add_subparsers(dest="action", required=True)
    ra = rsub.add_parser("add", help="declare remote NAME at run time (kept in the catalog)")
    ra.add_argument("name", metavar="NAME")
    ra.add_argument("--portal", metavar="HOST:PORT", action="append", required=True,
                    help="the peer's portal (repeatable: tried in this order)")
    ra.add_argument("--target", metavar="IQN", required=True, help="the peer's target name used for replication")
    ra.add_argument("--chap-user", metavar="U", help="CHAP name this array logs in with")
    ra.add_argument("--chap-secret", metavar="S", help="its CHAP secret (12-256 bytes)")
    ra.add_argument("--mutual-user", metavar="U", help="the peer target's own CHAP name (mutual CHAP)")
    ra.add_argument("--mutual-secret", metavar="S", help="the peer target's own CHAP secret (mutual CHAP)")
    rd = rsub.add_parser("delete", help="forget run-time remote NAME (its link logs out)")
    rd.add_argument("name", metavar="NAME")
    rs = rsub.add_parser("display", help="the remotes and their links (up/down, reason, since)")
    rs.add_argument("name", metavar="NAME", nargs="?")
    rs.add_argument("--json", action="store_true", help="machine-readable output")
    for sp in (ra, rd, rs):
        sp.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")
    r.set_defaults(func=cmd_remote)
    add_pair_parser(sub)
    add_journal_parser(sub)
    add_copy_parser(sub)
    add_backup_parser(sub)
    add_snapshot_parser(sub)
    add_capture_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sanlab`` console script."""
    args = make_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""``sanlab backup ...``: backup images of divided copies, made and restored by the running array
(tools/backup_ops.py; the format in docs/backup.md).

The forms (issue 17; scripts depend on them)::

    sanlab backup create --copy NAME [--extent LBA:COUNT] --file IMAGE [--data-dir D]
    sanlab backup restore --file IMAGE --to VOL [--data-dir D]

The array runs the job; this command starts it, prints progress and rate to stderr while it runs
and the job's summary (JSON) to stdout.  Exit status: 0 done, 1 refused or failed (the message says
why: a copy not divided, a corrupt image, ...), 2 not understood or no array running.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from sanlab.tools.subcommands import add_data_dir, call, run
from sanlab.tools.transport import Transport, transport_for
from sanlab.tools.units import format_size

POLL = 0.2
"""Seconds between two status requests."""


def _line(st: dict[str, Any]) -> str:
    return (f"{st['kind']} {st['phase']:<9} {st['progress']:3d}%  {format_size(st['done_bytes'])} of "
            f"{format_size(st['total_bytes'])}  {format_size(st['rate'])}/s")


def _follow(send: Transport, job: int) -> dict[str, Any]:
    """Poll job ``job`` until it ends, drawing its progress on stderr."""
    tty = sys.stderr.isatty()
    last = 0.0
    while True:
        st: dict[str, Any] = call(send, "backup_status", {"job": job})
        now = time.monotonic()
        if st["done"] or tty or now - last >= 1.0:
            print(("\r" if tty else "") + _line(st), end="" if tty and not st["done"] else "\n",
                  file=sys.stderr, flush=True)
            last = now
        if st["done"]:
            return st
        time.sleep(POLL)


def cmd_backup(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab backup`` action (module docstring)."""
    return run(lambda: _act(args), f"backup {args.action}: ")


def _act(args: argparse.Namespace) -> int:
    send = transport_for(args)
    # The array opens the file: a path relative to here means nothing there.
    path = os.path.abspath(args.file)
    if args.action == "create":
        req: dict[str, Any] = {"copy": args.copy, "file": path}
        if args.extent:
            req["extent"] = args.extent
        started = call(send, "backup_create", req)
    else:
        started = call(send, "backup_restore", {"file": path, "to": args.to})
    st = _follow(send, int(started["job"]))
    if st["error"]:
        print(f"sanlab: backup {args.action}: {st['error']}", file=sys.stderr)
        return 1
    print(json.dumps(st, indent=2))
    return 0


def add_backup_parser(sub: Any) -> None:
    """The ``backup`` subcommand and its actions, on the ``sanlab`` parser's subparsers."""
    p = sub.add_parser("backup", help="backup images of divided local copies: create, restore")
    ps = p.add_subparsers(dest="action", required=True)
    c = ps.add_parser("create", help="write a divided copy (or one extent) to a tar image while the original serves")
    c.add_argument("--copy", metavar="NAME", required=True, help="the local copy pair, divided (PSUS)")
    c.add_argument("--extent", metavar="LBA:COUNT", help="back up only this area of the copy")
    c.add_argument("--file", metavar="IMAGE", required=True, help="the image to write (a tar stream)")
    r = ps.add_parser("restore", help="check an image, then write it into a volume at its LBAs")
    r.add_argument("--file", metavar="IMAGE", required=True, help="the image to restore")
    r.add_argument("--to", metavar="VOL", required=True, help="TARGET/LUN or an exported LU's name")
    add_data_dir(c, r)
    p.set_defaults(func=cmd_backup)

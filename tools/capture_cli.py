"""``sanlab capture ...``: start and stop a packet capture of the running array (issue 18).

The forms::

    sanlab capture start FILE.pcap [--data-dir D]     # every iSCSI connection, open ones included
    sanlab capture stop [--data-dir D]                # closes the file; the PDUs the array counted
    sanlab capture status [--data-dir D]

Through the management socket (or a command device: ``sanlab --cmddev URL capture ...``).  FILE is
opened by the array, so a relative name is made absolute here first.  Exit status: 0 done, 1
refused by the array (the message says why), 2 not understood or no array running.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sanlab.tools.mgmt_client import AdminError
from sanlab.tools.transport import transport_for


def absolute(file: str) -> str:
    """A capture file named on a command line, as the array (another process, another directory) opens it."""
    return os.path.abspath(file)


def cmd_capture(args: argparse.Namespace) -> int:
    """Carry out one ``sanlab capture`` action (module docstring)."""
    req: dict[str, Any] = {"file": absolute(args.file)} if args.action == "start" else {}
    try:
        reply = transport_for(args).request(f"capture_{args.action}", req)
    except AdminError as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"sanlab: capture {args.action}: {reply.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(reply["result"], indent=2))
    return 0


def add_capture_parser(sub: Any) -> None:
    """The ``capture`` subcommand and its actions, on the ``sanlab`` parser's subparsers."""
    p = sub.add_parser("capture", help="packet captures of the array's iSCSI connections (pcap, for Wireshark)")
    ps = p.add_subparsers(dest="action", required=True)
    st = ps.add_parser("start", help="capture every iSCSI connection (hosts and links) into FILE.pcap")
    st.add_argument("file", metavar="FILE.pcap")
    sp = ps.add_parser("stop", help="stop the capture: the file is complete; prints the PDUs counted")
    ss = ps.add_parser("status", help="whether a capture runs, its file and the PDUs counted so far")
    for q in (st, sp, ss):
        q.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")
    p.set_defaults(func=cmd_capture)

"""What the ``sanlab`` subcommands that send requests to a running array share (``pair``, ``journal``,
``copy``, ``backup``): a request whose refusal becomes exit status 1, the ``--data-dir`` option, the
``display --watch`` loop with its progress bar and the ``wait --state`` loop.

Exit status, for all of them: 0 done, 1 refused by the array (the message says why) or a wait timed
out, 2 not understood or no array running (:class:`~sanlab.tools.array.AdminError`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from sanlab.tools.mgmt_client import AdminError
from sanlab.tools.transport import Transport

WATCH_SECONDS = 1.0
"""Between two refreshes of ``display --watch``."""
WAIT_POLL = 0.2
"""Between two state requests of ``wait``."""

Row = dict[str, Any]


class Refused(Exception):
    """The array answered a request with a refusal (the message is its reason)."""


def call(send: Transport, op: str, args: dict[str, Any]) -> Any:
    """Operation ``op``'s result; :class:`Refused` when the array refuses it."""
    reply = send.request(op, args)
    if not reply.get("ok"):
        raise Refused(str(reply.get("error")))
    return reply["result"]


def run(action: Callable[[], int], refused_prefix: str = "") -> int:
    """``action``'s exit status, or 2 for :class:`AdminError` and 1 for :class:`Refused` (with the message)."""
    try:
        return action()
    except AdminError as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(f"sanlab: {refused_prefix}{exc}", file=sys.stderr)
        return 1


def bar(progress: int, width: int = 30) -> str:
    """``[#####.....]  50%``."""
    full = progress * width // 100
    return "[" + "#" * full + "." * (width - full) + f"] {progress:3d}%"


def name_or_group(args: argparse.Namespace, noun: str) -> dict[str, Any] | None:
    """The request's ``name`` and ``group`` for an action on one NAME or on ``--group G``; None, after
    saying so, when both or neither are given (the caller exits 2)."""
    if bool(args.name) == bool(args.group):
        print(f"sanlab: {noun} {args.action}: give a {noun} NAME or --group G", file=sys.stderr)
        return None
    return {"name": args.name or "", "group": args.group or ""}


def print_table(rows: list[Row], columns: tuple[tuple[str, str], ...], empty: str) -> None:
    """``rows`` as a table of ``columns`` (key, heading), or ``empty`` when there are none."""
    if not rows:
        print(empty)
        return
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def add_data_dir(*parsers: argparse.ArgumentParser) -> None:
    """The ``--data-dir DIR`` option on each of ``parsers``."""
    for q in parsers:
        q.add_argument("--data-dir", metavar="DIR", help="data directory of the running array (default ./sanlab-data)")


def display(send: Transport, op: str, args: argparse.Namespace, table: Callable[[list[Row]], None],
            watch_line: Callable[[Row], str], busy: Callable[[Row], bool]) -> int:
    """``display [NAME] [--json] [--watch]`` through operation ``op``: JSON, a table, or with ``--watch``
    one ``watch_line`` a row, redrawn until no row is ``busy``."""
    req = {"name": args.name} if args.name else {}
    while True:
        rows: list[Row] = call(send, op, req)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif args.watch:
            print("\033[2J\033[H", end="")
            for r in rows:
                print(watch_line(r))
        else:
            table(rows)
        if not args.watch or not any(busy(r) for r in rows):
            return 0
        time.sleep(WATCH_SECONDS)


def wait_state(send: Transport, op: str, noun: str, args: argparse.Namespace) -> int:
    """``wait NAME --state STATE [--timeout SECONDS]`` through operation ``op``: 0 once the ``noun``'s
    state is STATE (SMPL once there is no such one), 1 when the timeout passes first."""
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            state = call(send, op, {"name": args.name})[0]["state"]
        except Refused:
            state = "SMPL"  # no such pair here: simplex (after a delete)
        if state == args.state:
            return 0
        if time.monotonic() >= deadline:
            print(f"sanlab: {noun} wait {args.name}: still {state} after {args.timeout:g} s (waited for {args.state})",
                  file=sys.stderr)
            return 1
        time.sleep(WAIT_POLL)

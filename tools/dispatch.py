"""One management request carried out: the same for the management socket and the command device.

tools/mgmt.py (a JSON line on ``sanlab.sock``) and tools/cmddev_ops.py (a command block written to a
command device, seed 003 FIG. 7) both call :func:`perform`, so a request is checked against the
operation table, carried out by the operation's domain and answered in one way whichever way it
came: the reply is the socket's ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``,
and the :class:`Outcome` says which kind of failure it was (the command device's result STATUS).
"""
from __future__ import annotations

import asyncio
import enum
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from sanlab.tools import operations
from sanlab.tools.array import AdminError

log = structlog.get_logger("sanlab.mgmt")

Handler = Callable[[operations.Operation], Callable[..., Any]]
"""The method carrying out an operation (``Admin.handler``)."""


class Outcome(enum.Enum):
    """How a request ended."""

    DONE = "done"
    REFUSED = "refused"
    """The array refused it (AdminError: the message says why)."""
    NOT_UNDERSTOOD = "not understood"
    """The operation or its arguments do not fit the table (ArgumentError), or the request is not one."""
    FAILED = "failed"
    """The operation raised something else: a fault of the array, logged with its traceback."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A request's answer."""

    outcome: Outcome
    body: dict[str, Any]
    """``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``: what the socket sends."""
    op: operations.Operation | None = None
    """The operation, once the request named a known one."""


def refused(message: str, outcome: Outcome = Outcome.NOT_UNDERSTOOD) -> Reply:
    """A request answered with ``message`` before it reached an operation."""
    return Reply(outcome, {"ok": False, "error": message})


async def perform(handler: Handler, name: str, args: object, via: str) -> Reply:
    """Check ``args`` against operation ``name``'s table entry, carry it out, and answer.

    The table checks names and kinds before the call, so a client hears "create-lu: missing argument
    vvol=INT (...)" rather than a Python TypeError.  ``via`` (``socket``, ``cmddev``) goes in the log.
    """
    op: operations.Operation | None = None
    try:
        if not isinstance(args, dict):
            raise AdminError('"args" is an object of argument names and values')
        op = operations.lookup(name)
        checked = operations.check_args(op, args)
        result = handler(op)(**checked)
        if asyncio.iscoroutine(result):
            result = await result
        log.info("mgmt_op", op=op.name, args=operations.redacted(op, checked), via=via)
        return Reply(Outcome.DONE, {"ok": True, "result": result}, op)
    except operations.ArgumentError as exc:
        return Reply(Outcome.NOT_UNDERSTOOD, {"ok": False, "error": str(exc)}, op)
    except AdminError as exc:
        return Reply(Outcome.REFUSED if op is not None else Outcome.NOT_UNDERSTOOD, {"ok": False, "error": str(exc)}, op)
    except OSError as exc:
        # The array's own files (bitmaps, journals, the catalog) failed it: a full or read-only file
        # system, a lost disk.  The client hears the reason and the file, not a Python class name.
        log.exception("mgmt_op_failed", via=via)
        where = f" ({exc.filename})" if exc.filename else ""
        reason = exc.strerror or str(exc)
        return Reply(Outcome.FAILED, {"ok": False, "error": f"{op.command if op else name}: {reason}{where}"}, op)
    except sqlite3.Error as exc:
        # The catalog's commit failed (its file system full, most often): nothing of the change stays.
        log.exception("mgmt_op_failed", via=via)
        return Reply(Outcome.FAILED, {"ok": False, "error": f"{op.command if op else name}: the catalog could not "
                                                             f"record it: {exc}"}, op)
    except Exception as exc:  # noqa: BLE001 - the caller gets the reason; the array keeps running
        log.exception("mgmt_op_failed", via=via)
        return Reply(Outcome.FAILED, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, op)

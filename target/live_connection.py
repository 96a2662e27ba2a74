"""The socket side of one full-feature connection: its runtime state and its asyncio protocol.

After login the server (``server.py``) swaps the stream reader for :class:`FullFeatureProtocol`:
bytes go straight from ``data_received`` to the framer and the connection's state machine, with
no reader task to wake per segment (bench/README.md).  :class:`LiveConnection` holds what the
glue needs beside the sans-IO :class:`~sanlab.target.connection.TargetConnection`: the transport,
the commands in flight, and the flags that batch a whole ``data_received`` into one send.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from sanlab.target.capture import CapturePoint
from sanlab.target.connection import TargetConnection
from sanlab.target.login import LoginResult
from sanlab.target.pdu import PduFramer

if TYPE_CHECKING:  # server.py imports this module
    from sanlab.target.server import Target

class LiveConnection:
    """Runtime state of one full-feature connection."""

    def __init__(self, conn: TargetConnection, writer: asyncio.StreamWriter, target: Target | None,
                 result: LoginResult, point: CapturePoint) -> None:
        self.conn = conn
        self.point = point
        """This connection for packet captures (target/capture.py): ``point.tap`` is None unless one runs."""
        self.transport: asyncio.WriteTransport = writer.transport
        self.target = target
        self.result = result
        self.running: dict[int, asyncio.Future[Any]] = {}
        """Commands waiting for something (a Task, or a fast-path command's future): ITT → it."""
        self.closed = asyncio.Event()
        self.flush_scheduled = False
        self.detachable: set[int] = set()
        """ITTs of running commands whose work continues without them (SANITIZE): an abort cancels them."""
        self.header_digest = result.params.header_digest
        self.data_digest = result.params.data_digest
        self.receiving = False
        """Inside a data_received call: responses wait for the end of the batch (one send for all)."""
        self.processing = False
        """Inside _process: a nested call leaves the new events to the running loop over them."""
        self.write_paused = False
        self.writable: asyncio.Future[None] | None = None
        """Resolved when the transport's write buffer drains below its low-water mark again."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved when the socket is gone (closed by either side)."""

    @property
    def key(self) -> tuple[str, int, str]:
        """(initiator name, ISID, target name): the session this connection belongs to."""
        return (self.result.initiator_name, self.result.isid, self.target.name if self.target else "")


class FullFeatureProtocol(asyncio.Protocol):
    """The socket's protocol once login is over: bytes go straight to the framer and the state
    machine in ``data_received``, with no reader task to wake per segment (bench/README.md)."""

    def __init__(self, c: LiveConnection, framer: PduFramer,
                 on_data: Callable[[LiveConnection, PduFramer, bytes], None]) -> None:
        self.c = c
        self.framer = framer
        self.on_data = on_data

    def data_received(self, data: bytes) -> None:
        """Frame and run what arrived (the server's ``_on_data``)."""
        self.on_data(self.c, self.framer, data)

    def eof_received(self) -> bool:
        """The initiator closed its side: close ours too."""
        self.c.conn.log.info("connection_closed_by_initiator")
        self.c.point.peer_closed = True
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        """The send buffer is full: stop reading commands until it drains."""
        # The initiator is not reading its Data-In: stop reading new commands until it does.
        c = self.c
        c.write_paused = True
        c.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        """The send buffer drained: read again and wake whoever waits to write."""
        c = self.c
        c.write_paused = False
        if not c.transport.is_closing():
            c.transport.resume_reading()  # type: ignore[attr-defined]
        if c.writable is not None and not c.writable.done():
            c.writable.set_result(None)
        c.writable = None

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is gone: wake the writers and the connection's waiter."""
        c = self.c
        if exc is not None:
            c.conn.log.info("connection_lost", error=str(exc) or type(exc).__name__)
        c.write_paused = False
        if c.writable is not None and not c.writable.done():
            c.writable.set_result(None)
        if not c.lost.done():
            c.lost.set_result(None)

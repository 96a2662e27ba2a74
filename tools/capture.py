"""Packet captures of a running array (issue 18): the pcap file and the operations that start and stop it.

The framing is sans-IO (target/capture.py: the connections' taps and :class:`PcapFramer`); this
module is its edge.  :class:`PcapFileWriter` takes the taps' events from the event loop through a
queue and frames and writes them in a thread of its own, so scapy's per-frame cost never stalls a
connection.  :class:`CaptureOps` is the ``capture-start`` / ``capture-stop`` / ``capture-status``
domain of the operation table (tools/operations.py): ``sanlab capture start FILE.pcap`` at run time,
``sanlab serve --capture FILE.pcap`` or the configuration's ``[capture] file`` from the start.

The file is complete once :meth:`PcapFileWriter.close` returns: every queued event is framed, the
connections still open end there (their FINs are written when they close, before the array stops),
and the file is flushed and closed.  ``sanlab serve`` stops the capture last, after the hosts and the
links have logged out, so their FINs are in it.
"""
from __future__ import annotations

import asyncio
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from sanlab.target.capture import HUB, CaptureSummary, PcapFramer, StreamEvent
from sanlab.tools.array import AdminError

if TYPE_CHECKING:
    from sanlab.tools.array import ArrayState

log = structlog.get_logger("sanlab.tools.capture")

_END = None
"""The queue's last item: frame nothing more, flush and close."""


class PcapFileWriter:
    """A pcap file fed with :class:`StreamEvent`\\ s from the event loop, framed and written by a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: IO[bytes] = open(path, "wb", buffering=1 << 20)
        except OSError as exc:
            raise AdminError(f"cannot write capture file {path}: {exc.strerror or exc}") from None
        self.framer = PcapFramer()
        self.error: str | None = None
        """Why writing stopped early (a full disk): the capture ends, the array does not."""
        self._queue: queue.SimpleQueue[StreamEvent | None] = queue.SimpleQueue()
        self._file.write(self.framer.header())
        self._thread = threading.Thread(target=self._run, name=f"capture {path.name}", daemon=True)
        self._thread.start()

    def put(self, ev: StreamEvent) -> None:
        """Queue one event (called on the event loop: never blocks)."""
        self._queue.put(ev)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while (ev := self._queue.get()) is not _END:
            if self.error is not None:
                continue  # keep draining so the loop's side never grows without bound
            try:
                self._file.write(self.framer.frames(ev))
                # A capture being written can be opened at any time: whole records reach the file
                # at least once a second.
                if time.monotonic() - last_flush > 1.0 and self._queue.empty():
                    self._file.flush()
                    last_flush = time.monotonic()
            except OSError as exc:
                self.error = f"writing {self.path}: {exc.strerror or exc}"
                log.error("capture_write_failed", file=str(self.path), error=self.error)
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or f"closing {self.path}: {exc.strerror or exc}"

    def close(self) -> None:
        """Frame what is queued, then flush and close the file (blocks: call it off the loop)."""
        self._queue.put(_END)
        self._thread.join()


class CaptureOps:
    """Start and stop the packet capture of every iSCSI connection of this array (hosts and links)."""

    def __init__(self, state: ArrayState) -> None:
        self.state = state
        self._writer: PcapFileWriter | None = None

    def _resolve(self, file: str) -> Path:
        """``file`` as the array opens it: relative to the data directory (the CLI sends absolute paths)."""
        path = Path(file)
        if not file:
            raise AdminError("capture file name is empty")
        if not path.is_absolute():
            path = self.state.data_dir / path
        if not path.parent.is_dir():
            raise AdminError(f"cannot write capture file {path}: directory {path.parent} does not exist")
        return path

    async def capture_start(self, file: str) -> dict[str, Any]:
        """Capture every connection of the array, those open now included, into pcap ``file``."""
        if self._writer is not None:
            raise AdminError(f"a capture is already running into {self._writer.path}; `sanlab capture stop` first")
        writer = start_capture(self._resolve(file))
        self.adopt(writer)
        return {"file": str(writer.path), "running": True}

    def adopt(self, writer: PcapFileWriter) -> None:
        """Take over a capture ``sanlab serve`` started before anything connected (:func:`start_capture`)."""
        self._writer = writer

    async def capture_stop(self) -> dict[str, Any]:
        """Stop the capture; answers the file, the frames written and the PDUs the array counted."""
        writer = self._writer
        if writer is None:
            raise AdminError("no capture is running")
        self._writer = None
        stats = HUB.stop()
        await asyncio.to_thread(writer.close)
        summary = CaptureSummary(str(writer.path), writer.framer.packets, stats).as_dict()
        if writer.error is not None:
            summary["error"] = writer.error
        log.info("capture_stopped", **summary)
        return summary

    def capture_status(self) -> dict[str, Any]:
        """Whether a capture runs, into which file, and the PDUs counted so far."""
        writer = self._writer
        if writer is None:
            return {"running": False}
        return {"running": True, "file": str(writer.path), "error": writer.error, **HUB.stats.as_dict()}

    async def close(self) -> None:
        """At shutdown: the capture (if any) ends after everything else, so the file is complete."""
        if self._writer is not None:
            await self.capture_stop()


def start_capture(path: Path) -> PcapFileWriter:
    """Open ``path`` and capture every connection of this process into it from now on."""
    writer = PcapFileWriter(path)
    HUB.start(writer.put, time.time)
    log.info("capture_started", file=str(path))
    return writer


DRAIN_SECONDS = 1.5
"""How long an interface capture goes on after the array stopped, for the kernel's ring to deliver."""


class InterfaceCapture:
    """As root, the capture taken from a network interface by Wireshark's ``dumpcap`` instead of the
    array's own framing (``sanlab serve --capture FILE --capture-interface IFACE``): the packets as
    the kernel saw them, retransmissions and all, filtered to the array's portals and its peers'."""

    def __init__(self, path: Path, interface: str, ports: list[int]) -> None:
        if os.geteuid() != 0:
            raise AdminError("capturing from an interface needs root (without --capture-interface the array "
                             "frames its own connections, which needs none)")
        dumpcap = shutil.which("dumpcap")
        if dumpcap is None:
            raise AdminError("capturing from an interface needs dumpcap (apt-get install tshark)")
        bpf = " or ".join(f"tcp port {p}" for p in sorted(set(ports)))
        self.path = path
        self.proc = subprocess.Popen([dumpcap, "-q", "-i", interface, "-f", bpf, "-w", str(path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size > 0):  # dumpcap writes the header once capturing
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.stop() or "did not start within 10 s"
                raise AdminError(f"dumpcap on {interface}: {err.strip()}")
            time.sleep(0.05)
        log.info("capture_started", file=str(path), interface=interface, filter=bpf)

    def stop(self) -> str:
        """Stop dumpcap (it completes the file on SIGTERM); what it said on stderr."""
        if self.proc.poll() is None:
            # libpcap hands packets over a block of the kernel's ring at a time, or after its 1 s
            # timeout; dumpcap does not drain the ring on SIGTERM, so the last second would be lost.
            time.sleep(DRAIN_SECONDS)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        log.info("capture_stopped", file=str(self.path), exit=self.proc.returncode)
        return err

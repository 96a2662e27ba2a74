"""Packet captures of the array's own iSCSI connections, without root (issue 18): the sans-IO part.

The array knows every byte it sends and receives on each connection, and the real addresses of
the socket; that is all a capture needs.  Each connection (a host's session at the target,
``server.py``; the array's own initiator, ``initiator.py``, for replication links and external
volumes) owns a :class:`CapturePoint`, registered with the process's :data:`HUB`.  While no
capture runs, a point's ``tap`` is None and the hot path pays one attribute check.  While one
runs, the :class:`Tap` records what the connection wrote and read as :class:`StreamEvent`\\ s and
counts the PDUs the array handled (by opcode, and SCSI commands by CDB operation code), from the
headers the array itself encoded or framed: that count is what a dissector reading the file must
find again.

:class:`PcapFramer` turns the events into a pcap file's bytes: each connection becomes a TCP
stream of Ether/IP/TCP frames built with scapy — SYN, SYN-ACK, ACK first, data with consistent
sequence and acknowledgement numbers per direction, FIN at close — so Wireshark follows it as it
would a stream captured on the interface.  Writing the file (and framing, which costs about a
millisecond a segment in scapy) happens off the event loop, in ``tools/capture.py``.

A capture started while a connection is open joins it at a PDU boundary: what its framer holds of
a PDU not yet complete is recorded first (:attr:`CapturePoint.pending_rx`), and the stream is
given a handshake of its own so a dissector still sees a whole TCP conversation.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Iterable

from sanlab.target.pdu import Buffer, Opcode

PCAP_HEADER = struct.Struct("<IHHiIII")
"""pcap global header: magic, version major, minor, thiszone, sigfigs, snaplen, link type
(the libpcap file format, as tcpdump writes it)."""
PCAP_RECORD = struct.Struct("<IIII")
"""pcap record header: seconds, microseconds, captured length, original length."""
PCAP_MAGIC = 0xA1B2C3D4
"""Microsecond timestamps, written in the host's byte order as the format allows (we write little-endian)."""
SNAPLEN = 262144
"""tcpdump's default: larger than any frame written here (14 + 65535 bytes)."""


class LinkType(IntEnum):
    """pcap link-layer header types (tcpdump.org's LINKTYPE_ values)."""

    ETHERNET = 1


MAX_SEGMENT = 65495
"""Most TCP payload bytes in one frame: an IPv4 total length (20 + 20 + payload) fits 16 bits.
A write larger than this is cut into segments of this size, in order, as TSO would."""
WINDOW = 65535
WINDOW_SCALE = 14
"""Both SYNs offer window scaling 14 (RFC 7323 §2.3): a window of 65535 << 14 bytes, so nothing the
array writes before the peer's next segment looks like a full window to a dissector."""
MSS = 65495
ZERO_MAC = "00:00:00:00:00:00"
"""Loopback frames have no real MAC addresses; Wireshark's own loopback captures show zeros too."""

Address = tuple[str, int]
"""(host, port) of one end of a socket."""


def socket_address(info: object) -> Address:
    """(host, port) from a socket's ``getsockname()``/``getpeername()`` (IPv4 or IPv6 tuple)."""
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return ("0.0.0.0", 0)


class EventKind(IntEnum):
    """What happened to a connection."""

    OPEN = 0
    DATA = 1
    CLOSE = 2


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One thing a captured connection did, with the wall-clock time it happened."""

    kind: EventKind
    stream: int
    """Which connection (numbered by the hub, unique within one capture)."""
    time: float
    from_client: bool = True
    """DATA: sent by the TCP client (the initiator); CLOSE: the client closed first."""
    payload: bytes = b""
    client: Address = ("0.0.0.0", 0)
    """OPEN: the initiator's end of the socket."""
    server: Address = ("0.0.0.0", 0)
    """OPEN: the target's end (the portal)."""


class CaptureStats:
    """The PDUs the array handled on captured connections, both directions: ``Opcode`` name → count,
    and SCSI Command PDUs by their CDB's operation code."""

    def __init__(self) -> None:
        self.pdus: Counter[str] = Counter()
        self.scsi_commands: Counter[int] = Counter()
        self.bytes = 0
        self.streams = 0

    def count(self, bhs: Buffer) -> None:
        """Count one PDU from its Basic Header Segment (RFC 7143 §11.2.1): byte 0 holds the opcode,
        a SCSI Command's CDB starts at byte 32 (§11.3)."""
        op = bhs[0] & 0x3F
        try:
            name = Opcode(op).name
        except ValueError:
            name = f"0x{op:02x}"
        self.pdus[name] += 1
        if op == Opcode.SCSI_COMMAND:
            self.scsi_commands[bhs[32]] += 1

    def as_dict(self) -> dict[str, object]:
        """The counts as JSON: ``{"pdus": {"LOGIN_REQUEST": 1, ...}, "scsi_commands": {"0x12": 2, ...}}``."""
        return {"pdus": dict(sorted(self.pdus.items())),
                "scsi_commands": {f"0x{op:02x}": n for op, n in sorted(self.scsi_commands.items())},
                "bytes": self.bytes, "streams": self.streams}


class Tap:
    """One connection while a capture runs: its events go to the capture's sink, its PDUs are counted."""

    __slots__ = ("stream", "sink", "stats", "local_is_client", "clock")

    def __init__(self, stream: int, sink: Callable[[StreamEvent], None], stats: CaptureStats,
                 local_is_client: bool, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.sink = sink
        self.stats = stats
        self.local_is_client = local_is_client
        self.clock = clock

    def sent(self, bufs: Iterable[Buffer]) -> None:
        """The array wrote these buffers (whole PDUs) to the socket."""
        payload = b"".join(bufs)  # a copy: page-cache buffers are reused once written
        if payload:
            self.stats.bytes += len(payload)
            self.sink(StreamEvent(EventKind.DATA, self.stream, self.clock(), self.local_is_client, payload))

    def received(self, data: Buffer) -> None:
        """The array read these bytes from the socket."""
        if data:
            self.stats.bytes += len(data)
            self.sink(StreamEvent(EventKind.DATA, self.stream, self.clock(), not self.local_is_client, bytes(data)))

    def count(self, bhs: Buffer) -> None:
        """The array sent or framed a PDU with this header."""
        self.stats.count(bhs)


class CapturePoint:
    """A connection that can be captured: the two ends of its socket and, while a capture runs, its tap."""

    __slots__ = ("tap", "local", "peer", "local_is_client", "pending_rx", "peer_closed", "__weakref__")

    def __init__(self, local: Address, peer: Address, local_is_client: bool,
                 pending_rx: Callable[[], bytes] | None = None) -> None:
        self.tap: Tap | None = None
        """None while nothing is captured: the one check the hot path makes."""
        self.local = local
        self.peer = peer
        self.local_is_client = local_is_client
        self.pending_rx = pending_rx
        """Bytes already read but not yet a whole PDU: where a capture starting mid-stream begins."""
        self.peer_closed = False
        """The peer's EOF came first (so its FIN goes first in the capture)."""


class CaptureHub:
    """The process's connections and the capture running over them (at most one)."""

    def __init__(self) -> None:
        self._points: set[CapturePoint] = set()
        self._sink: Callable[[StreamEvent], None] | None = None
        self._clock: Callable[[], float] = lambda: 0.0
        self._numbers = itertools.count(1)
        self.stats = CaptureStats()

    @property
    def active(self) -> bool:
        """A capture is running."""
        return self._sink is not None

    def open(self, local: Address, peer: Address, local_is_client: bool,
             pending_rx: Callable[[], bytes] | None = None) -> CapturePoint:
        """A new connection: registered, and tapped at once when a capture runs."""
        point = CapturePoint(local, peer, local_is_client, pending_rx)
        self._points.add(point)
        if self._sink is not None:
            self._attach(point, mid_stream=False)
        return point

    def close(self, point: CapturePoint) -> None:
        """The connection's socket is closed: its FINs are recorded and it leaves the registry."""
        self._points.discard(point)
        tap = point.tap
        if tap is not None:
            point.tap = None
            tap.sink(StreamEvent(EventKind.CLOSE, tap.stream, tap.clock(),
                                 from_client=point.local_is_client != point.peer_closed))

    def start(self, sink: Callable[[StreamEvent], None], clock: Callable[[], float]) -> None:
        """Capture every connection from now on, those open now included, into ``sink``."""
        if self._sink is not None:
            raise RuntimeError("a capture is already running")
        self._sink, self._clock = sink, clock
        self.stats = CaptureStats()
        self._numbers = itertools.count(1)
        for point in list(self._points):
            self._attach(point, mid_stream=True)

    def stop(self) -> CaptureStats:
        """Stop capturing; the connections stay open (their streams just end in the file)."""
        for point in self._points:
            point.tap = None
        self._sink = None
        return self.stats

    def _attach(self, point: CapturePoint, mid_stream: bool) -> None:
        assert self._sink is not None
        tap = Tap(next(self._numbers), self._sink, self.stats, point.local_is_client, self._clock)
        client, server = (point.local, point.peer) if point.local_is_client else (point.peer, point.local)
        self.stats.streams += 1
        self._sink(StreamEvent(EventKind.OPEN, tap.stream, self._clock(), client=client, server=server))
        point.tap = tap
        if mid_stream and point.pending_rx is not None:
            tap.received(point.pending_rx())


HUB = CaptureHub()
"""The connections of this process (one array) and its capture."""


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _ip(host: str) -> str:
    """An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as plain IPv4."""
    try:
        a = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


@dataclass(slots=True)
class _Half:
    """One direction of a TCP stream: its address and the next sequence number it sends."""

    addr: Address
    seq: int
    fin: bool = False


@dataclass(slots=True)
class _Stream:
    client: _Half
    server: _Half
    ipv6: bool


class PcapFramer:
    """Sans-IO: :class:`StreamEvent`\\ s in, a pcap file's bytes out (``header()`` first, then
    ``frames(event)`` for each event, in order).  Time comes with the events; initial sequence
    numbers from ``isn`` (random by default), so tests can fix them."""

    def __init__(self, isn: Callable[[], int] | None = None) -> None:
        # scapy is imported here, not at the module's import: only a capture pays its import time.
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether

        self._ether, self._ip4, self._ip6, self._tcp = Ether, IP, IPv6, TCP
        self._isn = isn or (lambda: int.from_bytes(os.urandom(4), "big"))
        self._streams: dict[int, _Stream] = {}
        self.packets = 0
        """Frames written so far."""

    @staticmethod
    def header() -> bytes:
        """The pcap global header: version 2.4, Ethernet frames."""
        return PCAP_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LinkType.ETHERNET)

    def frames(self, ev: StreamEvent) -> bytes:
        """The pcap records for one event (empty for an unknown stream's data)."""
        if ev.kind is EventKind.OPEN:
            return self._open(ev)
        s = self._streams.get(ev.stream)
        if s is None:
            return b""
        if ev.kind is EventKind.DATA:
            return self._data(s, ev)
        del self._streams[ev.stream]
        return self._close(s, ev)

    def _open(self, ev: StreamEvent) -> bytes:
        client, server = (_ip(ev.client[0]), ev.client[1]), (_ip(ev.server[0]), ev.server[1])
        s = _Stream(_Half(client, self._isn() & 0xFFFFFFFF), _Half(server, self._isn() & 0xFFFFFFFF),
                    _is_ipv6(client[0]) or _is_ipv6(server[0]))
        self._streams[ev.stream] = s
        opts = [("MSS", MSS), ("WScale", WINDOW_SCALE)]
        # RFC 9293 §3.5: SYN and FIN each take one sequence number.
        out = [self._record(ev.time, s, s.client, s.server, "S", 0, b"", opts)]
        s.client.seq = (s.client.seq + 1) & 0xFFFFFFFF
        out.append(self._record(ev.time, s, s.server, s.client, "SA", s.client.seq, b"", opts))
        s.server.seq = (s.server.seq + 1) & 0xFFFFFFFF
        out.append(self._record(ev.time, s, s.client, s.server, "A", s.server.seq, b""))
        return b"".join(out)

    def _data(self, s: _Stream, ev: StreamEvent) -> bytes:
        src, dst = (s.client, s.server) if ev.from_client else (s.server, s.client)
        out = []
        data = memoryview(ev.payload)
        for off in range(0, len(data), MAX_SEGMENT):
            piece = bytes(data[off:off + MAX_SEGMENT])
            last = off + MAX_SEGMENT >= len(data)
            out.append(self._record(ev.time, s, src, dst, "PA" if last else "A", dst.seq, piece))
            src.seq = (src.seq + len(piece)) & 0xFFFFFFFF
        return b"".join(out)

    def _close(self, s: _Stream, ev: StreamEvent) -> bytes:
        first, second = (s.client, s.server) if ev.from_client else (s.server, s.client)
        out = []
        for src, dst in ((first, second), (second, first)):
            out.append(self._record(ev.time, s, src, dst, "FA", dst.seq, b""))
            src.seq = (src.seq + 1) & 0xFFFFFFFF
        out.append(self._record(ev.time, s, first, second, "A", second.seq, b""))
        return b"".join(out)

    def _record(self, t: float, s: _Stream, src: _Half, dst: _Half, flags: str, ack: int, payload: bytes,
                options: list[tuple[str, int]] | None = None) -> bytes:
        ip = (self._ip6(src=src.addr[0], dst=dst.addr[0]) if s.ipv6
              else self._ip4(src=src.addr[0], dst=dst.addr[0], flags="DF"))
        tcp = self._tcp(sport=src.addr[1], dport=dst.addr[1], flags=flags, seq=src.seq,
                        ack=ack if "A" in flags else 0, window=WINDOW, options=options or [])
        frame = bytes(self._ether(src=ZERO_MAC, dst=ZERO_MAC) / ip / tcp / payload)
        sec = int(t)
        usec = min(int(round((t - sec) * 1e6)), 999_999)
        self.packets += 1
        return PCAP_RECORD.pack(sec, usec, len(frame), len(frame)) + frame


@dataclass(slots=True)
class CaptureSummary:
    """What a finished capture wrote: for the reply of ``capture stop`` and the logs."""

    file: str
    packets: int = 0
    stats: CaptureStats = field(default_factory=CaptureStats)

    def as_dict(self) -> dict[str, object]:
        """JSON for the management socket."""
        return {"file": self.file, "packets": self.packets, **self.stats.as_dict()}

"""The sans-IO capture framing (target/capture.py): events in, pcap records with consistent TCP out."""
from __future__ import annotations

import struct

from sanlab.target.capture import (
    MAX_SEGMENT, PCAP_HEADER, PCAP_RECORD, CaptureHub, EventKind, PcapFramer, StreamEvent,
)


def records(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        _, _, incl, orig = PCAP_RECORD.unpack_from(blob, pos)
        assert incl == orig
        out.append(blob[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    return out


def tcp(frame: bytes) -> tuple[int, int, int, int, int, int]:
    """(sport, dport, seq, ack, flags, payload length) of an Ether/IPv4/TCP frame."""
    ihl = (frame[14] & 15) * 4
    total = struct.unpack_from(">H", frame, 16)[0]
    t = 14 + ihl
    sport, dport, seq, ack, off_flags = struct.unpack_from(">HHIIH", frame, t)
    return sport, dport, seq, ack, off_flags & 0x1FF, total - ihl - (off_flags >> 12) * 4


def test_a_stream_is_handshake_data_split_at_65495_and_fins_with_consistent_numbers() -> None:
    isns = iter([1000, 0xFFFFFFF0])  # the server's wraps around 2**32
    fr = PcapFramer(isn=lambda: next(isns))
    assert PCAP_HEADER.unpack(fr.header())[0] == 0xA1B2C3D4
    c, s = ("127.0.0.1", 40000), ("127.0.0.2", 3260)
    blob = fr.frames(StreamEvent(EventKind.OPEN, 1, 1.5, client=c, server=s))
    blob += fr.frames(StreamEvent(EventKind.DATA, 1, 1.6, True, b"a" * 48))
    blob += fr.frames(StreamEvent(EventKind.DATA, 1, 1.7, False, b"b" * (MAX_SEGMENT * 2 + 7)))
    blob += fr.frames(StreamEvent(EventKind.CLOSE, 1, 1.8, from_client=False))
    got = [tcp(f) for f in records(blob)]
    SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
    srv = 0xFFFFFFF0
    assert got == [
        (40000, 3260, 1000, 0, SYN, 0), (3260, 40000, srv, 1001, SYN | ACK, 0), (40000, 3260, 1001, srv + 1, ACK, 0),
        (40000, 3260, 1001, srv + 1, PSH | ACK, 48),
        (3260, 40000, srv + 1, 1049, ACK, MAX_SEGMENT),
        (3260, 40000, (srv + 1 + MAX_SEGMENT) & 0xFFFFFFFF, 1049, ACK, MAX_SEGMENT),
        (3260, 40000, (srv + 1 + 2 * MAX_SEGMENT) & 0xFFFFFFFF, 1049, PSH | ACK, 7),
        (3260, 40000, (srv + 8 + 2 * MAX_SEGMENT) & 0xFFFFFFFF, 1049, FIN | ACK, 0),
        (40000, 3260, 1049, (srv + 9 + 2 * MAX_SEGMENT) & 0xFFFFFFFF, FIN | ACK, 0),
        (3260, 40000, (srv + 9 + 2 * MAX_SEGMENT) & 0xFFFFFFFF, 1050, ACK, 0)]
    assert fr.packets == len(got)
    assert fr.frames(StreamEvent(EventKind.DATA, 1, 2.0, True, b"late")) == b""  # closed: nothing


def test_a_capture_started_mid_stream_begins_with_the_bytes_of_the_pdu_in_progress() -> None:
    hub = CaptureHub()
    point = hub.open(("127.0.0.1", 3260), ("127.0.0.1", 5000), local_is_client=False, pending_rx=lambda: b"\x01" * 20)
    assert point.tap is None  # no capture: the hot path's one check
    seen: list[StreamEvent] = []
    hub.start(seen.append, lambda: 7.0)
    assert point.tap is not None
    assert [(e.kind, e.client, e.server, e.payload, e.from_client) for e in seen] == [
        (EventKind.OPEN, ("127.0.0.1", 5000), ("127.0.0.1", 3260), b"", True),
        (EventKind.DATA, ("0.0.0.0", 0), ("0.0.0.0", 0), b"\x01" * 20, True)]
    bhs = bytearray(48)
    bhs[0], bhs[32] = 0x01, 0x2A  # SCSI Command, WRITE(10)
    point.tap.count(bytes(bhs))
    point.tap.sent([b"x", memoryview(b"yz")])
    point.peer_closed = True
    hub.close(point)
    assert seen[-2].payload == b"xyz" and not seen[-2].from_client
    assert seen[-1].kind is EventKind.CLOSE and seen[-1].from_client  # the initiator's FIN first
    assert hub.stop().as_dict() == {"pdus": {"SCSI_COMMAND": 1}, "scsi_commands": {"0x2a": 1}, "bytes": 23,
                                    "streams": 1}

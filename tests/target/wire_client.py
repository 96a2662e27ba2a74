"""A minimal raw-socket iSCSI client for wire-level tests.

It speaks through the project's PDU codec but builds the login text and every
PDU by hand, so tests can send exactly what a broken or hostile initiator
would (bad digests, bad opcodes, oversized segments).  Not the product's
initiator (that is ``sanlab.target.initiator``): no retries, no negotiation
logic beyond reading the target's answers.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from sanlab.target.pdu import (
    LoginRequest, LoginResponse, Pdu, PduFramer, RawPdu, decode, encode_bytes,
)

INITIATOR = "iqn.2026-11.test:wire"


def text(**keys: str) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())


def parse(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in bytes(data).split(b"\0"):
        if item:
            k, _, v = item.decode().partition("=")
            out[k] = v
    return out


@dataclass
class WireClient:
    host: str
    port: int
    sock: socket.socket = field(init=False)
    framer: PduFramer = field(default_factory=PduFramer)
    header_digest: bool = False
    data_digest: bool = False
    cmdsn: int = 1
    statsn: int = 0
    itt: int = 1
    isid: int = 0x400000000042
    login_tsih: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=10)

    def close(self) -> None:
        self.sock.close()

    def send_pdu(self, pdu: Pdu) -> None:
        self.sock.sendall(encode_bytes(pdu, self.header_digest, self.data_digest))

    def send_raw(self, blob: bytes) -> None:
        self.sock.sendall(blob)

    def recv_raw(self) -> RawPdu | None:
        """The next PDU, or None when the target closed the connection."""
        while True:
            raw = self.framer.next()
            if raw is not None:
                return raw
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.framer.feed(chunk)

    def recv(self) -> Pdu:
        raw = self.recv_raw()
        assert raw is not None, "target closed the connection"
        assert raw.data_digest_ok, "bad data digest from the target"
        pdu = decode(raw)
        sn = getattr(pdu, "statsn", None)
        if sn is not None:
            self.statsn = sn
        return pdu

    def login(self, target: str | None, *, csg: int = 1, nsg: int = 3, version: tuple[int, int] = (0, 0),
              isid: int | None = None, **keys: str) -> LoginResponse:
        """A one-PDU login; returns the (last) Login Response.  Digests start after it on success.
        ``isid`` (else the client's) names the session: two clients with one ISID reinstate each other."""
        if isid is not None:
            self.isid = isid
        base = {"InitiatorName": INITIATOR}
        if target is None:
            base["SessionType"] = "Discovery"
        else:
            base.update(TargetName=target, SessionType="Normal")
        base.update(keys)
        req = LoginRequest(transit=True, csg=csg, nsg=nsg, version_max=version[0], version_min=version[1],
                           isid=self.isid, tsih=0, initiator_task_tag=self.itt, cid=0, cmdsn=self.cmdsn,
                           expstatsn=0, data=text(**{k: v for k, v in base.items() if v is not None}))
        self.send_pdu(req)
        resp = self.recv()
        assert isinstance(resp, LoginResponse)
        if resp.status_class == 0 and resp.transit and resp.nsg == 3:
            answers = parse(bytes(resp.data))
            self.header_digest = answers.get("HeaderDigest") == "CRC32C"
            self.data_digest = answers.get("DataDigest") == "CRC32C"
            self.framer.header_digest = self.header_digest
            self.framer.data_digest = self.data_digest
            self.statsn = resp.statsn + 1
            self.login_tsih = resp.tsih
        return resp

    def next_itt(self) -> int:
        self.itt += 1
        return self.itt

"""Reading the array's packet captures with tshark's own dissectors (issue 18): what the tests compare
with the PDUs the array counted."""
from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sanlab.target.pdu import Opcode


def need_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed (scripts/install-clients installs it)")
    return path


def tshark(pcap: Path, ports: list[int], *extra: str) -> str:
    """tshark's output for ``pcap`` with every port in ``ports`` decoded as iSCSI."""
    args = [need_tshark(), "-r", str(pcap)]
    for port in ports:
        args += ["-d", f"tcp.port=={port},iscsi"]
    cp = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


@dataclass
class Dissected:
    """What tshark found in a capture."""

    pdus: Counter[str] = field(default_factory=Counter)
    """iSCSI PDUs by our Opcode's name."""
    scsi_commands: Counter[str] = field(default_factory=Counter)
    """SCSI Command PDUs by CDB operation code (``0x2a``)."""
    frames: int = 0
    malformed: list[str] = field(default_factory=list)
    """Each malformed-packet mark: the layer before it (``frame N: SCSI Payload (...)``)."""

    def malformed_outside_truncated_inquiry(self) -> list[str]:
        """The malformed marks, less one kind that is not the capture's doing: Wireshark 4.0's SCSI
        dissector raises on a VPD page (qemu asks page 83h with 64 bytes) that the device server cut at
        the initiator's ALLOCATION LENGTH, as SPC-4 §6.7.1 says it must; the iSCSI PDU around it is whole."""
        return [m for m in self.malformed if not m.endswith("SCSI Payload (Inquiry Response Data) / SCSI]")]


def dissect(pcap: Path, ports: list[int]) -> Dissected:
    """Every iSCSI PDU tshark's dissector finds, from its PDML (one ``iscsi`` proto per PDU; a SCSI
    Command's CDB is the ``scsi`` proto that follows it)."""
    out = Dissected()
    root = ET.fromstring(tshark(pcap, ports, "-T", "pdml"))
    for packet in root.iter("packet"):
        out.frames += 1
        want_cdb = False
        before = ""
        for proto in packet.findall("proto"):
            name = proto.get("name")
            if name == "_ws.malformed":
                out.malformed.append(f"frame {out.frames}: {before} / {(proto.get('showname') or '')[19:]}")
            before = proto.get("showname") or ""
            if name == "_ws.malformed":
                continue
            elif name == "iscsi":
                opf = proto.find("field[@name='iscsi.opcode']")
                assert opf is not None, ET.tostring(proto)[:500]
                op = int(opf.get("show", ""), 16)
                out.pdus[Opcode(op).name] += 1
                want_cdb = op == Opcode.SCSI_COMMAND
            elif name == "scsi" and want_cdb:
                f = next((f for f in proto.iter("field") if (f.get("name") or "").endswith(".opcode")), None)
                assert f is not None, ET.tostring(proto)[:500]
                out.scsi_commands[f"0x{int(f.get('value', ''), 16):02x}"] += 1
                want_cdb = False
    return out


def expert_warnings(pcap: Path, ports: list[int]) -> str:
    """tshark's expert infos of severity warning and error (empty when there are none)."""
    text = tshark(pcap, ports, "-q", "-z", "expert,warn")
    return text if ("Warns" in text or "Errors" in text) else ""


def assert_same_pdus(pcap: Path, ports: list[int], counted: dict[str, object]) -> Dissected:
    """tshark reads every frame without a malformed packet or an expert warning, and finds exactly the
    PDUs the array counted (``counted`` is the array's ``capture stop`` answer)."""
    seen = dissect(pcap, ports)
    # (A helper module: pytest does not rewrite these asserts, so each says what it compared.)
    assert seen.malformed_outside_truncated_inquiry() == [], seen.malformed
    warnings = expert_warnings(pcap, ports)
    if not seen.malformed:
        assert warnings == "", warnings
    else:  # those marks are the only expert errors; nothing at warning level
        assert "Warns" not in warnings, warnings
    assert dict(seen.pdus) == counted["pdus"], (dict(seen.pdus), counted["pdus"])
    assert dict(seen.scsi_commands) == counted["scsi_commands"], (dict(seen.scsi_commands), counted["scsi_commands"])
    assert seen.frames == counted["packets"], (seen.frames, counted["packets"])
    return seen

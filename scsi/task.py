"""The unit of work the transport hands to the SCSI device server, and its answer.

The transport (``sanlab.target``) assembles a command and *all* its Data-Out
into a :class:`ScsiTask`; the device server (``sanlab.scsi``) returns a
:class:`ScsiResult`.  SCSI never calls back into iSCSI (ARCHITECTURE.md): the
transport maps the result onto Data-In / SCSI Response PDUs and computes the
residuals from :attr:`ScsiResult.transfer_length` and the iSCSI Expected Data
Transfer Length.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class TaskAttribute(IntEnum):
    """SAM-5 task attributes, as carried in the iSCSI SCSI Command ATTR field (RFC 7143 §11.3.1)."""

    UNTAGGED = 0
    SIMPLE = 1
    ORDERED = 2
    HEAD_OF_QUEUE = 3
    ACA = 4


class ScsiStatus(IntEnum):
    """SAM-5 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


@dataclass(slots=True, frozen=True)
class Nexus:
    """An I_T nexus: one initiator port talking to one target port (SAM-5 §4.6)."""

    initiator_name: str
    """iSCSI initiator name (iqn./eui./naa.)."""
    isid: int
    """48-bit ISID; with the name it forms the SCSI initiator port name."""
    target_name: str
    """iSCSI target name."""
    tpgt: int = 1
    """Target portal group tag; with the target name it forms the target port name."""

    @property
    def initiator_port(self) -> str:
        """SCSI initiator port name, RFC 7143 §4.4.1 (name + ",i,0x" + ISID)."""
        return f"{self.initiator_name},i,0x{self.isid:012x}"

    @property
    def target_port(self) -> str:
        """SCSI target port name, RFC 7143 §4.4.1 (name + ",t,0x" + TPGT)."""
        return f"{self.target_name},t,0x{self.tpgt:04x}"


@dataclass(slots=True)
class ScsiTask:
    """One SCSI command with its complete Data-Out buffer."""

    nexus: Nexus
    lun: int
    """Logical unit number decoded from the 8-byte LUN field (SAM-5 §4.7)."""
    cdb: bytes
    attr: TaskAttribute = TaskAttribute.SIMPLE
    data_out: bytes | bytearray | memoryview = b""
    """All Data-Out the initiator sent: at most the iSCSI Expected Data Transfer Length."""
    expected_in_length: int = 0
    """Bytes of Data-In the initiator can take (iSCSI EDTL or Bidi Read EDTL)."""
    tag: int = 0
    """Task tag (iSCSI Initiator Task Tag), for logs and TMFs."""
    write_edtl: int = 0
    """iSCSI Expected Data Transfer Length for the write direction."""


@dataclass(slots=True)
class ScsiResult:
    """What the device server answers: status, Data-In and sense."""

    status: ScsiStatus = ScsiStatus.GOOD
    data_in: bytes | bytearray | memoryview = b""
    """Data-In as the command defines it (may exceed what the initiator can take)."""
    sense: bytes = b""
    """Sense data (fixed or descriptor format) when status is CHECK CONDITION."""
    transfer_length: int | None = None
    """Bytes the CDB asked to transfer in its data direction; the transport compares
    it with the iSCSI EDTL for residuals (RFC 7143 §11.4.5).  ``None``: use ``len(data_in)``
    for reads and 0 for commands that move no data."""
    data_out_direction: bool = False
    """True when ``transfer_length`` describes Data-Out (a write-type command)."""

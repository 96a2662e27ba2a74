"""What a command handler gets: the task, its logical unit, the device server's view."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.task import ScsiResult, ScsiTask

if TYPE_CHECKING:
    from sanlab.scsi.device_server import DeviceServer


@dataclass(slots=True)
class Ctx:
    """One command being executed."""

    server: DeviceServer
    """The device server (for REPORT LUNS and other target-wide answers)."""
    task: ScsiTask
    """The command as the transport handed it over."""
    lu: LogicalUnit | None
    """None for a LUN that does not exist (only INQUIRY/REPORT LUNS/REQUEST SENSE get here)."""

    @property
    def cdb(self) -> bytes:
        """The CDB bytes."""
        return self.task.cdb

    def need_lu(self) -> LogicalUnit:
        """The logical unit; dispatch guarantees one for every command not marked ``any_lun``."""
        assert self.lu is not None, "dispatch guarantees an LU for this command"
        return self.lu


def data_in(data: bytes | bytearray, allocation_length: int) -> ScsiResult:
    """Parameter data cut to the CDB's ALLOCATION LENGTH (SPC-4 §4.2.5.6).

    The device server ends the transfer when ALLOCATION LENGTH bytes or all
    available data have gone, whichever is less; that many bytes is what the
    command transfers, so it is the ``transfer_length`` the transport holds
    against the iSCSI EDTL for residuals (RFC 7143 §11.4.5.1).
    """
    out = bytes(data[:allocation_length])
    return ScsiResult(data_in=out, transfer_length=len(out))

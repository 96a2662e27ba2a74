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

    server: "DeviceServer"
    task: ScsiTask
    lu: LogicalUnit | None
    """None for a LUN that does not exist (only INQUIRY/REPORT LUNS/REQUEST SENSE get here)."""

    @property
    def cdb(self) -> bytes:
        return self.task.cdb

    def need_lu(self) -> LogicalUnit:
        assert self.lu is not None, "dispatch guarantees an LU for this command"
        return self.lu


def data_in(data: bytes, alloc: int) -> ScsiResult:
    """Parameter data cut to the CDB's ALLOCATION LENGTH (SPC-4 §4.2.5.6)."""
    return ScsiResult(data_in=data[:alloc])

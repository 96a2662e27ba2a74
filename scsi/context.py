"""What a command handler gets: the task, its logical unit, the device server's view, the table.

Handlers see the device server only through :class:`DeviceServerView`, so no command module
imports scsi/device_server.py (which imports them, through scsi/kinds.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.reservation_store import ReservationStore
from sanlab.scsi.task import Nexus, ScsiResult, ScsiTask

if TYPE_CHECKING:
    # Type only: commands.py imports this module for its Handler type (a runtime import both ways
    # would be a cycle).
    from sanlab.scsi.commands import CommandTable


class DeviceServerView(Protocol):
    """What a handler may use of the device server it runs in (scsi/device_server.py)."""

    @property
    def luns(self) -> Mapping[int, LogicalUnit]:
        """LUN → logical unit of the target (REPORT LUNS, EXTENDED COPY targets)."""

    @property
    def reservation_store(self) -> ReservationStore | None:
        """Where APTPL reservation state is made durable; None: nothing survives a restart."""

    on_abort: Callable[[int, list[Nexus]], Awaitable[None]] | None
    """Set by the transport: abort the tasks of these I_T nexuses on this LUN (PREEMPT AND ABORT)."""


@dataclass(slots=True)
class Ctx:
    """One command being executed."""

    server: DeviceServerView
    """The device server (for REPORT LUNS and other target-wide answers)."""
    task: ScsiTask
    """The command as the transport handed it over."""
    lu: LogicalUnit | None
    """None for a LUN that does not exist (only INQUIRY/REPORT LUNS/REQUEST SENSE get here)."""
    table: CommandTable
    """The command table that dispatched the command: the LU kind's (REPORT SUPPORTED OPERATION
    CODES reports it)."""

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

"""The kinds of logical unit this package offers and their command tables (tgt's device types).

This is the one module that imports the command families: each family's module declares its rows
(``COMMANDS``) and imports only scsi/commands.py, the device server imports this module, so the
handlers never import the device server (no import cycle: the families are below, the dispatcher
above).

* :data:`SPC` — the primary commands every kind answers: TEST UNIT READY, INQUIRY, REQUEST SENSE,
  REPORT LUNS, MODE SENSE/SELECT, the reservation commands, REPORT SUPPORTED OPERATION CODES and
  TASK MANAGEMENT FUNCTIONS.  It also answers for a LUN that does not exist.
* :data:`DISK` — a direct-access block device (SBC-3): SPC plus capacity, READ/WRITE, caches,
  verify, compare, provisioning, atomic writes, sanitize, the medium, third-party copy.

Another kind starts from one of these and overrides rows (``DISK.table.override({...})``), and is
given to the device server by whoever builds it (tools/, ARCHITECTURE.md: scsi never imports
replication or tools).
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sanlab.scsi import atomic, compare, copy, medium, mode, provisioning, reservations, rsoc, sanitize, sbc, spc
from sanlab.scsi import verify
from sanlab.scsi.commands import CommandTable, LuKind
from sanlab.scsi.lu import DISK_KIND

SPC = CommandTable.merge(spc.COMMANDS, mode.COMMANDS, reservations.COMMANDS, rsoc.COMMANDS)
"""The commands every kind of logical unit answers (SPC-4)."""

DISK = LuKind(DISK_KIND, SPC.extend(sbc.COMMANDS, verify.COMMANDS, compare.COMMANDS, provisioning.COMMANDS,
                                    atomic.COMMANDS, sanitize.COMMANDS, medium.COMMANDS, copy.COMMANDS),
              plain_io=True)
"""A direct-access block device: every LU unless its configuration names another kind."""

KINDS: Mapping[str, LuKind] = MappingProxyType({DISK.name: DISK})
"""The kinds a device server knows unless it is given others: name → kind."""

"""Command devices: the operations on them, and the management operations they carry (issue 16).

tools/ is where the command device meets the management operations (ARCHITECTURE.md: scsi and
replication never import tools): :class:`CommandDeviceRef` gives the device servers the command
device's LU kind (replication/cmddev.py) and, once the array's operations exist, the router it
dispatches through (replication/command_router.py); :class:`OperationDispatch` is that dispatch — a
PROCESS NUMBER (tools/operations.py's table) to its operation, carried out by tools/dispatch.py
exactly as a request on the management socket is.

A command device is declared in the configuration (``command_device = true`` on a LUN) or made at run
time (``sanlab admin create-command-device target=... lun=...``, kept in the catalog's
``command_devices`` table: seed 003 FIG. 5's command device management table).
"""
from __future__ import annotations

from typing import Any

import structlog

from sanlab.replication.cmddev import COMMAND_DEVICE_KIND, CommandDeviceUnit, command_device_kind
from sanlab.replication.command_block import Command, ResultStatus
from sanlab.replication.command_router import CommandRouter
from sanlab.replication.routing import LinkForwarder
from sanlab.scsi.commands import LuKind
from sanlab.tools import operations
from sanlab.tools.array import AdminError, ArrayState, check_lun, found
from sanlab.tools.dispatch import Handler, Outcome, perform

log = structlog.get_logger("sanlab.tools.cmddev")

_STATUS = {Outcome.DONE: ResultStatus.DONE, Outcome.REFUSED: ResultStatus.REFUSED,
           Outcome.NOT_UNDERSTOOD: ResultStatus.INVALID_ARGUMENTS, Outcome.FAILED: ResultStatus.FAILED}
"""How a request ended → the STATUS of its result in the edited data."""


def array_name(initiator_name: str) -> str:
    """The name this array answers to in transfer destinations when the configuration gives none: the
    last part of its initiator name (``iqn.2026-11.org.sanlab:array-a`` → ``array-a``), which is what
    the other arrays call it as a remote in the examples."""
    return initiator_name.rsplit(":", 1)[-1]


class CommandDeviceRef:
    """The router as the command device LUs find it (the device servers exist before the operations)."""

    def __init__(self) -> None:
        self.router: CommandRouter | None = None

    def __call__(self) -> CommandRouter | None:
        return self.router

    def kind(self) -> LuKind:
        """The command device's LU kind, dispatching through this reference."""
        return command_device_kind(self)


class OperationDispatch:
    """PROCESS NUMBER → management operation, carried out as the socket carries it out (tools/dispatch.py)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def knows(self, process_number: int) -> bool:
        """A process number of tools/operations.py's table."""
        return operations.by_process_number(process_number) is not None

    async def __call__(self, command: Command) -> tuple[ResultStatus, Any]:
        """The operation's result (DONE) or the reason it failed, in the socket's words."""
        op = operations.by_process_number(command.process_number)
        if op is None:  # the command device checks first; a forwarded block may still name one
            return ResultStatus.INVALID_ARGUMENTS, f"unknown process number {command.process_number:04x}h"
        reply = await perform(self.handler, op.name, command.args, "cmddev")
        status = _STATUS[reply.outcome]
        if status == ResultStatus.REFUSED and op.name in operations.PAIR_INSTRUCTIONS:
            status = ResultStatus.PAIR_INSTRUCTION_REFUSED  # seed 000 claim 12: CHECK CONDITION too
        return status, reply.body["result"] if reply.body["ok"] else reply.body["error"]


class CommandDeviceOps:
    """The command device operations of tools/operations.py (``Domain.COMMAND_DEVICES``)."""

    def __init__(self, array: ArrayState, handler: Handler, ref: CommandDeviceRef | None = None,
                 name: str | None = None) -> None:
        self.array = array
        self.name = name or array_name(array.initiator_name)
        """This array's name in transfer destinations."""
        self.forwarder = LinkForwarder(self.name, lambda: array.links,
                                       operations.PROCESS_NUMBERS["display_command_devices"])
        """Sends blocks for other arrays on over the links to the remotes (replication/routing.py)."""
        self.router = CommandRouter(self.name, OperationDispatch(handler), self.forwarder)
        """What every command device of this array dispatches through."""
        if ref is not None:
            ref.router = self.router

    def _catalog_devices(self) -> set[tuple[str, int]]:
        return set(self.array.catalog.command_devices())

    async def load(self) -> None:
        """Serve the catalog's command devices again (after a restart)."""
        for target, lun in self._catalog_devices():
            ds = self.array.device_servers.get(target)
            if ds is None or ds.has_lun(lun):
                log.warning("command_device_not_served", target=target, lun=lun,
                            reason="no such target" if ds is None else "the LUN is taken")
                continue
            ds.add_lun(lun, CommandDeviceUnit(target, lun))

    async def create_command_device(self, target: str, lun: int) -> dict[str, Any]:
        """Serve a command device as LUN ``lun`` of ``target`` (kept in the catalog)."""
        a = self.array
        async with a.changes:
            ds = found(a.device_servers.get(target), f"no target {target}")
            check_lun(lun, "LUN")
            if ds.has_lun(lun):
                raise AdminError(f"{target} already has LUN {lun}")
            if COMMAND_DEVICE_KIND not in ds.kinds:
                raise AdminError(f"{target} serves no command devices (its device server lacks the kind)")
            async with a.catalog.change() as change:
                change.add_command_device(target, lun)
            ds.add_lun(lun, CommandDeviceUnit(target, lun))
        return {"target": target, "lun": lun, "kind": COMMAND_DEVICE_KIND}

    async def delete_command_device(self, target: str, lun: int) -> dict[str, Any]:
        """Stop serving the run-time command device at LUN ``lun`` of ``target``."""
        a = self.array
        async with a.changes:
            if (target, lun) not in self._catalog_devices():
                ds = a.device_servers.get(target)
                lu = ds.luns.get(lun) if ds is not None else None
                if isinstance(lu, CommandDeviceUnit):
                    raise AdminError(f"{target} LUN {lun} is a command device of the configuration file: "
                                     "remove it there and restart")
                raise AdminError(f"{target} LUN {lun} is not a command device created at run time")
            async with a.catalog.change() as change:
                change.delete_command_device(target, lun)
            ds = a.device_servers.get(target)
            if ds is not None and isinstance(ds.luns.get(lun), CommandDeviceUnit):
                ds.remove_lun(lun)
        return {"target": target, "lun": lun}

    def display_command_devices(self) -> dict[str, Any]:
        """This array's name, its command devices, its links, and its connection table (seed 003 FIG. 36:
        which array links to which, as far as it knows; what neighbours ask each other for)."""
        catalog = self._catalog_devices()
        devices = [{"target": t, "lun": n, "source": "catalog" if (t, n) in catalog else "config"}
                   for t, ds in sorted(self.array.device_servers.items())
                   for n, lu in sorted(ds.luns.items()) if isinstance(lu, CommandDeviceUnit)]
        links = [{"remote": name, "link": "up" if link.state.up else "down"}
                 for name, link in sorted(self.array.links.items())]
        return {"array": self.name, "command_devices": devices, "links": links,
                "connections": {k: list(v) for k, v in sorted(self.forwarder.connections().items())}}

"""What an array does with a command block: carry out its commands, send the rest on (seed 003 FIG. 31, 41).

The parameters are taken in order (FIG. 41): a command parameter is carried out here through the
injected :class:`Dispatch` (tools/ builds it over the management operations: replication never imports
tools); a transfer destination parameter first loses this array's own name at its head (FIG. 31,
S3105: each hop removes its own address).  When names are left, the rest of the block — that
destination and every parameter after it — is for other arrays: it goes to the injected
:data:`Forward` (the routing over the array links, replication/routing.py), and the results it brings
back are this block's remaining results (FIG. 32: the edited data travels back along the path).  A
destination left empty means the commands after it are this array's.

Every command of the block gets exactly one result, in the block's order, so the host (and the
command device, for its field pointers) can pair result *i* with command *i*.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

import structlog

from sanlab.replication.command_block import (
    MAX_HOPS, Command, CommandBlock, EditedData, Result, ResultStatus, TransferDestination,
)

log = structlog.get_logger("sanlab.replication.cmddev")


class Dispatch(Protocol):
    """The array's management operations by process number (tools/cmddev_ops.py builds it)."""

    def knows(self, process_number: int) -> bool:
        """A process number this array can carry out."""

    async def __call__(self, command: Command) -> tuple[ResultStatus, Any]:
        """Carry ``command`` out: (status, the operation's result or the reason it failed)."""


Forward = Callable[[CommandBlock], Awaitable[EditedData]]
"""Send a block whose first parameter is a transfer destination (not naming this array first) on
toward it, and return the edited data that comes back; raises :class:`Unreachable`."""


class Unreachable(Exception):
    """A block could not be sent on (no route, the link down, the peer without a command device)."""


class CommandRouter:
    """Carries out a block's commands for this array and sends the rest on (module docstring)."""

    def __init__(self, me: str, dispatch: Dispatch, forward: Forward | None = None) -> None:
        self.me = me
        """This array's name, as the others' transfer destinations name it."""
        self.dispatch = dispatch
        self.forward = forward
        """None: this array sends nothing on (every forwarded command is UNREACHABLE)."""

    def own_head(self, dest: TransferDestination) -> tuple[str, ...]:
        """The destination's names once this array's own at the head are removed (FIG. 31 S3105)."""
        names = list(dest.addresses)
        while names and names[0] == self.me:
            names.pop(0)
        return tuple(names)

    def local_commands(self, block: CommandBlock) -> list[tuple[int, Command]]:
        """(parameter index, command) of the commands this array carries out itself: those before the
        first transfer destination that names another array."""
        out: list[tuple[int, Command]] = []
        for i, p in enumerate(block.parameters):
            if isinstance(p, TransferDestination):
                if self.own_head(p):
                    break
                continue
            out.append((i, p))
        return out

    async def process(self, block: CommandBlock) -> EditedData:
        """Every command's result, in order: carried out here or brought back from the arrays named."""
        results: list[Result] = []
        params = block.parameters
        for i, p in enumerate(params):
            if isinstance(p, Command):
                results.append(await self.run(p))
                continue
            names = self.own_head(p)
            if not names:
                continue
            results += await self._send_on(block.sent_on((TransferDestination(names),) + params[i + 1:]))
            break
        return EditedData(block.identification, tuple(results))

    async def run(self, command: Command) -> Result:
        """One command, here; a failure of the dispatch itself is a FAILED result, never lost."""
        try:
            status, output = await self.dispatch(command)
        except Exception as exc:  # noqa: BLE001 - the host gets the reason; the array keeps running
            log.exception("cmddev_command_failed", process=command.process_number)
            status, output = ResultStatus.FAILED, f"{type(exc).__name__}: {exc}"
        if status == ResultStatus.DONE and not command.edited_data:
            output = None  # FIG. 9 S903/S906: no edited data asked for, none kept
        return Result(command.process_number, status, self.me, output)

    async def _send_on(self, rest: CommandBlock) -> list[Result]:
        commands = [c for _, c in rest.commands()]
        dest = rest.parameters[0]
        assert isinstance(dest, TransferDestination)
        try:
            if self.forward is None:
                raise Unreachable(f"array {self.me} sends no commands on to other arrays")
            if rest.hops > MAX_HOPS:
                raise Unreachable(f"sent on {MAX_HOPS} times already (a routing loop?)")
            edited = await self.forward(rest)
            if len(edited.results) != len(commands):
                raise Unreachable(f"{len(edited.results)} result(s) came back for {len(commands)} command(s)")
            return list(edited.results)
        except Unreachable as exc:
            log.warning("cmddev_forward_failed", destination=list(dest.addresses), reason=str(exc))
            return [Result(c.process_number, ResultStatus.UNREACHABLE, self.me,
                           f"not sent on to {dest.addresses[-1]}: {exc}") for c in commands]

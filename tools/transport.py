"""How the ``sanlab`` command reaches the array: the management socket, or a command device in-band.

Every management command of the CLI (``admin``, ``show``, ``remote``, ``pair``, ``migrate``) sends its
requests through :func:`transport_for`, the one place the choice is made:

* by default, :class:`SocketTransport`: ``<data-dir>/sanlab.sock`` (tools/mgmt.py);
* with ``sanlab --cmddev iscsi://HOST:PORT/TARGET/LUN``, :class:`CommandDeviceTransport`: one command
  block per request, written to that command device over iSCSI with the project's initiator
  (replication/cmddev_client.py), with ``--array NAME`` as its transfer destination when the command
  is for another array (seed 003 FIG. 27: the array sends it on).

Both answer with the socket's reply (``{"ok": true, "result": ...}`` or ``{"ok": false, "error":
...}``), so every command prints the same whichever way it went.  Failing to reach the array at all
raises :class:`~sanlab.tools.mgmt_client.AdminError` (exit status 2 at the CLI).

CHAP for the command device's target: ``--chap-user``/``--chap-secret`` (and ``--mutual-user``/
``--mutual-secret``), or the environment variables ``SANLAB_CHAP_USER``, ``SANLAB_CHAP_SECRET``,
``SANLAB_MUTUAL_USER``, ``SANLAB_MUTUAL_SECRET`` (which keep the secret out of the process list);
``--initiator-name`` or ``SANLAB_INITIATOR_NAME`` names the host (the target's ACL).  No secret is
ever printed: a failed login says only that authentication failed.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sanlab.tools import operations
from sanlab.tools.mgmt_client import AdminError, request

if TYPE_CHECKING:
    from sanlab.replication.command_block import CommandBlock
    from sanlab.target.chap import ChapCredentials

# The command device's half (the initiator, command blocks, CHAP) is imported when a command goes
# that way: a socket command (nearly all of them) starts without the iSCSI stack (tools/mgmt_client.py).

DEFAULT_INITIATOR = "iqn.2026-11.org.sanlab:cli"
"""The host's iSCSI name when neither ``--initiator-name`` nor ``SANLAB_INITIATOR_NAME`` gives one."""
TIMEOUT = 600.0
"""Seconds one request may take (as the socket's): some operations wait (wait-rebuild)."""

_URL = re.compile(r"^iscsi://(?P<host>\[[^\]]+\]|[^:/\[\]]+)(?::(?P<port>\d+))?/(?P<target>[^/]+)/(?P<lun>\d+)/?$")


class Transport(Protocol):
    """Sends one management request and returns the socket's reply."""

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``; AdminError: no array to ask."""


@dataclass(frozen=True, slots=True)
class SocketTransport:
    """The management socket of the array whose data directory is ``data_dir``."""

    data_dir: Path

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request on ``<data_dir>/sanlab.sock``."""
        return request(self.data_dir, op, args)


@dataclass(frozen=True, slots=True)
class CommandDeviceUrl:
    """``iscsi://HOST[:PORT]/TARGET/LUN``: where the command device is."""

    host: str
    port: int
    target: str
    lun: int

    @classmethod
    def parse(cls, text: str) -> CommandDeviceUrl:
        """Parse the URL; AdminError naming what is wrong."""
        m = _URL.match(text)
        if m is None:
            raise AdminError(f"--cmddev {text!r}: write iscsi://HOST:PORT/TARGET/LUN "
                             "(e.g. iscsi://127.0.0.1:3260/iqn.2026-11.org.sanlab:array-a/9)")
        return cls(m["host"].strip("[]"), int(m["port"] or 3260), m["target"], int(m["lun"]))


@dataclass(frozen=True, slots=True)
class CommandDeviceTransport:
    """Each request a command block on the command device at ``url`` (module docstring)."""

    url: CommandDeviceUrl
    array: str | None = None
    """The array the commands are for when it is not the one serving the command device."""
    initiator_name: str = DEFAULT_INITIATOR
    chap: ChapCredentials | None = field(default=None, repr=False)
    mutual_chap: ChapCredentials | None = field(default=None, repr=False)

    def block(self, op: str, args: dict[str, Any] | None) -> CommandBlock:
        """The command block of one request (its identification number random, as a host picks one)."""
        from sanlab.replication.command_block import Command, CommandBlock, TransferDestination
        try:
            operation = operations.lookup(op)
        except operations.ArgumentError as exc:
            raise AdminError(str(exc)) from None
        command = Command(operations.PROCESS_NUMBERS[operation.name], dict(args or {}))
        params: tuple[TransferDestination | Command, ...] = (command,)
        if self.array:
            params = (TransferDestination((self.array,)), command)
        return CommandBlock(secrets.randbits(32), params)

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Log in, submit one block, log out; the result as the socket would have answered."""
        import asyncio

        from sanlab.replication.cmddev_client import CommandDeviceRefused
        from sanlab.replication.command_block import MalformedEditedData, ResultStatus
        from sanlab.replication.link import describe_failure
        from sanlab.target.initiator import IscsiError
        from sanlab.tools.logging import setup_logging
        block = self.block(op, args)
        setup_logging("console", "warning")  # the initiator's log lines to stderr, only what matters: stdout is the answer
        try:
            edited = asyncio.run(self._submit(block))
        except CommandDeviceRefused as exc:
            raise AdminError(str(exc)) from None
        except MalformedEditedData as exc:
            raise AdminError(f"{self.where}: unreadable edited data: {exc}") from None
        except (OSError, IscsiError) as exc:
            raise AdminError(f"command device {self.where}: {describe_failure(self.portal, exc)}") from None
        if len(edited.results) != 1:
            raise AdminError(f"{self.where}: {len(edited.results)} results for one command")
        res = edited.results[0]
        if res.status == ResultStatus.DONE:
            return {"ok": True, "result": res.output}
        return {"ok": False, "error": str(res.output)}

    @property
    def portal(self) -> str:
        """``HOST:PORT`` of the URL."""
        from sanlab.replication.link import format_portal
        return format_portal(self.url.host, self.url.port)

    @property
    def where(self) -> str:
        """The command device as the messages name it."""
        return f"iscsi://{self.portal}/{self.url.target}/{self.url.lun}"

    async def _submit(self, block: CommandBlock) -> Any:
        from sanlab.replication.cmddev_client import submit
        from sanlab.storage.external import stable_isid
        from sanlab.target.initiator import InitiatorConfig, IscsiError, IscsiSession
        cfg = InitiatorConfig(initiator_name=self.initiator_name,
                              isid=stable_isid(self.initiator_name, f"cmddev:{os.getpid()}"),
                              chap=self.chap, target_chap=self.mutual_chap, login_timeout=15.0,
                              command_timeout=TIMEOUT, nop_interval=0.0, reconnect=False)
        session = IscsiSession(self.url.host, self.url.port, self.url.target, cfg)
        try:
            await session.connect()
            return await submit(session, self.url.lun, block, TIMEOUT)
        finally:
            try:
                await session.logout()
            except (OSError, IscsiError):
                pass
            await session.close()


def _credentials(user: str | None, secret: str | None, what: str) -> ChapCredentials | None:
    if user is None and secret is None:
        return None
    if not user or not secret:
        raise AdminError(f"{what}: give both the user and the secret")
    from sanlab.target.chap import ChapCredentials
    return ChapCredentials(user, secret.encode())


def transport_for(args: argparse.Namespace) -> Transport:
    """The transport the command line asks for: ``--cmddev`` (with ``--array``, CHAP), else the socket."""
    url = getattr(args, "cmddev", None)
    if url is None:
        if getattr(args, "array", None):
            raise AdminError("--array NAME needs --cmddev iscsi://HOST:PORT/TARGET/LUN (the array that sends it on)")
        return SocketTransport(Path(getattr(args, "data_dir", None) or "sanlab-data"))
    env = os.environ
    user = getattr(args, "cmddev_chap_user", None) or env.get("SANLAB_CHAP_USER")
    secret = getattr(args, "cmddev_chap_secret", None) or env.get("SANLAB_CHAP_SECRET")
    muser = getattr(args, "cmddev_mutual_user", None) or env.get("SANLAB_MUTUAL_USER")
    msecret = getattr(args, "cmddev_mutual_secret", None) or env.get("SANLAB_MUTUAL_SECRET")
    chap = _credentials(user, secret, "CHAP (--chap-user/--chap-secret)")
    mutual = _credentials(muser, msecret, "mutual CHAP (--mutual-user/--mutual-secret)")
    if mutual is not None and chap is None:
        raise AdminError("mutual CHAP needs CHAP (--chap-user/--chap-secret)")
    name = getattr(args, "initiator_name", None) or env.get("SANLAB_INITIATOR_NAME") or DEFAULT_INITIATOR
    return CommandDeviceTransport(CommandDeviceUrl.parse(url), getattr(args, "array", None) or None, name,
                                  chap, mutual)


def add_transport_options(p: argparse.ArgumentParser) -> None:
    """The options of the top-level ``sanlab`` parser that choose the transport (before the command)."""
    g = p.add_argument_group("in-band management (through a command device, instead of the management socket)")
    g.add_argument("--cmddev", metavar="iscsi://HOST:PORT/TARGET/LUN",
                   help="send management commands to this command device over iSCSI")
    g.add_argument("--array", metavar="NAME", help="the array the command is for (sent on by the arrays' links)")
    g.add_argument("--initiator-name", metavar="IQN", help=f"this host's iSCSI name (default {DEFAULT_INITIATOR}, "
                   "or $SANLAB_INITIATOR_NAME)")
    g.add_argument("--chap-user", dest="cmddev_chap_user", metavar="U", help="CHAP name (or $SANLAB_CHAP_USER)")
    g.add_argument("--chap-secret", dest="cmddev_chap_secret", metavar="S",
                   help="CHAP secret (or $SANLAB_CHAP_SECRET, which keeps it out of the process list)")
    g.add_argument("--mutual-user", dest="cmddev_mutual_user", metavar="U",
                   help="the target's own CHAP name (or $SANLAB_MUTUAL_USER)")
    g.add_argument("--mutual-secret", dest="cmddev_mutual_secret", metavar="S",
                   help="the target's own CHAP secret (or $SANLAB_MUTUAL_SECRET)")

"""The events of the initiator's sans-IO core: what an InitiatorConnection tells its driver.

:meth:`~sanlab.target.initiator_connection.InitiatorConnection.take_events` returns them and the
asyncio glue (:mod:`sanlab.target.initiator`) acts on them: it completes the request an
:class:`Answer` names, logs out on :class:`LogoutRequested`, fails everything in flight on
:class:`Closed`.  They are plain data, kept apart from the connection's state machine so that the
driver and the tests name them without reaching into the protocol code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from sanlab.target.errors import IscsiError
from sanlab.target.keys import SessionParams
from sanlab.target.outcome import CommandResult

__all__ = [
    "Answer", "Closed", "CommandDone", "Event", "LoginComplete", "LogoutDone", "LogoutRequested", "PingDone",
    "RequestFailed", "TaskMgmtDone", "TextDone",
]


@dataclass(slots=True)
class LoginComplete:
    """The target transited to full-feature phase."""

    params: SessionParams
    tsih: int


@dataclass(slots=True)
class Answer:
    """The target answered one of our requests, known by its Initiator Task Tag."""

    itt: int


@dataclass(slots=True)
class CommandDone(Answer):
    """A SCSI command ended (whatever its status)."""

    result: CommandResult


@dataclass(slots=True)
class TaskMgmtDone(Answer):
    """The response code of a Task Management request (RFC 7143 §11.6.1)."""

    response: int


@dataclass(slots=True)
class LogoutDone(Answer):
    """The response code of a Logout (§11.15.1); the target closes the connection next."""

    response: int


@dataclass(slots=True)
class TextDone(Answer):
    """The whole text of a Text Response sequence (§11.11)."""

    data: bytes


@dataclass(slots=True)
class PingDone(Answer):
    """The ping data the NOP-In echoed for our NOP-Out (§11.19)."""

    data: bytes


@dataclass(slots=True)
class RequestFailed(Answer):
    """The target rejected the request (``error`` is a CommandRejected, §11.17)."""

    error: IscsiError


@dataclass(slots=True)
class LogoutRequested:
    """The target asks us to log out within ``within`` seconds (Asynchronous Message, §11.9.1)."""

    within: int


@dataclass(slots=True)
class Closed:
    """The connection must be closed; every outstanding request failed with ``error``."""

    error: IscsiError


Event = Union[LoginComplete, CommandDone, TaskMgmtDone, TextDone, PingDone, LogoutDone, RequestFailed,
              LogoutRequested, Closed]
"""Anything :meth:`~sanlab.target.initiator_connection.InitiatorConnection.take_events` gives."""

"""The command block a host WRITEs to a command device and the edited data it READs back (issue 16).

Seed 003 FIG. 6 (command device interface: control parameter, input parameter, edited data), FIG. 26
(identification number, transfer destination parameter) and FIG. 38 (several command interfaces
connected, for several arrays along one path).  Every layout is declared here once, sans-IO: the host
(``sanlab --cmddev``), the array that executes a command and an array that forwards one all encode
and decode with these classes, so a capture reads the same at every hop.  docs/command-device.md
shows every byte, with a hex example.

A block is a 16-byte header and a list of *parameters*, each a 4-byte parameter header and a body:

* a **transfer destination parameter** (type 01h) lists array names; the parameters after it are for
  the arrays named (FIG. 31: each array removes its own name and forwards what is left);
* a **command parameter** (type 02h) is the control parameter (PROCESS NUMBER, EDITED DATA flag) and
  the input parameters (the operation's arguments as a UTF-8 JSON object).

Integers are big-endian.  A block that does not follow the layout raises :class:`BlockError` naming
the byte offset of the offending field, which the command device answers as CHECK CONDITION, ILLEGAL
REQUEST / INVALID FIELD IN PARAMETER LIST with that offset as the field pointer (SPC-4 §4.5.2.4.2).
The edited data is decoded by the host and by a forwarding array; a malformed one raises
:class:`MalformedEditedData`.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Union

Buffer = Union[bytes, bytearray, memoryview]
"""What the decoders read (a task's Data-Out, an initiator's Data-In)."""

BLOCK_MAGIC = b"SLCB"
"""MAGIC of a command block: "SanLab Command Block"."""
EDITED_MAGIC = b"SLED"
"""MAGIC of edited data: "SanLab EDited data"."""
VERSION = 1
"""VERSION byte of both layouts; a block of another version is refused (field pointer 4)."""

MAX_PARAMETERS = 64
"""Most parameters one block may carry (commands and transfer destinations together)."""
MAX_ADDRESSES = 16
"""Most array names one transfer destination parameter may list."""
MAX_HOPS = 16
"""Most times a block may be sent on from array to array (HOP COUNT): a routing loop ends here."""
MAX_NAME = 64
"""Longest array name (a remote's name: letters, digits, '.', '_', '-')."""
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
"""What an array name may be: the same rule as a remote's name (tools/remote_ops.py)."""

HEADER = struct.Struct(">4sBBHII")
"""Block header (16 bytes): MAGIC, VERSION, HOP COUNT, PARAMETER COUNT, BLOCK LENGTH, IDENTIFICATION NUMBER."""
PARAMETER_HEADER = struct.Struct(">BBH")
"""Parameter header (4 bytes): PARAMETER TYPE, reserved, PARAMETER LENGTH (bytes of the body after it)."""
DESTINATION_HEAD = struct.Struct(">BB")
"""Transfer destination body: ADDRESS COUNT, reserved; then per address a LENGTH byte and the name."""
COMMAND_HEAD = struct.Struct(">HBBI")
"""Command body: PROCESS NUMBER, CONTROL FLAGS, reserved, INPUT LENGTH; then the input parameters."""
EDITED_HEADER = struct.Struct(">4sBBHII")
"""Edited data header (16 bytes): MAGIC, VERSION, reserved, RESULT COUNT, DATA LENGTH, IDENTIFICATION NUMBER."""
RESULT_HEAD = struct.Struct(">IHBB")
"""Result (one per command): RESULT LENGTH (the whole result), PROCESS NUMBER, STATUS, NAME LENGTH;
then the array's name, a 4-byte OUTPUT LENGTH and the output (JSON)."""
OUTPUT_LENGTH = struct.Struct(">I")


class ParameterType(IntEnum):
    """PARAMETER TYPE of a block's parameter."""

    TRANSFER_DESTINATION = 0x01
    """Seed 003 FIG. 26: the arrays the rest of the block is for."""
    COMMAND = 0x02
    """Seed 003 FIG. 6: control parameter and input parameters of one command."""


class ControlFlags(IntFlag):
    """CONTROL FLAGS of a command parameter (seed 003 FIG. 6's control parameter)."""

    EDITED_DATA = 0x01
    """Presence of edited data: the operation's output is kept for the READ (clear: status and message only)."""


class ResultStatus(IntEnum):
    """STATUS of one command's result in the edited data."""

    DONE = 0x00
    """Carried out; the output is the operation's result (JSON)."""
    REFUSED = 0x01
    """The array refused it (the output is the reason, a JSON string)."""
    INVALID_ARGUMENTS = 0x02
    """The input parameters do not fit the operation (missing, misspelt, wrong kind)."""
    FAILED = 0x03
    """The array failed while carrying it out (an internal error; the reason as a JSON string)."""
    UNREACHABLE = 0x04
    """It could not be sent on to the array it was for (no route, link down, no command device there)."""
    PAIR_INSTRUCTION_REFUSED = 0x05
    """A pair instruction refused by the checks (seed 000 claim 12): also CHECK CONDITION to the host."""


class BlockError(ValueError):
    """A command block that does not follow the layout: ``offset`` is the byte of the offending field."""

    def __init__(self, message: str, offset: int, bit: int | None = None) -> None:
        super().__init__(f"{message} (byte {offset})")
        self.offset = offset
        """Byte offset of the field in the block (the sense data's FIELD POINTER)."""
        self.bit = bit
        """Bit of the field's most significant bit, when the field is part of a byte."""


class MalformedEditedData(ValueError):
    """Edited data that does not follow the layout (from a peer array or a command device)."""


@dataclass(frozen=True, slots=True)
class TransferDestination:
    """Transfer destination parameter: the arrays the parameters after it are for (seed 003 FIG. 26)."""

    addresses: tuple[str, ...]
    """Array names, the next hop first; an array removes its own name at the head (FIG. 31)."""

    def body(self) -> bytes:
        """The parameter's body."""
        out = bytearray(DESTINATION_HEAD.pack(len(self.addresses), 0))
        for name in self.addresses:
            raw = name.encode()
            out += bytes([len(raw)]) + raw
        return bytes(out)


@dataclass(frozen=True, slots=True)
class Command:
    """Command parameter: control parameter and input parameters of one command (seed 003 FIG. 6)."""

    process_number: int
    """The command (tools/operations.py's process number table)."""
    args: dict[str, Any] = field(default_factory=dict)
    """The input parameters: the operation's arguments, sent as a JSON object."""
    edited_data: bool = True
    """Presence of edited data: keep the operation's output for the host's READ."""

    def body(self) -> bytes:
        """The parameter's body."""
        raw = json.dumps(self.args, separators=(",", ":")).encode()
        flags = ControlFlags.EDITED_DATA if self.edited_data else ControlFlags(0)
        return COMMAND_HEAD.pack(self.process_number, int(flags), 0, len(raw)) + raw


Parameter = Union[TransferDestination, Command]
"""One parameter of a block."""


@dataclass(frozen=True, slots=True)
class CommandBlock:
    """What a host WRITEs to a command device: identification number and parameters (FIG. 26, 38)."""

    identification: int
    """Chosen by the host, echoed in the edited data (FIG. 31 S3113)."""
    parameters: tuple[Parameter, ...]
    """Commands and transfer destinations, in the order they are acted on (FIG. 41)."""
    hops: int = 0
    """HOP COUNT: how many times the block was sent on from one array to the next (the host sends 0)."""
    offsets: tuple[int, ...] = field(default=(), compare=False)
    """Byte offset of each parameter in the block it was decoded from (for field pointers)."""

    def commands(self) -> list[tuple[int, Command]]:
        """(parameter index, command) of every command parameter, in order."""
        return [(i, p) for i, p in enumerate(self.parameters) if isinstance(p, Command)]

    def pointer(self, index: int, within: int = 0) -> int:
        """Byte offset of byte ``within`` of parameter ``index``'s body, in the decoded block."""
        base = self.offsets[index] if index < len(self.offsets) else HEADER.size
        return base + PARAMETER_HEADER.size + within

    def sent_on(self, parameters: tuple[Parameter, ...]) -> CommandBlock:
        """The block an array sends on: these parameters, one more hop."""
        return CommandBlock(self.identification, parameters, self.hops + 1)

    def encode(self) -> bytes:
        """The block's bytes."""
        if not 1 <= len(self.parameters) <= MAX_PARAMETERS:
            raise ValueError(f"a block has 1 to {MAX_PARAMETERS} parameters, not {len(self.parameters)}")
        body = bytearray()
        for p in self.parameters:
            kind = ParameterType.COMMAND if isinstance(p, Command) else ParameterType.TRANSFER_DESTINATION
            data = p.body()
            body += PARAMETER_HEADER.pack(int(kind), 0, len(data)) + data
        return HEADER.pack(BLOCK_MAGIC, VERSION, self.hops, len(self.parameters), HEADER.size + len(body),
                           self.identification) + bytes(body)

    @classmethod
    def decode(cls, data: Buffer) -> CommandBlock:
        """Decode a block; bytes after BLOCK LENGTH are padding (a WRITE is whole logical blocks).

        Raises :class:`BlockError` with the offset of the first field that is wrong.
        """
        buf = bytes(data)
        if len(buf) < HEADER.size:
            raise BlockError(f"a command block starts with a {HEADER.size}-byte header", 0)
        magic, version, hops, count, length, ident = HEADER.unpack_from(buf)
        if magic != BLOCK_MAGIC:
            raise BlockError(f"MAGIC is not {BLOCK_MAGIC.decode()}", 0)
        if version != VERSION:
            raise BlockError(f"VERSION {version} is not {VERSION}", 4)
        if hops > MAX_HOPS:
            raise BlockError(f"HOP COUNT {hops} is more than {MAX_HOPS}: a routing loop?", 5)
        if not 1 <= count <= MAX_PARAMETERS:
            raise BlockError(f"PARAMETER COUNT {count} is not 1 to {MAX_PARAMETERS}", 6)
        if not HEADER.size < length <= len(buf):
            raise BlockError(f"BLOCK LENGTH {length} is not more than {HEADER.size} and at most the "
                             f"{len(buf)} bytes written", 8)
        params: list[Parameter] = []
        offsets: list[int] = []
        pos = HEADER.size
        for _ in range(count):
            if pos + PARAMETER_HEADER.size > length:
                raise BlockError(f"BLOCK LENGTH {length} ends before parameter {len(params) + 1} of {count}", 8)
            kind, reserved, plen = PARAMETER_HEADER.unpack_from(buf, pos)
            if reserved:
                raise BlockError("reserved byte of a parameter header is not zero", pos + 1)
            start = pos + PARAMETER_HEADER.size
            if start + plen > length:
                raise BlockError(f"PARAMETER LENGTH {plen} runs past BLOCK LENGTH {length}", pos + 2)
            body = buf[start:start + plen]
            if kind == ParameterType.TRANSFER_DESTINATION:
                params.append(_decode_destination(body, start))
            elif kind == ParameterType.COMMAND:
                params.append(_decode_command(body, start))
            else:
                raise BlockError(f"PARAMETER TYPE {kind:02x}h is neither 01h nor 02h", pos)
            offsets.append(pos)
            pos = start + plen
        if pos != length:
            raise BlockError(f"BLOCK LENGTH {length} is not the end of the last parameter ({pos})", 8)
        if not isinstance(params[-1], Command):
            raise BlockError("the last parameter is a transfer destination with no command after it", offsets[-1])
        return cls(ident, tuple(params), hops, tuple(offsets))


def _decode_destination(body: bytes, base: int) -> TransferDestination:
    if len(body) < DESTINATION_HEAD.size:
        raise BlockError("a transfer destination parameter is at least 2 bytes", base - 2)
    count, reserved = DESTINATION_HEAD.unpack_from(body)
    if not 1 <= count <= MAX_ADDRESSES:
        raise BlockError(f"ADDRESS COUNT {count} is not 1 to {MAX_ADDRESSES}", base)
    if reserved:
        raise BlockError("reserved byte is not zero", base + 1)
    names: list[str] = []
    pos = DESTINATION_HEAD.size
    for _ in range(count):
        if pos >= len(body):
            raise BlockError(f"the parameter ends before address {len(names) + 1} of {count}", base - 2)
        n = body[pos]
        raw = body[pos + 1:pos + 1 + n]
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        if len(raw) != n or not NAME_RE.match(name):
            raise BlockError("an address is 1 to 64 of letters, digits, '.', '_', '-'", base + pos)
        names.append(name)
        pos += 1 + n
    if pos != len(body):
        raise BlockError("PARAMETER LENGTH is not the end of the last address", base - 2)
    return TransferDestination(tuple(names))


def _decode_command(body: bytes, base: int) -> Command:
    if len(body) < COMMAND_HEAD.size:
        raise BlockError(f"a command parameter is at least {COMMAND_HEAD.size} bytes", base - 2)
    number, flags, reserved, n = COMMAND_HEAD.unpack_from(body)
    if flags & ~int(ControlFlags.EDITED_DATA):
        raise BlockError("reserved CONTROL FLAGS bits are set", base + 2, bit=7)
    if reserved:
        raise BlockError("reserved byte is not zero", base + 3)
    if COMMAND_HEAD.size + n != len(body):
        raise BlockError(f"INPUT LENGTH {n} does not fill the parameter", base + 4)
    raw = body[COMMAND_HEAD.size:]
    try:
        args = json.loads(raw.decode()) if raw else {}
    except (ValueError, RecursionError):
        # ValueError covers UnicodeDecodeError, JSONDecodeError and a number too long for int()
        # (int_max_str_digits); RecursionError an array or object nested past the decoder's depth.
        raise BlockError("the input parameters are not UTF-8 JSON", base + COMMAND_HEAD.size) from None
    if not isinstance(args, dict):
        raise BlockError("the input parameters are not a JSON object", base + COMMAND_HEAD.size)
    return Command(number, args, bool(flags & ControlFlags.EDITED_DATA))


@dataclass(frozen=True, slots=True)
class Result:
    """One command's result in the edited data (seed 003 FIG. 6, 32)."""

    process_number: int
    status: ResultStatus
    array: str
    """The array that carried the command out, or that could not send it on."""
    output: Any = None
    """DONE: the operation's result (JSON); otherwise the reason (text).  None: no edited data asked for."""

    @property
    def ok(self) -> bool:
        """The command was carried out."""
        return self.status == ResultStatus.DONE

    def encode(self) -> bytes:
        """The result's bytes."""
        name = self.array.encode()
        out = b"" if self.output is None else json.dumps(self.output, separators=(",", ":")).encode()
        length = RESULT_HEAD.size + len(name) + OUTPUT_LENGTH.size + len(out)
        return (RESULT_HEAD.pack(length, self.process_number, int(self.status), len(name)) + name
                + OUTPUT_LENGTH.pack(len(out)) + out)


@dataclass(frozen=True, slots=True)
class EditedData:
    """What a READ of a command device returns: the results of the nexus's last block (FIG. 32)."""

    identification: int
    """The block's identification number (0 with no results: no command)."""
    results: tuple[Result, ...] = ()
    """One per command of the block, in the block's order; empty: no command to answer."""

    def encode(self) -> bytes:
        """The edited data's bytes."""
        body = b"".join(r.encode() for r in self.results)
        return EDITED_HEADER.pack(EDITED_MAGIC, VERSION, 0, len(self.results), EDITED_HEADER.size + len(body),
                                  self.identification) + body

    @staticmethod
    def length(head: Buffer) -> int:
        """DATA LENGTH of edited data from its first 16 bytes (how much the host must read)."""
        data = bytes(head[:EDITED_HEADER.size])
        if len(data) < EDITED_HEADER.size or data[:4] != EDITED_MAGIC:
            raise MalformedEditedData("no edited data header (MAGIC SLED)")
        return int(EDITED_HEADER.unpack(data)[4])

    @classmethod
    def decode(cls, data: Buffer) -> EditedData:
        """Decode edited data; bytes after DATA LENGTH are padding.  MalformedEditedData when wrong."""
        buf = bytes(data)
        if len(buf) < EDITED_HEADER.size:
            raise MalformedEditedData("edited data shorter than its header")
        magic, version, reserved, count, length, ident = EDITED_HEADER.unpack_from(buf)
        if magic != EDITED_MAGIC or version != VERSION or reserved or not EDITED_HEADER.size <= length <= len(buf):
            raise MalformedEditedData("bad edited data header (MAGIC, VERSION or DATA LENGTH)")
        results: list[Result] = []
        pos = EDITED_HEADER.size
        for _ in range(count):
            if pos + RESULT_HEAD.size > length:
                raise MalformedEditedData(f"result {len(results) + 1} runs past DATA LENGTH")
            rlen, number, status, n = RESULT_HEAD.unpack_from(buf, pos)
            end = pos + rlen
            name_end = pos + RESULT_HEAD.size + n
            if end > length or name_end + OUTPUT_LENGTH.size > end:
                raise MalformedEditedData(f"result {len(results) + 1}: RESULT LENGTH {rlen} is wrong")
            (olen,) = OUTPUT_LENGTH.unpack_from(buf, name_end)
            if name_end + OUTPUT_LENGTH.size + olen != end:
                raise MalformedEditedData(f"result {len(results) + 1}: OUTPUT LENGTH {olen} is wrong")
            try:
                st = ResultStatus(status)
                raw = buf[name_end + OUTPUT_LENGTH.size:end]
                output = json.loads(raw.decode()) if raw else None
                array = buf[pos + RESULT_HEAD.size:name_end].decode()
            except (ValueError, RecursionError) as exc:  # as in _decode_command
                raise MalformedEditedData(f"result {len(results) + 1}: {str(exc)[:200]}") from None
            results.append(Result(number, st, array, output))
            pos = end
        if pos != length:
            raise MalformedEditedData("DATA LENGTH is not the end of the last result")
        return cls(ident, tuple(results))


EMPTY = EditedData(0)
"""What a READ returns before any command, or after the result was given up: no results, id 0."""

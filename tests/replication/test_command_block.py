"""The command block and edited data layouts (replication/command_block.py): round trips, the bytes of
docs/command-device.md's example, and the offset every malformed field is reported at."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.replication.command_block import (
    EMPTY, BlockError, Command, CommandBlock, EditedData, MalformedEditedData, Result, ResultStatus,
    TransferDestination,
)

names = st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)
commands = st.builds(Command, st.integers(0, 0xFFFF), st.dictionaries(st.text(max_size=8), json_values, max_size=4),
                     st.booleans())
destinations = st.builds(TransferDestination, st.lists(names, min_size=1, max_size=4).map(tuple))
blocks = st.builds(CommandBlock, st.integers(0, 2**32 - 1),
                   st.lists(st.one_of(commands, destinations), min_size=0, max_size=5)
                   .flatmap(lambda ps: commands.map(lambda c: tuple(ps) + (c,))), st.integers(0, 16))


@given(blocks)
def test_a_block_round_trips_with_padding(block: CommandBlock) -> None:
    raw = block.encode()
    assert CommandBlock.decode(raw) == block
    assert CommandBlock.decode(raw + bytes(512 - len(raw) % 512)) == block  # a WRITE is whole blocks


@given(st.integers(0, 2**32 - 1), st.lists(st.builds(Result, st.integers(0, 0xFFFF), st.sampled_from(ResultStatus),
                                                      names, json_values), max_size=4))
def test_edited_data_round_trips(ident: int, results: list[Result]) -> None:
    edited = EditedData(ident, tuple(results))
    raw = edited.encode()
    assert EditedData.length(raw) == len(raw)
    assert EditedData.decode(raw + bytes(100)) == edited


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_block_error(data: bytes) -> None:
    try:
        CommandBlock.decode(b"SLCB\x01\x00" + data)
    except BlockError as exc:
        assert 0 <= exc.offset < 6 + len(data)


def test_the_documented_example_bytes() -> None:
    """docs/command-device.md's example: pair-display of p0 for array-c, id 0x2a."""
    block = CommandBlock(0x2A, (TransferDestination(("array-c",)), Command(0x0707, {"name": "p0"})))
    raw = block.encode()
    assert raw.hex() == ("534c4342" "01" "00" "0002" "00000037" "0000002a"
                         "01" "00" "000a" "01" "00" "07" + b"array-c".hex() +
                         "02" "00" "0015" "0707" "01" "00" "0000000d" + b'{"name":"p0"}'.hex())
    edited = EditedData(0x2A, (Result(0x0707, ResultStatus.DONE, "array-c", []),))
    assert edited.encode().hex() == ("534c4544" "01" "00" "0001" "00000025" "0000002a"
                                     "00000015" "0707" "00" "07" + b"array-c".hex() + "00000002" + b"[]".hex())


def _good() -> bytearray:
    return bytearray(CommandBlock(7, (TransferDestination(("b",)), Command(0x0F01, {}))).encode())


@pytest.mark.parametrize("offset,value,pointer", [
    (0, b"X", 0),  # MAGIC
    (4, b"\x02", 4),  # VERSION
    (5, b"\x40", 5),  # HOP COUNT past MAX_HOPS
    (6, b"\x00\x00", 6),  # PARAMETER COUNT 0
    (8, b"\x00\x00\x00\x05", 8),  # BLOCK LENGTH below the header
    (16, b"\x07", 16),  # PARAMETER TYPE
    (17, b"\x01", 17),  # reserved in the parameter header
    (18, b"\xff\xff", 18),  # PARAMETER LENGTH past the end
    (20, b"\x00", 20),  # ADDRESS COUNT 0
    (23, b"/", 22),  # an address that is not a name: the pointer is its LENGTH byte
    (30, b"\x80", 30),  # reserved CONTROL FLAGS bit
    (31, b"\x01", 31),  # reserved byte of the command
])
def test_malformed_fields_are_reported_at_their_byte(offset: int, value: bytes, pointer: int) -> None:
    raw = _good()
    raw[offset:offset + len(value)] = value
    with pytest.raises(BlockError) as e:
        CommandBlock.decode(bytes(raw))
    assert e.value.offset == pointer


def test_input_parameters_must_be_a_json_object() -> None:
    raw = bytearray(CommandBlock(1, (Command(0x0F01, {}),)).encode())
    body = b"[1]"
    raw[20 + 4:20 + 8] = struct.pack(">I", len(body))  # INPUT LENGTH
    raw += body
    raw[18:20] = struct.pack(">H", 8 + len(body))
    raw[8:12] = struct.pack(">I", len(raw))
    with pytest.raises(BlockError) as e:
        CommandBlock.decode(bytes(raw))
    assert e.value.offset == 28  # the INPUT PARAMETERS field


def test_a_block_ending_in_a_destination_is_refused_at_that_parameter() -> None:
    raw = CommandBlock(1, (Command(1), TransferDestination(("b",)), Command(2))).encode()
    dest_only = bytearray(raw[:16 + 14 + 8])  # the header, the first command and the destination
    dest_only[6:8] = b"\x00\x02"
    dest_only[8:12] = struct.pack(">I", len(dest_only))
    with pytest.raises(BlockError) as e:
        CommandBlock.decode(bytes(dest_only))
    assert e.value.offset == 30


def test_empty_edited_data_and_garbage() -> None:
    assert EditedData.decode(EMPTY.encode()) == EditedData(0, ())
    assert EMPTY.encode() == b"SLED\x01\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00"
    with pytest.raises(MalformedEditedData):
        EditedData.decode(b"SLED\x01\x00\x00\x01\x00\x00\x00\x10\x00\x00\x00\x00")
    with pytest.raises(MalformedEditedData):
        EditedData.length(bytes(16))

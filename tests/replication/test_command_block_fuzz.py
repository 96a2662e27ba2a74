"""Fuzzing the command block and edited data decoders (replication/command_block.py, sans-IO).

Invariant (docs/command-device.md): bytes a host writes to a command device decode to a block or
raise :class:`BlockError` with a field offset inside the block (the sense's FIELD POINTER); edited
data an array reads back decodes or raises :class:`MalformedEditedData` — never another exception
(the device server would answer HARDWARE ERROR, the forwarding array would fail the hop).
"""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sanlab.replication.command_block import (
    COMMAND_HEAD, EDITED_HEADER, HEADER, OUTPUT_LENGTH, PARAMETER_HEADER, RESULT_HEAD, BlockError, Command, CommandBlock, EditedData, MalformedEditedData,
    Result, ResultStatus,
)
from tests.replication.test_command_block import blocks, json_values, names


def command_block(raw_json: bytes) -> bytes:
    """A block of one command whose input parameters are ``raw_json`` as they are."""
    body = COMMAND_HEAD.pack(1, 0, 0, len(raw_json)) + raw_json
    param = PARAMETER_HEADER.pack(2, 0, len(body)) + body
    return HEADER.pack(b"SLCB", 1, 0, 1, HEADER.size + len(param), 7) + param


def edited(raw_json: bytes) -> bytes:
    """Edited data of one DONE result from array "a" whose output is ``raw_json`` as it is."""
    rlen = RESULT_HEAD.size + 1 + OUTPUT_LENGTH.size + len(raw_json)
    result = RESULT_HEAD.pack(rlen, 1, int(ResultStatus.DONE), 1) + b"a" + OUTPUT_LENGTH.pack(len(raw_json)) + raw_json
    return EDITED_HEADER.pack(b"SLED", 1, 0, 1, EDITED_HEADER.size + len(result), 7) + result


HUGE_INT = b'{"n":' + b"1" * 5000 + b"}"
"""A number Python refuses to convert (int max_str_digits): ValueError, not JSONDecodeError."""
DEEP = b"[" * 50_000
"""Nesting deeper than the decoder's recursion limit: RecursionError."""


@st.composite
def mutated_blocks(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(blocks).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    return bytes(raw)


def decodes_or_block_error(raw: bytes) -> None:
    try:
        CommandBlock.decode(raw)
    except BlockError as exc:
        assert 0 <= exc.offset < max(len(raw), HEADER.size), exc


@settings(max_examples=300)
@given(mutated_blocks())
@example(command_block(HUGE_INT))
@example(command_block(DEEP))
def test_mutated_blocks_decode_or_name_the_field(raw: bytes) -> None:
    decodes_or_block_error(raw)


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_name_the_field(raw: bytes) -> None:
    decodes_or_block_error(b"SLCB\x01" + raw)


results = st.lists(st.builds(Result, st.integers(0, 0xFFFF), st.sampled_from(ResultStatus), names, json_values),
                   max_size=3)


@st.composite
def mutated_edited(draw: st.DrawFn) -> bytes:
    raw = bytearray(EditedData(draw(st.integers(0, 2**32 - 1)), tuple(draw(results))).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(max_examples=300)
@given(mutated_edited())
@example(edited(HUGE_INT))
@example(edited(DEEP))
def test_mutated_edited_data_decodes_or_is_malformed(raw: bytes) -> None:
    try:
        EditedData.decode(raw)
    except MalformedEditedData:
        pass


@pytest.mark.slow
@settings(max_examples=20000)
@given(mutated_blocks(), mutated_edited())
def test_command_block_fuzz_explore(block: bytes, edited: bytes) -> None:
    decodes_or_block_error(block)
    try:
        EditedData.decode(edited)
    except MalformedEditedData:
        pass


def test_command_is_still_what_the_helpers_encode() -> None:
    """The hand-made blocks above are the real layout (else the examples prove nothing)."""
    assert CommandBlock.decode(command_block(b'{"a":1}')).parameters == (Command(1, {"a": 1}, False),)
    assert EditedData.decode(edited(b"5")).results == (Result(1, ResultStatus.DONE, "a", 5),)

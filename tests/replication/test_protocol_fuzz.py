"""Fuzzing the array-to-array control protocol decoders (replication/protocol.py, sans-IO).

Invariant (docs: replication protocol): what an array receives — a pair-control CDB and its
parameter list — decodes or raises :class:`ScsiError` (the CHECK CONDITION the sender gets, with a
field pointer inside what was sent); what a primary answers — pair status, difference bitmap,
READ JOURNAL data — decodes or raises :class:`MalformedReply`.  Never another exception: the
receiving array would answer HARDWARE ERROR, the reading one would fail its link task.
"""
from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanlab.replication.protocol import (
    AttachJournalCdb, JournalAttachment, JournalBatch, JournalReplyFlags, MalformedReply, PairRegistration,
    ReadJournalCdb, WireEntry, decode_bitmap, decode_cdb, decode_state_parameters, decode_status, encode_status,
)
from sanlab.scsi.sense import ScsiError
from tests.replication.test_protocol import registrations, requests, statuses, u32, u64


def flip(draw: st.DrawFn, raw: bytes, most: int = 4) -> bytes:
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, most))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 4)) == 0:
        out = out[:draw(st.integers(0, len(out)))]
    return bytes(out)


@st.composite
def mutated_cdbs(draw: st.DrawFn) -> bytes:
    req = draw(st.one_of(requests, st.builds(ReadJournalCdb, u64, u32), st.builds(AttachJournalCdb, u64)))
    return flip(draw, req.encode())


entries = st.builds(lambda seq, t, pid, lba, data: WireEntry(seq, t, pid, lba, data, zlib.crc32(data)),
                    u64, st.floats(allow_nan=False), u64, u64, st.binary(max_size=40))
batches = st.builds(JournalBatch, u64, u64, u64, st.floats(), u64, st.sampled_from(JournalReplyFlags),
                    st.lists(entries, max_size=3).map(tuple))


@st.composite
def received(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["cdb", "registration", "state", "attachment"]))
    if kind == "cdb":
        return kind, draw(mutated_cdbs())
    if kind == "registration":
        return kind, flip(draw, draw(registrations()).encode())
    if kind == "attachment":
        return kind, flip(draw, JournalAttachment(draw(u64), "j", "k").encode())
    return kind, draw(st.binary(max_size=12))


@st.composite
def answered(draw: st.DrawFn) -> tuple[str, bytes, int]:
    kind = draw(st.sampled_from(["status", "bitmap", "journal"]))
    if kind == "status":
        return kind, flip(draw, encode_status(draw(statuses))), 0
    if kind == "bitmap":
        count = draw(st.integers(0, 100))
        return kind, flip(draw, bytes((count + 7) // 8)), count
    return kind, flip(draw, draw(batches).encode()), 0


def receive(kind: str, raw: bytes) -> None:
    try:
        if kind == "cdb":
            decode_cdb(raw)
        elif kind == "registration":
            PairRegistration.decode(raw)
        elif kind == "attachment":
            JournalAttachment.decode(raw)
        else:
            decode_state_parameters(raw)
    except ScsiError:
        pass


def answer(kind: str, raw: bytes, count: int) -> None:
    try:
        if kind == "status":
            decode_status(raw)
        elif kind == "bitmap":
            decode_bitmap(raw, count)
        else:
            JournalBatch.decode(raw)
    except MalformedReply:
        pass


@settings(max_examples=300)
@given(received())
def test_received_requests_decode_or_get_check_condition(case: tuple[str, bytes]) -> None:
    receive(*case)


@settings(max_examples=300)
@given(answered())
def test_answers_decode_or_are_malformed(case: tuple[str, bytes, int]) -> None:
    answer(*case)


@pytest.mark.slow
@settings(max_examples=20000)
@given(received(), answered())
def test_protocol_fuzz_explore(req: tuple[str, bytes], reply: tuple[str, bytes, int]) -> None:
    receive(*req)
    answer(*reply)

"""Pair-control byte layouts (replication/protocol.py): round trips, fixed bytes, refusals.

Every layout round-trips (encode → decode == original), two commands are pinned to literal bytes so
the layout cannot drift unnoticed, and any CDB is either decoded or refused with an ILLEGAL REQUEST
ScsiError — never another exception.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanlab.replication.pair_state import FenceLevel, PairRole, PairState
from sanlab.replication.protocol import (
    CDB_LENGTH, REGISTRATION_LENGTH, RESERVED_FORWARD_WRITE, STATUS_LENGTH, DeletePairCdb,
    GetPairStatusCdb, MalformedReply, PairFlags, PairOpcode, PairRegistration, PairRequest, PairStatus,
    ReadDifferenceBitmapCdb, RegisterPairCdb, SetPairStateCdb, StateReason, decode_bitmap,
    decode_cdb, decode_state_parameters, decode_status, encode_bitmap, encode_state_parameters,
    encode_status,
)
from sanlab.replication.refusals import REFUSAL_SENSE, Refusal, refusal_of, refuse
from sanlab.scsi.lun import MAX_LUN
from sanlab.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey, parse_sense

u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
u16 = st.integers(0, 0xFFFF)


def utf8_name(max_bytes: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Names of up to ``max_bytes`` UTF-8 bytes, without NUL (multi-byte characters included)."""
    text = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=min_size, max_size=max_bytes)
    return text.map(lambda s: s.encode()[:max_bytes].decode(errors="ignore"))  # cut at a character boundary


requests: st.SearchStrategy[PairRequest] = st.one_of(
    st.builds(RegisterPairCdb, u64),
    st.builds(SetPairStateCdb, u64, st.sampled_from(PairState), st.sampled_from(StateReason)),
    st.builds(GetPairStatusCdb, u64, u32),
    st.builds(ReadDifferenceBitmapCdb, u64, u32, u16),
    st.builds(DeletePairCdb, u64, st.booleans()),
)


@st.composite
def registrations(draw: st.DrawFn) -> PairRegistration:
    blocks = draw(st.integers(1, (1 << 64) - 1))
    whole = draw(st.booleans())
    lba = 0 if whole else draw(st.integers(0, blocks - 1))
    count = 0 if whole else draw(st.integers(1, blocks - lba))
    return PairRegistration(
        draw(utf8_name(32, 1)), draw(st.integers(0, MAX_LUN)), blocks, 1 << draw(st.integers(9, 31)),
        draw(utf8_name(64, 1)), draw(u64), lba, count, draw(st.sampled_from(FenceLevel)),
        PairFlags(draw(st.integers(0, 3))), draw(utf8_name(32)))


statuses = st.builds(PairStatus, u64, st.sampled_from(PairState), st.sampled_from(PairRole), u64, u64, u64, u32,
                     u64)


def sense_of(exc: pytest.ExceptionInfo[ScsiError]) -> tuple[int, int, FieldPointer | None]:
    s = parse_sense(exc.value.sense())
    return s.key, s.asc_ascq, s.field_pointer


# --- round trips ------------------------------------------------------------------------------------------

@given(requests)
def test_cdb_round_trip(req: PairRequest) -> None:
    cdb = req.encode()
    assert len(cdb) == CDB_LENGTH and 0xC0 <= cdb[0] <= 0xFF  # vendor specific (SPC-4 §4.2.5.1)
    assert decode_cdb(cdb) == req
    assert decode_cdb(bytearray(cdb)) == req and decode_cdb(memoryview(cdb)) == req


@given(registrations())
def test_registration_round_trip(reg: PairRegistration) -> None:
    raw = reg.encode()
    assert len(raw) == REGISTRATION_LENGTH == RegisterPairCdb.data_out_length
    assert PairRegistration.decode(raw) == reg


@given(u64)
def test_state_parameters_round_trip(gen: int) -> None:
    raw = encode_state_parameters(gen)
    assert len(raw) == SetPairStateCdb.data_out_length
    assert decode_state_parameters(raw) == gen


@given(statuses)
def test_status_round_trip(status: PairStatus) -> None:
    raw = encode_status(status)
    assert len(raw) == STATUS_LENGTH
    assert decode_status(raw) == status
    assert decode_status(raw + b"later fields") == status


@given(st.binary(max_size=64), st.data())
def test_bitmap_slice_is_the_units_asked_for(bits: bytes, data: st.DataObject) -> None:
    units = len(bits) * 8
    start = data.draw(st.integers(0, units))
    count = data.draw(st.integers(0, min(units - start, 0xFFFF)))
    raw = encode_bitmap(bits, units, start, count)
    assert decode_bitmap(raw, count) == raw
    assert len(raw) == ReadDifferenceBitmapCdb(1, start, count).data_in_length
    for k in range(count):  # storage/bitmap.py's layout, counted from the starting unit
        u = start + k
        assert bool(raw[k // 8] & (1 << (k % 8))) == bool(bits[u // 8] & (1 << (u % 8)))


@given(st.binary(max_size=40))
def test_any_cdb_is_decoded_or_refused(raw: bytes) -> None:
    for cdb in (raw, bytes([0xC0 + raw[0] % 5]) + raw[1:] if raw else raw):
        try:
            decode_cdb(cdb)
        except ScsiError as exc:
            assert exc.key == SenseKey.ILLEGAL_REQUEST
            assert exc.asc_ascq in (Asc.INVALID_FIELD_IN_CDB, Asc.INVALID_COMMAND_OPERATION_CODE)


@given(st.binary(min_size=REGISTRATION_LENGTH, max_size=REGISTRATION_LENGTH))
def test_any_parameter_list_is_decoded_or_refused(raw: bytes) -> None:
    try:
        PairRegistration.decode(raw)
    except ScsiError as exc:
        assert (exc.key, exc.asc_ascq) == (SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST)
        assert exc.field_pointer is not None and not exc.field_pointer.in_cdb


# --- fixed bytes ------------------------------------------------------------------------------------------

def test_register_pair_bytes() -> None:
    assert RegisterPairCdb(0x0123456789ABCDEF).encode() == bytes.fromhex("c0 0123456789abcdef 00 00000198 00 00")
    reg = PairRegistration("db1", 2, 0x20000, 512, "array-a", 0x1122334455667788, 0x100, 0x800,
                           FenceLevel.STATUS, PairFlags.BIDIRECTIONAL | PairFlags.NO_COPY, "grp", 3,
                           "iqn.2026-11.org.sanlab:array-a")
    raw = reg.encode()
    assert raw[:48] == bytes.fromhex(
        "01 01 03 00 00000200"             # VERSION, FENCE LEVEL status, FLAGS, reserved, BLOCK SIZE
        "0002000000000000"                 # S-VOL LUN 2 (SAM-5 peripheral device addressing)
        "0000000000020000"                 # P-VOL BLOCKS
        "0000000000000100 0000000000000800"  # EXTENT LBA, EXTENT BLOCKS
        "1122334455667788")                # GENERATION ID
    assert raw[48:80] == b"db1".ljust(32, b"\0")
    assert raw[80:112] == b"grp".ljust(32, b"\0")
    assert raw[112:176] == b"array-a".ljust(64, b"\0")
    assert raw[176:184] == bytes.fromhex("0003000000000000")  # P-VOL LUN 3
    assert raw[184:408] == b"iqn.2026-11.org.sanlab:array-a".ljust(224, b"\0")
    assert PairRegistration.decode(raw) == reg


def test_set_pair_state_bytes() -> None:
    cdb = SetPairStateCdb(0xFEDCBA9876543210, PairState.PSUE, StateReason.WRITE_FAILURE).encode()
    assert cdb == bytes.fromhex("c1 fedcba9876543210 05 04 0008 0000 00")
    assert encode_state_parameters(0xA5) == bytes.fromhex("00000000000000a5")


def test_other_cdb_bytes() -> None:
    assert GetPairStatusCdb(1).encode() == bytes.fromhex("c2 0000000000000001 00 00000030 00 00")
    assert ReadDifferenceBitmapCdb(1, 0x10000, 0xFFF8).encode() == bytes.fromhex(
        "c3 0000000000000001 00010000 fff8 00")
    assert DeletePairCdb(1, force=True).encode() == bytes.fromhex("c4 0000000000000001 01 0000000000 00")


def test_status_bytes() -> None:
    st_ = PairStatus(7, PairState.PAIR, PairRole.S_VOL, 3, 2, 0x10, 128, 1024)
    assert encode_status(st_) == bytes.fromhex(
        "02 01 0000 00000080 0000000000000007 0000000000000003 0000000000000002"
        "0000000000000010 0000000000000400")


def test_forward_write_is_reserved_not_decoded() -> None:
    assert RESERVED_FORWARD_WRITE not in set(PairOpcode)
    with pytest.raises(ScsiError) as e:
        decode_cdb(bytes([RESERVED_FORWARD_WRITE]) + bytes(15))
    assert sense_of(e)[:2] == (SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)


# --- malformed requests -----------------------------------------------------------------------------------

GOOD = SetPairStateCdb(9, PairState.PAIR, StateReason.COPY_COMPLETE).encode()


def patched(cdb: bytes, offset: int, value: int) -> bytes:
    return cdb[:offset] + bytes([value]) + cdb[offset + 1:]


@pytest.mark.parametrize("cdb, pointer", [
    (b"", FieldPointer(0)),
    (GOOD[:10], FieldPointer(10)),                                   # short CDB
    (GOOD + b"\0", FieldPointer(16)),                                # longer than 16
    (patched(GOOD, 9, 9), FieldPointer(9)),                          # NEW STATE past PFUS
    (patched(GOOD, 10, 0xEE), FieldPointer(10)),                     # unknown REASON
    (patched(GOOD, 12, 9), FieldPointer(11)),                        # PARAMETER LIST LENGTH not 8
    (patched(GOOD, 14, 0x10), FieldPointer(14, 4)),                  # reserved
    (patched(GOOD, 15, 0x04), FieldPointer(15, 2)),                  # NACA (SAM-5 §5.10)
    (patched(RegisterPairCdb(1).encode(), 13, 0xB1), FieldPointer(10)),
    (patched(RegisterPairCdb(1).encode(), 9, 1), FieldPointer(9, 0)),
    (patched(DeletePairCdb(1).encode(), 9, 0x81), FieldPointer(9, 7)),
    (patched(GetPairStatusCdb(1).encode(), 14, 2), FieldPointer(14, 1)),
])
def test_malformed_cdb(cdb: bytes, pointer: FieldPointer) -> None:
    with pytest.raises(ScsiError) as e:
        decode_cdb(cdb)
    assert sense_of(e) == (SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, pointer)


@pytest.mark.parametrize("opcode", [0x00, 0x28, 0xBF, RESERVED_FORWARD_WRITE, 0xFF])
def test_unknown_opcode(opcode: int) -> None:
    with pytest.raises(ScsiError) as e:
        decode_cdb(bytes([opcode]) + bytes(15))
    assert sense_of(e) == (SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, FieldPointer(0))


REG = PairRegistration("pair-1", 0, 2048, 4096, "array-a", 1)


def param_sense(raw: bytes) -> tuple[int, int, FieldPointer | None]:
    with pytest.raises(ScsiError) as e:
        PairRegistration.decode(raw)
    return sense_of(e)


def in_list(byte: int, bit: int | None = None) -> tuple[int, int, FieldPointer]:
    return SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, FieldPointer(byte, bit, in_cdb=False)


def test_malformed_registration() -> None:
    raw = REG.encode()
    assert param_sense(raw[:-1])[:2] == (SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    assert param_sense(raw + b"\0")[:2] == (SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    assert param_sense(patched(raw, 0, 2)) == in_list(0)                       # VERSION
    assert param_sense(patched(raw, 1, 3)) == in_list(1)                       # FENCE LEVEL
    assert param_sense(patched(raw, 2, 0x04)) == in_list(2, 2)                 # unknown flag
    assert param_sense(patched(raw, 3, 0x80)) == in_list(3, 7)                 # reserved
    assert param_sense(patched(raw, 6, 0x11)) == in_list(4)                    # BLOCK SIZE not a power of two
    assert param_sense(patched(raw, 8, 0x80)) == in_list(8)                    # LUN: logical unit addressing
    assert param_sense(raw[:48] + b"\xff\xfe".ljust(32, b"\0") + raw[80:]) == in_list(48)   # not UTF-8
    assert param_sense(raw[:48] + b"ab\0c".ljust(32, b"\0") + raw[80:]) == in_list(51)      # text after NUL
    assert param_sense(raw[:48] + bytes(32) + raw[80:]) == in_list(48)                      # no name
    assert param_sense(raw[:112] + b"a\xc3(".ljust(64, b"\0") + raw[176:]) == in_list(113)  # bad UTF-8 at 113
    assert param_sense(patched(raw, 176, 0x80)) == in_list(176)                # P-VOL LUN: logical unit addressing
    zero_blocks = raw[:16] + bytes(8) + raw[24:]
    assert param_sense(zero_blocks) == in_list(16)
    past_end = raw[:24] + (2000).to_bytes(8, "big") + (100).to_bytes(8, "big") + raw[40:]
    assert param_sense(past_end) == in_list(24)


@pytest.mark.parametrize("bad, byte", [
    (dict(name="x" * 33), 48), (dict(name=""), 48), (dict(name="a\0b"), 48),
    (dict(name="é" * 17), 48),                               # 17 characters, 34 bytes
    (dict(group="g" * 33), 80), (dict(array_name="a" * 65), 112), (dict(name="\udc80"), 48),
    (dict(svol_lun=MAX_LUN + 1), 8), (dict(block_size=520), 4), (dict(extent_lba=5), 24),
])
def test_registration_refused_when_encoding(bad: dict[str, object], byte: int) -> None:
    fields = {f: getattr(REG, f) for f in PairRegistration.__dataclass_fields__}
    fields.update(bad)
    with pytest.raises(ScsiError) as e:
        PairRegistration(**fields).encode()  # type: ignore[arg-type, unused-ignore]
    assert sense_of(e) == in_list(byte)


def test_state_parameters_length() -> None:
    with pytest.raises(ScsiError) as e:
        decode_state_parameters(bytes(7))
    assert sense_of(e)[:2] == (SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)


# --- malformed replies ------------------------------------------------------------------------------------

def test_malformed_status() -> None:
    raw = encode_status(PairStatus(1, PairState.COPY, PairRole.P_VOL, 1, 0, 5, 128, 64))
    with pytest.raises(MalformedReply) as e:
        decode_status(raw[:47])
    assert e.value.offset == 47
    with pytest.raises(MalformedReply) as e:
        decode_status(patched(raw, 0, 9))
    assert e.value.offset == 0
    with pytest.raises(MalformedReply) as e:
        decode_status(patched(raw, 1, 2))
    assert e.value.offset == 1


def test_malformed_bitmap() -> None:
    with pytest.raises(MalformedReply):
        decode_bitmap(bytes(2), 17)                   # needs 3 bytes
    with pytest.raises(MalformedReply) as e:
        decode_bitmap(bytes([0xFF, 0x02]), 9)         # bit 9 is past NUMBER OF UNITS
    assert e.value.offset == 1
    assert decode_bitmap(bytes([0xFF, 0x01]), 9) == bytes([0xFF, 0x01])
    assert decode_bitmap(b"", 0) == b""


# --- refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refusal", list(Refusal))
@pytest.mark.parametrize("descriptor", [False, True])
def test_refusal_round_trip(refusal: Refusal, descriptor: bool) -> None:
    sense = parse_sense(refuse(refusal).sense(descriptor))
    assert refusal_of(sense) == refusal
    key, asc, pointer = REFUSAL_SENSE[refusal]
    assert (sense.key, sense.asc_ascq, sense.field_pointer) == (key, asc, pointer)


def test_refusals_are_distinct_from_decoding_errors() -> None:
    assert len({sense for sense in REFUSAL_SENSE.values()}) == len(Refusal)
    with pytest.raises(ScsiError) as e:
        decode_cdb(patched(GOOD, 9, 9))
    assert refusal_of(parse_sense(e.value.sense())) is None
    with pytest.raises(ScsiError) as e:
        PairRegistration.decode(patched(REG.encode(), 8, 0x80))
    assert refusal_of(parse_sense(e.value.sense())) is None


def test_bitmap_range_is_refused() -> None:
    with pytest.raises(ScsiError) as e:
        encode_bitmap(bytes(2), 12, 8, 5)
    assert refusal_of(parse_sense(e.value.sense())) == Refusal.BITMAP_RANGE
    assert encode_bitmap(bytes([0, 0x0F]), 12, 8, 4) == bytes([0x0F])


def test_docs_example_is_what_the_code_sends() -> None:
    """docs/replication-protocol.md's example bytes are the encoder's, so the page cannot drift."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "replication-protocol.md").read_text()
    lines = dict(line.split(None, 1) for line in doc.split("## Example", 1)[1].split("```")[1].strip().splitlines())
    assert bytes.fromhex(lines["CDB"]) == SetPairStateCdb(
        0xFEDCBA9876543210, PairState.PSUE, StateReason.WRITE_FAILURE).encode()
    assert bytes.fromhex(lines["Data-Out"]) == encode_state_parameters(0xA5)
    for op in PairOpcode:
        assert f"| {op:02X}h    | {op.name.replace('_', ' ')}" in doc


# --- journal commands (issue 15) -------------------------------------------------------------------------

def test_read_journal_round_trip_and_malformed_replies() -> None:
    import zlib

    from sanlab.replication.protocol import (AttachJournalCdb, JournalAttachment, JournalBatch, JournalReplyFlags,
                                             ReadJournalCdb, WireEntry, decode_cdb)
    cdb = ReadJournalCdb(77, 1 << 20)
    assert decode_cdb(cdb.encode()) == cdb
    with pytest.raises(ScsiError):
        decode_cdb(ReadJournalCdb(1, 10).encode())  # cannot hold the header
    assert decode_cdb(AttachJournalCdb(5).encode()) == AttachJournalCdb(5)
    att = JournalAttachment(9, "jp", "js")
    assert JournalAttachment.decode(att.encode()) == att
    data = b"x" * 1024
    batch = JournalBatch(10, 7, 9, 123.5, 3072, JournalReplyFlags.GAP,
                         (WireEntry(7, 1.5, 3, 100, data, zlib.crc32(data)), WireEntry(8, 2.5, 4, 0, b"", 0)))
    raw = batch.encode()
    assert JournalBatch.decode(raw) == batch
    with pytest.raises(MalformedReply):
        JournalBatch.decode(raw[:-1])
    with pytest.raises(MalformedReply):
        JournalBatch.decode(raw + b"\0")
    bad = bytearray(raw)
    bad[100] ^= 1  # inside entry 7's data: its CRC no longer matches
    with pytest.raises(MalformedReply):
        JournalBatch.decode(bytes(bad))

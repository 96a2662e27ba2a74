"""PDU codec: byte fixtures, hypothesis round-trips for every opcode, framing, fuzzing."""
from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanlab.target.errors import ProtocolError, RejectReason
from sanlab.target.pdu import (
    BHS_LEN, PDU_CLASSES, AhsType, DataIn, LoginRequest, NopOut, Opcode, Pdu, PduFramer, RawPdu, ScsiCommand,
    ScsiResponse, crc32c, decode, digest_bytes, encode, encode_bytes, iter_ahs, make_ahs, pad_len,
)


def _frame(blob: bytes, hd: bool = False, dd: bool = False) -> RawPdu:
    f = PduFramer()
    f.header_digest, f.data_digest = hd, dd
    f.feed(blob)
    raw = f.next()
    assert raw is not None
    assert f.next() is None and f.buffered == 0
    return raw


# --- byte fixtures -----------------------------------------------------------------------------


def test_crc32c_rfc_vectors() -> None:
    # RFC 7143 Appendix A (and RFC 3720 B.4): 32 bytes of zeros / of 0xff / ascending.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    # On the wire the digest goes least significant byte first.
    assert digest_bytes(bytes(32)) == bytes.fromhex("aa36918a")


def test_scsi_command_fixture() -> None:
    # READ(10) of 8 blocks at LBA 0x1234, LUN 1, ITT 0x11223344, EDTL 4096, CmdSN 7, ExpStatSN 9.
    cdb = bytes.fromhex("28000000123400000800") + bytes(6)
    blob = (bytes([0x01, 0xC1, 0, 0, 0, 0, 0, 0]) + bytes.fromhex("0001000000000000")
            + struct.pack(">IIII", 0x11223344, 4096, 7, 9) + cdb)
    assert len(blob) == BHS_LEN
    pdu = decode(_frame(blob))
    assert isinstance(pdu, ScsiCommand)
    assert (pdu.final, pdu.read, pdu.write, pdu.attr, pdu.immediate) == (True, True, False, 1, False)
    assert pdu.lun == bytes.fromhex("0001000000000000")
    assert (pdu.initiator_task_tag, pdu.expected_data_transfer_length, pdu.cmdsn, pdu.expstatsn) == (
        0x11223344, 4096, 7, 9)
    assert pdu.full_cdb()[:10] == cdb[:10]
    assert encode_bytes(pdu) == blob


def test_login_request_fixture() -> None:
    text = b"InitiatorName=iqn.x\0SessionType=Discovery\0"
    blob = (bytes([0x43, 0x83, 0, 0, 0]) + len(text).to_bytes(3, "big")
            + bytes.fromhex("400001370000") + b"\0\0" + struct.pack(">IHHII", 1, 0, 0, 1, 0) + bytes(16)
            + text + bytes(pad_len(len(text))))
    pdu = decode(_frame(blob))
    assert isinstance(pdu, LoginRequest)
    assert (pdu.transit, pdu.cont, pdu.csg, pdu.nsg) == (True, False, 0, 3)
    assert pdu.isid == 0x400001370000 and pdu.tsih == 0 and pdu.initiator_task_tag == 1
    assert bytes(pdu.data) == text
    assert encode_bytes(pdu) == blob


def test_data_segment_padding_and_digests() -> None:
    pdu = NopOut(initiator_task_tag=5, cmdsn=1, data=b"abcde")
    plain = encode_bytes(pdu)
    assert len(plain) == BHS_LEN + 8 and plain[5:8] == b"\0\0\x05" and plain[-3:] == bytes(3)
    with_dig = encode_bytes(pdu, header_digest=True, data_digest=True)
    assert with_dig[BHS_LEN:BHS_LEN + 4] == digest_bytes(with_dig[:BHS_LEN])
    # The data digest covers the data and its padding (RFC 7143 §11.1 / §13.1).
    assert with_dig[-4:] == digest_bytes(b"abcde\0\0\0")
    raw = _frame(with_dig, hd=True, dd=True)
    assert raw.data_digest_ok and bytes(raw.data) == b"abcde"


def test_no_data_digest_without_data() -> None:
    blob = encode_bytes(NopOut(initiator_task_tag=1), header_digest=True, data_digest=True)
    assert len(blob) == BHS_LEN + 4


def test_header_digest_error_drops_connection() -> None:
    blob = bytearray(encode_bytes(NopOut(initiator_task_tag=1), header_digest=True))
    blob[-1] ^= 1
    f = PduFramer()
    f.header_digest = True
    f.feed(blob)
    with pytest.raises(ProtocolError) as exc:
        f.next()
    assert exc.value.reject is None


def test_data_digest_error_is_flagged() -> None:
    blob = bytearray(encode_bytes(NopOut(initiator_task_tag=1, data=b"x" * 8), data_digest=True))
    blob[BHS_LEN] ^= 0xFF
    raw = _frame(bytes(blob), dd=True)
    assert raw.data_digest_ok is False


def test_oversized_data_segment_rejected_before_buffering() -> None:
    f = PduFramer(max_data_segment=8192)
    hdr = bytearray(encode_bytes(NopOut()))
    hdr[5:8] = (8193).to_bytes(3, "big")
    f.feed(hdr)
    with pytest.raises(ProtocolError):
        f.next()


def test_pending_opcode_is_known_from_the_first_byte() -> None:
    f = PduFramer()
    assert f.pending_opcode is None
    blob = encode_bytes(NopOut(initiator_task_tag=1, data=b"x" * 100))
    f.feed(blob[:1])  # one byte: the opcode, nothing else of the PDU yet
    assert f.pending_opcode == Opcode.NOP_OUT
    assert f.next() is None
    f.feed(blob[1:] + encode_bytes(LoginRequest()))
    assert f.next() is not None
    assert f.pending_opcode == Opcode.LOGIN_REQUEST
    assert f.next() is not None
    assert f.pending_opcode is None


def test_unknown_opcode_is_command_not_supported() -> None:
    blob = bytearray(encode_bytes(NopOut()))
    blob[0] = 0x1F
    with pytest.raises(ProtocolError) as exc:
        decode(_frame(bytes(blob)))
    assert exc.value.reject == RejectReason.COMMAND_NOT_SUPPORTED


def test_extended_cdb_ahs() -> None:
    cdb = bytes(range(32))
    ahs = make_ahs(AhsType.EXTENDED_CDB, cdb[16:])
    # AHSLength counts the reserved byte and the CDB tail (RFC 7143 §11.3.5).
    assert ahs[:2] == (17).to_bytes(2, "big") and len(ahs) % 4 == 0
    pdu = ScsiCommand(cdb=cdb[:16], ahs=ahs, initiator_task_tag=3)
    out = decode(_frame(encode_bytes(pdu)))
    assert isinstance(out, ScsiCommand) and out.full_cdb() == cdb
    assert list(iter_ahs(ahs)) == [(AhsType.EXTENDED_CDB, 0, cdb[16:])]


def test_ahs_length_past_total_is_an_error() -> None:
    bad = (200).to_bytes(2, "big") + bytes([1, 0]) + bytes(4)
    with pytest.raises(ProtocolError):
        list(iter_ahs(bad))


def test_scsi_response_sense_segment() -> None:
    sense = bytes([0x70, 0, 5, 0, 0, 0, 0, 10]) + bytes(4) + bytes([0x21, 0]) + bytes(4)
    pdu = ScsiResponse(status=2, initiator_task_tag=9, statsn=1, data=len(sense).to_bytes(2, "big") + sense)
    out = decode(_frame(encode_bytes(pdu)))
    assert isinstance(out, ScsiResponse) and out.sense() == sense


# --- round trips for every opcode -----------------------------------------------------------


def _field_strategy(name: str, typ: str, meta: Any) -> st.SearchStrategy[Any]:
    if typ == "bool":
        return st.booleans()
    if typ == "bytes":
        return st.binary(min_size=16, max_size=16) if name == "cdb" else st.binary(min_size=8, max_size=8)
    return st.integers(0, (1 << meta["bits"]) - 1)


def _pdu_strategy(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    kw: dict[str, st.SearchStrategy[Any]] = {}
    for f in fields(cls):
        if f.name == "ahs":
            kw["ahs"] = st.just(b"") | st.binary(max_size=40).map(lambda v: make_ahs(AhsType.EXTENDED_CDB, v))
        elif f.name == "data":
            kw["data"] = st.binary(max_size=70)
        else:
            kw[f.name] = _field_strategy(f.name, str(f.type), f.metadata)
    return st.builds(cls, **kw)


_ALL = st.one_of([_pdu_strategy(c) for c in PDU_CLASSES.values()])


def _normalise(pdu: Pdu) -> Pdu:
    # ScsiCommand F-bit meaning aside, DataIn carries status only with the S bit (§11.7.4).
    if isinstance(pdu, DataIn) and not pdu.status_present:
        pdu.status = 0
    return pdu


def test_every_opcode_has_a_class() -> None:
    assert set(PDU_CLASSES) == set(Opcode)


@settings(max_examples=600)
@given(pdu=_ALL, hd=st.booleans(), dd=st.booleans())
def test_round_trip(pdu: Pdu, hd: bool, dd: bool) -> None:
    blob = encode_bytes(pdu, hd, dd)
    raw = _frame(blob, hd, dd)
    assert raw.data_digest_ok
    back = decode(raw)
    assert type(back) is type(pdu)
    assert _normalise(back) == _normalise(pdu)
    assert encode_bytes(back, hd, dd) == encode_bytes(_normalise(pdu), hd, dd)


@settings(max_examples=200)
@given(pdus=st.lists(_ALL, min_size=1, max_size=5), chunk=st.integers(1, 64), trailing=st.binary(max_size=47))
def test_framing_whole_bytewise_and_trailing(pdus: list[Pdu], chunk: int, trailing: bytes) -> None:
    stream = b"".join(encode_bytes(p) for p in pdus)
    for step in (len(stream), 1, chunk):
        f = PduFramer()
        got: list[RawPdu] = []
        for i in range(0, len(stream), step):
            f.feed(stream[i:i + step])
            got.extend(iter(f))
        f.feed(trailing)  # a partial next PDU stays buffered, nothing is framed from it
        assert f.next() is None
        assert f.buffered == len(trailing)
        assert [type(decode(r)) for r in got] == [type(p) for p in pdus]
        assert b"".join(r.bhs + r.ahs + bytes(r.data) for r in got) == b"".join(
            encode(p)[0] + bytes(getattr(p, "data")) for p in pdus)


@settings(max_examples=500)
@given(blob=st.binary(min_size=0, max_size=400), hd=st.booleans(), dd=st.booleans())
def test_fuzz_parse_or_protocol_error(blob: bytes, hd: bool, dd: bool) -> None:
    """Any input is framed and decoded, or raises ProtocolError — nothing else (ARCHITECTURE §11)."""
    f = PduFramer(max_data_segment=262144)
    f.header_digest, f.data_digest = hd, dd
    f.feed(blob)
    try:
        for raw in f:
            decode(raw)
    except ProtocolError:
        pass

"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 §6.4, §6.18; SPC-3 §6.3 and §6.17 layouts).

The LU that receives EXTENDED COPY is the copy manager.  Copy targets are named
by Identification descriptor target descriptors (E4h) carrying an NAA
designator; they resolve to the logical units of this device server (same
target) whose NAA name matches.  Block device to block device segment
descriptors (02h) copy through each LU's volume ``read``/``write`` in chunks.
The parameter list's format is checked before the first block moves (ILLEGAL
REQUEST).  Each segment's targets, ranges and length are checked when its turn
comes: an error then ends the command with COPY ABORTED (a write-protected
destination with DATA PROTECT), and the segments before it stay copied.  Results
are held per I_T nexus and LIST IDENTIFIER for RECEIVE COPY RESULTS when LIST ID
USAGE asks for it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from sanlab.scsi.cdb import Opcode
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.reservation_state import READ
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.sense import Asc, ScsiError, SenseKey, invalid_field, invalid_parameter
from sanlab.scsi.task import ScsiResult

EXTENDED_COPY_CDB = struct.Struct(">BB8xIxB")
"""EXTENDED COPY(LID1) CDB (SPC-4 §6.4.1): opcode 83h, SERVICE ACTION 00h, reserved, PARAMETER LIST
LENGTH, reserved, CONTROL."""
RECEIVE_COPY_RESULTS_CDB = struct.Struct(">BBB7xIxB")
"""RECEIVE COPY RESULTS CDB (SPC-4 §6.18.1): opcode 84h, SERVICE ACTION, LIST IDENTIFIER, reserved,
ALLOCATION LENGTH, reserved, CONTROL."""
PARAMETER_HEADER = struct.Struct(">BBH4xII")
"""EXTENDED COPY(LID1) parameter list header (SPC-4 §6.4.3.1, table 111): LIST IDENTIFIER,
STR|LIST ID USAGE|PRIORITY, TARGET DESCRIPTOR LIST LENGTH, reserved, SEGMENT DESCRIPTOR LIST LENGTH,
INLINE DATA LENGTH."""
TARGET_DESCRIPTOR = struct.Struct(">BBH20s4xB3s")
"""Identification descriptor target descriptor (SPC-4 §6.4.5.2, table 125): DESCRIPTOR TYPE CODE E4h,
LU ID TYPE|NUL|PERIPHERAL DEVICE TYPE, RELATIVE INITIATOR PORT IDENTIFIER, designation descriptor
(20 bytes), then the block device type specific parameters (§6.4.5.1.3): reserved, PAD, DISK BLOCK
LENGTH."""
SEGMENT_B2B = struct.Struct(">BBHHH2xHQQ")
"""Block device to block device segment descriptor (SPC-4 §6.4.6.5, table 140): DESCRIPTOR TYPE CODE
02h, DC|CAT, DESCRIPTOR LENGTH (0018h), SOURCE and DESTINATION TARGET DESCRIPTOR ID, reserved, BLOCK
DEVICE NUMBER OF BLOCKS, SOURCE and DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS."""
OPERATING_PARAMETERS = struct.Struct(">IB3xHHIIIIIxxHBBBB3xB")
"""RECEIVE COPY RESULTS OPERATING PARAMETERS data (SPC-4 §6.18.4, table 327), followed by the implemented
descriptor type codes."""
COPY_STATUS = struct.Struct(">IBHBI")
"""RECEIVE COPY RESULTS COPY STATUS data (SPC-4 §6.18.2, table 323): AVAILABLE DATA, HDD|COPY MANAGER
STATUS, SEGMENTS PROCESSED, TRANSFER COUNT UNITS, TRANSFER COUNT."""

TARGET_IDENTIFICATION = 0xE4
"""DESCRIPTOR TYPE CODE of the Identification descriptor target descriptor, the one target kind offered."""
SEGMENT_BLOCK_TO_BLOCK = 0x02
"""DESCRIPTOR TYPE CODE of the block device to block device segment, the one segment kind offered."""
SEGMENT_B2B_LENGTH = 0x18
DESIGNATOR_NAA = 0x3
ASSOCIATION_LU = 0x00

MAX_TARGET_DESCRIPTORS = 8
"""MAXIMUM TARGET DESCRIPTOR COUNT (OPERATING PARAMETERS); more is TOO MANY TARGET DESCRIPTORS."""
MAX_SEGMENT_DESCRIPTORS = 64
"""MAXIMUM SEGMENT DESCRIPTOR COUNT (OPERATING PARAMETERS); more is TOO MANY SEGMENT DESCRIPTORS."""
MAX_DESCRIPTOR_LIST_LENGTH = MAX_TARGET_DESCRIPTORS * TARGET_DESCRIPTOR.size + MAX_SEGMENT_DESCRIPTORS * SEGMENT_B2B.size
"""MAXIMUM DESCRIPTOR LIST LENGTH: room for the maximum counts of both kinds, no more."""
MAX_SEGMENT_BYTES = 64 << 20
"""MAXIMUM SEGMENT LENGTH in bytes.  A 16-bit BLOCK DEVICE NUMBER OF BLOCKS can ask for more (up to
256 MiB of 4 KiB blocks): such a segment ends the command with COPY ABORTED before it is copied."""
CHUNK_BYTES = 1 << 20
"""Bytes read and written per volume call while copying."""
IMPLEMENTED_DESCRIPTORS = bytes([SEGMENT_BLOCK_TO_BLOCK, TARGET_IDENTIFICATION])


class CopyResultsAction:
    """RECEIVE COPY RESULTS service actions (SPC-4 table 322)."""

    COPY_STATUS = 0x00
    RECEIVE_DATA = 0x01
    OPERATING_PARAMETERS = 0x03
    FAILED_SEGMENT_DETAILS = 0x04


class ListIdUsage:
    """LIST ID USAGE (SPC-4 §6.4.3.1, table 112)."""

    HOLD = 0b00
    HOLD_NO_DATA = 0b01
    DO_NOT_HOLD = 0b10
    NO_LIST_ID = 0b11


class CopyStatus:
    """COPY MANAGER STATUS values (SPC-4 table 324)."""

    IN_PROGRESS = 0x00
    COMPLETED_GOOD = 0x01
    COMPLETED_WITH_ERRORS = 0x02


@dataclass(frozen=True, slots=True)
class Segment:
    """One block-to-block segment, checked against the target descriptor list."""

    source: LogicalUnit | None
    destination: LogicalUnit | None
    """None: the descriptor names no LU of this target (found unreachable when the segment runs)."""
    blocks: int
    source_lba: int
    destination_lba: int


def _copy_aborted(asc: int) -> ScsiError:
    return ScsiError(SenseKey.COPY_ABORTED, asc)


def _resolve_target(ctx: Ctx, desc: bytes, off: int) -> LogicalUnit | None:
    """The LU an E4h descriptor designates (SPC-4 §6.4.5.2): NAA, logical-unit association."""
    _, b1, _, designation, _, disk_block_length = TARGET_DESCRIPTOR.unpack_from(desc)
    # LU ID TYPE is ignored (SPC-4 §6.4.5.2); NUL is obsolete in SPC-4.
    if b1 & 0x1F != 0x00:
        raise invalid_parameter(off + 1, 4)  # PERIPHERAL DEVICE TYPE: block devices only
    ln = designation[3]
    if (designation[1] & 0x0F) != DESIGNATOR_NAA or (designation[1] & 0x30) != ASSOCIATION_LU or ln > 16:
        return None
    wanted = designation[4:4 + ln]
    for lu in ctx.server.luns.values():
        if lu.config.naa[:ln] == wanted and ln in (8, 16):
            if int.from_bytes(disk_block_length, "big") not in (0, lu.block_size):
                raise invalid_parameter(off + 29)
            return lu
    return None


def parse_parameters(ctx: Ctx, data: bytes) -> tuple[int, int, list[Segment]]:
    """(LIST IDENTIFIER, LIST ID USAGE, segments) from a LID1 parameter list: the checks of its format,
    all made before any block is copied (the segments' own are made as each runs)."""
    if len(data) < PARAMETER_HEADER.size:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    list_id, flags, tgt_len, seg_len, inline_len = PARAMETER_HEADER.unpack_from(data)
    usage = (flags >> 3) & 0x03
    if PARAMETER_HEADER.size + tgt_len + seg_len + inline_len > len(data):
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    if tgt_len + seg_len > MAX_DESCRIPTOR_LIST_LENGTH:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    if inline_len:
        raise invalid_parameter(12)  # no inline data (MAXIMUM INLINE DATA LENGTH 0)
    if tgt_len % TARGET_DESCRIPTOR.size:
        raise invalid_parameter(2)
    if tgt_len // TARGET_DESCRIPTOR.size > MAX_TARGET_DESCRIPTORS:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_TARGET_DESCRIPTORS)
    targets: list[LogicalUnit | None] = []
    off = PARAMETER_HEADER.size
    for _ in range(tgt_len // TARGET_DESCRIPTOR.size):
        if data[off] != TARGET_IDENTIFICATION:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
        targets.append(_resolve_target(ctx, data[off:off + TARGET_DESCRIPTOR.size], off))
        off += TARGET_DESCRIPTOR.size
    segments: list[Segment] = []
    end = off + seg_len
    while off < end:
        if data[off] != SEGMENT_BLOCK_TO_BLOCK:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE)
        if len(segments) == MAX_SEGMENT_DESCRIPTORS:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_SEGMENT_DESCRIPTORS)
        if off + SEGMENT_B2B.size > end:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
        _, dc_cat, length, src, dst, blocks, src_lba, dst_lba = SEGMENT_B2B.unpack_from(data, off)
        if length != SEGMENT_B2B_LENGTH:
            raise invalid_parameter(off + 2)
        if dc_cat & 0x03:
            raise invalid_parameter(off + 1, 1)  # DC (destination-counted blocks) and CAT not offered
        segments.append(Segment(targets[src] if src < len(targets) else None,
                                targets[dst] if dst < len(targets) else None, blocks, src_lba, dst_lba))
        off += SEGMENT_B2B.size
    return list_id, usage, segments


async def _copy_segment(seg: Segment) -> int:
    """Copy one segment; bytes moved.  Errors here are COPY ABORTED (SPC-4 §6.4.1)."""
    src, dst = seg.source, seg.destination
    if src is None or dst is None:
        raise _copy_aborted(Asc.COPY_TARGET_DEVICE_NOT_REACHABLE)
    if not (src.medium_present and dst.medium_present) or src.sanitizing or dst.sanitizing:
        raise _copy_aborted(Asc.COPY_TARGET_DEVICE_NOT_REACHABLE)
    if src.block_size != dst.block_size:
        raise _copy_aborted(Asc.NO_ADDITIONAL_SENSE)
    if seg.blocks * src.block_size > MAX_SEGMENT_BYTES:
        raise _copy_aborted(Asc.NO_ADDITIONAL_SENSE)
    for lu, lba in ((src, seg.source_lba), (dst, seg.destination_lba)):
        if lba + seg.blocks > lu.num_blocks:
            raise _copy_aborted(Asc.NO_ADDITIONAL_SENSE)
    if dst.config.readonly or dst.swp:
        raise ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)
    step = max(1, CHUNK_BYTES // src.block_size)
    for done in range(0, seg.blocks, step):
        n = min(step, seg.blocks - done)
        data = await src.volume.read(seg.source_lba + done, n)
        await dst.volume.write(seg.destination_lba + done, data, fua=not dst.wce)
    return seg.blocks * src.block_size


async def extended_copy(ctx: Ctx) -> ScsiResult:
    """EXTENDED COPY(LID1) (SPC-4 §6.4): check the whole list, then copy segment by segment."""
    lu = ctx.need_lu()
    _, sa, length, _ = EXTENDED_COPY_CDB.unpack_from(ctx.cdb)
    if sa & 0x1F:
        raise invalid_field(1, 4)  # only LID1 (00h); EXTENDED COPY(LID4) is not offered (SNLID=0)
    result = ScsiResult(transfer_length=length, data_out_direction=True)
    if length == 0:
        return result  # SPC-4 §6.4.1: zero PARAMETER LIST LENGTH is not an error; nothing is copied
    data = bytes(ctx.task.data_out[:length])
    if len(data) < length:
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)
    list_id, usage, segments = parse_parameters(ctx, data)
    held = usage in (ListIdUsage.HOLD, ListIdUsage.HOLD_NO_DATA)
    key = (ctx.task.nexus, list_id)
    if held:
        lu.copy_results.pop(key, None)
    processed = moved = 0
    try:
        for seg in segments:
            moved += await _copy_segment(seg)
            processed += 1
    except ScsiError:
        if held:
            lu.copy_results[key] = COPY_STATUS.pack(8, CopyStatus.COMPLETED_WITH_ERRORS, processed, 0, moved)
        raise
    if held:
        lu.copy_results[key] = COPY_STATUS.pack(8, CopyStatus.COMPLETED_GOOD, processed, 0, moved)
    return result


async def receive_copy_results(ctx: Ctx) -> ScsiResult:
    """RECEIVE COPY RESULTS (SPC-4 §6.18): COPY STATUS of a held list identifier, OPERATING PARAMETERS."""
    lu = ctx.need_lu()
    _, b1, list_id, alloc, _ = RECEIVE_COPY_RESULTS_CDB.unpack_from(ctx.cdb)
    sa = b1 & 0x1F
    if sa == CopyResultsAction.OPERATING_PARAMETERS:
        body = OPERATING_PARAMETERS.pack(
            OPERATING_PARAMETERS.size - 4 + len(IMPLEMENTED_DESCRIPTORS),
            0,  # SNLID=0: no EXTENDED COPY(LID4)
            MAX_TARGET_DESCRIPTORS, MAX_SEGMENT_DESCRIPTORS, MAX_DESCRIPTOR_LIST_LENGTH, MAX_SEGMENT_BYTES,
            0,  # MAXIMUM INLINE DATA LENGTH
            0,  # HELD DATA LIMIT: no data is held (no stream targets)
            0,  # MAXIMUM STREAM DEVICE TRANSFER SIZE
            1,  # TOTAL CONCURRENT COPIES
            1,  # MAXIMUM CONCURRENT COPIES
            0, 0, 0,  # DATA SEGMENT / INLINE DATA / HELD DATA GRANULARITY (log2): 1 byte
            len(IMPLEMENTED_DESCRIPTORS))
        return data_in(body + IMPLEMENTED_DESCRIPTORS, alloc)
    if sa == CopyResultsAction.COPY_STATUS:
        status = lu.copy_results.get((ctx.task.nexus, list_id))
        if status is None:
            raise invalid_field(2)  # no held results for that LIST IDENTIFIER
        return data_in(status, alloc)
    raise invalid_field(1, 4)


COMMANDS: dict[int, CommandSpec] = {
    Opcode.EXTENDED_COPY: CommandSpec("EXTENDED COPY(LID1)", extended_copy, data_out=True,
                                      medium_error=Asc.WRITE_ERROR, timeout=600),
    Opcode.RECEIVE_COPY_RESULTS: CommandSpec("RECEIVE COPY RESULTS", receive_copy_results,
                                             allowed_without_medium=True, reservation=READ),
}
"""Third-party copy rows of the command table.

EXTENDED COPY's LID1 SERVICE ACTION is 00h in SPC-4 (byte 1 was reserved in SPC-3), so it is dispatched
as a plain opcode and checks the field itself; RECEIVE COPY RESULTS likewise, since its service actions
share one handler.
"""

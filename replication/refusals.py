"""What the receiver of a pair-control command answers when it will not carry it out (issue 14).

A request that decodes (replication/protocol.py) may still be refused: the pair id is unknown, the
S-VOL is too small, the state change is not allowed.  Each :class:`Refusal` has one sense, built from
sanlab.scsi.sense's codes, so the sender names the refusal again from the CHECK CONDITION it gets
(:func:`refusal_of`) and a packet capture reads the same way.  The field pointers are byte offsets of
the layouts in docs/replication-protocol.md: C/D 1 into the CDB, C/D 0 into the parameter list.
"""
from __future__ import annotations

from enum import IntEnum

from sanlab.scsi.sense import Asc, FieldPointer, ScsiError, Sense, SenseKey


class Refusal(IntEnum):
    """Why the receiver refuses a well-formed request; each has one sense (:data:`REFUSAL_SENSE`)."""

    UNKNOWN_PAIR = 1  # No pair with this PAIR ID here.
    PAIR_ID_IN_USE = 2  # REGISTER PAIR: the PAIR ID is already registered.
    PAIR_NAME_IN_USE = 3  # REGISTER PAIR: another pair has this name.
    NO_SUCH_LUN = 4  # REGISTER PAIR: no logical unit at S-VOL LUN.
    SVOL_IN_PAIR = 5  # REGISTER PAIR: the S-VOL is already a member of a pair.
    SVOL_TOO_SMALL = 6  # REGISTER PAIR: the S-VOL is smaller than the P-VOL (or its extent).
    BLOCK_SIZE_MISMATCH = 7  # REGISTER PAIR: the S-VOL's block size differs.
    WRONG_STATE = 8  # The receiver's pair state forbids this change (or a DELETE PAIR without FORCE).
    GENERATION_MISMATCH = 9  # SET PAIR STATE: both members took writes on their own (split brain).
    BITMAP_RANGE = 10  # READ DIFFERENCE BITMAP: units past the end of the bitmap.
    NOT_READY = 11  # The receiver cannot act now (starting, its volume not ready): try again.
    INTERNAL_FAILURE = 12  # The receiver failed while acting (catalog, bitmap file).
    NO_SUCH_JOURNAL = 13  # ATTACH JOURNAL: no journal by the SECONDARY JOURNAL NAME (or it is a primary's).
    NOT_A_PRIMARY = 14  # READ JOURNAL: the LU is not the P-VOL of an asynchronous pair here.


_ILLEGAL = SenseKey.ILLEGAL_REQUEST


def _in_list(byte: int) -> FieldPointer:
    return FieldPointer(byte, in_cdb=False)


REFUSAL_SENSE: dict[Refusal, tuple[SenseKey, Asc, FieldPointer | None]] = {
    # Syntax errors of the codec are INVALID FIELD IN CDB / IN PARAMETER LIST; a refusal of a value that
    # decodes is PARAMETER VALUE INVALID or COMMAND SEQUENCE ERROR (SPC-4 annex D), so the two never
    # collide.  Field pointers (SPC-4 §4.5.2.4.2) name the field the refusal is about.
    Refusal.UNKNOWN_PAIR: (_ILLEGAL, Asc.INVALID_FIELD_IN_CDB, FieldPointer(1)),  # CDB: PAIR ID
    Refusal.PAIR_ID_IN_USE: (_ILLEGAL, Asc.COMMAND_SEQUENCE_ERROR, FieldPointer(1)),  # CDB: PAIR ID
    Refusal.PAIR_NAME_IN_USE: (_ILLEGAL, Asc.COMMAND_SEQUENCE_ERROR, _in_list(48)),  # PAIR NAME
    Refusal.NO_SUCH_LUN: (_ILLEGAL, Asc.PARAMETER_VALUE_INVALID, _in_list(8)),  # S-VOL LUN
    Refusal.SVOL_IN_PAIR: (_ILLEGAL, Asc.COMMAND_SEQUENCE_ERROR, _in_list(8)),  # S-VOL LUN
    Refusal.SVOL_TOO_SMALL: (_ILLEGAL, Asc.PARAMETER_VALUE_INVALID, _in_list(16)),  # P-VOL BLOCKS
    Refusal.BLOCK_SIZE_MISMATCH: (_ILLEGAL, Asc.PARAMETER_VALUE_INVALID, _in_list(4)),  # BLOCK SIZE
    Refusal.WRONG_STATE: (_ILLEGAL, Asc.COMMAND_SEQUENCE_ERROR, FieldPointer(9)),  # CDB: NEW STATE / FORCE
    Refusal.GENERATION_MISMATCH: (_ILLEGAL, Asc.COMMAND_SEQUENCE_ERROR, _in_list(0)),  # GENERATION ID
    Refusal.BITMAP_RANGE: (_ILLEGAL, Asc.LBA_OUT_OF_RANGE, FieldPointer(9)),  # CDB: STARTING UNIT
    Refusal.NOT_READY: (SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE, None),
    Refusal.INTERNAL_FAILURE: (SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE, None),
    Refusal.NO_SUCH_JOURNAL: (_ILLEGAL, Asc.PARAMETER_VALUE_INVALID, _in_list(40)),  # SECONDARY JOURNAL NAME
    Refusal.NOT_A_PRIMARY: (_ILLEGAL, Asc.COMMAND_SEQUENCE_ERROR, FieldPointer(0)),  # CDB: OPERATION CODE
}
"""Refusal → (SENSE KEY, ASC/ASCQ, field pointer) the receiver answers with CHECK CONDITION."""

_REFUSAL_BY_SENSE: dict[tuple[int, int, FieldPointer | None], Refusal] = {
    (key, asc, fp): r for r, (key, asc, fp) in REFUSAL_SENSE.items()}


def refuse(refusal: Refusal) -> ScsiError:
    """The ScsiError the receiver raises to refuse a request."""
    key, asc, fp = REFUSAL_SENSE[refusal]
    if fp is None:
        return ScsiError(key, asc)
    return ScsiError(key, asc, field_pointer=fp.field_pointer, bit=fp.bit_pointer, in_cdb=fp.in_cdb)


def refusal_of(sense: Sense) -> Refusal | None:
    """The refusal a peer's sense names; None for any other sense (a malformed request, a standard error)."""
    return (_REFUSAL_BY_SENSE.get((sense.key, sense.asc_ascq, sense.field_pointer))
            or _REFUSAL_BY_SENSE.get((sense.key, sense.asc_ascq, None)))

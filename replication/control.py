"""The pair-control commands as rows of a logical unit's command table (docs/replication-protocol.md).

The P array sends REGISTER PAIR, SET PAIR STATE, GET PAIR STATUS, READ DIFFERENCE BITMAP and
DELETE PAIR (vendor-specific operation codes C0h-C4h, SPC-4 §4.2.5.1) to the S-VOL's own LU on an
ordinary iSCSI session, so a capture shows every exchange.  :func:`control_rows` gives the rows a
disk LU kind adds to its table (``DISK.table.override(control_rows(...))``, done by tools/, since
scsi never imports replication); each handler decodes with replication/protocol.py and asks the
array's :class:`~sanlab.replication.manager.PairManager`, found through ``manager`` at call time (the
device servers exist before the manager does).  With no manager (an array without replication) the
commands are refused as NOT READY, not as unknown opcodes: the LU knows them.
"""
from __future__ import annotations

from typing import Callable

from sanlab.replication import protocol as proto
from sanlab.replication.manager import PairManager
from sanlab.replication.refusals import Refusal, refuse
from sanlab.scsi.commands import CommandSpec
from sanlab.scsi.context import Ctx, data_in
from sanlab.scsi.sense import Asc
from sanlab.scsi.task import ScsiResult

ManagerRef = Callable[[], PairManager | None]
"""Where the handlers find the pair manager when a command arrives."""


def control_rows(manager: ManagerRef) -> dict[int, CommandSpec]:
    """The pair-control and journal commands, for an LU kind's table."""

    def need() -> PairManager:
        m = manager()
        if m is None:
            raise refuse(Refusal.NOT_READY)
        return m

    async def register(ctx: Ctx) -> ScsiResult:
        cdb = proto.RegisterPairCdb.decode(ctx.cdb)
        reg = proto.PairRegistration.decode(ctx.task.data_out)
        await need().register(ctx.need_lu(), ctx.task.nexus.target_name, ctx.task.lun, ctx.task.nexus,
                              cdb.pair_id, reg)
        return ScsiResult(transfer_length=len(ctx.task.data_out), data_out_direction=True)

    async def set_state(ctx: Ctx) -> ScsiResult:
        cdb = proto.SetPairStateCdb.decode(ctx.cdb)
        generation = proto.decode_state_parameters(ctx.task.data_out)
        await need().peer_state(cdb.pair_id, cdb.new_state, cdb.reason, generation, ctx.task.nexus)
        return ScsiResult(transfer_length=len(ctx.task.data_out), data_out_direction=True)

    async def status(ctx: Ctx) -> ScsiResult:
        cdb = proto.GetPairStatusCdb.decode(ctx.cdb)
        return data_in(proto.encode_status(need().status(cdb.pair_id)), cdb.allocation_length)

    async def bitmap(ctx: Ctx) -> ScsiResult:
        cdb = proto.ReadDifferenceBitmapCdb.decode(ctx.cdb)
        bits = need().bitmap_bits(cdb.pair_id, cdb.starting_unit, cdb.number_of_units)
        return data_in(bits, cdb.data_in_length)

    async def delete(ctx: Ctx) -> ScsiResult:
        cdb = proto.DeletePairCdb.decode(ctx.cdb)
        await need().peer_delete(cdb.pair_id, cdb.force)
        return ScsiResult()

    async def read_journal(ctx: Ctx) -> ScsiResult:
        cdb = proto.ReadJournalCdb.decode(ctx.cdb)
        return data_in(await need().read_journal(ctx.need_lu(), cdb, ctx.task.nexus), cdb.allocation_length)

    async def attach_journal(ctx: Ctx) -> ScsiResult:
        cdb = proto.AttachJournalCdb.decode(ctx.cdb)
        att = proto.JournalAttachment.decode(ctx.task.data_out)
        await need().attach_journal(cdb.pair_id, att)
        return ScsiResult(transfer_length=len(ctx.task.data_out), data_out_direction=True)

    async def mark(ctx: Ctx) -> ScsiResult:
        cdb = proto.MarkCdb.decode(ctx.cdb)
        await need().mark(cdb.pair_id, proto.decode_marker(ctx.task.data_out))
        return ScsiResult(transfer_length=len(ctx.task.data_out), data_out_direction=True)

    async def journal_position(ctx: Ctx) -> ScsiResult:
        cdb = proto.ReadJournalPositionCdb.decode(ctx.cdb)
        return data_in(need().journal_position(cdb.pair_id), cdb.allocation_length)

    return {
        proto.PairOpcode.MARK: CommandSpec("MARK", mark, data_out=True),
        proto.PairOpcode.READ_JOURNAL_POSITION: CommandSpec("READ JOURNAL POSITION", journal_position),
        proto.PairOpcode.READ_JOURNAL: CommandSpec("READ JOURNAL", read_journal),
        proto.PairOpcode.ATTACH_JOURNAL: CommandSpec("ATTACH JOURNAL", attach_journal, data_out=True),
        proto.PairOpcode.REGISTER_PAIR: CommandSpec("REGISTER PAIR", register, data_out=True,
                                                    medium_error=Asc.WRITE_ERROR),
        proto.PairOpcode.SET_PAIR_STATE: CommandSpec("SET PAIR STATE", set_state, data_out=True),
        proto.PairOpcode.GET_PAIR_STATUS: CommandSpec("GET PAIR STATUS", status),
        proto.PairOpcode.READ_DIFFERENCE_BITMAP: CommandSpec("READ DIFFERENCE BITMAP", bitmap),
        proto.PairOpcode.DELETE_PAIR: CommandSpec("DELETE PAIR", delete),
    }

"""One view of a running array for the status page, ``/status.json`` and the metrics (issue 18).

Every number here comes from where ``sanlab show --json``, ``pair display --json``, ``copy display
--json`` and ``remote display --json`` take theirs (the Admin's views), so the page, the scrape and
the command line never disagree; the per-LU counters are the device servers' (scsi/stats.py).
:meth:`ArrayView.status` only reads state, on the event loop, and is cheap enough to run on every
poll of the page and every scrape.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

from sanlab.replication.link import format_portal
from sanlab.scsi.lu import LogicalUnit
from sanlab.scsi.stats import Op
from sanlab.target.server import IscsiServer
from sanlab.tools.admin import Admin
from sanlab.tools.cmddev_ops import array_name
from sanlab.tools.config import ArrayConfig


def lu_counters(lu: LogicalUnit) -> dict[str, int]:
    """The page's per-LU totals: commands and bytes by direction, errors."""
    st = lu.stats
    return {"reads": st.commands[Op.READ], "writes": st.commands[Op.WRITE], "others": st.commands[Op.OTHER],
            "read_bytes": st.bytes[Op.READ], "write_bytes": st.bytes[Op.WRITE], "errors": sum(st.errors)}


@dataclass
class ArrayView:
    """What the status page and the metrics read: the config, the iSCSI front end, the Admin."""

    config: ArrayConfig
    server: IscsiServer
    admin: Admin
    version: str
    http: str | None = None
    """Where this array's own page is served (``HOST:PORT``)."""
    started: float = 0.0
    """``time.time()`` when the array started."""

    @property
    def name(self) -> str:
        """The array's name: ``array_name``, or the last part of its initiator name (as routing says)."""
        return self.config.array_name or array_name(self.config.initiator_name)

    def lus(self) -> Iterator[tuple[str, int, LogicalUnit]]:
        """(target, LUN, logical unit) of every LUN served, in name and number order."""
        for tname in sorted(self.server.targets):
            for lun, lu in sorted(self.server.targets[tname].device_server.luns.items()):
                yield tname, lun, lu

    def sessions(self) -> dict[str, int]:
        """Live sessions per target (every target listed)."""
        out = {t: 0 for t in self.server.targets}
        for _, _, target in self.server.sessions():
            out[target] = out.get(target, 0) + 1
        return out

    def remotes(self) -> list[dict[str, Any]]:
        """``remote display --json``'s rows, with the peer's status page address (``http``) from the config."""
        http = {r.name: format_portal(*r.http) for r in self.config.remotes if r.http is not None}
        return [dict(row, http=http.get(row["name"])) for row in self.admin.remote_ops.display_remotes()]

    def status(self) -> dict[str, Any]:
        """``/status.json``: the array, targets and LUs, RAID groups, remotes, pairs, journals, copies."""
        show = self.admin.show()
        exports = {(e["target"], e["lun"]): e["lu"] for e in show["exports"]}
        sessions = self.sessions()
        targets: dict[str, dict[str, Any]] = {
            t: {"name": t, "sessions": sessions.get(t, 0), "luns": []} for t in sorted(self.server.targets)}
        for tname, lun, lu in self.lus():
            targets[tname]["luns"].append({
                "lun": lun, "kind": lu.config.kind, "size": lu.num_blocks * lu.block_size,
                "block_size": lu.block_size, "lu": exports.get((tname, lun)), **lu_counters(lu)})
        return {
            "array": {"name": self.name, "initiator_name": self.config.initiator_name, "version": self.version,
                      "http": self.http, "portals": [format_portal(h, p) for h, p in self.server.bound
                                                     or self.server.portals],
                      "uptime_seconds": round(time.time() - self.started, 1) if self.started else None},
            "time": round(time.time(), 3),
            "targets": list(targets.values()),
            "raid_groups": show["raid_groups"],
            "remotes": self.remotes(),
            "pairs": show["pairs"],
            "journals": show["journals"],
            "copies": self.admin.copy_ops.copy_display(),
            "background_tasks": show["background_tasks"],
        }

"""A pair half's record (what the catalog keeps) and its running state; names and errors of the pair code."""
from __future__ import annotations

import re
from dataclasses import dataclass

from sanlab.replication.pair import PairHalf, PairVolume
from sanlab.scsi.lu import LogicalUnit
from sanlab.storage.external import ExternalVolume
from sanlab.target.initiator import IscsiSession

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
COPY_KIND = "pair-copy"
"""The supervisor's kind for copy movers (tools/array.py puts it in the shutdown order)."""


class PairError(Exception):
    """An instruction refused, with the reason for the user (CLI: message and exit 1)."""


def tracks_text(tracks: list[int], most: int = 16) -> str:
    """``3, 40-42, 100`` (at most ``most`` runs, then how many more)."""
    runs: list[tuple[int, int]] = []
    for t in tracks:
        if runs and runs[-1][1] == t - 1:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (f" and {len(runs) - most} more runs" if len(runs) > most else "") if runs else "none"


@dataclass(slots=True)
class PairRecord:
    """A pair half as it is kept on disk (JSON)."""

    name: str
    pair_id: int
    role: str
    """``P-VOL`` or ``S-VOL``."""
    state: str
    fence: str
    target: str
    """This array's target of the local volume's LU."""
    lun: int
    remote: str
    """P side: the remote's name; S side: the P array's name (as it registered)."""
    peer_target: str = ""
    """P side: the S-VOL's target on the remote."""
    peer_lun: int = 0
    peer_initiator: str = ""
    """S side: the P array's initiator name."""
    group: str = ""
    extent_start: int = 0
    extent_blocks: int = 0
    reason: str = ""
    s_writable: bool = False
    fence_released: bool = False
    peer_marked: bool = False
    generation: int = 0
    sync_generation: int = 0
    copied_bytes: int = 0
    bidirectional: bool = False
    pace: float = 0.0
    """P side: the copy's pace in MiB/s (0: as fast as it goes)."""
    mode: str = "sync"
    """``sync`` or ``async`` (issue 15: updates reach the S-VOL through the journals)."""
    journal: str = ""
    """Async pairs: this array's journal of the pair."""
    remote_journal: str = ""
    """Async pairs: the other array's journal of the pair."""
    own_identity: list[str] | None = None
    """S side of a bidirectional pair: the LU's own NAA designator (hex) and serial, given back at
    delete (while paired it answers with the P-VOL's, so hosts see one LU on both arrays)."""


@dataclass(slots=True)
class Pair:
    """A pair half while the array runs."""

    record: PairRecord
    volume: PairVolume
    lu: LogicalUnit
    session: IscsiSession | None = None
    """P side: the session to the S array's target; S side of a bidirectional pair: to the P-VOL's."""
    copying: bool = False
    forward: ExternalVolume | None = None
    """S side of a bidirectional pair: the P-VOL, where this side's host writes go first."""
    copy_started: tuple[float, int] = (0.0, 0)
    """When the running copy started (loop time) and the bytes sent before it: its rate."""

    @property
    def half(self) -> PairHalf:
        """The volume's view of the half (role, state, fence, flags)."""
        return self.volume.half


@dataclass(frozen=True, slots=True)
class PairSettings:
    """Timeouts of the P side's session to the S array (seconds)."""

    command_timeout: float = 5.0
    """A mirrored write unanswered this long counts as the S side unreachable (fence levels act)."""
    login_timeout: float = 5.0

"""The words of a remote-copy pair (issue 14): its states, a member's role and the fence level.

Kept apart from the array-to-array codec (replication/protocol.py) and the transition table so that
both import these names from one place and neither imports the other.  The numeric values are the
ones carried on the wire (docs/replication-protocol.md): never renumber them.
"""
from __future__ import annotations

from enum import IntEnum


class PairState(IntEnum):
    """Pair states with the names users of enterprise arrays know (CCI/TrueCopy)."""

    SMPL = 0
    """Simplex: the volume is in no pair."""
    COPY = 1
    """The initial copy or a resync is running; new writes are mirrored behind the copy pointer."""
    PAIR = 2
    """Both copies are identical and every write is mirrored before it is acknowledged."""
    PSUS = 3
    """Split by an operator, seen at the P-VOL side: writes are recorded in the difference bitmap."""
    SSUS = 4
    """Split by an operator, seen at the S-VOL side."""
    PSUE = 5
    """Suspended by an error (peer unreachable, mirrored write failed); the bitmap keeps the difference."""
    SSWS = 6
    """S-VOL side after a takeover: the S-VOL takes host writes and records them in its own bitmap."""
    PFUL = 7
    """Asynchronous pair (issue 15): the journal is past its threshold (default 80%); writes still go
    to the journal."""
    PFUS = 8
    """Asynchronous pair suspended because its journal stayed full: the unsent journal became the
    difference bitmap, so a resync copies only the difference."""


class PairRole(IntEnum):
    """Which member of a pair an array holds."""

    P_VOL = 0
    """The primary volume: hosts write here and the array mirrors to the peer."""
    S_VOL = 1
    """The secondary volume: receives the mirrored writes."""

    @property
    def label(self) -> str:
        """The name users read: ``P-VOL`` or ``S-VOL``."""
        return self.name.replace("_", "-")


class FenceLevel(IntEnum):
    """What a host write does when the S-VOL side cannot be reached (issue 14, "Fence levels")."""

    DATA = 0
    """The write fails (CHECK CONDITION) and the pair goes PSUE."""
    STATUS = 1
    """The write succeeds only if the S-VOL side could be marked suspended; otherwise it fails."""
    NEVER = 2
    """The write succeeds, the pair goes PSUE and the bitmap keeps the difference."""

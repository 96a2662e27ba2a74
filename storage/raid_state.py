"""What a RAID group's members were doing when the array stopped: ``raid-<name>.state``.

Failed members (they missed writes: never trusted again) and the rebuild in progress (member,
replacement file, watermark, pace), JSON replaced atomically: write a temporary file, fsync it,
rename it over the old one, fsync the directory.  The flush order this serves is in
storage/raid.py's module docstring.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from sanlab.storage.durable import replace_json
from sanlab.storage.volume import VolumeError


@dataclass(frozen=True, slots=True)
class RebuildRecord:
    """A rebuild in progress as the state file holds it."""

    index: int
    """Member being rebuilt."""
    path: str
    """The replacement drive file."""
    stripes_done: int
    """Watermark: stripes ``< stripes_done`` are rebuilt and synced on the replacement."""
    rate: int = 0
    """Pace, bytes of the replacement per second (0: as fast as the drives go); kept across restarts."""


@dataclass(frozen=True, slots=True)
class GroupState:
    """What must survive a restart of a group's member states (see the module docstring)."""

    failed: frozenset[int] = frozenset()
    """Indexes of the members taken out (they missed writes)."""
    rebuild: RebuildRecord | None = None
    """The rebuild in progress, if any."""


class GroupStateFile:
    """``raid-<name>.state``: member failures and the rebuild watermark, JSON, replaced atomically."""

    VERSION = 1
    """Format version written into the file (not checked on load)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> GroupState:
        """The states the file holds; all members in use and no rebuild when there is no file.
        VolumeError when it cannot be read or is not JSON (guessing could trust a stale member)."""
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return GroupState()
        except (OSError, ValueError) as exc:
            # Guessing here could bring a stale member back online: refuse to open instead.
            raise VolumeError(f"RAID state file {self.path} is unreadable: {exc}") from None
        try:
            if raw.get("version") != self.VERSION:
                raise ValueError(f"version {raw.get('version')!r}, this release reads {self.VERSION}")
            rb = raw.get("rebuild")
            return GroupState(frozenset(int(i) for i in raw.get("failed", [])),
                              RebuildRecord(int(rb["index"]), str(rb["path"]), int(rb["stripes_done"]),
                                            int(rb.get("rate", 0))) if rb else None)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise VolumeError(f"RAID state file {self.path} is unreadable: {exc}") from None

    def save(self, state: GroupState) -> None:
        """Replace the file with ``state``, atomically and durably (blocking: it fsyncs; run it in the
        I/O pool)."""
        body: dict[str, object] = {"version": self.VERSION, "failed": sorted(state.failed), "rebuild": None}
        if state.rebuild is not None:
            body["rebuild"] = {"index": state.rebuild.index, "path": state.rebuild.path,
                               "stripes_done": state.rebuild.stripes_done, "rate": state.rebuild.rate}
        replace_json(self.path, body)

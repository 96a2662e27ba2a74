"""Where each byte of a RAID group lives: the levels and their pure address arithmetic.

* RAID 0 — chunk *c* on drive ``c % n``.
* RAID 1 — every drive holds everything.
* RAID 10 — drives pair up (0,1), (2,3)...; chunks are striped over the pairs.
* RAID 5 — left-symmetric: in stripe *s* parity P sits on drive ``n-1 - s % n`` and the data
  chunks follow it, wrapping around.
* RAID 6 — as RAID 5 with Q on the drive after P.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterator

from sanlab.storage.volume import VolumeError


class RaidLevel(enum.IntEnum):
    """The RAID levels a group can have; the value is the level's number, as configs and the catalog write it."""

    RAID0 = 0
    RAID1 = 1
    RAID5 = 5
    RAID6 = 6
    RAID10 = 10


_MIN_DRIVES = {RaidLevel.RAID0: 1, RaidLevel.RAID1: 2, RaidLevel.RAID5: 3, RaidLevel.RAID6: 4, RaidLevel.RAID10: 4}


@dataclass(frozen=True, slots=True)
class Layout:
    """Pure address arithmetic of one RAID level (property-tested against a flat model)."""

    level: RaidLevel
    drives: int
    """Number of members."""
    chunk: int
    """Stripe unit in bytes: what one member holds of one stripe (the group's ``stripe_size``)."""
    drive_size: int
    """Bytes of each member in use (the smallest member's size)."""

    def __post_init__(self) -> None:
        if self.drives < _MIN_DRIVES[self.level]:
            raise ValueError(f"RAID {int(self.level)} needs at least {_MIN_DRIVES[self.level]} drives")
        if self.level is RaidLevel.RAID10 and self.drives % 2:
            raise ValueError("RAID 10 needs an even number of drives")
        if self.chunk <= 0 or self.chunk % 512:
            raise ValueError("stripe size must be a positive multiple of 512")

    @property
    def data_chunks(self) -> int:
        """Data chunks per stripe."""
        return {RaidLevel.RAID0: self.drives, RaidLevel.RAID1: 1, RaidLevel.RAID5: self.drives - 1,
                RaidLevel.RAID6: self.drives - 2, RaidLevel.RAID10: self.drives // 2}[self.level]

    @property
    def stripes(self) -> int:
        """Whole stripes on a member (a partial chunk at the end of the drive is not used)."""
        return self.drive_size // self.chunk

    @property
    def capacity(self) -> int:
        """Bytes of data the group holds: stripes × data chunks per stripe × chunk."""
        return self.stripes * self.data_chunks * self.chunk

    def parity_drives(self, stripe: int) -> tuple[int, ...]:
        """(P,) or (P, Q) drive indexes of a stripe; () for levels without parity."""
        n = self.drives
        if self.level is RaidLevel.RAID5:
            return (n - 1 - stripe % n,)
        if self.level is RaidLevel.RAID6:
            p = n - 1 - stripe % n
            return (p, (p + 1) % n)
        return ()

    def data_drives(self, stripe: int, index: int) -> tuple[int, ...]:
        """Drives holding data chunk ``index`` of ``stripe`` (several for mirrors)."""
        n = self.drives
        if self.level is RaidLevel.RAID0:
            return (index,)
        if self.level is RaidLevel.RAID1:
            return tuple(range(n))
        if self.level is RaidLevel.RAID10:
            return (2 * index, 2 * index + 1)
        par = self.parity_drives(stripe)
        return ((par[-1] + 1 + index) % n,)

    def segments(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int, int]]:
        """Split a logical range into (stripe, data index, offset in chunk, length, offset in request)."""
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise VolumeError(f"range {offset}+{length} outside RAID group of {self.capacity} bytes")
        done = 0
        per_stripe = self.data_chunks * self.chunk
        while done < length:
            pos = offset + done
            stripe, within = divmod(pos, per_stripe)
            index, coff = divmod(within, self.chunk)
            n = min(self.chunk - coff, length - done)
            yield stripe, index, coff, n, done
            done += n

"""A logical unit: a volume plus its identity and per-I_T-nexus state (SAM-5 §4.6).

Identity (:class:`LuConfig`) is derived from the target name and the LUN so it
stays the same across restarts: multipath and udev key on the NAA name and the
unit serial number.  State (:class:`LogicalUnit`) is what SAM-5 keeps per I_T
nexus: the queue of unit attention conditions and the sense data REQUEST SENSE
reports.
"""
from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from importlib import metadata
from typing import Awaitable, Callable

from sanlab.scsi.reservation_state import LuReservations
from sanlab.scsi.sense import Asc
from sanlab.scsi.stats import LuStats
from sanlab.scsi.task import Nexus, TaskAttribute
from sanlab.scsi.task_set import TaskSet
from sanlab.storage.volume import NowaitIO, Volume, VolumeError, grow_volume

SANLAB_COMPANY_ID = 0x5A4E4C
"""24-bit IEEE COMPANY ID field of our NAA 6h names (the bytes "ZNL").

Not an OUI assigned to this project: a fixed value chosen so names are stable.
Its first octet 5Ah has the X (local) bit set and the M (group) bit clear, i.e.
it lies in the locally administered CID space, so it cannot equal a MAC-style
OUI of a real vendor; the 100 bits after it are a SHA-256 of target name + LUN.
"""

UA_QUEUE_MAX = 16
"""Unit attentions kept per I_T nexus; beyond this the oldest ones stand for the rest (SAM-5 §5.14)."""

VENDOR = "SANLAB"
PRODUCT = "VIRTUAL-DISK"
DISK_KIND = "disk"
"""Name of the kind of LU every LU is unless its configuration says otherwise (scsi/kinds.py)."""


def _revision() -> str:
    """PRODUCT REVISION LEVEL: the package version without dots, 4 characters."""
    try:
        v = metadata.version("sanlab")
    except metadata.PackageNotFoundError:
        v = "0"
    return v.replace(".", "")[:4].ljust(4)


def naa6_designator(target_name: str, lun: int) -> bytes:
    """16-byte NAA IEEE Registered Extended designator (SPC-4 §7.8.6.6.4).

    Layout: NAA (4 bits) = 6h, IEEE COMPANY ID (24), VENDOR SPECIFIC IDENTIFIER
    (36), VENDOR SPECIFIC IDENTIFIER EXTENSION (64).  The last 100 bits come from
    SHA-256(target name NUL LUN), so two LUs never share a name in practice.
    """
    h = hashlib.sha256(f"{target_name}\0{lun}".encode()).digest()
    vendor_bits = int.from_bytes(h[:13], "big") >> 4  # 100 bits: 36 vendor specific + 64 extension
    return ((0x6 << 124) | (SANLAB_COMPANY_ID << 100) | vendor_bits).to_bytes(16, "big")


@dataclass(slots=True)
class LuConfig:
    """Identity and properties of one logical unit."""

    target_name: str
    lun: int
    naa: bytes
    """16-byte NAA 6h designator (see :func:`naa6_designator`)."""
    serial: str
    """PRODUCT SERIAL NUMBER (Unit Serial Number VPD page, SPC-4 §7.8.15): ASCII, 16 characters."""
    vendor: str = VENDOR
    """T10 VENDOR IDENTIFICATION (padded to 8 bytes on the wire)."""
    product: str = PRODUCT
    """PRODUCT IDENTIFICATION (padded to 16 bytes on the wire)."""
    revision: str = field(default_factory=_revision)
    """PRODUCT REVISION LEVEL (4 bytes)."""
    readonly: bool = False
    """Writes fail with DATA PROTECT / WRITE PROTECTED; MODE SENSE reports WP."""
    thin: bool = True
    """Thin provisioned (Logical Block Provisioning VPD page reports it)."""
    removable: bool = False
    """RMB in standard INQUIRY data."""
    physical_block_size: int = 0
    """Bytes per physical block, a power-of-two multiple of the logical block (0: the same).  READ
    CAPACITY(16) reports the ratio (LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT): e.g. 4096 on a
    512-byte LU says what a 512e disk says, that writes of less than 4 KiB cost a read-modify-write
    (the backing file system's page) and UNMAP of part of one can only zero it."""
    sanitize_rate: int = 0
    """Bytes per second a SANITIZE pass may write (0: as fast as the volume takes them).  A real array
    paces background media work so the other LUs on the same drives keep their service; a sanitize
    that takes a realistic time also lets initiators see SANITIZE IN PROGRESS (SBC-3 §4.11)."""
    kind: str = DISK_KIND
    """Name of the LU's kind, which selects the command table it answers with (scsi/commands.py
    :class:`~sanlab.scsi.commands.LuKind`); the device server knows the kinds by name."""

    @staticmethod
    def identity(target_name: str, lun: int) -> tuple[bytes, str]:
        """(NAA designator, serial) of LUN ``lun`` of ``target_name``: what :meth:`for_lun` gives it.
        A bidirectional pair's S-VOL answers with its P-VOL's, so a host with paths to both arrays
        sees one logical unit (SPC-4 §7.8.6)."""
        # The serial is the next 64 bits of the same hash the NAA name uses: both stay stable.
        h = hashlib.sha256(f"{target_name}\0{lun}".encode()).digest()
        return naa6_designator(target_name, lun), h[13:21].hex().upper()

    @classmethod
    def for_lun(cls, target_name: str, lun: int, *, readonly: bool = False, thin: bool = True,
                removable: bool = False, sanitize_rate: int = 0, physical_block_size: int = 0,
                kind: str = DISK_KIND) -> LuConfig:
        """Stable identity derived from the target name and LUN."""
        naa, serial = cls.identity(target_name, lun)
        return cls(target_name, lun, naa, serial,
                   readonly=readonly, thin=thin, removable=removable, sanitize_rate=sanitize_rate,
                   physical_block_size=physical_block_size, kind=kind)


class LogicalUnit:
    """A volume served as a SCSI direct-access block device (SBC-3)."""

    def __init__(self, volume: Volume, config: LuConfig) -> None:
        self.volume = volume
        """The backing store."""
        self.nowait_volume: NowaitIO | None = volume if isinstance(volume, NowaitIO) else None
        """The volume when it can finish some reads and writes without waiting (the fast path of
        :meth:`~sanlab.scsi.device_server.DeviceServer.start`); set again by
        :meth:`swap_volume`."""
        self.config = config
        """Identity and properties."""
        self.d_sense = False
        """Control mode page D_SENSE: descriptor-format sense when set (SPC-4 §7.5.8)."""
        self.swp = False
        """Control mode page SWP: software write protect, writes fail 27h/02h (SPC-4 §7.5.8)."""
        self.reset_hook: Callable[[Nexus], Awaitable[None]] | None = None
        """Awaited after a LOGICAL UNIT RESET of this LU from that nexus, before the TMF is answered
        (a bidirectional pair's LU is one LU on two arrays: the other array resets its half too)."""
        self.write_gate: Callable[[Nexus], None] | None = None
        """Who may write now, asked for every command that changes the medium before its handler
        runs: raises ScsiError to refuse the command for that I_T nexus.  Set by the owner of a
        volume that only some initiators may write (an S-VOL of a remote-copy pair takes the
        primary array's writes and refuses the hosts'); None lets every nexus write."""
        self.wce = True
        """Caching mode page WCE: False makes every write write-through (SBC-3 §6.4.5)."""
        self.medium_present = True
        """False after START STOP UNIT ejected the medium of a removable LU (SBC-3 §5.25)."""
        self.prevent: set[Nexus] = set()
        """I_T nexuses holding PREVENT ALLOW MEDIUM REMOVAL prevent (SBC-3 §5.14)."""
        self.sanitizing = False
        """A SANITIZE is running: media access gets NOT READY 04h/1Bh (SBC-3 §4.11)."""
        self.copy_results: dict[tuple[Nexus, int], bytes] = {}
        """(nexus, LIST IDENTIFIER) → COPY STATUS data held for RECEIVE COPY RESULTS (SPC-4 §6.18.2)."""
        self._ua: dict[Nexus, deque[int]] = {}
        self._sense: dict[Nexus, bytes] = {}
        self.reservations = LuReservations(config.naa.hex())
        """This LU's SPC-2 and persistent reservations (scsi/reservation_state.py); the device server
        restores what APTPL persisted before the LU's first command."""
        self.task_set = TaskSet()
        """When each task may start by its attribute (SAM-5 §8.6)."""
        self.stats = LuStats()
        """Commands, bytes, errors and latencies of this LU (the status page and metrics read them)."""

    @property
    def block_size(self) -> int:
        """Logical block length in bytes."""
        return self.volume.block_size

    @property
    def num_blocks(self) -> int:
        """Capacity in logical blocks."""
        return self.volume.num_blocks

    async def swap_volume(self, make: Callable[[Volume], Volume]) -> Volume:
        """Put ``make(current volume)`` in place of the LU's volume while sessions stay logged in,
        and return the volume it replaced (issue 13, seam 1: a pair wraps a volume hosts are using).

        Quiesce, swap, resume: the swap takes the task set as an ORDERED task would (SAM-5 §8.6),
        so it starts once every older task — fast-path ones counted by ``TaskSet.start_now`` and
        HEAD OF QUEUE ones included — has completed, and every newer task starts after it and sees
        the new volume.  Whether the fast path may use the volume is decided here again
        (:attr:`nowait_volume`), never kept from the LU's creation.  ``make`` runs inside the
        quiesced window; if it raises, nothing changes.  The new volume must have the old one's
        geometry (a capacity change is :meth:`grow`'s, with its unit attention).
        """
        async with self.task_set.enabled(TaskAttribute.ORDERED):
            if self.sanitizing:
                raise VolumeError("a SANITIZE is running on the LU: its volume cannot be replaced")
            old = self.volume
            new = make(old)
            if (new.block_size, new.num_blocks) != (old.block_size, old.num_blocks):
                raise VolumeError(f"a replacement volume must have the LU's geometry ({old.num_blocks} blocks of "
                                  f"{old.block_size} bytes), not {new.num_blocks} of {new.block_size}")
            self.volume = new
            self.nowait_volume = new if isinstance(new, NowaitIO) else None
        return old

    async def grow(self, num_blocks: int) -> bool:
        """Grow the LU to ``num_blocks`` logical blocks; False when it already had that many.

        The capacity is part of what initiators cache (READ CAPACITY data, SBC-3 §5.15/§5.16):
        after a change the device server establishes a unit attention CAPACITY DATA HAS CHANGED
        (2Ah/09h) for every I_T nexus it knows (SBC-3 §4.5; SAM-5 §5.14) — the change came from the
        administrator, not through any nexus, so none is left out.  The volume's capacity and the
        unit attention change in the same event-loop step, so no command sees one without the
        other.  Refusals (shrinking: ValueError; a volume that cannot grow or is read-only:
        VolumeError) leave the LU unchanged.
        """
        old = self.num_blocks
        await grow_volume(self.volume, num_blocks)
        if self.num_blocks == old:
            return False
        self.add_ua(Asc.CAPACITY_DATA_HAS_CHANGED)
        return True

    # --- unit attentions (SAM-5 §5.14, per I_T nexus) ----------------------------------------------

    def nexus_added(self, nexus: Nexus) -> None:
        """A new I_T nexus sees the LU as just powered on / reset: 29h/00h (SAM-5 §5.14, §6.3)."""
        self._ua[nexus] = deque([int(Asc.POWER_ON_RESET_OCCURRED)])
        self._sense.pop(nexus, None)

    def nexus_removed(self, nexus: Nexus) -> None:
        """Forget everything kept for ``nexus``, its medium removal prevention included (SBC-3 §5.14)."""
        self._ua.pop(nexus, None)
        self._sense.pop(nexus, None)
        self.prevent.discard(nexus)
        for key in [k for k in self.copy_results if k[0] == nexus]:
            del self.copy_results[key]

    def reset(self) -> None:
        """A logical unit reset or a hard reset ends medium removal prevention (SBC-3 §5.14)."""
        self.prevent.clear()

    @property
    def nexuses(self) -> list[Nexus]:
        """The I_T nexuses this LU has state for."""
        return list(self._ua)

    def add_ua(self, asc_ascq: int, nexuses: list[Nexus] | None = None) -> None:
        """Establish a unit attention for ``nexuses`` (default: every known nexus)."""
        for nx in (nexuses if nexuses is not None else list(self._ua)):
            q = self._ua.setdefault(nx, deque())
            if asc_ascq not in q and len(q) < UA_QUEUE_MAX:
                q.append(asc_ascq)

    def reset_ua(self, asc_ascq: int) -> None:
        """After a reset the reset's UA replaces whatever was pending, for every nexus (SAM-5 §6.3)."""
        for q in self._ua.values():
            q.clear()
            q.append(asc_ascq)
        self._sense.clear()

    def take_ua(self, nexus: Nexus) -> int | None:
        """Report and clear the oldest unit attention for ``nexus`` (None: nothing pending).

        A nexus the LU has never heard of (the transport did not call
        :meth:`nexus_added`) is treated as new: it gets the power-on UA first.
        """
        q = self._ua.get(nexus)
        if q is None:
            self._ua[nexus] = deque()
            return int(Asc.POWER_ON_RESET_OCCURRED)
        return q.popleft() if q else None

    def peek_ua(self, nexus: Nexus) -> int | None:
        """The oldest pending unit attention for ``nexus`` without clearing it."""
        q = self._ua.get(nexus)
        if q is None:
            return int(Asc.POWER_ON_RESET_OCCURRED)
        return q[0] if q else None

    def pending_ua(self, nexus: Nexus) -> bool:
        """A unit attention is pending for ``nexus`` (:meth:`peek_ua` is not None; asked for every
        command on the device server's fast path)."""
        q = self._ua.get(nexus)
        return q is None or len(q) > 0

    # --- sense for REQUEST SENSE (SPC-4 §6.39) -----------------------------------------------------

    def set_sense(self, nexus: Nexus, sense: bytes) -> None:
        """Keep sense (e.g. a deferred error) for the next REQUEST SENSE from ``nexus``."""
        self._sense[nexus] = sense

    def take_sense(self, nexus: Nexus) -> bytes | None:
        """Report and clear the sense kept for ``nexus``."""
        return self._sense.pop(nexus, None)

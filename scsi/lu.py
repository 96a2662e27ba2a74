"""A logical unit: a volume plus its identity and per-I_T-nexus state (SAM-5 §4.6)."""
from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from dataclasses import dataclass, field
from importlib import metadata

from sanlab.scsi.sense import Asc
from sanlab.scsi.task import Nexus
from sanlab.storage.volume import Volume

SANLAB_COMPANY_ID = 0x5A4E4C
"""24-bit IEEE company id field of our NAA-6 names.  Not a registered OUI: a
fixed placeholder so names are stable; the 100-bit vendor part is a hash."""

UA_QUEUE_MAX = 16


def _revision() -> str:
    try:
        v = metadata.version("sanlab")
    except metadata.PackageNotFoundError:
        v = "0"
    return v.replace(".", "")[:4].ljust(4)


@dataclass(slots=True)
class LuConfig:
    """Identity and properties of one logical unit."""

    target_name: str
    lun: int
    naa: bytes
    """16-byte NAA IEEE Registered Extended designator (NAA 6h, SPC-4 §7.8.6.6.3)."""
    serial: str
    vendor: str = "SANLAB"
    product: str = "VIRTUAL-DISK"
    revision: str = field(default_factory=_revision)
    readonly: bool = False
    thin: bool = True
    removable: bool = False

    @classmethod
    def for_lun(cls, target_name: str, lun: int, *, readonly: bool = False, thin: bool = True,
                removable: bool = False) -> LuConfig:
        """Stable identity derived from the target name and LUN."""
        h = hashlib.sha256(f"{target_name}\0{lun}".encode()).digest()
        vendor_bits = int.from_bytes(h[:13], "big") >> 4  # 100 bits: 36 vendor specific + 64 extension
        naa = ((0x6 << 124) | (SANLAB_COMPANY_ID << 100) | vendor_bits).to_bytes(16, "big")
        return cls(target_name, lun, naa, h[13:21].hex().upper(), readonly=readonly, thin=thin,
                   removable=removable)


class LogicalUnit:
    """A volume served as a SCSI direct-access block device."""

    def __init__(self, volume: Volume, config: LuConfig) -> None:
        self.volume = volume
        self.config = config
        self.d_sense = False
        """Control mode page D_SENSE: descriptor-format sense when set (SPC-4 §7.5.8)."""
        self._ua: dict[Nexus, deque[int]] = {}
        self._sense: dict[Nexus, bytes] = {}
        self.write_lock = asyncio.Lock()
        """Serialises read-modify-write commands (COMPARE AND WRITE) against each other."""

    @property
    def block_size(self) -> int:
        return self.volume.block_size

    @property
    def num_blocks(self) -> int:
        return self.volume.num_blocks

    # --- unit attentions (SAM-5 §5.14, per I_T nexus) ---------------------------

    def nexus_added(self, nexus: Nexus) -> None:
        # A new I_T nexus sees the device as just powered on / reset.
        self._ua[nexus] = deque([Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED])

    def nexus_removed(self, nexus: Nexus) -> None:
        self._ua.pop(nexus, None)
        self._sense.pop(nexus, None)

    def add_ua(self, asc_ascq: int, nexuses: list[Nexus] | None = None) -> None:
        """Establish a unit attention for ``nexuses`` (default: every known nexus)."""
        for nx in (nexuses if nexuses is not None else list(self._ua)):
            q = self._ua.setdefault(nx, deque())
            if asc_ascq not in q and len(q) < UA_QUEUE_MAX:
                q.append(asc_ascq)

    def reset_ua(self, asc_ascq: int) -> None:
        """After a reset, the reset UA replaces whatever was pending for every nexus."""
        for q in self._ua.values():
            q.clear()
            q.append(asc_ascq)

    def take_ua(self, nexus: Nexus) -> int | None:
        q = self._ua.get(nexus)
        if q:
            return q.popleft()
        if nexus not in self._ua:
            # A nexus seen first here (e.g. added without nexus_added): it starts with the power-on UA.
            self._ua[nexus] = deque()
            return int(Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
        return None

    def pending_ua(self, nexus: Nexus) -> bool:
        return bool(self._ua.get(nexus)) or nexus not in self._ua

    def set_sense(self, nexus: Nexus, sense: bytes) -> None:
        self._sense[nexus] = sense

    def take_sense(self, nexus: Nexus) -> bytes | None:
        return self._sense.pop(nexus, None)

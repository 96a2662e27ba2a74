"""The fault matrix's rig (issue 19): arrays A (127.0.0.1) and B (127.0.0.2) of test_sync_pairs, each
reaching the other only through a TCP relay on 127.0.0.3 the harness can cut, slow and heal; the
volumes or journals a fault needs on a RAID-5 group or on a small filesystem of their own; and what a
case reports.
"""
from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, free_port, start_sanlab
from tests.faults.stream import BS
from tests.integration.test_sync_pairs import A, B, SIZE, Arrays, Proxy, config

RAID_LUN0 = """
[[raid_groups]]
name = "rg0"
level = 5
stripe_size = "64KiB"
drive_size = "4MiB"
drives = ["drives/d0.img", "drives/d1.img", "drives/d2.img"]
"""
"""A RAID-5 group of three 4 MiB drive files: LUN 0 on it has the file LUN's 8 MiB."""
LOST_DRIVE = 1
"""The member a drive-loss fault takes away."""
SMALL_FS = "12m"
"""The tmpfs under a LUN file a full-filesystem fault fills (the file is 8 MiB, sparse)."""
JOURNAL_SIZE = "16MiB"
"""Each array's journal of an async pair."""
JOURNAL_FS = "18m"
"""The tmpfs holding an array's journal file (16 MiB) when a fault is to fill the journal's
filesystem: 2 MiB left for the filler."""
JOURNAL_GROUP = "jrg"
JOURNAL_DRIVES = ("jdrives/j0.img", "jdrives/j1.img", "jdrives/j2.img")
JOURNAL_VOLUME = "jvol"
"""With its journal on RAID, an array's journal is the catalog volume ``jvol`` (16 MiB) on the RAID-5
group ``jrg`` of three 12 MiB drive files (README, Storage; docs/journal.md: ``--volume``)."""


def raid_config(me: str, peer: str, peer_portal: str) -> str:
    """config()'s array with LUN 0 on :data:`RAID_LUN0`'s group instead of a file."""
    cfg = config(me, peer, peer_portal, ("1MiB",))  # the group's TOML goes before the targets
    head, targets = cfg.split("[[targets]]", 1)
    lun1 = targets.split("[[targets.luns]]", 1)[1].replace("lun = 0", "lun = 1")
    return (head + RAID_LUN0 + f'[[targets]]\nname = "{me}"\n[[targets.luns]]\nlun = 0\nraid_group = "rg0"\n'
            + "[[targets.luns]]" + lun1)


def mount_tmpfs(where: Path, size: str) -> Path:
    """A tmpfs of ``size`` at ``where`` (made here): a filesystem a fault can fill."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    return where


class LinkedArrays(Arrays):
    """A and B of test_sync_pairs, each reaching the other through a relay the test controls; an
    array in ``raid`` ("a", "b") has its LUN 0 on a RAID-5 group (:data:`RAID_LUN0`), one in
    ``small`` its LUN 0 file on a tmpfs of its own; one in ``journal_fs`` keeps its journals on a
    tmpfs of their own (:data:`JOURNAL_FS`), one in ``journal_raid`` its journal on a RAID-5 catalog
    volume (:data:`JOURNAL_VOLUME`)."""

    def __init__(self, tmp: Path, raid: frozenset[str] = frozenset(), small: frozenset[str] = frozenset(),
                 journal_fs: frozenset[str] = frozenset(), journal_raid: frozenset[str] = frozenset()) -> None:
        self.tmp = tmp
        self.raid = raid
        self.journal_raid = journal_raid
        self.small: dict[str, Path] = {}
        """The arrays whose LUN 0 file lives on a tmpfs of its own (a filesystem a fault can fill)."""
        self.journal_fs: dict[str, Path] = {}
        """The arrays whose journals directory lives on a tmpfs of its own."""
        self.pa, self.pb = free_port("127.0.0.1"), free_port("127.0.0.2")
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        for which in small:
            fs = self.small[which] = mount_tmpfs(tmp / f"fs-{which}", SMALL_FS)
            (tmp / which / "data").mkdir(exist_ok=True)
            (tmp / which / "data" / "lun0.img").symlink_to(fs / "lun0.img")
        for which in journal_fs:
            # `journal create --size` puts the file in <data-dir>/journals (replication/async_pairs.py).
            fs = self.journal_fs[which] = mount_tmpfs(tmp / f"jfs-{which}", JOURNAL_FS)
            (tmp / which / "data").mkdir(exist_ok=True)
            (tmp / which / "data" / "journals").symlink_to(fs)
        self.to_a, self.to_b = Proxy(("127.0.0.1", self.pa)), Proxy(("127.0.0.2", self.pb))
        self.a = self.start("a")
        self.b = self.start("b")
        for which in journal_raid:
            sp = self.a if which == "a" else self.b
            (sp.data_dir / "jdrives").mkdir()  # create-raid-group makes no directories (README)
            self.ok(sp, "admin", "create-raid-group", f"name={JOURNAL_GROUP}", "level=5",
                    "drives=" + ",".join(JOURNAL_DRIVES), "drive_size=12MiB")
            self.ok(sp, "admin", "create-volume", f"name={JOURNAL_VOLUME}", "size=16MiB", f"groups={JOURNAL_GROUP}")

    def start(self, which: str) -> SanlabProcess:
        me, peer, relay = (A, B, self.to_b) if which == "a" else (B, A, self.to_a)
        portal = f"127.0.0.3:{relay.port}"
        cfg = raid_config(me, peer, portal) if which in self.raid else config(me, peer, portal, self.SIZES, self.EXTRA)
        return start_sanlab(self.tmp / which, cfg, *(("127.0.0.1", self.pa) if which == "a" else ("127.0.0.2", self.pb)))

    def which(self, sp: SanlabProcess) -> str:
        return "a" if sp is self.a else "b"

    def side(self, which: str) -> SanlabProcess:
        """The array called ``which`` ("a", "b")."""
        return self.a if which == "a" else self.b

    def journal_args(self, which: str) -> tuple[str, ...]:
        """Where `journal create` puts array ``which``'s journal: a file, or the RAID volume."""
        return ("--volume", JOURNAL_VOLUME) if which in self.journal_raid else ("--size", JOURNAL_SIZE)

    def file(self, sp: SanlabProcess) -> bytes:
        """LUN 0's bytes: its file, or for a RAID LUN what a host reads (the array must be up)."""
        if self.which(sp) not in self.raid:
            return super().file(sp)
        target = A if sp is self.a else B

        async def read() -> bytes:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:faults-reader", command_timeout=30.0)
            out = bytearray()
            async with IscsiSession(sp.host, sp.port, target, cfg) as s:
                await s.clear_unit_attentions(0)
                step = (1 << 20) // BS
                for lba in range(0, SIZE // BS, step):
                    out += await s.read16(0, lba, step, BS)
            return bytes(out)
        return asyncio.run(asyncio.wait_for(read(), 120))

    def state(self, sp: SanlabProcess) -> str:
        return str(self.pair(sp)["state"])

    def up(self, sp: SanlabProcess) -> bool:
        """The array's process runs."""
        return sp.proc.poll() is None

    def stop(self) -> None:
        super().stop()
        self.to_a.close()
        self.to_b.close()
        for fs in (*self.small.values(), *self.journal_fs.values()):
            subprocess.run(["umount", "-l", str(fs)], check=False)


@dataclass
class Outcome:
    """What a case saw, for its report line."""

    moment: int
    acked: int
    promise: str
    states: tuple[str, str]
    copied_bytes: int

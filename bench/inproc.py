"""In-process driver: the server's per-command CPU cost without the network or the VM's noise.

Feeds ready-made SCSI Command PDUs (READ(10) or WRITE(10) with immediate data, 4 KiB at random
aligned LBAs, one at a time as at queue depth 1) through ``IscsiServer._on_data`` of a real
server, target, device server and file volume, with a transport that only counts what it is
given; every command is answered before the next is fed (the page cache holds the file).
Prints microseconds per command (best of the rounds), and with ``--profile`` the cProfile table
of one round: what the bench's QD1 rows pay per command in Python, to compare before/after a
change (``python bench/inproc.py --rounds 5``; callgrind: ``valgrind --tool=callgrind python
bench/inproc.py --count 2000 --rounds 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import struct
import tempfile
import time
from typing import Any

from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.storage.file_volume import FileVolume
from sanlab.target.keys import SessionParams
from sanlab.target.login import LoginResult, TargetAuth
from sanlab.target.pdu import PduFramer, ScsiCommand, encode
from sanlab.target.server import IscsiServer, Target

TARGET = "iqn.2026-11.org.sanlab:inproc"
SIZE = 64 << 20
BLOCK = 512


class _Transport:
    """Counts the buffers the server writes; never pauses."""

    def __init__(self) -> None:
        self.pdus = 0
        self.bytes = 0

    def writelines(self, bufs: list[Any]) -> None:
        self.pdus += 1
        self.bytes += sum(len(b) for b in bufs)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 3260) if name == "sockname" else default


class _Writer:
    def __init__(self) -> None:
        self.transport = _Transport()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


def _commands(count: int, write: bool, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    blocks = 4096 // BLOCK
    data = os.urandom(4096)
    out = []
    for i in range(count):
        lba = rng.randrange(SIZE // 4096) * blocks
        cdb = struct.pack(">BBIBHB", 0x2A if write else 0x28, 0, lba, 0, blocks, 0).ljust(16, b"\0")
        pdu = ScsiCommand(final=True, read=not write, write=write, attr=1, lun=bytes(8),
                          initiator_task_tag=i + 1, expected_data_transfer_length=4096, cmdsn=i + 1,
                          expstatsn=0, cdb=cdb, data=data if write else b"")
        out.append(b"".join(bytes(b) for b in encode(pdu)))
    return out


async def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lun0.img")
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20) * (SIZE >> 20))
        volume = FileVolume(path, SIZE, BLOCK, thin=False)
        lu = LogicalUnit(volume, LuConfig.for_lun(TARGET, 0, thin=False))
        ds = DeviceServer(TARGET, {0: lu})
        server = IscsiServer([Target(TargetAuth(name=TARGET), ds)], [])
        params = SessionParams(initial_r2t=False, immediate_data=True, max_recv_data_segment_length_target=262144,
                               max_recv_data_segment_length_initiator=262144, first_burst_length=262144)
        result = LoginResult(params=params, initiator_name="iqn.2026-11.org.sanlab:driver", isid=1, tsih=1,
                             cid=0, target=server.targets[TARGET].auth, statsn=1, expcmdsn=1, existing_tsih=0)
        writer = _Writer()
        c = server._connect(result, writer)  # type: ignore[arg-type]
        framer = PduFramer(max_data_segment=params.max_recv_data_segment_length_target)
        best = float("inf")
        cmdsn = 0
        for r in range(args.rounds):
            pdus = _commands(args.count, args.write, r)
            # Renumber ITT/CmdSN so they continue across rounds.
            fixed = []
            for i, b in enumerate(pdus):
                cmdsn += 1
                fixed.append(b[:16] + cmdsn.to_bytes(4, "big") + b[20:24] + cmdsn.to_bytes(4, "big") + b[28:])
            before = writer.transport.pdus
            prof = cProfile.Profile() if args.profile and r == args.rounds - 1 else None
            t0 = time.perf_counter()
            if prof is not None:
                prof.enable()
            for b in fixed:
                server._on_data(c, framer, b)
                while writer.transport.pdus == before:  # waited for the disk: let the pool answer
                    await asyncio.sleep(0)
                before = writer.transport.pdus
            if prof is not None:
                prof.disable()
            best = min(best, (time.perf_counter() - t0) / len(fixed) * 1e6)
        print(f"{'write' if args.write else 'read'} 4 KiB QD1: {best:.1f} us per command "
              f"(best of {args.rounds} x {args.count})")
        if prof is not None:
            pstats.Stats(prof).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("ROWS", "25")))
        await volume.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()

"""Soak (issue 19): 32 sessions at QD32 with mixed READ / WRITE / COMPARE AND WRITE / UNMAP against a
file LUN, a RAID-5 LUN and a LUN that is a sync pair's P-VOL, for SANLAB_SOAK_SECONDS (600 by
default), every read checked against a model as it comes back, everything read back and checked
at the end (the S-VOL's bytes on array B too), array A's RSS sampled: flat after warm-up.

Each session owns a slice of one LUN and each of its 32 workers a part of that slice, so the model
of every block is exact whatever order the array runs them in.  A report at the end says what
ran, the latencies' tail and RSS at warm-up, peak and end.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sanlab.target.initiator import InitiatorConfig, IscsiSession
from tests.conftest import SanlabProcess, free_port, start_sanlab

pytestmark = [pytest.mark.slow, pytest.mark.integration]

A = "iqn.2026-11.org.sanlab:soak-a"
B = "iqn.2026-11.org.sanlab:soak-b"
BS = 512
LUN_MIB = 64
SESSIONS = 32
QD = 32
MAX_BLOCKS = 32
WARMUP = 0.25
"""Fraction of the run before RSS counts as warmed up."""
RSS_SLACK = 32 << 20
"""RSS may grow this much (or 25 %) past its warmed-up value before it counts as growth."""


def config_a(port_b: int) -> str:
    return f"""initiator_name = "{A}"
[[remotes]]
name = "soak-b"
portal = "127.0.0.2:{port_b}"
target = "{B}"
[[raid_groups]]
name = "rg5"
level = 5
stripe_size = "16KiB"
drive_size = "{LUN_MIB // 2}MiB"
drives = ["drives/d0.img", "drives/d1.img", "drives/d2.img", "drives/d3.img"]
[[targets]]
name = "{A}"
[[targets.luns]]
lun = 0
file = "file.img"
size = "{LUN_MIB}MiB"
[[targets.luns]]
lun = 1
raid_group = "rg5"
size = "{LUN_MIB}MiB"
[[targets.luns]]
lun = 2
file = "paired.img"
size = "{LUN_MIB}MiB"
"""


def config_b() -> str:
    return f"""initiator_name = "{B}"
[[targets]]
name = "{B}"
[[targets.luns]]
lun = 0
file = "svol.img"
size = "{LUN_MIB}MiB"
"""


@dataclass
class Part:
    """One worker's blocks: ``lun``, ``[start, start + blocks)``, and the model of their bytes."""

    lun: int
    start: int
    blocks: int
    model: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.model = bytearray(self.blocks * BS)


@dataclass
class Tally:
    ops: dict[str, int] = field(default_factory=lambda: {"read": 0, "write": 0, "caw": 0, "miscompare": 0,
                                                          "unmap": 0})
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def cli(sp: SanlabProcess, *words: str) -> str:
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(sp.data_dir)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, f"{words}: {cp.stdout}\n{cp.stderr}\n{sp.log()[-3000:]}"
    return cp.stdout


def pattern(tag: int, blocks: int) -> bytes:
    """``blocks`` blocks each naming ``tag`` and its own index (a misplaced block is seen)."""
    return b"".join((tag.to_bytes(8, "big") + i.to_bytes(8, "big")) * (BS // 16) for i in range(blocks))


async def worker(s: IscsiSession, part: Part, rng: random.Random, deadline: float, tally: Tally,
                 tag_base: int, thin: dict[int, bool]) -> None:
    n_ops = 0
    while time.monotonic() < deadline:
        n = rng.randint(1, min(MAX_BLOCKS, part.blocks))
        off = rng.randrange(part.blocks - n + 1)
        lba, lo, hi = part.start + off, off * BS, (off + n) * BS
        r = rng.random()
        began = time.monotonic()
        n_ops += 1
        if r < 0.45:
            data = pattern(tag_base + n_ops, n)
            await s.write16(part.lun, lba, data, BS)
            part.model[lo:hi] = data
            tally.ops["write"] += 1
        elif r < 0.80:
            got = await s.read16(part.lun, lba, n, BS)
            if got != part.model[lo:hi]:
                tally.errors.append(f"LUN {part.lun} LBA {lba}+{n}: read differs from the model")
            tally.ops["read"] += 1
        elif r < 0.90:
            lo1 = lo
            old = bytes(part.model[lo1:lo1 + BS])
            new = pattern(tag_base + n_ops, 1)
            wrong = rng.random() < 0.2
            verify = bytes(BS) if wrong and old != bytes(BS) else old
            res = await s.compare_and_write(part.lun, lba, verify, new, BS)
            if verify == old:
                if res.status != 0:
                    tally.errors.append(f"LUN {part.lun} LBA {lba}: COMPARE AND WRITE status {res.status:#x} {res.sense}")
                part.model[lo1:lo1 + BS] = new
                tally.ops["caw"] += 1
            else:
                if res.status != 2 or res.sense is None or res.sense.key != 0x0E:
                    tally.errors.append(f"LUN {part.lun} LBA {lba}: a wrong verify got {res.status:#x} {res.sense}")
                tally.ops["miscompare"] += 1
        elif not thin[part.lun]:
            # A fully provisioned LU refuses UNMAP (LBPME=0, SBC-3 §4.7.3): hosts do not send it.
            data = pattern(tag_base + n_ops, n)
            await s.write16(part.lun, lba, data, BS, fua=True)
            part.model[lo:hi] = data
            tally.ops["write"] += 1
        else:
            res = await s.unmap(part.lun, [(lba, n)])
            if res.status != 0:
                tally.errors.append(f"LUN {part.lun} UNMAP {lba}+{n}: status {res.status:#x} {res.sense}")
            part.model[lo:hi] = bytes(hi - lo)
            tally.ops["unmap"] += 1
        tally.latencies.append(time.monotonic() - began)


async def lbpme(s: IscsiSession, lun: int) -> bool:
    """READ CAPACITY(16)'s LBPME bit: the LU is thin provisioned."""
    cdb = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + b"\0\0"
    return bool((await s.run(lun, cdb, read_length=32)).data[14] & 0x80)


async def soak(sp: SanlabProcess, seconds: float) -> tuple[list[Part], Tally]:
    blocks = (LUN_MIB << 20) // BS
    per_lun = [[i for i in range(SESSIONS) if i % 3 == lun] for lun in range(3)]
    parts: list[list[Part]] = []
    for i in range(SESSIONS):
        lun = i % 3
        slot = per_lun[lun].index(i)
        span = blocks // len(per_lun[lun])
        wspan = span // QD
        parts.append([Part(lun, slot * span + w * wspan, wspan) for w in range(QD)])
    tally = Tally()
    deadline = time.monotonic() + seconds
    sessions: list[IscsiSession] = []
    rng = random.Random(19)
    try:
        for i in range(SESSIONS):
            cfg = InitiatorConfig(initiator_name=f"iqn.1994-05.com.example:soak{i}", command_timeout=60.0)
            s = IscsiSession(sp.host, sp.port, A, cfg)
            await s.connect()
            sessions.append(s)
            for lun in range(3):
                await s.clear_unit_attentions(lun)
        thin = {lun: await lbpme(sessions[0], lun) for lun in range(3)}
        print(f"\nthin (LBPME) per LUN: {thin}")
        assert thin == {0: True, 1: False, 2: True}, thin  # a pair keeps its P-VOL's provisioning
        await asyncio.gather(*(worker(sessions[i], p, random.Random(rng.random()), deadline, tally,
                                      (i * QD + w) << 32, thin)
                               for i in range(SESSIONS) for w, p in enumerate(parts[i])))
        # Everything back, checked whole.
        for i, s in enumerate(sessions):
            for p in parts[i]:
                got = await s.read16(p.lun, p.start, p.blocks, BS)
                if got != p.model:
                    tally.errors.append(f"final read of LUN {p.lun} {p.start}+{p.blocks} differs from the model")
    finally:
        for s in sessions:
            await s.logout()
    return [p for ps in parts for p in ps], tally


@pytest.mark.timeout(2400)
def test_soak_32_sessions_mixed_io_on_file_raid5_and_paired_luns(tmp_path: Path) -> None:
    seconds = float(os.environ.get("SANLAB_SOAK_SECONDS", "600"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    port_b = free_port("127.0.0.2")
    b = start_sanlab(tmp_path / "b", config_b(), host="127.0.0.2", port=port_b)
    a = start_sanlab(tmp_path / "a", config_a(port_b))
    try:
        cli(a, "pair", "create", "p2", "--pvol", f"{A}/2", "--remote", "soak-b", "--svol", f"{B}/0")
        cli(a, "pair", "wait", "p2", "--state", "PAIR", "--timeout", "120")
        samples: list[tuple[float, int]] = []
        stop = False

        async def sampler() -> None:
            while not stop:
                samples.append((time.monotonic(), a.rss()))
                await asyncio.sleep(2.0)

        async def main() -> tuple[list[Part], Tally]:
            nonlocal stop
            task = asyncio.create_task(sampler())
            try:
                return await soak(a, seconds)
            finally:
                stop = True
                await task
        began = time.monotonic()
        parts, tally = asyncio.run(main())
        took = time.monotonic() - began
        pair = json.loads(cli(a, "pair", "display", "p2", "--json"))[0]
        svol = (b.data_dir / "svol.img").read_bytes()
        for p in parts:
            if p.lun == 2 and svol[p.start * BS:(p.start + p.blocks) * BS] != p.model:
                tally.errors.append(f"S-VOL at B differs from the model at {p.start}+{p.blocks}")
        warm_at = samples[0][0] + WARMUP * seconds
        warm = [r for t, r in samples if t >= warm_at] or [samples[-1][1]]
        lat = sorted(tally.latencies)
        total = sum(tally.ops.values())
        print(f"\nsoak: {seconds:.0f} s of load ({took:.0f} s with the set-up and the final check), "
              f"{SESSIONS} sessions x QD{QD}, {total} commands ({total / seconds:.0f}/s): {tally.ops}")
        print(f"latency p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, "
              f"max {lat[-1] * 1000:.1f} ms")
        print(f"array A RSS: start {samples[0][1] >> 20} MiB, warmed up {warm[0] >> 20} MiB, "
              f"peak {max(r for _, r in samples) >> 20} MiB, end {samples[-1][1] >> 20} MiB ({len(samples)} samples)")
        print(f"pair p2: {pair['state']}, errors: {len(tally.errors)}")
        assert not tally.errors, tally.errors[:20]
        assert pair["state"] == "PAIR", pair
        assert max(warm) <= warm[0] + max(RSS_SLACK, warm[0] // 4), \
            f"RSS grew after warm-up: {[r >> 20 for _, r in samples]} MiB"
        for sp in (a, b):
            bad = [line for line in sp.log().splitlines() if '"level": "error"' in line or "Traceback" in line]
            assert not bad, bad[:10]
    finally:
        for sp in (a, b):
            if sp.proc.poll() is None:
                sp.stop()

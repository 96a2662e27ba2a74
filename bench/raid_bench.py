"""bench/raid: what each RAID level costs, through the target (issue: storage virtualization, item 8).

One `sanlab serve` exports five LUNs of the same size: LUN 0 on a plain file
(the reference) and LUNs 1-4 on RAID 0, 1, 5 and 6 groups of four drive files
each.  Every LUN is filled through the target first (so reads hit written
stripes and parity, not holes), then each workload runs on each LUN in turn,
round by round.  The ratio is LUN / file; 1 - ratio is the cost of the level
(parity computation and read-modify-write for 5 and 6, double writes for 1).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import shutil
from pathlib import Path

from harness import (
    MIB, SANLAB_IQN, WORKLOAD_DEFS, BenchError, Settings, Target, free_port, measure, prefill, run_tool,
    sanlab_command, stop_process, wait_listening,
)

LEVELS = [(0, "raid0"), (1, "raid1"), (5, "raid5"), (6, "raid6")]
DRIVES = 4
STRIPE = 64 * 1024
WORKLOADS = ["read-128k-seq-qd32", "write-128k-seq-qd32", "write-4k-rand-qd32"]


def drive_size(level: int, size: int) -> int:
    """Per-drive bytes so that the group holds at least ``size`` (whole stripes)."""
    data = {0: DRIVES, 1: 1, 5: DRIVES - 1, 6: DRIVES - 2}[level]
    per = -(-size // data)
    return -(-per // STRIPE) * STRIPE


def config(port: int, backing: Path, size: int, workdir: Path) -> str:
    out = [f'[server]\nportals = ["127.0.0.1:{port}"]\n']
    for level, name in LEVELS:
        drives = ", ".join(f'"{workdir}/{name}-d{i}.img"' for i in range(DRIVES))
        out.append(f'[[raid_groups]]\nname = "{name}"\nlevel = {level}\nstripe_size = "{STRIPE}"\n'
                   f'drive_size = "{drive_size(level, size)}"\ndrives = [{drives}]\n')
    out.append(f'[[targets]]\nname = "{SANLAB_IQN}"\n')
    out.append(f'[[targets.luns]]\nlun = 0\nsize = "{size}"\nfile = "{backing}"\nthin = false\n')
    for i, (_, name) in enumerate(LEVELS, start=1):
        out.append(f'[[targets.luns]]\nlun = {i}\nraid_group = "{name}"\n')
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/raid", description="RAID-level cost through the target.")
    p.add_argument("--quick", action="store_true", help="64 MiB LUNs, 1 round of 3 s")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    s = Settings(size=(64 if a.quick else 256) * MIB, rounds=1 if a.quick else 3, seconds=3 if a.quick else 8)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="sanlab-raid-bench-"))
    proc = None
    try:
        backing = workdir / "file-lun0.img"
        prefill([backing], s.size)
        port = free_port()
        cfg = workdir / "sanlab.toml"
        cfg.write_text(config(port, backing, s.size, workdir))
        log = workdir / "sanlab.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(sanlab_command() + ["serve", "--config", str(cfg), "--data-dir",
                                                        str(workdir / "data"), "--log-level", "warning"],
                                    stdout=logf, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        wait_listening("127.0.0.1", port, proc, log, "sanlab")
        targets = [Target("file", proc, port, SANLAB_IQN, 0, log)]
        targets += [Target(name, proc, port, SANLAB_IQN, i, log) for i, (_, name) in enumerate(LEVELS, start=1)]
        say("bench/raid: filling every RAID LUN through the target")
        for t in targets[1:]:
            run_tool(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(backing), t.url()], timeout=600)
        samples = measure(WORKLOADS, targets, s, say)
        rows = []
        for name, per in samples.items():
            unit = WORKLOAD_DEFS[name].unit
            ref = sorted(per["file"])[len(per["file"]) // 2]
            for t in targets:
                v = sorted(per[t.name])[len(per[t.name]) // 2]
                rows.append({"workload": name, "unit": unit, "volume": t.name, "value": round(v, 1),
                             "ratio_to_file": round(v / ref, 3) if ref else None})
        print(f"RAID levels through sanlab, {s.size // MIB} MiB LUNs, {DRIVES} drives, {STRIPE // 1024} KiB stripes")
        print(f"{'workload':<22}{'unit':<7}" + "".join(f"{t.name:>10}" for t in targets))
        for name in WORKLOADS:
            vals = [r for r in rows if r["workload"] == name]
            print(f"{name:<22}{WORKLOAD_DEFS[name].unit:<7}" + "".join(f"{r['value']:>10,.0f}" for r in vals))
            print(f"{'  ratio to file':<29}" + "".join(f"{r['ratio_to_file']:>10.2f}" for r in vals))
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    except BenchError as exc:
        print(f"bench/raid: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop_process(proc, 20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

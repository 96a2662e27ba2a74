"""bench/crypt: what encryption at rest costs, through the target (issue 19, Security).

One `sanlab serve` exports two LUNs of the same size on plain files: LUN 0 in
clear (the reference) and LUN 1 encrypted (AES-256-XTS, storage/encrypted.py).
Both are filled through the target first (the encrypted file then holds
ciphertext, not holes), then 4 KiB and 128 KiB reads and writes run on each in
turn, round by round.  The ratio is encrypted / clear; 1 - ratio is the cost.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import (
    MIB, SANLAB_IQN, WORKLOAD_DEFS, BenchError, Settings, Target, free_port, measure, prefill, run_tool,
    sanlab_command, stop_process, wait_listening,
)

WORKLOADS = ["read-4k-rand-qd32", "write-4k-rand-qd32", "read-128k-seq-qd32", "write-128k-seq-qd32"]


def config(port: int, workdir: Path, size: int) -> str:
    return (f'[server]\nportals = ["127.0.0.1:{port}"]\n[[targets]]\nname = "{SANLAB_IQN}"\n'
            f'[[targets.luns]]\nlun = 0\nsize = "{size}"\nfile = "{workdir}/clear.img"\nthin = false\n'
            f'[[targets.luns]]\nlun = 1\nsize = "{size}"\nfile = "{workdir}/encrypted.img"\n'
            f'encryption = {{ key_file = "{workdir}/bench.key" }}\n')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/crypt", description="Encryption-at-rest cost through the target.")
    p.add_argument("--quick", action="store_true", help="64 MiB LUNs, 1 round of 3 s")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    s = Settings(size=(64 if a.quick else 256) * MIB, rounds=1 if a.quick else 3, seconds=3 if a.quick else 8)
    workdir = Path(tempfile.mkdtemp(prefix="sanlab-crypt-bench-"))
    proc = None
    try:
        prefill([workdir / "clear.img"], s.size)
        key = workdir / "bench.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
        os.close(fd)
        port = free_port()
        cfg = workdir / "sanlab.toml"
        cfg.write_text(config(port, workdir, s.size))
        log = workdir / "sanlab.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(sanlab_command() + ["serve", "--config", str(cfg), "--data-dir",
                                                        str(workdir / "data"), "--log-level", "warning"],
                                    stdout=logf, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        wait_listening("127.0.0.1", port, proc, log, "sanlab")
        targets = [Target("clear", proc, port, SANLAB_IQN, 0, log), Target("encrypted", proc, port, SANLAB_IQN, 1, log)]
        print("bench/crypt: filling the encrypted LUNs through the target", file=sys.stderr, flush=True)
        for t in targets[1:]:
            run_tool(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(workdir / "clear.img"), t.url()],
                     timeout=600)
        samples = measure(WORKLOADS, targets, s, lambda m: print(m, file=sys.stderr, flush=True))
        rows = []
        for name in WORKLOADS:
            med = {t.name: sorted(samples[name][t.name])[len(samples[name][t.name]) // 2] for t in targets}
            ref = med["clear"]
            rows.append({"workload": name, "unit": WORKLOAD_DEFS[name].unit,
                         **{t.name: round(med[t.name], 1) for t in targets},
                         **{f"ratio_{t.name}": round(med[t.name] / ref, 3) if ref else None for t in targets[1:]}})
        print(f"Encryption at rest through sanlab, {s.size // MIB} MiB LUNs of 512-byte blocks")
        print(f"{'workload':<22}{'unit':<7}" + "".join(f"{t.name:>14}" for t in targets))
        for r in rows:
            print(f"{r['workload']:<22}{r['unit']:<7}{r['clear']:>14,.0f}" + "".join(
                f"{r[t.name]:>8,.0f} ({r[f'ratio_{t.name}']:.2f})" for t in targets[1:]))
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    except BenchError as exc:
        print(f"bench/crypt: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop_process(proc, 20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

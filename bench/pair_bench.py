"""Synchronous pair beside the same LUN unpaired (issue 14's speed targets), in one run.

Two ``sanlab serve`` processes on loopback (A on 127.0.0.1, B on 127.0.0.2), each with a LUN of
the same size.  For each write workload the figure is measured on A's LUN unpaired, then with a
sync pair A -> B (``--no-copy``: the files start identical), alternating for N rounds; the ratio is
paired / unpaired (IOPS, MiB/s; at QD1 also the latency ratio = unpaired IOPS / paired IOPS).
Then 1 % of the tracks are dirtied while split and a resync sends them: bytes sent / bytes
dirtied.  Targets (issue 14): QD1 latency <= 2.2x, QD32 IOPS >= 0.6x, 128 KiB >= 0.7x, resync
<= 1.1x.  Standard library only; ``bench/pairs [--quick] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402 - a sibling script, not a package

A, B = "iqn.2026-11.org.sanlab:array-a", "iqn.2026-11.org.sanlab:array-b"
TRACK = 64 * 1024
WORKLOADS = ("write-4k-rand-qd1", "write-4k-rand-qd32", "write-128k-seq-qd32")


def start(workdir: Path, me: str, host: str, port: int, peer: str, peer_portal: str, size: int) -> h.Target:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "sanlab.toml"
    cfg.write_text(f'initiator_name = "{me}"\n[[remotes]]\nname = "peer"\nportal = "{peer_portal}"\n'
                   f'target = "{peer}"\n[[targets]]\nname = "{me}"\n[[targets.luns]]\nlun = 0\n'
                   f'size = "{size}"\nfile = "{workdir / "lun0.img"}"\nthin = false\n')
    log = workdir / "sanlab.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(h.sanlab_command() + ["serve", "--config", str(cfg), "--portal", f"{host}:{port}",
                                                      "--data-dir", str(workdir / "data"), "--log-level", "warning"],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
                                start_new_session=True)
    t = h.Target(me.rsplit(":", 1)[1], proc, port, me, 0, log, lambda: h.stop_process(proc, 20))
    h.wait_listening(host, port, proc, log, t.name)
    return t


def cli(t: h.Target, workdir: Path, *words: str) -> str:
    cp = subprocess.run(h.sanlab_command() + [*words, "--data-dir", str(workdir / "data")], capture_output=True,
                        text=True, timeout=300)
    if cp.returncode != 0:
        raise h.BenchError(f"sanlab {' '.join(words)}: {cp.stderr.strip()}")
    return cp.stdout


def resync(ta: h.Target, wd: Path, size: int) -> dict[str, object]:
    """Resync of 1 % dirtied tracks: split, dirty, resync; bytes sent against bytes dirtied."""
    cli(ta, wd / "a", "pair", "create", "bench", "--pvol", f"{A}/0", "--remote", "peer", "--svol", f"{B}/0",
        "--no-copy")
    cli(ta, wd / "a", "pair", "split", "bench")
    tracks = size // TRACK
    dirty = max(1, tracks // 100)
    step = tracks // dirty
    for i in range(dirty):
        subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 7 {i * step * TRACK} 4096", ta.url()],
                       capture_output=True, timeout=60, check=True)
    cli(ta, wd / "a", "pair", "resync", "bench")
    cli(ta, wd / "a", "pair", "wait", "bench", "--state", "PAIR", "--timeout", "300")
    sent = json.loads(cli(ta, wd / "a", "pair", "display", "bench", "--json"))[0]["copied_bytes"]
    return {"workload": "resync-1pct", "unit": "bytes", "dirtied": dirty * TRACK, "sent": sent,
            "ratio": round(sent / (dirty * TRACK), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/pairs")
    p.add_argument("--quick", action="store_true", help="64 MiB LUNs, 3 rounds of 1 s")
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=int)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--workload", action="append", choices=WORKLOADS, help="only this workload (repeatable)")
    p.add_argument("--no-resync", action="store_true", help="skip the resync measurement")
    a = p.parse_args(argv)
    size = (64 if a.quick else 256) * h.MIB
    s = h.Settings(size, a.rounds or 3, a.seconds or (1 if a.quick else 5))
    wd = Path(tempfile.mkdtemp(prefix="sanlab-pairbench-"))
    arrays: list[h.Target] = []
    try:
        (wd / "a").mkdir()
        (wd / "b").mkdir()
        h.prefill([wd / "a" / "lun0.img", wd / "b" / "lun0.img"], size)  # identical: --no-copy is true
        pa, pb = h.free_port("127.0.0.1"), h.free_port("127.0.0.2")
        arrays = [start(wd / "a", A, "127.0.0.1", pa, B, f"127.0.0.2:{pb}", size),
                  start(wd / "b", B, "127.0.0.2", pb, A, f"127.0.0.1:{pa}", size)]
        ta = arrays[0]
        rows = []
        for name in a.workload or WORKLOADS:
            w = h.WORKLOAD_DEFS[name]
            count = h.write_count(w, [ta], s, lambda m: None)
            samples: dict[str, list[float]] = {"unpaired": [], "paired": []}
            for _ in range(s.rounds):
                for mode in ("unpaired", "paired"):
                    if mode == "paired":
                        cli(ta, wd / "a", "pair", "create", "bench", "--pvol", f"{A}/0", "--remote", "peer",
                            "--svol", f"{B}/0", "--no-copy", "--fence", "never")
                    r = h.run_once(w, ta, s, count)
                    samples[mode].append(h.value(w, r))
                    if mode == "paired":
                        row = json.loads(cli(ta, wd / "a", "pair", "display", "bench", "--json"))[0]
                        if row["state"] != "PAIR":
                            raise h.BenchError(f"pair left PAIR during {name}: {row}")
                        cli(ta, wd / "a", "pair", "delete", "bench")
                    print(f"  {name} {mode}: {samples[mode][-1]:,.1f} {w.unit}", file=sys.stderr, flush=True)
            un, pa_ = h.median(samples["unpaired"]), h.median(samples["paired"])
            row = {"workload": name, "unit": w.unit, "unpaired": round(un, 1), "paired": round(pa_, 1),
                   "ratio": round(pa_ / un, 3), "samples": samples}
            if w.depth == 1:
                row["latency_ratio"] = round(un / pa_, 3)
            rows.append(row)
        if not a.no_resync:
            rows.append(resync(ta, wd, size))
        print(f"sync pair vs unpaired, {size // h.MIB} MiB LUNs, {s.rounds} round(s) x {s.seconds} s")
        for r in rows:
            if r["workload"] == "resync-1pct":
                print(f"{r['workload']:<22} sent {r['sent']:,} B for {r['dirtied']:,} B dirtied: {r['ratio']:.2f}x")
            else:
                extra = f"  latency {r['latency_ratio']:.2f}x" if "latency_ratio" in r else ""
                print(f"{r['workload']:<22} {r['unit']:<6} unpaired {r['unpaired']:>10,.1f}  paired "
                      f"{r['paired']:>10,.1f}  ratio {r['ratio']:.2f}{extra}")
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    except h.BenchError as exc:
        print(f"bench/pairs: {exc}", file=sys.stderr)
        return 1
    finally:
        for t in reversed(arrays):
            t.stopper()
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Synchronous pair beside the same LUN unpaired (issue 14's speed targets), in one run.

Two ``sanlab serve`` processes on loopback (A on 127.0.0.1, B on 127.0.0.2), each with a LUN of
the same size.  For each write workload the figure is measured on A's LUN unpaired, then with a
sync pair A -> B (``--no-copy``: the files start identical), alternating for N rounds (each paired
round after one untimed write to every track, so that the pair is measured in its steady state with
a warm activity log); the ratio is
paired / unpaired (IOPS, MiB/s; at QD1 also the latency ratio = unpaired IOPS / paired IOPS).
Then 1 % of the tracks are dirtied while split and a resync sends them: bytes sent / bytes
dirtied.  Targets (issue 14): QD1 latency <= 2.2x, QD32 IOPS >= 0.6x, 128 KiB >= 0.7x, resync
<= 1.1x.  Standard library only; ``bench/pairs [--quick] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import os
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
                                                      "--data-dir", str(workdir / "data"), "--log-level", os.environ.get("SANLAB_BENCH_LOG", "warning")],
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


def warm(t: h.Target, size: int) -> None:
    """One write to every track before a paired round (not timed): the pair is measured in its
    steady state, its activity log holding the LUN's tracks (at most 4096 of 64 KiB), rather than
    paying each track's first bitmap write (an fdatasync) inside the round."""
    subprocess.run(["qemu-img", "bench", "-w", "-t", "none", "-c", str(size // TRACK), "-d", "32", "-s", "4096",
                    "-S", str(TRACK), "--image-opts", t.image_opts()], capture_output=True, timeout=300, check=True)


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


ASYNC_WORKLOADS = ("write-4k-rand-qd32", "write-128k-seq-qd32")
"""Issue 15's async pair workloads (targets >= 0.85x and >= 0.8x of the LUN unpaired)."""


class Mgmt:
    """A running array's management socket (tools/mgmt.py: one JSON request a line): cheap enough to
    poll during a run, unlike starting the CLI (a Python start-up per sample on a loaded machine)."""

    def __init__(self, data_dir: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(data_dir / "sanlab.sock"))
        self.file = self.sock.makefile("rb")

    def __call__(self, op: str, **args: object) -> object:
        self.sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        reply = json.loads(self.file.readline())
        if not reply.get("ok"):
            raise h.BenchError(f"{op}: {reply.get('error')}")
        return reply["result"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def journal(m: Mgmt, name: str) -> dict[str, object]:
    res = m("journal-status", name=name)
    return dict(res[0] if isinstance(res, list) else res)


def async_pair(ta: h.Target, wd: Path) -> None:
    cli(ta, wd / "a", "pair", "create", "bench", "--mode", "async", "--journal", "ja", "--remote-journal", "jb",
        "--pvol", f"{A}/0", "--remote", "peer", "--svol", f"{B}/0", "--no-copy")
    cli(ta, wd / "a", "pair", "wait", "bench", "--state", "PAIR", "--timeout", "120")


def drain_and_delete(ta: h.Target, wd: Path, ma: Mgmt, mb: Mgmt, name: str) -> float:
    """Wait until B restored everything (A's journal empty, B's too), then delete the pair.  Seconds
    the drain took after the run ended."""
    t0 = time.monotonic()
    while True:
        row = json.loads(cli(ta, wd / "a", "pair", "display", "bench", "--json"))[0]
        if row["state"] not in ("PAIR", "PFUL"):  # PFUL: past the threshold, draining (not suspended)
            raise h.BenchError(f"async pair suspended during {name}: {row}")
        ja, jb = journal(ma, "ja"), journal(mb, "jb")
        if ja["entries"] == 0 and jb["entries"] == 0 and jb["lag_entries"] == 0:
            break
        if time.monotonic() - t0 > 300:
            raise h.BenchError(f"the secondary did not drain in 300 s: {ja} {jb}")
        time.sleep(0.1)
    drained = time.monotonic() - t0
    cli(ta, wd / "a", "pair", "delete", "bench")
    return drained


def sustained_rpo(ta: h.Target, wd: Path, ma: Mgmt, mb: Mgmt, s: h.Settings, seconds: float) -> dict[str, object]:
    """4 KiB random writes at QD32 for ``seconds`` on the async pair; B's RPO (age of the oldest update
    it has not restored) and A's journal use sampled every 0.2 s through the management sockets."""
    w = h.WORKLOAD_DEFS["write-4k-rand-qd32"]
    async_pair(ta, wd)
    calib = h.run_once(w, ta, s, 4000)
    count = max(4000, int(calib.iops * seconds))
    cmd = h.qemu_bench_cmd(w, ta, count, s.size)
    samples: list[tuple[float, float, int, int]] = []  # (t, rpo_seconds, journal_use at A, lag_entries at B)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:
            jb, ja = journal(mb, "jb"), journal(ma, "ja")
            samples.append((time.monotonic() - t0, float(jb["rpo_seconds"]), int(ja["journal_use"]),
                            int(jb["lag_entries"])))
            time.sleep(0.2)
        out = proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise h.BenchError(f"qemu-img bench exited {proc.returncode}: {out[-2000:]}")
    res = h.parse_qemu_img_bench(out)
    ran = time.monotonic() - t0
    drained = drain_and_delete(ta, wd, ma, mb, "the sustained run")
    rpo = [x[1] for x in samples]
    third = max(1, len(samples) // 3)
    return {"workload": "async-rpo-4k-qd32", "unit": "s", "seconds": round(ran, 1), "iops": round(res.iops, 1),
            "samples": len(samples), "rpo_median": round(h.median(rpo), 3) if rpo else None,
            "rpo_max": round(max(rpo), 3) if rpo else None,
            "rpo_median_first_third": round(h.median(rpo[:third]), 3) if rpo else None,
            "rpo_median_last_third": round(h.median(rpo[-third:]), 3) if rpo else None,
            "journal_use_peak": max((x[2] for x in samples), default=0),
            "lag_entries_max": max((x[3] for x in samples), default=0), "drain_seconds": round(drained, 2)}


def main_async(a: argparse.Namespace, s: h.Settings, size: int) -> int:
    """``bench/pairs --async``: an async pair against the same LUN unpaired, then the sustained RPO."""
    wd = Path(tempfile.mkdtemp(prefix="sanlab-asyncbench-"))
    arrays: list[h.Target] = []
    socks: list[Mgmt] = []
    try:
        (wd / "a").mkdir()
        (wd / "b").mkdir()
        h.prefill([wd / "a" / "lun0.img", wd / "b" / "lun0.img"], size)  # identical: --no-copy is true
        pa, pb = h.free_port("127.0.0.1"), h.free_port("127.0.0.2")
        arrays = [start(wd / "a", A, "127.0.0.1", pa, B, f"127.0.0.2:{pb}", size),
                  start(wd / "b", B, "127.0.0.2", pb, A, f"127.0.0.1:{pa}", size)]
        ta = arrays[0]
        jsize = f"{a.journal_mib}MiB"
        cli(ta, wd / "a", "journal", "create", "ja", "--size", jsize)
        cli(arrays[1], wd / "b", "journal", "create", "jb", "--size", jsize)
        ma, mb = Mgmt(wd / "a" / "data"), Mgmt(wd / "b" / "data")
        socks = [ma, mb]
        rows: list[dict[str, object]] = []
        for name in a.workload or ASYNC_WORKLOADS:
            w = h.WORKLOAD_DEFS[name]
            count = h.write_count(w, [ta], s, lambda m: None)
            samples: dict[str, list[float]] = {"unpaired": [], "async": []}
            peak = 0
            for _ in range(s.rounds):
                for mode in ("unpaired", "async"):
                    if mode == "async":
                        async_pair(ta, wd)
                    r = h.run_once(w, ta, s, count)
                    samples[mode].append(h.value(w, r))
                    if mode == "async":
                        peak = max(peak, int(journal(ma, "ja")["journal_use"]))
                        drain_and_delete(ta, wd, ma, mb, name)
                    print(f"  {name} {mode}: {samples[mode][-1]:,.1f} {w.unit}", file=sys.stderr, flush=True)
            un, pa_ = h.median(samples["unpaired"]), h.median(samples["async"])
            rows.append({"workload": f"async-{name}", "unit": w.unit, "unpaired": round(un, 1), "paired": round(pa_, 1),
                         "ratio": round(pa_ / un, 3), "samples": samples, "journal_use_at_end_max": peak})
        if not a.no_rpo:
            rows.append(sustained_rpo(ta, wd, ma, mb, s, a.rpo_seconds or (10.0 if a.quick else 60.0)))
        print(f"async pair vs unpaired, {size // h.MIB} MiB LUNs, {a.journal_mib} MiB journals, "
              f"{s.rounds} round(s) x {s.seconds} s")
        for r in rows:
            if r["workload"] == "async-rpo-4k-qd32":
                print(f"sustained 4k QD32 {r['seconds']} s at {r['iops']:,.0f} IOPS: RPO median {r['rpo_median']} s, "
                      f"max {r['rpo_max']} s (first third {r['rpo_median_first_third']} s, last third "
                      f"{r['rpo_median_last_third']} s), journal peak {r['journal_use_peak']} %, "
                      f"drained {r['drain_seconds']} s after")
            else:
                print(f"{r['workload']:<28} {r['unit']:<6} unpaired {r['unpaired']:>10,.1f}  async "
                      f"{r['paired']:>10,.1f}  ratio {r['ratio']:.2f}")
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    except h.BenchError as exc:
        print(f"bench/pairs: {exc}", file=sys.stderr)
        return 1
    finally:
        for m in socks:
            m.close()
        for t in reversed(arrays):
            t.stopper()
        shutil.rmtree(wd, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/pairs")
    p.add_argument("--quick", action="store_true", help="64 MiB LUNs, 3 rounds of 1 s")
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=int)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--workload", action="append", choices=WORKLOADS, help="only this workload (repeatable)")
    p.add_argument("--no-resync", action="store_true", help="skip the resync measurement")
    p.add_argument("--async", dest="async_", action="store_true",
                   help="an async pair (issue 15): 4 KiB and 128 KiB QD32 writes, then the sustained RPO")
    p.add_argument("--journal-mib", type=int, default=256, help="--async: each journal's size (MiB)")
    p.add_argument("--rpo-seconds", type=float, help="--async: length of the sustained run (10 s quick, 60 s)")
    p.add_argument("--no-rpo", action="store_true", help="--async: skip the sustained RPO run")
    a = p.parse_args(argv)
    size = (64 if a.quick else 256) * h.MIB
    s = h.Settings(size, a.rounds or 3, a.seconds or (1 if a.quick else 5))
    if a.async_:
        if a.workload and set(a.workload) - set(ASYNC_WORKLOADS):
            p.error(f"--async runs {', '.join(ASYNC_WORKLOADS)}")
        return main_async(a, s, size)
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
                        warm(ta, size)
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

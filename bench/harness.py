"""Side-by-side benchmark of ``sanlab serve`` and Debian's ``tgtd`` on loopback.

Standard library only; ``bench/run`` is the entry point (see bench/README.md).

Both targets export a LUN of the same size, backed by a file in the same
temporary directory and pre-filled with the same data.  Every workload runs
against both targets in each of ``rounds`` rounds, the order swapped every
round (tgtd, sanlab | sanlab, tgtd | ...) so a drift of the machine weighs on
both alike.  The reported figure is the median of each target's rounds, with
its spread; each round's pair also gives a ratio, and the range of those
per-round ratios is what a later run's ratio is judged against.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
TGT_IQN = "iqn.2026-11.org.sanlab:bench-tgt"
SANLAB_IQN = "iqn.2026-11.org.sanlab:bench"
MIB = 1 << 20
TGTD_SOCKET_DIR = Path("/var/run/tgtd")

WORKLOADS = [
    "read-4k-rand-qd1",
    "read-4k-rand-qd32",
    "read-128k-seq-qd32",
    "write-4k-rand-qd1",
    "write-4k-rand-qd32",
    "write-128k-seq-qd32",
    "read-4k-rand-qd32-x16",
]
"""The issue's six workloads, then 16 sessions at QD 32 at once (the load the peak-RSS target is set for)."""


class BenchError(Exception):
    """A tool or daemon failed; the message carries its output."""


# --------------------------------------------------------------------------- parsers

_PERF_AVG = re.compile(r"iops average (\d+(?:\.\d+)?) \((\d+(?:\.\d+)?) MB/s\)")
_PERF_XFER = re.compile(r"transfer size of (\d+) blocks \((\d+) byte\)")


@dataclass
class Result:
    """One measured run."""

    iops: float
    mib_s: float


def parse_iscsi_perf(output: str, request_bytes: int | None = None) -> Result:
    """The final summary of ``iscsi-perf``.

    iscsi-perf rewrites one status line per second with carriage returns
    (``00:00:02 - lba …, iops current N (M MB/s), iops average N (M MB/s), …``)
    and ends with a line of its own: ``iops average N (M MB/s)``.  Its MB/s is
    an integer (MiB, truncated), so MiB/s is recomputed from IOPS and the
    transfer size it announces (``FIXED transfer size of 8 blocks (4096 byte)``).
    """
    lines = [ln.strip() for ln in re.split(r"[\r\n]", output)]
    summary = [ln for ln in lines if ln.startswith("iops average")]
    if summary:
        m = _PERF_AVG.search(summary[-1])
    else:  # no summary line: fall back to the last per-second average
        found = _PERF_AVG.findall(output)
        m = _PERF_AVG.search(f"iops average {found[-1][0]} ({found[-1][1]} MB/s)") if found else None
    if m is None:
        raise ValueError(f"no 'iops average' in iscsi-perf output:\n{output[-2000:]}")
    iops = float(m.group(1))
    if request_bytes is None:
        x = _PERF_XFER.search(output)
        request_bytes = int(x.group(2)) if x else None
    mib_s = iops * request_bytes / MIB if request_bytes else float(m.group(2))
    return Result(iops=iops, mib_s=mib_s)


_QB_SEND = re.compile(r"Sending (\d+) (?:read|write) requests, (\d+) bytes each, (\d+) in parallel")
_QB_DONE = re.compile(r"Run completed in (\d+(?:\.\d+)?) seconds")


def parse_qemu_img_bench(output: str) -> Result:
    """IOPS and MiB/s of ``qemu-img bench`` from its two lines::

        Sending 20000 write requests, 4096 bytes each, 32 in parallel (starting at offset 0, step size 4096)
        Run completed in 1.196 seconds.
    """
    s = _QB_SEND.search(output)
    d = _QB_DONE.search(output)
    if s is None or d is None:
        raise ValueError(f"unexpected qemu-img bench output:\n{output[-2000:]}")
    count, size = int(s.group(1)), int(s.group(2))
    secs = float(d.group(1))
    if secs <= 0:
        secs = 0.0005  # printed with millisecond resolution
    return Result(iops=count / secs, mib_s=count * size / secs / MIB)


def random_step(size_bytes: int, block: int = 4096) -> int:
    """Step of qemu-img bench that scatters 4 KiB requests over the whole LUN.

    qemu-img bench advances the offset by the step and wraps it modulo the image
    size.  A step of k blocks with k odd (so coprime with the power-of-two
    block count) and near 0.618 of the LUN visits every block once before
    repeating, each request far from the previous one.
    """
    nblocks = size_bytes // block
    k = int(nblocks * 0.6180339887) | 1
    while k > 1 and _gcd(k, nblocks) != 1:
        k += 2
    return k * block


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# --------------------------------------------------------------------------- processes

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, what: str,
                   timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {host}:{port} within {timeout}s:\n{tail(log)}")


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def run_tool(cmd: list[str], timeout: float) -> str:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(cmd)} did not finish within {timeout:.0f}s") from exc
    if cp.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {cp.returncode}\nstdout:\n{cp.stdout[-3000:]}\n"
                         f"stderr:\n{cp.stderr[-3000:]}")
    return cp.stdout + cp.stderr


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Target:
    """One running daemon with one LUN."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    iqn: str
    lun: int
    log: Path
    stopper: Callable[[], None] = field(default=lambda: None)

    def url(self) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{self.iqn}/{self.lun}"

    def image_opts(self) -> str:
        return (f"driver=iscsi,transport=tcp,portal=127.0.0.1:{self.port},"
                f"target={self.iqn},lun={self.lun}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")


def tgtadm(ctl: int, *args: str, timeout: float = 15.0) -> str:
    return run_tool(["tgtadm", "-C", str(ctl), "--lld", "iscsi", *args], timeout)


def start_tgtd(workdir: Path, backing: Path) -> Target:
    tgtd = shutil.which("tgtd")
    if tgtd is None or shutil.which("tgtadm") is None:
        raise BenchError("tgtd/tgtadm not found (apt-get install tgt)")
    # tgtd's control "port" names a unix socket /var/run/tgtd/socket.<N>: pick one no one uses.
    rnd = random.Random()
    for _ in range(50):
        ctl = rnd.randrange(10000, 32768)  # tgtd rejects -C above 32767
        if not (TGTD_SOCKET_DIR / f"socket.{ctl}").exists():
            break
    port = free_port()
    log = workdir / "tgtd.log"
    logf = open(log, "wb")
    proc = subprocess.Popen([tgtd, "-f", "-C", str(ctl), "--iscsi", f"portal=127.0.0.1:{port}"],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    logf.close()

    def stop() -> None:
        if proc.poll() is None:
            # tgtd ignores SIGTERM while it has targets; this is its own shutdown request.
            try:
                tgtadm(ctl, "--op", "delete", "--mode", "system", timeout=10)
                proc.wait(10)
            except (BenchError, subprocess.TimeoutExpired, OSError):
                pass
        stop_process(proc, timeout=5)
        for suffix in ("", ".lock"):
            try:
                (TGTD_SOCKET_DIR / f"socket.{ctl}{suffix}").unlink()
            except OSError:
                pass

    target = Target("tgtd", proc, port, TGT_IQN, 1, log, stop)
    try:
        deadline = time.monotonic() + 15
        while True:  # wait for the control socket
            target.check_alive()
            try:
                tgtadm(ctl, "--op", "show", "--mode", "target", timeout=5)
                break
            except BenchError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        tgtadm(ctl, "--op", "new", "--mode", "target", "--tid", "1", "-T", TGT_IQN)
        tgtadm(ctl, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", str(backing))
        tgtadm(ctl, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        wait_listening("127.0.0.1", port, proc, log, "tgtd")
    except BaseException:
        stop()
        raise
    return target


def sanlab_command() -> list[str]:
    venv = REPO / ".venv" / "bin" / "sanlab"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("sanlab")
    if found is None:
        raise BenchError("sanlab not found: run scripts/test once to create .venv, or install sanlab")
    return [found]


def start_sanlab(workdir: Path, backing: Path, size: int) -> Target:
    port = free_port()
    data_dir = workdir / "sanlab-data"
    cfg = workdir / "sanlab.toml"
    cfg.write_text(
        "[server]\n"
        f'portals = ["127.0.0.1:{port}"]\n\n'
        "[[targets]]\n"
        f'name = "{SANLAB_IQN}"\n\n'
        "[[targets.luns]]\n"
        "lun = 0\n"
        f'size = "{size}"\n'
        f'file = "{backing}"\n'
        "thin = false\n"
    )
    log = workdir / "sanlab.log"
    logf = open(log, "wb")
    cmd = sanlab_command() + ["serve", "--config", str(cfg), "--portal", f"127.0.0.1:{port}",
                              "--data-dir", str(data_dir), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=workdir, start_new_session=True)
    logf.close()
    target = Target("sanlab", proc, port, SANLAB_IQN, 0, log, lambda: stop_process(proc, 20))
    try:
        wait_listening("127.0.0.1", port, proc, log, "sanlab")
    except BaseException:
        target.stopper()
        raise
    return target


def prefill(paths: list[Path], size: int) -> None:
    """Write every byte of each file with the same pseudo-random data, then fsync.

    A 1 MiB block of seeded pseudo-random bytes, each copy tagged with its MiB
    index in the first 8 bytes, repeated over the whole size: no holes, nothing
    compresses or dedups to zero, and both files are byte-identical.
    """
    chunk = bytearray(random.Random(20261101).randbytes(MIB))
    for path in paths:
        with open(path, "wb") as f:
            done = 0
            i = 0
            while done < size:
                n = min(MIB, size - done)
                chunk[:8] = i.to_bytes(8, "little")
                f.write(chunk[:n])
                done += n
                i += 1
            f.flush()
            os.fsync(f.fileno())


# --------------------------------------------------------------------------- workloads

@dataclass
class Settings:
    size: int
    rounds: int
    seconds: int


@dataclass
class Workload:
    name: str
    unit: str  # "IOPS" or "MiB/s"
    kind: str  # "read" (iscsi-perf) or "write" (qemu-img bench)
    depth: int
    request: int  # bytes
    rand: bool
    sessions: int = 1  # iscsi-perf processes at once, each its own session; IOPS summed


WORKLOAD_DEFS = {
    "read-4k-rand-qd1": Workload("read-4k-rand-qd1", "IOPS", "read", 1, 4096, True),
    "read-4k-rand-qd32": Workload("read-4k-rand-qd32", "IOPS", "read", 32, 4096, True),
    "read-128k-seq-qd32": Workload("read-128k-seq-qd32", "MiB/s", "read", 32, 128 * 1024, False),
    "write-4k-rand-qd1": Workload("write-4k-rand-qd1", "IOPS", "write", 1, 4096, True),
    "write-4k-rand-qd32": Workload("write-4k-rand-qd32", "IOPS", "write", 32, 4096, True),
    "write-128k-seq-qd32": Workload("write-128k-seq-qd32", "MiB/s", "write", 32, 128 * 1024, False),
    "read-4k-rand-qd32-x16": Workload("read-4k-rand-qd32-x16", "IOPS", "read", 32, 4096, True, sessions=16),
}


def iscsi_perf_cmd(w: Workload, t: Target, seconds: int) -> list[str]:
    cmd = ["iscsi-perf"]
    if w.rand:
        cmd.append("-r")
    return cmd + ["-m", str(w.depth), "-b", str(w.request // 512), "-t", str(seconds), t.url()]


def qemu_bench_cmd(w: Workload, t: Target, count: int, size: int) -> list[str]:
    step = random_step(size) if w.rand else w.request
    return ["qemu-img", "bench", "-w", "-t", "none", "-c", str(count), "-d", str(w.depth),
            "-s", str(w.request), "-S", str(step), "--image-opts", t.image_opts()]


def run_sessions(w: Workload, t: Target, seconds: int) -> Result:
    """``w.sessions`` iscsi-perf processes started together (one session each); their sums."""
    cmd = iscsi_perf_cmd(w, t, seconds)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
             for _ in range(w.sessions)]
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 60)
            if p.returncode != 0:
                raise BenchError(f"{' '.join(cmd)} exited {p.returncode}\n{out[-3000:]}")
            results.append(parse_iscsi_perf(out, w.request))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return Result(sum(r.iops for r in results), sum(r.mib_s for r in results))


def run_once(w: Workload, t: Target, s: Settings, count: int) -> Result:
    t.check_alive()
    if w.sessions > 1:
        res = run_sessions(w, t, s.seconds)
    elif w.kind == "read":
        out = run_tool(iscsi_perf_cmd(w, t, s.seconds), timeout=s.seconds + 60)
        res = parse_iscsi_perf(out, w.request)
    else:
        out = run_tool(qemu_bench_cmd(w, t, count, s.size), timeout=max(120, 6 * s.seconds + 60))
        res = parse_qemu_img_bench(out)
    t.check_alive()
    return res


def value(w: Workload, r: Result) -> float:
    return r.iops if w.unit == "IOPS" else r.mib_s


def write_count(w: Workload, targets: list[Target], s: Settings, say: Callable[[str], None]) -> int:
    """Requests per qemu-img bench run: a short calibration run on each target (also a
    warm-up), then enough requests that the slower target runs about ``seconds``."""
    c0 = 1000 if w.depth == 1 else (4000 if w.request == 4096 else 256)
    rates = []
    for t in targets:
        r = run_once(w, t, s, c0)
        rates.append(r.iops)
        say(f"  calibrate {w.name} {t.name}: {r.iops:,.0f} IOPS")
    count = int(min(rates) * s.seconds)
    return max(c0, min(count, 2_000_000))


def measure(workloads: list[str], targets: list[Target], s: Settings,
            say: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {}
    for name in workloads:
        w = WORKLOAD_DEFS[name]
        count = write_count(w, targets, s, say) if w.kind == "write" else 0
        samples[name] = {t.name: [] for t in targets}
        for rnd in range(s.rounds):
            # Swap the order every round: the two runs of a round are neighbours in time (their
            # ratio shares the machine's state), and neither daemon always runs first.
            for t in (targets if rnd % 2 == 0 else targets[::-1]):
                r = run_once(w, t, s, count)
                samples[name][t.name].append(value(w, r))
                say(f"  {name} round {rnd + 1}/{s.rounds} {t.name}: {value(w, r):,.1f} {w.unit}"
                    + (f" ({r.mib_s:,.1f} MiB/s)" if w.unit == "IOPS" else f" ({r.iops:,.0f} IOPS)"))
    return samples


def spread(values: list[float]) -> float:
    """(max - min) / median of one target's rounds: 0.1 means its runs lay within 10 % of each other."""
    mid = median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


def round_ratios(per: dict[str, list[float]]) -> list[float]:
    """sanlab / tgtd of each round's pair of runs (run back to back, so sharing the machine's noise)."""
    return [sl / tg for tg, sl in zip(per["tgtd"], per["sanlab"]) if tg]


def summarize(samples: dict[str, dict[str, list[float]]], rss: dict[str, float]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, per in samples.items():
        w = WORKLOAD_DEFS[name]
        tg, sl = median(per["tgtd"]), median(per["sanlab"])
        pairs = round_ratios(per)
        row: dict[str, object] = {"workload": name, "unit": w.unit, "tgtd": round(tg, 2),
                                  "sanlab": round(sl, 2), "ratio": round(sl / tg, 3) if tg else None,
                                  "samples": {"tgtd": [round(v, 2) for v in per["tgtd"]],
                                              "sanlab": [round(v, 2) for v in per["sanlab"]]},
                                  "spread": {"tgtd": round(spread(per["tgtd"]), 3),
                                             "sanlab": round(spread(per["sanlab"]), 3)},
                                  "round_ratios": [round(r, 3) for r in pairs],
                                  "ratio_range": [round(min(pairs), 3), round(max(pairs), 3)] if pairs else None}
        if w.depth == 1 and sl:
            # One request in flight: mean latency = 1 / IOPS.
            row["latency_ratio"] = round(tg / sl, 3)
        rows.append(row)
    rows.append({"workload": "peak-rss", "unit": "MiB", "tgtd": round(rss["tgtd"], 1),
                 "sanlab": round(rss["sanlab"], 1),
                 "ratio": round(rss["sanlab"] / rss["tgtd"], 3) if rss["tgtd"] else None})
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    head = (f"{'workload':<22} {'unit':<6} {'tgtd':>10} {'±':>4} {'sanlab':>10} {'±':>4} {'ratio':>6} "
            f"{'rounds':>11}  note")
    out = [head, "-" * len(head)]
    for r in rows:
        note = ""
        if r["workload"] == "peak-rss":
            note = "VmHWM over the whole run (16 sessions at QD 32 included); lower is leaner"
        elif "latency_ratio" in r:
            note = f"mean latency sanlab/tgtd = {r['latency_ratio']:.2f}x"
        ratio = r["ratio"]
        sp = r.get("spread")
        rng = r.get("ratio_range")
        tg_sp = f"{100 * sp['tgtd']:.0f}%" if isinstance(sp, dict) else ""
        sl_sp = f"{100 * sp['sanlab']:.0f}%" if isinstance(sp, dict) else ""
        rounds = f"{rng[0]:.2f}-{rng[1]:.2f}" if isinstance(rng, list) else ""
        out.append(f"{r['workload']:<22} {r['unit']:<6} {float(r['tgtd']):>10,.1f} {tg_sp:>4} "  # type: ignore[arg-type]
                   f"{float(r['sanlab']):>10,.1f} {sl_sp:>4} "  # type: ignore[arg-type]
                   f"{(f'{ratio:.2f}' if ratio is not None else '-'):>6} {rounds:>11}  {note}")
    out.append("ratio = sanlab/tgtd of the medians: above 1 sanlab is faster (IOPS, MiB/s).  ± = spread of a")
    out.append("target's rounds, (max-min)/median.  rounds = range of the per-round ratios (each round's two")
    out.append("runs back to back); a later run is comparable when its ratio falls inside this range.")
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description="Benchmark sanlab serve beside tgtd on loopback.")
    p.add_argument("--quick", action="store_true",
                   help="256 MiB LUNs, 5 rounds of 1 s runs (about 2 minutes)")
    p.add_argument("--json", metavar="FILE", help="write the results as a JSON list to FILE")
    p.add_argument("--rounds", type=int, help="rounds per workload (default 3; --quick 5)")
    p.add_argument("--seconds", type=int, help="seconds per run (default 10; --quick 1)")
    p.add_argument("--size-mib", type=int, help="LUN size in MiB (default 1024; --quick 256)")
    p.add_argument("--workload", action="append", choices=WORKLOADS,
                   help="run only this workload (repeatable; default all seven)")
    p.add_argument("--tmpdir", help="parent of the temporary backing directory (default $TMPDIR or /tmp)")
    return p.parse_args(argv)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    s = Settings(size=(a.size_mib or (256 if a.quick else 1024)) * MIB,
                 rounds=a.rounds or (5 if a.quick else 3),
                 seconds=a.seconds or (1 if a.quick else 10))
    workloads = a.workload or WORKLOADS
    for tool in ("iscsi-perf", "qemu-img", "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            print(f"bench/run: {tool} not found (apt-get install libiscsi-bin qemu-utils tgt)", file=sys.stderr)
            return 2

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="sanlab-bench-", dir=a.tmpdir))
    targets: list[Target] = []
    started = time.monotonic()
    try:
        tgt_file, san_file = workdir / "tgtd-lun1.img", workdir / "sanlab-lun0.img"
        say(f"bench: {s.size // MIB} MiB LUNs in {workdir}, {s.rounds} round(s), {s.seconds} s runs; pre-filling")
        prefill([tgt_file, san_file], s.size)
        targets.append(start_tgtd(workdir, tgt_file))
        targets.append(start_sanlab(workdir, san_file, s.size))
        say(f"bench: tgtd on 127.0.0.1:{targets[0].port} (pid {targets[0].proc.pid}), "
            f"sanlab on 127.0.0.1:{targets[1].port} (pid {targets[1].proc.pid}); warm-up")
        warm = Settings(s.size, 1, 1)
        for t in targets:
            run_once(WORKLOAD_DEFS["read-4k-rand-qd32"], t, warm, 0)
        samples = measure(workloads, targets, s, say)
        rss = {t.name: peak_rss_mib(t.proc.pid) for t in targets}
        rows = summarize(samples, rss)
        print(f"sanlab vs tgtd, {s.size // MIB} MiB LUNs, {s.rounds} round(s) x {s.seconds} s, "
              f"{os.cpu_count()} CPUs, loopback")
        print(format_table(rows))
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        say(f"bench: done in {time.monotonic() - started:.0f} s")
        return 0
    except BenchError as exc:
        print(f"bench/run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/run: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        for t in reversed(targets):
            try:
                t.stopper()
            except Exception as exc:  # keep cleaning up
                print(f"bench/run: stopping {t.name}: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

"""In-system copies beside the same LUN unpaired (issue 17's speed targets), in one run.

One ``sanlab serve`` with LUN 0 (the original, pre-filled) and LUN 1 (the copy volume), the same
size.  Host 4 KiB random writes at QD32 (``qemu-img bench``, bench/run's write-4k-rand-qd32) on
LUN 0, in N rounds of four runs each:

* ``unpaired`` — no copy pair (after the same untimed write to every track as ``copied``: both runs
  start with the page cache in the same state);
* ``generation`` — right after ``copy create``: the generation copy runs beside the writes (the
  fraction of the run it lasted is reported as ``generation_covered``);
* ``cow`` — right after ``copy create`` and ``copy split`` back to back (a quick split at the start
  of the generation): nearly every track is still on the original, so the first write to a track
  copies it to the copy first (copy-on-write of fresh tracks) while the division copy runs behind;
* ``copied`` — the same divided copy once the division copy has finished and every track has been
  written once (untimed): the steady state of an original with a divided copy.

Each figure is the median of its rounds and the ratio is to ``unpaired`` (targets: cow >= 0.5,
copied >= 0.9).  Then the divided copy is backed up (``sanlab backup create``; the job's own rate)
against a plain sequential read of the same LU by a host (iscsi-perf, 128 KiB at QD32, bench/run's
read-128k-seq-qd32), alternating for N rounds (target >= 0.8).  Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402 - a sibling script, not a package

IQN = "iqn.2026-11.org.sanlab:copies"
TRACK = 64 * 1024
MODES = ("unpaired", "generation", "cow", "copied")
TARGETS = {"cow": 0.5, "copied": 0.9, "backup": 0.8}
"""Issue 17's targets: ratios to the unpaired volume (backup: to a plain sequential read)."""


def config(workdir: Path, port: int, size: int) -> str:
    """The array: LUN 0 the original, LUN 1 the copy volume (thick files of ``size`` bytes)."""
    luns = "".join(f'[[targets.luns]]\nlun = {n}\nsize = "{size}"\nfile = "{workdir / f"lun{n}.img"}"\nthin = false\n'
                   for n in (0, 1))
    return f'[server]\nportals = ["127.0.0.1:{port}"]\n[[targets]]\nname = "{IQN}"\n{luns}'


def start(workdir: Path, size: int) -> h.Target:
    port = h.free_port()
    cfg = workdir / "sanlab.toml"
    cfg.write_text(config(workdir, port, size))
    log = workdir / "sanlab.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(h.sanlab_command() + ["serve", "--config", str(cfg), "--portal", f"127.0.0.1:{port}",
                                                      "--data-dir", str(workdir / "data"), "--log-level", "info",
                                                      "--log-format", "json"],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
                                start_new_session=True)
    t = h.Target("sanlab", proc, port, IQN, 0, log, lambda: h.stop_process(proc, 20))
    try:
        h.wait_listening("127.0.0.1", port, proc, log, t.name)
    except BaseException:
        t.stopper()
        raise
    return t


class Copies:
    """The ``sanlab copy``/``backup`` commands against the bench's array."""

    def __init__(self, t: h.Target, workdir: Path) -> None:
        self.t, self.data = t, workdir / "data"

    def run(self, *words: str) -> str:
        cp = subprocess.run(h.sanlab_command() + [*words, "--data-dir", str(self.data)], capture_output=True,
                            text=True, timeout=600)
        if cp.returncode != 0:
            raise h.BenchError(f"sanlab {' '.join(words)}: {cp.stderr.strip()}\n{h.tail(self.t.log)}")
        return cp.stdout

    def row(self) -> dict[str, Any]:
        return dict(json.loads(self.run("copy", "display", "bench", "--json"))[0])

    def create(self, split: bool = False) -> None:
        self.run("copy", "create", "bench", "--pvol", f"{IQN}/0", "--svol", f"{IQN}/1")
        if split:
            self.run("copy", "split", "bench")

    def settle(self, detail: str, timeout: float = 600) -> None:
        """Wait until the pair's ``detail`` is ``detail`` (the division copy or generation ended)."""
        deadline = time.monotonic() + timeout
        while (row := self.row())["detail"] != detail:
            if time.monotonic() > deadline:
                raise h.BenchError(f"copy bench still {row['detail']} after {timeout:g} s")
            time.sleep(0.1)

    def delete(self) -> None:
        self.run("copy", "delete", "bench")


def warm(t: h.Target, size: int) -> None:
    """One write to every track (not timed): each track's first-write bookkeeping is paid outside the run."""
    subprocess.run(["qemu-img", "bench", "-w", "-t", "none", "-c", str(size // TRACK), "-d", "32", "-s", "4096",
                    "-S", str(TRACK), "--image-opts", t.image_opts()], capture_output=True, timeout=600, check=True)


def write_round(c: Copies, t: h.Target, s: h.Settings, count: int, samples: dict[str, list[float]],
                covered: list[float]) -> None:
    w = h.WORKLOAD_DEFS["write-4k-rand-qd32"]
    for mode in MODES:
        if mode == "unpaired":
            warm(t, s.size)  # the same I/O just before as ``copied`` has (dirty pages in writeback)
        elif mode == "generation":
            c.create()
        elif mode == "cow":
            c.create(split=True)
        elif mode == "copied":
            c.create(split=True)
            c.settle("DIVISION COMPLETED")
            warm(t, s.size)
        # Every mode starts with nothing dirty in the page cache: the division copy leaves the copy
        # volume's whole size dirty, whose writeback would otherwise share the run's CPU and disk
        # with the timed writes of ``copied`` only (a cost of the division, not of the steady state).
        os.sync()
        began = time.monotonic()
        r = h.run_once(w, t, s, count)
        took = time.monotonic() - began
        samples[mode].append(r.iops)
        if mode == "generation":
            row = c.row()
            if row["state"] != "COPY":
                # How much of the run the generation lasted: its log line says when it ended.
                covered.append(min(1.0, _generation_seconds(t) / took))
            else:
                covered.append(1.0)
        if mode != "unpaired":
            c.delete()
        print(f"  write-4k-rand-qd32 {mode}: {r.iops:,.0f} IOPS", file=sys.stderr, flush=True)


def _generation_seconds(t: h.Target) -> float:
    """Seconds the last mover ran (its ``local_copy_mover_done`` log line: the bench's array logs at
    info, which logs per login and state change, never per I/O)."""
    for line in reversed(t.log.read_text(errors="replace").splitlines()):
        if "local_copy_mover_done" in line:
            try:
                return float(json.loads(line)["seconds"])
            except (ValueError, KeyError):
                break
    return 0.0


def backup_rounds(c: Copies, t: h.Target, wd: Path, s: h.Settings) -> dict[str, Any]:
    """Backup of the divided copy against a host's sequential read of the same LU (MiB/s)."""
    c.create(split=True)
    c.settle("DIVISION COMPLETED")
    read = h.WORKLOAD_DEFS["read-128k-seq-qd32"]
    copy_lu = h.Target(t.name, t.proc, t.port, t.iqn, 1, t.log)
    samples: dict[str, list[float]] = {"read": [], "backup": []}
    for rnd in range(s.rounds):
        for kind in (("read", "backup") if rnd % 2 == 0 else ("backup", "read")):
            os.sync()  # each starts with nothing dirty (the last image's or the division copy's writeback)
            if kind == "read":
                mib_s = h.run_once(read, copy_lu, s, 0).mib_s
            else:
                image = wd / "backup.tar"
                st = json.loads(c.run("backup", "create", "--copy", "bench", "--file", str(image)))
                mib_s = st["total_bytes"] / h.MIB / max(float(st["seconds"]), 1e-6)
                image.unlink()
            samples[kind].append(mib_s)
            print(f"  backup round {rnd + 1}/{s.rounds} {kind}: {mib_s:,.1f} MiB/s", file=sys.stderr, flush=True)
    c.delete()
    rd, bk = h.median(samples["read"]), h.median(samples["backup"])
    return {"workload": "backup", "unit": "MiB/s", "read": round(rd, 1), "backup": round(bk, 1),
            "ratio": round(bk / rd, 3), "target": TARGETS["backup"], "samples": samples}


def summarize(samples: dict[str, list[float]], covered: list[float]) -> list[dict[str, Any]]:
    """One row per paired mode: its median IOPS and the ratio to the unpaired median."""
    un = h.median(samples["unpaired"])
    rows: list[dict[str, Any]] = []
    for mode in MODES[1:]:
        m = h.median(samples[mode])
        row: dict[str, Any] = {"workload": f"write-4k-rand-qd32-{mode}", "unit": "IOPS", "unpaired": round(un, 1),
                               "paired": round(m, 1), "ratio": round(m / un, 3), "samples": samples[mode],
                               "unpaired_samples": samples["unpaired"]}
        if mode in TARGETS:
            row["target"] = TARGETS[mode]
        if mode == "generation":
            row["generation_covered"] = round(h.median(covered), 2) if covered else None
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        met = "" if "target" not in r else (" met" if r["ratio"] >= r["target"] else " NOT MET") + f" (>= {r['target']})"
        if r["workload"] == "backup":
            out.append(f"{'backup of a divided copy':<32} read {r['read']:>9,.1f} MiB/s  backup {r['backup']:>9,.1f} "
                       f"MiB/s  ratio {r['ratio']:.2f}{met}")
        else:
            cov = f"  (generation ran {r['generation_covered']:.0%} of the run)" if r.get("generation_covered") else ""
            out.append(f"{r['workload']:<32} unpaired {r['unpaired']:>9,.0f}  paired {r['paired']:>9,.0f} IOPS  "
                       f"ratio {r['ratio']:.2f}{met}{cov}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/copies")
    p.add_argument("--quick", action="store_true", help="256 MiB LUNs, 3 rounds of 1 s")
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=int)
    p.add_argument("--size-mib", type=int)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--no-backup", action="store_true", help="skip the backup measurement")
    a = p.parse_args(argv)
    size = (a.size_mib or (256 if a.quick else 1024)) * h.MIB
    s = h.Settings(size, a.rounds or 3, a.seconds or (1 if a.quick else 5))
    wd = Path(tempfile.mkdtemp(prefix="sanlab-copybench-"))
    t: h.Target | None = None
    try:
        h.prefill([wd / "lun0.img", wd / "lun1.img"], size)
        t = start(wd, size)
        c = Copies(t, wd)
        count = h.write_count(h.WORKLOAD_DEFS["write-4k-rand-qd32"], [t], s,
                              lambda m: print(m, file=sys.stderr, flush=True))
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        covered: list[float] = []
        for _ in range(s.rounds):
            write_round(c, t, s, count, samples, covered)
        rows = summarize(samples, covered)
        if not a.no_backup:
            rows.append(backup_rounds(c, t, wd, s))
        print(f"local copies vs unpaired, {size // h.MIB} MiB LUNs, {s.rounds} round(s) x {s.seconds} s")
        print(format_rows(rows))
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    except (h.BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench/copies: {exc}", file=sys.stderr)
        return 1
    finally:
        if t is not None:
            t.stopper()
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

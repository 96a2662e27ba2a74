"""Server CPU per request at QD1, sanlab beside tgtd: where a single request's time goes.

Runs the two QD1 workloads of ``bench/run`` once per daemon (256 MiB LUNs) and prints, per
request, the wall time and the daemon's CPU time (utime + stime from /proc/PID/stat, all threads),
with the user part apart: Python for sanlab, tgtd's C.  The rest of the wall time is the
initiator's and the sleep between requests.

Usage: .venv/bin/python bench/qd1_cpu.py [SECONDS]   (root; tgt, libiscsi-bin, qemu-utils)
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402 - a sibling script, not a package

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def main() -> None:
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    size = 256 << 20
    wd = Path(tempfile.mkdtemp(prefix="sanlab-qd1-"))
    targets: list[h.Target] = []
    try:
        a, b = wd / "tgtd.img", wd / "sanlab.img"
        h.prefill([a, b], size)
        targets = [h.start_tgtd(wd, a), h.start_sanlab(wd, b, size)]
        for name in ("read-4k-rand-qd1", "write-4k-rand-qd1"):
            w = h.WORKLOAD_DEFS[name]
            count = 40_000
            for t in targets:
                u0, s0 = cpu(t.proc.pid)
                t0 = time.monotonic()
                r = h.run_once(w, t, h.Settings(size, 1, secs), count)
                u1, s1 = cpu(t.proc.pid)
                n = r.iops * secs if w.kind == "read" else count
                print(f"{name:18} {t.name:6} {r.iops:8.0f} IOPS  wall/req {1e6 / r.iops:6.1f} us  "
                      f"daemon cpu/req {1e6 * (u1 - u0 + s1 - s0) / n:6.1f} us "
                      f"(user {1e6 * (u1 - u0) / n:5.1f})  [{time.monotonic() - t0:.0f} s]")
    finally:
        for t in reversed(targets):
            t.stopper()
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()

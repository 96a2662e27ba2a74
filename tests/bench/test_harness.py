"""bench/run: its output parsers (fast, on captured tool output) and one --quick run (slow)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sanlab_bench_harness", REPO / "bench" / "harness.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness  # dataclasses look the module up while the class is built
_spec.loader.exec_module(harness)

# Captured verbatim (bytes) from `iscsi-perf -r -m 32 -b 8 -t 3` against sanlab: the status
# line is rewritten with carriage returns, the summary ends with a newline.
PERF_RAND_QD32 = (
    b"iscsi-perf version 0.1 - (c) 2014-2015 by Peter Lieven <pl@\xc4\xb8amp.de>\n\n"
    b"connected to iscsi://127.0.0.1:57343/iqn.2026-11.org.sanlab:bench/0\n"
    b"capacity is 131072 blocks or 67108864 byte (64 MB)\n"
    b"performing RANDOM READ with 32 parallel requests\n"
    b"FIXED transfer size of 8 blocks (4096 byte)\n"
    b"will run for 3 seconds.\n\n"
    b"\r00:00:02 - lba 81994, iops current 25385 (99 MB/s), iops average 25385 (99 MB/s), in_flight 32, busy 0"
    b"        \r00:00:01 - lba 12991, iops current 31579 (123 MB/s), iops average 28481 (111 MB/s), "
    b"in_flight 32, busy 0        \riops average 29607 (115 MB/s)"
    b"                                                        \n\nfinished.\n"
).decode()

# Captured from `iscsi-perf -m 32 -b 256 -t 2` against tgtd, read in text mode (Python's
# universal newlines turn the carriage returns into newlines, as bench/run reads it).
PERF_SEQ_128K_TEXT = (
    "iscsi-perf version 0.1 - (c) 2014-2015 by Peter Lieven <pl@ĸamp.de>\n\n"
    "connected to iscsi://127.0.0.1:33987/iqn.2026-11.org.sanlab:bench-tgt/1\n"
    "capacity is 131072 blocks or 67108864 byte (64 MB)\n"
    "performing SEQUENTIAL READ with 32 parallel requests\n"
    "FIXED transfer size of 256 blocks (131072 byte)\n"
    "will run for 2 seconds.\n\n\n"
    "00:00:01 - lba 101632, iops current 6508 (813 MB/s), iops average 6508 (813 MB/s), in_flight 32, busy 0"
    "        \niops average 6573 (821 MB/s)                                                        \n\n"
    "finished.\n"
)

# Captured from `qemu-img bench -w -t none -c 5000 -d 32 -s 4096 -S 41472000 --image-opts ...` (tgtd).
QB_RAND_QD32 = ("Sending 5000 write requests, 4096 bytes each, 32 in parallel "
                "(starting at offset 0, step size 41472000)\nRun completed in 0.160 seconds.\n")
# Captured from `qemu-img bench -w -t none -c 300 -d 32 -s 131072 -S 131072 --image-opts ...` (sanlab).
QB_SEQ_128K = ("Sending 300 write requests, 131072 bytes each, 32 in parallel "
               "(starting at offset 0, step size 131072)\nRun completed in 0.075 seconds.\n")


def test_iscsi_perf_summary_with_carriage_returns() -> None:
    r = harness.parse_iscsi_perf(PERF_RAND_QD32)
    assert r.iops == 29607  # the final summary, not a per-second line
    assert r.mib_s == pytest.approx(29607 * 4096 / 2**20)


def test_iscsi_perf_summary_in_text_mode() -> None:
    r = harness.parse_iscsi_perf(PERF_SEQ_128K_TEXT, 128 * 1024)
    assert r.iops == 6573
    assert r.mib_s == pytest.approx(6573 / 8)  # 821.6: iscsi-perf truncates to 821


def test_iscsi_perf_without_summary_uses_last_average() -> None:
    cut = PERF_RAND_QD32.split("\riops average 29607")[0]
    assert harness.parse_iscsi_perf(cut).iops == 28481


def test_iscsi_perf_garbage() -> None:
    with pytest.raises(ValueError):
        harness.parse_iscsi_perf("iscsi_connect failed. Connection refused\n")


def test_qemu_img_bench() -> None:
    r = harness.parse_qemu_img_bench(QB_RAND_QD32)
    assert r.iops == pytest.approx(5000 / 0.160)
    assert r.mib_s == pytest.approx(5000 * 4096 / 0.160 / 2**20)
    r = harness.parse_qemu_img_bench(QB_SEQ_128K)
    assert r.mib_s == pytest.approx(300 / 8 / 0.075)
    with pytest.raises(ValueError):
        harness.parse_qemu_img_bench("qemu-img: Could not open 'x': No such file\n")


@pytest.mark.parametrize("mib", [64, 256, 1024])
def test_random_step_visits_every_block(mib: int) -> None:
    size = mib << 20
    step = harness.random_step(size)
    nblocks = size // 4096
    assert step % 4096 == 0
    k = step // 4096
    assert nblocks // 4 < k < nblocks and harness._gcd(k, nblocks) == 1
    if mib == 64:
        assert step == 41472000  # the step in the captured qemu-img bench output above


def test_summary_rows_and_ratios() -> None:
    samples = {name: {"tgtd": [100.0, 300.0, 200.0], "sanlab": [50.0, 150.0, 100.0]}
               for name in harness.WORKLOADS}
    rows = harness.summarize(samples, {"tgtd": 10.0, "sanlab": 60.0})
    by = {r["workload"]: r for r in rows}
    assert list(by) == harness.WORKLOADS + ["peak-rss"]
    assert by["read-4k-rand-qd1"]["tgtd"] == 200.0 and by["read-4k-rand-qd1"]["ratio"] == 0.5
    assert by["read-4k-rand-qd1"]["latency_ratio"] == 2.0
    assert "latency_ratio" not in by["read-4k-rand-qd32"]
    assert by["peak-rss"] == {"workload": "peak-rss", "unit": "MiB", "tgtd": 10.0, "sanlab": 60.0, "ratio": 6.0}
    assert "read-128k-seq-qd32" in harness.format_table(rows)
    # Every round's pair is 0.5: the per-round ratios agree exactly, each target's rounds spread 100 %.
    assert by["read-4k-rand-qd32"]["round_ratios"] == [0.5, 0.5, 0.5]
    assert by["read-4k-rand-qd32"]["ratio_range"] == [0.5, 0.5]
    assert by["read-4k-rand-qd32"]["spread"] == {"tgtd": 1.0, "sanlab": 1.0}


def test_round_ratios_pair_runs_of_the_same_round() -> None:
    # A machine slowing down by half between rounds moves both daemons: the medians' ratio and
    # each round's ratio still agree, while each target's spread shows the drift.
    per = {"tgtd": [100.0, 50.0, 80.0], "sanlab": [120.0, 60.0, 100.0]}
    assert harness.round_ratios(per) == [1.2, 1.2, 1.25]
    assert harness.spread(per["tgtd"]) == 0.625
    rows = harness.summarize({"write-4k-rand-qd32": per}, {"tgtd": 1.0, "sanlab": 2.0})
    line = next(ln for ln in harness.format_table(rows).splitlines() if ln.startswith("write-4k-rand-qd32"))
    assert "1.20-1.25" in line and "62%" in line and "1.25" in line


def test_rounds_alternate_which_daemon_runs_first(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    class FakeTarget:
        def __init__(self, name: str) -> None:
            self.name = name

    def fake_run(w: harness.Workload, t: FakeTarget, s: harness.Settings, count: int) -> harness.Result:
        order.append(t.name)
        return harness.Result(iops=1000.0 if t.name == "tgtd" else 1500.0, mib_s=1.0)

    monkeypatch.setattr(harness, "run_once", fake_run)
    targets = [FakeTarget("tgtd"), FakeTarget("sanlab")]
    samples = harness.measure(["read-4k-rand-qd1"], targets, harness.Settings(1 << 20, 4, 1),  # type: ignore[arg-type]
                              lambda _m: None)
    assert order == ["tgtd", "sanlab", "sanlab", "tgtd", "tgtd", "sanlab", "sanlab", "tgtd"]
    assert samples["read-4k-rand-qd1"] == {"tgtd": [1000.0] * 4, "sanlab": [1500.0] * 4}


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cp = subprocess.run([str(REPO / "bench" / "run"), "--quick", "--json", str(out)],
                        capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    rows = json.loads(out.read_text())
    by = {r["workload"]: r for r in rows}
    assert set(by) == set(harness.WORKLOADS) | {"peak-rss"}
    for name, r in by.items():
        for key in ("unit", "tgtd", "sanlab", "ratio"):
            assert key in r, (name, key)
        assert r["tgtd"] > 0 and r["sanlab"] > 0, r
        assert r["ratio"] > 0, r
        if name != "peak-rss":
            assert len(r["samples"]["sanlab"]) == 5 and len(r["round_ratios"]) == 5, r
            lo, hi = r["ratio_range"]
            assert lo <= hi and lo > 0, r
    assert "read-4k-rand-qd1" in cp.stdout

"""bench/copies' config, arithmetic and table (the run itself is a benchmark, not a test)."""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from copy_bench import IQN, MODES, _generation_seconds, config, format_rows, summarize  # noqa: E402

import harness as h  # noqa: E402

from sanlab.tools.config import parse_config  # noqa: E402


def test_config_is_valid(tmp_path: Path) -> None:
    cfg = parse_config(tomllib.loads(config(tmp_path, 3260, 64 << 20)), "bench")
    (t,) = cfg.targets
    assert t.name == IQN and [lc.lun for lc in t.luns] == [0, 1]
    assert {lc.size for lc in t.luns} == {64 << 20} and not any(lc.thin for lc in t.luns)


def test_ratios_are_medians_against_the_unpaired_median() -> None:
    samples = {"unpaired": [1000.0, 3000.0, 2000.0], "generation": [500.0, 700.0, 600.0],
               "cow": [900.0, 1100.0, 1000.0], "copied": [1900.0, 1800.0, 2000.0]}
    rows = summarize(samples, [1.0, 0.5, 0.25])
    assert [r["workload"] for r in rows] == [f"write-4k-rand-qd32-{m}" for m in MODES[1:]]
    by = {r["workload"].rsplit("-", 1)[1]: r for r in rows}
    assert by["generation"]["ratio"] == 0.3 and by["generation"]["generation_covered"] == 0.5
    assert by["cow"]["ratio"] == 0.5 and by["cow"]["target"] == 0.5
    assert by["copied"]["ratio"] == 0.95 and by["copied"]["target"] == 0.9
    backup = {"workload": "backup", "unit": "MiB/s", "read": 400.0, "backup": 300.0, "ratio": 0.75, "target": 0.8}
    text = format_rows(rows + [backup])
    assert "ratio 0.50 met (>= 0.5)" in text and "ratio 0.95 met (>= 0.9)" in text
    assert "ratio 0.75 NOT MET (>= 0.8)" in text and "generation ran 50% of the run" in text


def test_generation_seconds_come_from_the_last_mover_line(tmp_path: Path) -> None:
    log = tmp_path / "sanlab.log"
    lines = [{"event": "local_copy_mover_done", "seconds": 0.5}, {"event": "other"},
             {"event": "local_copy_mover_done", "seconds": 1.25}, {"event": "login"}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    t = h.Target("sanlab", None, 0, IQN, 0, log)  # type: ignore[arg-type]
    assert _generation_seconds(t) == 1.25
    log.write_text("")
    assert _generation_seconds(t) == 0.0

"""bench/raid's arithmetic and config (the run itself is a benchmark, not a test)."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from raid_bench import DRIVES, LEVELS, STRIPE, config, drive_size  # noqa: E402

from sanlab.storage.raid import Layout, RaidLevel  # noqa: E402
from sanlab.tools.config import parse_config  # noqa: E402


@pytest.mark.parametrize("level", [0, 1, 5, 6])
@pytest.mark.parametrize("size", [64 << 20, 256 << 20, (100 << 20) + 512])
def test_groups_hold_the_lun(level: int, size: int) -> None:
    ds = drive_size(level, size)
    assert ds % STRIPE == 0
    cap = Layout(RaidLevel(level), DRIVES, STRIPE, ds).capacity
    assert size <= cap < size + DRIVES * STRIPE


def test_config_is_valid(tmp_path: Path) -> None:
    cfg = parse_config(tomllib.loads(config(3260, tmp_path / "f.img", 64 << 20, tmp_path)), "bench")
    assert [g.level for g in cfg.raid_groups] == [lv for lv, _ in LEVELS]
    assert [lc.raid_group for lc in cfg.targets[0].luns] == [None, "raid0", "raid1", "raid5", "raid6"]

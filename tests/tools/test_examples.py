"""Every example config under lab/examples/ is valid."""
from __future__ import annotations

from pathlib import Path

import pytest

from sanlab.tools.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "lab" / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.targets and all(t.luns for t in cfg.targets)
